//! Routing to carriers like a carrier: next-hop entries with priority and weight, carriers
//! found by name through NAPTR and SRV records (RFC 3263) served by the test's own DNS
//! server, failing targets skipped. Calls are made by in-process UAs to phones of the test
//! (and a SIPp UAS for TCP); every target is on loopback.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sbc_e2e::cluster::metric;
use sbc_e2e::dns::{FakeDns, Record};
use sbc_e2e::phone::Phone;
use sbc_e2e::ua::{sdp, TestUa};
use sbc_e2e::*;

/// A callee that answers every INVITE with `code` (and every BYE and OPTIONS with 200) and
/// counts the INVITEs and OPTIONS, until dropped; silenced, it answers nothing (a dead host).
struct Callee {
    addr: SocketAddr,
    invites: Arc<AtomicUsize>,
    options: Arc<AtomicUsize>,
    silent: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Callee {
    fn answering(code: u16) -> Self {
        // Responses go where each request came from (the SBC), whatever address is given here.
        let mut phone = Phone::udp("127.0.0.1:9".parse().expect("addr"), "callee");
        let addr = phone.local_addr();
        let (invites, options) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (silent, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (n, o, quiet, st) = (invites.clone(), options.clone(), silent.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = std::collections::HashSet::new();
            while !st.load(Ordering::Relaxed) {
                let Some(req) = phone.recv_request(Duration::from_millis(50)) else { continue };
                if quiet.load(Ordering::Relaxed) {
                    continue;
                }
                match req.method() {
                    Some("OPTIONS") => {
                        o.fetch_add(1, Ordering::Relaxed);
                        phone.answer(&req, 200);
                    }
                    Some("INVITE") => {
                        if seen.insert(req.header("Call-ID").unwrap_or_default().to_string()) {
                            n.fetch_add(1, Ordering::Relaxed);
                        }
                        phone.answer(&req, code);
                    }
                    Some("BYE") => phone.answer(&req, 200),
                    _ => {}
                }
            }
        });
        Self { addr, invites, options, silent, stop }
    }

    fn invites(&self) -> usize {
        self.invites.load(Ordering::Relaxed)
    }

    fn options(&self) -> usize {
        self.options.load(Ordering::Relaxed)
    }

    fn silence(&self, silent: bool) {
        self.silent.store(silent, Ordering::Relaxed);
    }
}

impl Drop for Callee {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `n` calls through sbcd, one after another, each answered and hung up. The callers are
/// kept to the end: a UA's Call-ID and branches come from its port, which the kernel could
/// otherwise hand to a later caller (a retransmission, to sbcd).
fn calls(sbcd: &Sbcd, n: usize) {
    let mut callers = Vec::with_capacity(n);
    for _ in 0..n {
        let mut caller = TestUa::new(sbcd.addr());
        let ok = caller.invite(&format!("sip:carrier@{}", sbcd.addr()), &sdp("127.0.0.1", 7000, ""));
        assert_eq!(ok.status(), Some(200), "{}\nsbcd log:\n{}", ok.0, sbcd.log_text());
        assert_eq!(caller.bye().status(), Some(200));
        callers.push(caller);
    }
}

#[test]
fn weights_split_calls_within_a_priority_and_lower_priorities_wait() {
    let (heavy, light, backup) = (Callee::answering(200), Callee::answering(200), Callee::answering(200));
    let hops =
        format!("{};priority=1;weight=3, {};priority=1;weight=1, {};priority=2", heavy.addr, light.addr, backup.addr);
    let sbcd = Sbcd::with_config(&next_hop_config(format!("\"{hops}\""), ""), &[]);
    calls(&sbcd, 120);
    let (h, l) = (heavy.invites(), light.invites());
    // 3:1 of 120 is 90:30; ±20 is more than four standard deviations.
    assert!((70..=110).contains(&h) && h + l == 120, "weight 3: {h}, weight 1: {l}");
    assert_eq!(backup.invites(), 0, "a lower priority is not tried while a higher one answers");
}

#[test]
fn a_failing_best_target_is_skipped_for_the_next_priority() {
    let (failing, backup) = (Callee::answering(503), Callee::answering(200));
    let hops = format!("{};priority=0, {};priority=9", failing.addr, backup.addr);
    let sbcd = Sbcd::with_config(&next_hop_config(format!("\"{hops}\""), ""), &[]);
    calls(&sbcd, 3);
    assert_eq!((failing.invites(), backup.invites()), (3, 3), "each call tried the best first, then the backup");
}

const LOCAL: std::net::Ipv4Addr = std::net::Ipv4Addr::LOCALHOST;

/// sbcd asking `dns` for names, its one profile sending every call to `next_hop`.
fn sbcd_resolving(dns: &FakeDns, next_hop: &str) -> Sbcd {
    let yaml = format!("dns:\n  servers: [\"{}\"]\n{}", dns.addr, next_hop_config(format!("\"{next_hop}\""), ""));
    Sbcd::with_config(&yaml, &[])
}

#[test]
fn a_call_to_a_domain_goes_to_the_srv_target_of_the_best_priority() {
    let (best, backup) = (Callee::answering(200), Callee::answering(200));
    let dns = FakeDns::with_records(&[
        ("carrier.test", Record::naptr(10, 10, "SIP+D2U", "_sip._udp.carrier.test")),
        ("_sip._udp.carrier.test", Record::srv(20, 1, backup.addr.port(), "gw-b.carrier.test")),
        ("_sip._udp.carrier.test", Record::srv(10, 1, best.addr.port(), "gw-a.carrier.test")),
        ("gw-a.carrier.test", Record::A(LOCAL)),
        ("gw-b.carrier.test", Record::A(LOCAL)),
    ]);
    let sbcd = sbcd_resolving(&dns, "carrier.test");
    calls(&sbcd, 3);
    assert_eq!((best.invites(), backup.invites()), (3, 0), "{}", sbcd.log_text());
    assert!(dns.count("carrier.test", 35) >= 1, "NAPTR asked: {:?}", dns.queries());
    assert!(dns.count("_sip._udp.carrier.test", 33) >= 1, "SRV asked: {:?}", dns.queries());
}

#[test]
fn a_failing_srv_target_is_skipped_and_weights_split_the_rest() {
    let (failing, heavy, light) = (Callee::answering(503), Callee::answering(200), Callee::answering(200));
    // No NAPTR: the SRV records of each transport are asked.
    let dns = FakeDns::with_records(&[
        ("_sip._udp.carrier.test", Record::srv(1, 1, failing.addr.port(), "gw-x.carrier.test")),
        ("_sip._udp.carrier.test", Record::srv(5, 30, heavy.addr.port(), "gw-a.carrier.test")),
        ("_sip._udp.carrier.test", Record::srv(5, 10, light.addr.port(), "gw-b.carrier.test")),
        ("gw-x.carrier.test", Record::A(LOCAL)),
        ("gw-a.carrier.test", Record::A(LOCAL)),
        ("gw-b.carrier.test", Record::A(LOCAL)),
    ]);
    let sbcd = sbcd_resolving(&dns, "carrier.test");
    calls(&sbcd, 120);
    let (h, l) = (heavy.invites(), light.invites());
    assert_eq!(failing.invites(), 120, "the best priority is tried first on every call");
    assert!((70..=110).contains(&h) && h + l == 120, "weight 30: {h}, weight 10: {l}");
}

#[test]
fn naptr_picks_tcp_when_the_carrier_prefers_it() {
    let port = free_port();
    let uas = sipp_uas("uas_cc_pcalls.xml", port, Transport::Tcp, 1);
    let dns = FakeDns::with_records(&[
        ("carrier.test", Record::naptr(20, 10, "SIP+D2U", "_sip._udp.carrier.test")),
        ("carrier.test", Record::naptr(10, 10, "SIP+D2T", "_sip._tcp.carrier.test")),
        ("carrier.test", Record::naptr(5, 10, "E2U+sip", "ignored.carrier.test")),
        ("_sip._tcp.carrier.test", Record::srv(10, 1, port, "gw.carrier.test")),
        ("_sip._udp.carrier.test", Record::srv(10, 1, 9, "gw.carrier.test")),
        ("gw.carrier.test", Record::A(LOCAL)),
    ]);
    let sbcd = sbcd_resolving(&dns, "carrier.test");
    calls(&sbcd, 1);
    uas.assert_passed(Duration::from_secs(20), &sbcd);
    // The UDP service's targets were looked up too (they would be the failover), the other
    // application's record was not followed.
    assert_eq!(dns.count("ignored.carrier.test", 33), 0, "{:?}", dns.queries());
}

#[test]
fn malformed_and_unusable_answers_are_counted_and_refused() {
    let dns = FakeDns::with_records(&[
        ("bad.test", Record::Garbage),
        ("_sip._udp.loop.test", Record::srv(1, 1, 5060, "_sip._udp.loop.test")),
        ("_sip._udp.loop.test", Record::srv(2, 1, 5060, ".")),
    ]);
    let yaml = format!("dns:\n  servers: [\"{}\"]\nactive_profile: p\nprofiles:\n  p:\n    next_hop: $rd\n", dns.addr);
    let sbcd = Sbcd::with_config(&yaml, &[]);
    for domain in ["bad.test", "loop.test"] {
        let mut caller = TestUa::new(sbcd.addr());
        let r = caller.invite(&format!("sip:carrier@{domain}"), &sdp("127.0.0.1", 7000, ""));
        assert_eq!(r.status(), Some(503), "{domain}: {}", r.0);
        assert!(r.header("Warning").is_some_and(|w| w.contains("did not resolve")), "{}", r.0);
    }
    let errors = |kind: &str| metric(&sbcd, &format!("sbc_dns_errors_total{{kind=\"{kind}\"}}")).unwrap_or(0);
    assert!(errors("malformed") >= 1, "the garbage answer is counted");
    assert!(errors("unusable") >= 2, "an SRV naming itself and one naming '.' are left out");
    assert!(options_ping(sbcd.addr(), Duration::from_secs(2)).is_some(), "signalling goes on");
}

/// sbcd with fast SIP timers (T1 50 ms: a transaction gives up after 3.2 s), sending every
/// call to `next_hop`, with `health` (lines of `routing.health`, indented by four spaces).
fn sbcd_watching(next_hop: &str, health: &str) -> Sbcd {
    let yaml = format!(
        "sip:\n  t1_ms: 50\n  t2_ms: 400\nrouting:\n  health:\n{health}{}",
        next_hop_config(format!("\"{next_hop}\""), "")
    );
    Sbcd::with_config(&yaml, &[])
}

fn next_hop_state(sbcd: &Sbcd, hop: SocketAddr) -> Option<String> {
    let (_, body) = http(sbcd, "GET", "/next-hops", None, None);
    let list: serde_json::Value = serde_json::from_str(&body).ok()?;
    let found = list.as_array()?.iter().find(|h| h["address"] == hop.to_string())?.clone();
    Some(format!("{}/{}", found["state"].as_str()?, found["blacklisted_for_s"].as_u64()? > 0))
}

#[test]
fn a_dead_next_hop_is_marked_down_by_options_routed_around_and_back_when_it_returns() {
    let (main, spare) = (Callee::answering(200), Callee::answering(200));
    let health = "    probe_interval_s: 5\n    down_after: 1\n    up_after: 1\n    blacklist_s: 0\n";
    let sbcd = sbcd_watching(&format!("{}, {}", main.addr, spare.addr), health);
    let state = |hop| next_hop_state(&sbcd, hop).unwrap_or_default();
    assert!(eventually(Duration::from_secs(5), || state(main.addr) == "up/false"), "{}", state(main.addr));
    assert!(main.options() >= 1 && spare.options() >= 1, "every configured next hop is probed");

    main.silence(true);
    assert!(eventually(Duration::from_secs(15), || state(main.addr) == "down/false"), "{}", state(main.addr));
    let before = main.invites();
    calls(&sbcd, 3);
    assert_eq!((main.invites() - before, spare.invites()), (0, 3), "a down hop is routed around");
    let (_, metrics) = http(&sbcd, "GET", "/metrics", None, None);
    assert!(metrics.contains(&format!("sbc_next_hop_up{{hop=\"udp:{}\"}} 0", main.addr)), "{metrics}");

    main.silence(false);
    assert!(eventually(Duration::from_secs(12), || state(main.addr) == "up/false"), "{}", state(main.addr));
    calls(&sbcd, 2);
    assert_eq!(main.invites() - before, 2, "back in use once it answers");
    let (_, health) = http(&sbcd, "GET", "/health", None, None);
    assert!(health.contains("\"next_hops\""), "{health}");
}

#[test]
fn a_next_hop_that_timed_out_is_blacklisted_and_skipped() {
    let (dead, spare) = (Callee::answering(200), Callee::answering(200));
    dead.silence(true);
    let sbcd = sbcd_watching(&format!("{}, {}", dead.addr, spare.addr), "    blacklist_s: 60\n");
    // The first call waits for the dead hop's INVITE to time out (3.2 s), then fails over.
    calls(&sbcd, 1);
    assert_eq!(spare.invites(), 1);
    assert_eq!(next_hop_state(&sbcd, dead.addr).as_deref(), Some("unknown/true"));
    dead.silence(false);
    calls(&sbcd, 2);
    assert_eq!((dead.invites(), spare.invites()), (0, 3), "blacklisted: not tried for a minute");
    let blacklistings = metric(&sbcd, "sbc_next_hop_blacklistings_total");
    assert_eq!(blacklistings, Some(1));
}
