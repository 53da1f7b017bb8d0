//! Access features end to end: phones register through sbcd to a SIPp registrar (registration
//! caching), take calls at their NAT-ed source over UDP and TCP, also after sbcd restarts;
//! session timers and digest authentication against SIPp peers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sbc_e2e::phone::{Phone, PRIVATE};
use sbc_e2e::ua::{sdp, TestUa};
use sbc_e2e::*;

/// A reg-caching setup as SEMS's sample has it: a method map sends REGISTER to `reg`, which
/// relays to the registrar; everything else goes to `calls`, which retargets aliases.
fn regcache_config(dir: &Path, registrar_port: u16) -> PathBuf {
    let text = format!(
        r#"interfaces:
  - name: default
    listen: ['udp:127.0.0.1:5060']
registrations:
  store: {store}
regex_maps:
  methods: ["^REGISTER$=>reg"]
active_profile: ["$M($m.=>methods)", calls]
profiles:
  reg:
    enable_reg_caching: yes
    min_reg_expires: 3600
    max_ua_expires: 60
    next_hop: 127.0.0.1:{registrar_port}
  calls:
    enable_reg_caching: yes
"#,
        store = dir.join("registrations.sqlite").display()
    );
    let p = dir.join("sbc.yaml");
    std::fs::write(&p, text).expect("write config");
    p
}

/// The alias sbcd registered for `user`, read from the admin API.
fn alias_of(sbcd: &Sbcd, user: &str) -> String {
    let (st, body) = http(sbcd, "GET", "/registrations", None, None);
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v.as_array()
        .and_then(|a| a.iter().find(|r| r["aor"] == format!("sip:{user}@example.com")))
        .and_then(|r| r["alias"].as_str())
        .unwrap_or_else(|| panic!("{user} is not registered: {body}"))
        .to_string()
}

/// A call from an in-test caller to `alias` at sbcd, answered and hung up by `phone`.
fn call_alias(sbc: SocketAddr, alias: &str, mut phone: Phone) -> Phone {
    let contact = phone.contact();
    let callee = std::thread::spawn(move || {
        let inv = phone.recv_request(Duration::from_secs(10)).expect("the INVITE reaches the phone at its source");
        assert_eq!(inv.method(), Some("INVITE"));
        assert!(inv.0.starts_with(&format!("INVITE {contact} SIP/2.0")), "R-URI is the registered contact: {}", inv.0);
        phone.answer(&inv, 200);
        // ACK and BYE (sbcd's UDP receivers may hand two back-to-back datagrams over in either
        // order; SIP allows a BYE before the ACK).
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let req = phone.recv_request(Duration::from_secs(10)).expect("ACK and BYE");
            if req.method() == Some("BYE") {
                phone.answer(&req, 200);
            }
            seen.push(req.method().unwrap_or_default().to_string());
        }
        seen.sort();
        assert_eq!(seen, ["ACK", "BYE"]);
        phone
    });
    let mut caller = TestUa::new(sbc);
    let ok = caller.invite(&format!("sip:{alias}@{sbc}"), &sdp("127.0.0.1", 7000, ""));
    assert_eq!(ok.status(), Some(200), "{}", ok.0);
    assert_eq!(caller.bye().status(), Some(200));
    callee.join().expect("phone thread")
}

fn messages_seen_by(dir: &Path) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(dir).expect("sipp dir").flatten() {
        if e.file_name().to_string_lossy().ends_with("_messages.log") {
            all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    all
}

#[test]
fn phones_register_through_the_cache_and_take_calls_after_a_restart() {
    let dir = scratch_dir("regcache");
    let registrar_port = free_port();
    let registrar = sipp_uas_with("uas_registrar.xml", registrar_port, Transport::Udp, 1, &["-trace_msg".into()]);
    let cfg = regcache_config(&dir, registrar_port);
    let port = free_port();
    let mut sbcd = Sbcd::start_on(port, &["--config", cfg.to_str().expect("utf8")]);

    let mut phone = Phone::udp(sbcd.addr(), "alice");
    let ok = phone.try_register(Some(120)).unwrap_or_else(|| panic!("no answer; sbcd log:\n{}", sbcd.log_text()));
    assert_eq!(ok.status(), Some(200), "{}", ok.0);
    assert_eq!(
        ok.header("Contact"),
        Some(format!("<sip:alice@{PRIVATE}>;expires=60").as_str()),
        "capped to max_ua_expires"
    );
    // Inside the registrar's hour, a re-registration is answered by sbcd (the registrar
    // scenario fails if it sees it).
    let again = phone.register(Some(120));
    assert_eq!(again.status(), Some(200));
    let alias = alias_of(&sbcd, "alice");

    let phone = call_alias(sbcd.addr(), &alias, phone);

    // An upgrade: sbcd restarts; the phone is reachable at once, from the store.
    sbcd.terminate(Duration::from_secs(10)).expect("sbcd exits");
    let sbcd = Sbcd::start_on(port, &["--config", cfg.to_str().expect("utf8")]);
    assert!(sbcd.log_text().contains("registration store opened"), "{}", sbcd.log_text());
    assert_eq!(alias_of(&sbcd, "alice"), alias);
    let mut phone = call_alias(sbcd.addr(), &alias, phone);

    // An alias nobody registered: 404.
    let mut stranger = TestUa::new(sbcd.addr());
    let nf = stranger.invite(&format!("sip:0000000000000000@{}", sbcd.addr()), &sdp("127.0.0.1", 7002, ""));
    assert_eq!(nf.status(), Some(404));

    // De-registration reaches the registrar and empties the cache.
    let bye = phone.register(Some(0));
    assert_eq!(bye.status(), Some(200));
    let (_, body) = http(&sbcd, "GET", "/registrations", None, None);
    assert_eq!(body.trim(), "[]");

    let rdir = registrar.dir.clone();
    let out = registrar.wait(Duration::from_secs(10));
    assert!(out.status.success(), "registrar scenario: {}\n{}", read_error_logs(&rdir), sbcd.log_text());
    let seen = messages_seen_by(&rdir);
    assert!(seen.contains(&format!("<sip:{alias}@127.0.0.1:{port}>;expires=3600")), "{seen}");
    assert!(!seen.contains("127.0.0.9"), "the phone's private address never reaches the registrar");
}

#[test]
fn a_phone_on_tcp_takes_calls_over_the_connection_it_opened() {
    let dir = scratch_dir("regcache-tcp");
    let registrar_port = free_port();
    let registrar = sipp_uas_with("uas_registrar.xml", registrar_port, Transport::Udp, 1, &[]);
    let cfg = regcache_config(&dir, registrar_port);
    let sbcd = Sbcd::start(&["--config", cfg.to_str().expect("utf8")]);

    let mut phone = Phone::tcp(sbcd.addr(), "bob");
    let ok = phone.register(Some(300));
    assert_eq!(ok.status(), Some(200), "{}", ok.0);
    let alias = alias_of(&sbcd, "bob");
    let (_, body) = http(&sbcd, "GET", "/registrations", None, None);
    assert!(body.contains("\"transport\":\"tcp\""), "{body}");

    let mut phone = call_alias(sbcd.addr(), &alias, phone);
    assert_eq!(phone.register(Some(0)).status(), Some(200));
    let rdir = registrar.dir.clone();
    let out = registrar.wait(Duration::from_secs(10));
    assert!(out.status.success(), "registrar scenario: {}\n{}", read_error_logs(&rdir), sbcd.log_text());
}
