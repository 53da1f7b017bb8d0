//! Next hops' health in routing: down or blacklisted hops are passed over, failures are
//! reported, and one shard's OPTIONS probes report each configured next hop's answers.
// The fake port plays the driver's table shared by shards: it needs a lock the engine never has.
#![allow(clippy::disallowed_types)]

use std::sync::{Arc, Mutex};

use super::*;
use crate::health::{HopKey, NextHopHealth};

/// A health port that says down what the test says, and records what it is told.
#[derive(Debug, Default)]
struct TestHealth {
    down: Mutex<Vec<SocketAddr>>,
    failed: Mutex<Vec<(SocketAddr, Option<Duration>)>>,
    probed: Mutex<Vec<(SocketAddr, Option<String>, bool)>>,
}

impl NextHopHealth for TestHealth {
    fn usable(&self, hop: HopKey, _now: Instant) -> bool {
        !self.down.lock().unwrap().contains(&hop.addr)
    }
    fn failed(&self, hop: HopKey, _now: Instant, retry_after: Option<Duration>) {
        self.failed.lock().unwrap().push((hop.addr, retry_after));
    }
    fn probed(&self, hop: HopKey, name: Option<&str>, answered: bool, _now: Instant) {
        self.probed.lock().unwrap().push((hop.addr, name.map(str::to_string), answered));
    }
}

fn harness(next_hop: &str, health: &Arc<TestHealth>, probes: bool) -> Harness {
    let mut h = Harness::with_yaml(&format!("active_profile: p\nprofiles:\n  p:\n    next_hop: \"{next_hop}\"\n"));
    let mut cfg = h.engine.cfg.clone();
    cfg.health = health.clone();
    cfg.probe_interval = probes.then(|| Duration::from_secs(30));
    h.engine = Engine::new(cfg, [7; 32]);
    h
}

#[test]
fn a_down_hop_is_passed_over_and_all_down_is_503() {
    let health = Arc::new(TestHealth::default());
    health.down.lock().unwrap().push(addr(CAROL));
    let mut h = harness(&format!("{CAROL}, {BOB}"), &health, false);
    let out = h.send(ALICE, &invite("hh-1@alice", ""));
    assert!(to(&out, CAROL).is_empty(), "the down hop gets nothing");
    assert_eq!(one(&out, BOB).method(), Some(Method::Invite));

    health.down.lock().unwrap().push(addr(BOB));
    let out = h.send(ALICE, &invite("hh-2@alice", ""));
    let reply = to(&out, ALICE).into_iter().find(|m| m.status().is_some_and(|s| s >= 300)).expect("refused");
    assert_eq!(reply.status(), Some(503));
    let warning = reply.other_header("Warning").map(|w| String::from_utf8_lossy(w).into_owned());
    assert!(warning.is_some_and(|w| w.contains("next hops down")));
}

#[test]
fn timeouts_and_a_503_with_retry_after_blacklist_their_destination() {
    let health = Arc::new(TestHealth::default());
    let mut h = harness(&format!("{CAROL}, {BOB}"), &health, false);
    let out = h.send(ALICE, &invite("hh-3@alice", ""));
    one(&out, CAROL);
    // CAROL never answers: Timer B, then the next hop.
    let out = h.advance(Duration::from_secs(33));
    assert_eq!(first(&out, BOB).method(), Some(Method::Invite));
    assert_eq!(*health.failed.lock().unwrap(), [(addr(CAROL), None)], "blacklisted for the configured time");

    let health = Arc::new(TestHealth::default());
    let mut h = harness(&format!("{CAROL}, {BOB}"), &health, false);
    let inv = one(&h.send(ALICE, &invite("hh-4@alice", "")), CAROL);
    h.send(CAROL, &response_from(CAROL, &inv, 503, "c", "Retry-After: 120\n"));
    let inv = one(&h.send(ALICE, &invite("hh-5@alice", "")), CAROL);
    h.send(CAROL, &response_from(CAROL, &inv, 503, "c", ""));
    assert_eq!(
        *health.failed.lock().unwrap(),
        [(addr(CAROL), Some(Duration::from_secs(120)))],
        "Retry-After says how long; a plain 503 blacklists nothing"
    );
}

#[test]
fn probes_report_each_configured_hop_every_round() {
    let health = Arc::new(TestHealth::default());
    let mut h = harness(&format!("{CAROL}, carrier.example"), &health, true);
    h.dns.insert("carrier.example".into(), vec![Target { transport: Transport::Udp, addr: addr(BOB) }]);
    h.engine.start_probes(h.now);
    let out = h.advance(Duration::from_millis(1));
    let to_carol = one(&out, CAROL);
    let to_bob = one(&out, BOB);
    assert_eq!((to_carol.method(), to_bob.method()), (Some(Method::Options), Some(Method::Options)));
    assert!(to_bob.request_uri().starts_with(b"sip:carrier.example:5002"), "the name in the probe's URI");
    h.send(CAROL, &response_from(CAROL, &to_carol, 200, "c", ""));
    h.send(BOB, &response_from(BOB, &to_bob, 503, "b", ""));
    assert_eq!(
        *health.probed.lock().unwrap(),
        [(addr(CAROL), None, true), (addr(BOB), Some("carrier.example".into()), false)]
    );
    // The next round 30 s on; this time CAROL stays silent and is reported when its OPTIONS
    // times out.
    let out = h.advance(Duration::from_secs(30));
    let again = first(&out, BOB);
    h.send(BOB, &response_from(BOB, &again, 200, "b", ""));
    assert!(!to(&out, CAROL).is_empty(), "CAROL is probed again");
    h.advance(Duration::from_secs(33));
    let probed = health.probed.lock().unwrap().clone();
    assert!(probed.contains(&(addr(CAROL), None, false)), "{probed:?}");
    assert!(probed.contains(&(addr(BOB), Some("carrier.example".into()), true)), "{probed:?}");
}

/// A profile that sends from its own interface has its next hops probed from there: a carrier
/// that only answers that network is not marked down for the default interface's sake.
#[test]
fn probes_leave_from_the_profiles_interface() {
    let health = Arc::new(TestHealth::default());
    let yaml = format!(
        "interfaces:\n  - name: default\n    listen: [udp:{SBC}]\n  - name: ext\n    listen: [udp:127.0.0.1:5070]\nactive_profile: p\nprofiles:\n  p:\n    next_hop: \"{CAROL}\"\n    outbound_interface: ext\n"
    );
    let mut h = Harness::with_yaml(&yaml);
    let mut cfg = h.engine.cfg.clone();
    let ext = LocalSocket { id: 1, transport: Transport::Udp, addr: addr("127.0.0.1:5070"), advertised: None };
    cfg.interfaces.push(Interface { name: "ext".into(), sockets: vec![ext] });
    cfg.health = health.clone();
    cfg.probe_interval = Some(Duration::from_secs(30));
    h.engine = Engine::new(cfg, [7; 32]);
    h.engine.start_probes(h.now);
    let probe = one(&h.advance(Duration::from_millis(1)), CAROL);
    assert!(hv(&probe, HeaderName::Via).contains("127.0.0.1:5070"), "{probe:?}");
}
