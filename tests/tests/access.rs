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
    config_file_in(dir, &text)
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

/// A call from an in-test caller to `ruri` through sbcd, answered and hung up by `phone`.
fn call_phone(sbc: SocketAddr, ruri: &str, mut phone: Phone) -> Phone {
    let contact = phone.contact();
    let callee = std::thread::spawn(move || {
        phone.take_call(|inv| {
            let first = format!("INVITE {contact} SIP/2.0");
            assert!(inv.0.starts_with(&first), "R-URI is the registered contact: {}", inv.0);
        });
        phone
    });
    let mut caller = TestUa::new(sbc);
    let ok = caller.invite(ruri, &sdp("127.0.0.1", 7000, ""));
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

    let phone = call_phone(sbcd.addr(), &format!("sip:{alias}@{}", sbcd.addr()), phone);

    // An upgrade: sbcd restarts; the phone is reachable at once, from the store.
    sbcd.terminate(Duration::from_secs(10)).expect("sbcd exits");
    let sbcd = Sbcd::start_on(port, &["--config", cfg.to_str().expect("utf8")]);
    assert!(sbcd.log_text().contains("registration store opened"), "{}", sbcd.log_text());
    assert_eq!(alias_of(&sbcd, "alice"), alias);
    let mut phone = call_phone(sbcd.addr(), &format!("sip:{alias}@{}", sbcd.addr()), phone);

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

    let mut phone = call_phone(sbcd.addr(), &format!("sip:{alias}@{}", sbcd.addr()), phone);
    assert_eq!(phone.register(Some(0)).status(), Some(200));
    let rdir = registrar.dir.clone();
    let out = registrar.wait(Duration::from_secs(10));
    assert!(out.status.success(), "registrar scenario: {}\n{}", read_error_logs(&rdir), sbcd.log_text());
}

/// sbcd with one profile `p` (its option lines given) whose calls go to 127.0.0.1:`callee`.
fn start_with_profile(options: &str, callee: u16) -> Sbcd {
    Sbcd::with_config(
        &format!(
            "interfaces:\n  - name: default\n    listen: ['udp:127.0.0.1:5060']\nactive_profile: p\nprofiles:\n  p:\n    next_hop: 127.0.0.1:{callee}\n{options}"
        ),
        &[],
    )
}

const AUTH: &str = "    enable_auth: yes\n    auth_user: $P(u)\n    auth_pwd: $P(p)\n";

#[test]
fn an_upstream_challenge_is_answered_with_a_digest_sipp_verifies() {
    let port = free_port();
    let uas = sipp_uas("uas_auth.xml", port, Transport::Udp, 1);
    let sbcd = start_with_profile(AUTH, port);
    let mut ua = TestUa::new(sbcd.addr());
    ua.extra_headers = "P-App-Param: u=alice;p=s3cret\r\n".into();
    let ok = ua.invite(&format!("sip:bob@127.0.0.1:{port}"), &sdp("127.0.0.1", 7010, ""));
    assert_eq!(ok.status(), Some(200), "{}\n{}", ok.0, sbcd.log_text());
    assert_eq!(ua.bye().status(), Some(200));
    uas.assert_passed(Duration::from_secs(90), &sbcd);
    assert!(sbcd.log_text().contains("answering digest challenge"));
    assert!(!sbcd.log_text().contains("s3cret"), "the password never reaches the log");
}

#[test]
fn a_second_challenge_reaches_the_caller_instead_of_looping() {
    let port = free_port();
    let uas = sipp_uas("uas_auth_twice.xml", port, Transport::Udp, 1);
    let sbcd = start_with_profile(AUTH, port);
    let mut ua = TestUa::new(sbcd.addr());
    ua.extra_headers = "P-App-Param: u=alice;p=wrong\r\n".into();
    let r = ua.invite(&format!("sip:bob@127.0.0.1:{port}"), &sdp("127.0.0.1", 7012, ""));
    assert_eq!(r.status(), Some(407), "{}", r.0);
    assert!(r.header("Proxy-Authenticate").is_some_and(|c| c.contains("carrier.example")));
    uas.assert_passed(Duration::from_secs(90), &sbcd);
}

const SST: &str = "    enable_session_timer: yes\n    enable_aleg_session_timer: no\n    session_expires: 90\n    minimum_timer: 90\n";

#[test]
fn a_callee_that_never_refreshes_is_hung_up_on_both_legs() {
    let port = free_port();
    let uas = sipp_uas("uas_sst.xml", port, Transport::Udp, 1);
    let sbcd = start_with_profile(SST, port);
    let mut ua = TestUa::new(sbcd.addr());
    let ok = ua.invite(&format!("sip:bob@127.0.0.1:{port}"), &sdp("127.0.0.1", 7014, ""));
    assert_eq!(ok.status(), Some(200));
    assert!(ok.header("Session-Expires").is_none(), "the caller's leg runs no timer, and the callee's does not cross");
    // 90 s, the callee refreshes: sbcd gives up 30 s before the end.
    let bye = ua.recv_request(Duration::from_secs(75)).expect("BYE at the session's end");
    assert_eq!(bye.method(), Some("BYE"), "{}", bye.0);
    assert!(bye.header("Reason").is_some_and(|r| r.contains("session_timeout")));
    ua.ok(&bye);
    uas.assert_passed(Duration::from_secs(90), &sbcd);
    let (_, stats) = http(&sbcd, "GET", "/stats", None, None);
    assert!(stats.contains("\"session_timeouts\":1"), "{stats}");
}

#[test]
fn sbcd_refreshes_the_callee_leg_and_refuses_short_intervals() {
    let port = free_port();
    let uas = sipp_uas("uas_sst_refresh.xml", port, Transport::Udp, 1);
    let sbcd = start_with_profile(
        SST.replace("enable_aleg_session_timer: no", "enable_aleg_session_timer: yes").as_str(),
        port,
    );
    // A caller asking for 30 s is told the minimum.
    let mut short = TestUa::new(sbcd.addr());
    short.extra_headers = "Session-Expires: 30\r\nSupported: timer\r\n".into();
    let r = short.invite(&format!("sip:bob@127.0.0.1:{port}"), &sdp("127.0.0.1", 7016, ""));
    assert_eq!(r.status(), Some(422));
    assert_eq!(r.header("Min-SE"), Some("90"));

    let mut ua = TestUa::new(sbcd.addr());
    ua.extra_headers = "Session-Expires: 600\r\nSupported: timer\r\n".into();
    let ok = ua.invite(&format!("sip:bob@127.0.0.1:{port}"), &sdp("127.0.0.1", 7018, ""));
    assert_eq!(ok.status(), Some(200));
    assert_eq!(
        ok.header("Session-Expires"),
        Some("90;refresher=uac"),
        "the caller's own leg (the shorter interval): it refreshes"
    );
    // sbcd refreshes the callee at 45 s (the scenario checks the UPDATE); the caller sees nothing.
    assert!(ua.recv_request(Duration::from_secs(48)).is_none());
    assert_eq!(ua.bye().status(), Some(200));
    uas.assert_passed(Duration::from_secs(90), &sbcd);
}

#[test]
fn nat_handling_reaches_a_caller_whose_contact_is_private() {
    let port = free_port();
    let uas = sipp_uas("uas_callee_bye.xml", port, Transport::Udp, 1);
    let sbcd = start_with_profile("    dlg_nat_handling: yes\n", port);
    let mut ua = TestUa::new(sbcd.addr());
    ua.contact = Some(format!("sip:caller@{PRIVATE}"));
    ua.extra_headers = "X-Test-Header: nat\r\n".into();
    let ok = ua.invite(&format!("sip:bob@127.0.0.1:{port}"), &sdp("127.0.0.1", 7020, ""));
    assert_eq!(ok.status(), Some(200));
    // The callee hangs up: the BYE comes to where the caller sent from, for its Contact.
    let bye = ua.recv_request(Duration::from_secs(10)).expect("BYE at the caller's source address");
    assert!(bye.0.starts_with(&format!("BYE sip:caller@{PRIVATE} SIP/2.0")), "{}", bye.0);
    ua.ok(&bye);
    uas.assert_passed(Duration::from_secs(90), &sbcd);
}

#[test]
fn the_local_registrar_takes_registrations_and_routes_calls_to_the_aor() {
    let cfg = config_file(
        "registrar",
        "registrations:\n  store: off\nactive_profile: local\nprofiles:\n  local:\n    call_control: registrar\n    registrar_module: cc_registrar\n",
    );
    let sbcd = Sbcd::start(&["--config", cfg.to_str().expect("utf8")]);
    let mut phone = Phone::udp(sbcd.addr(), "carol");
    let ok = phone.register(Some(300));
    assert_eq!(ok.status(), Some(200), "{}", ok.0);
    assert_eq!(ok.header("Contact"), Some(format!("<sip:carol@{PRIVATE}>;expires=300").as_str()));
    let (_, body) = http(&sbcd, "GET", "/registrations", None, None);
    assert!(body.contains("\"origin\":\"local\""), "{body}");
    // A call to the AoR reaches the phone at its source.
    let phone = call_phone(sbcd.addr(), "sip:carol@example.com", phone);
    // Nobody registered as dave: 404.
    let mut ua = TestUa::new(sbcd.addr());
    let nf = ua.invite("sip:dave@example.com", &sdp("127.0.0.1", 7080, ""));
    assert_eq!(nf.status(), Some(404));
    drop(phone);
}
