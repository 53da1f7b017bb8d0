//! Registrations shared by cluster nodes, with a real Redis: a phone registered through node A
//! is called through node B, and the call reaches it through A (the only address its NAT, or
//! its TCP connection, lets in); the binding lives in Redis with the registrar's expiry; with
//! Redis gone, each node serves its own phones and writes them back when Redis returns.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use sbc_e2e::cluster::{metric, two_nodes, wait_for};
use sbc_e2e::phone::Phone;
use sbc_e2e::redis::RedisServer;
use sbc_e2e::ua::{sdp, TestUa};
use sbc_e2e::{eventually, Sbcd};

/// The local registrar on every node (phones behind NAT register with it).
const REGISTRAR: &str = "registrations:\n  store: off\nactive_profile: local\nprofiles:\n  local:\n    call_control: registrar\n    registrar_module: cc_registrar\n";

/// Waits until each node sees the other as a live peer with its SIP address.
fn peers_known(a: &Sbcd, b: &Sbcd) {
    for (n, other) in [(a, "b"), (b, "a")] {
        wait_for(n, "peer known", |c| c["peers"][other].as_array().is_some_and(|v| !v.is_empty()));
    }
}

/// Bindings in Redis under `prefix`.
fn bindings_in_redis(redis: &RedisServer, prefix: &str) -> usize {
    redis.cli(&["KEYS", &format!("{prefix}:reg:*")]).lines().filter(|l| !l.is_empty()).count()
}

/// A call from a test UA through `via` to `ruri`, answered by `phone`, which must get it
/// from `holder` (its top Via is the holder's: the B2BUA that sent it). Hung up by the caller.
fn call_reaches(via: &Sbcd, holder: &Sbcd, ruri: &str, mut phone: Phone) -> Phone {
    let holder_port = holder.addr().port();
    let callee = std::thread::spawn(move || {
        phone.take_call(|inv| {
            let via = inv.header("Via").unwrap_or_default().to_string();
            assert!(via.contains(&format!("127.0.0.1:{holder_port}")), "sent by the node holding the phone: {via}");
            assert!(!inv.0.contains("X-Sbc-Relay"), "the cluster's header stays inside: {}", inv.0);
        });
        phone
    });
    let mut caller = TestUa::new(via.addr());
    let ok = caller.invite(ruri, &sdp("127.0.0.1", 7000, ""));
    assert_eq!(ok.status(), Some(200), "{}", ok.0);
    assert_eq!(caller.bye().status(), Some(200));
    callee.join().expect("phone thread")
}

#[test]
fn a_phone_registered_through_one_node_is_called_through_another() {
    let redis = RedisServer::start();
    let (a, b) = two_nodes(&redis, REGISTRAR, "r1");
    peers_known(&a, &b);
    // One phone on UDP behind NAT, one on TCP: only node A can reach either.
    let phones = [("carol", Phone::udp(a.addr(), "carol")), ("dave", Phone::tcp(a.addr(), "dave"))];
    for (n, (user, mut phone)) in phones.into_iter().enumerate() {
        assert_eq!(phone.register(Some(300)).status(), Some(200));
        assert!(eventually(Duration::from_secs(5), || bindings_in_redis(&redis, "r1") == n + 1), "written to Redis");
        let phone = call_reaches(&b, &a, &format!("sip:{user}@example.com"), phone);
        // Through A itself, straight to the phone.
        call_reaches(&a, &a, &format!("sip:{user}@example.com"), phone);
    }
    assert_eq!(metric(&b, "sbc_cluster_relayed_to_peer_total"), Some(2), "B handed both calls to A");
    assert_eq!(metric(&a, "sbc_cluster_relayed_for_peer_total"), Some(2));
    assert_eq!(metric(&a, "sbc_cluster_relayed_to_peer_total"), Some(0));
    // The nodes signed the relay with the cluster's key, which the first node made.
    assert_eq!(redis.cli(&["STRLEN", "r1:relay-key"]), "64");
    // The binding expires by Redis's clock, with the registration.
    let key = redis.cli(&["KEYS", "r1:reg:*"]).lines().next().unwrap().to_string();
    let ttl: i64 = redis.cli(&["PTTL", &key]).parse().unwrap();
    assert!((250_000..=300_000).contains(&ttl), "{key}: {ttl} ms");
    // Nobody registered as erin, on either node: 404.
    let mut ua = TestUa::new(b.addr());
    assert_eq!(ua.invite("sip:erin@example.com", &sdp("127.0.0.1", 7080, "")).status(), Some(404));
}

#[test]
fn only_a_peer_may_hand_a_call_to_a_nodes_phone() {
    let redis = RedisServer::start();
    let (a, b) = two_nodes(&redis, REGISTRAR, "r2");
    peers_known(&a, &b);
    let mut phone = Phone::udp(a.addr(), "carol");
    assert_eq!(phone.register(Some(300)).status(), Some(200));
    assert!(eventually(Duration::from_secs(5), || bindings_in_redis(&redis, "r2") == 1));
    let alias = redis.cli(&["KEYS", "r2:reg:*"]).trim().trim_start_matches("r2:reg:").to_string();
    // An outsider names the binding to reach the phone without the operator's routing: A
    // takes it as an ordinary request (its profile sends calls to registered AoRs only). (On
    // an address of its own: a peer's TCP connections are known by their IP alone.)
    let mut outsider = TestUa::new_on("127.0.0.2", a.addr());
    outsider.extra_headers = format!("X-Sbc-Relay: {alias}\r\n");
    let resp = outsider.invite("sip:nobody@example.com", &sdp("127.0.0.1", 7090, ""));
    assert_eq!(resp.status(), Some(404), "{}", resp.0);
    assert_eq!(metric(&a, "sbc_cluster_relayed_for_peer_total"), Some(0));
    assert!(phone.recv_request(Duration::from_millis(300)).is_none(), "nothing reached the phone");
}

#[test]
fn without_redis_each_node_serves_its_own_phones_and_writes_them_back() {
    let mut redis = RedisServer::start();
    let (a, b) = two_nodes(&redis, REGISTRAR, "r3");
    peers_known(&a, &b);
    redis.stop();
    for n in [&a, &b] {
        wait_for(n, "Redis gone", |c| c["redis"] == "down");
    }
    // Registered through A while Redis is away: A reaches it, B does not know it.
    let mut phone = Phone::udp(a.addr(), "carol");
    assert_eq!(phone.register(Some(300)).status(), Some(200));
    let phone = call_reaches(&a, &a, "sip:carol@example.com", phone);
    let mut ua = TestUa::new(b.addr());
    assert_eq!(ua.invite("sip:carol@example.com", &sdp("127.0.0.1", 7080, "")).status(), Some(404));
    assert!(metric(&a, "sbc_cluster_registration_lookups_total{answered_by=\"node\"}").unwrap_or(0) > 0);
    // Redis is back (empty): A writes its binding again, and B reaches the phone through A.
    redis.restart();
    for n in [&a, &b] {
        wait_for(n, "back", |c| c["redis"] == "up" && c["lease"] == "held");
    }
    assert!(eventually(Duration::from_secs(10), || bindings_in_redis(&redis, "r3") == 1), "written back");
    assert!(metric(&a, "sbc_cluster_registration_rewritten_total").unwrap_or(0) >= 1);
    peers_known(&a, &b);
    call_reaches(&b, &a, "sip:carol@example.com", phone);
}

#[test]
fn a_phone_follows_its_registrations_and_outlives_its_node() {
    let redis = RedisServer::start();
    let (a, b) = two_nodes(&redis, REGISTRAR, "r4");
    peers_known(&a, &b);
    let mut first = Phone::udp(a.addr(), "carol");
    assert_eq!(first.register(Some(300)).status(), Some(200));
    assert!(eventually(Duration::from_secs(5), || bindings_in_redis(&redis, "r4") == 1));
    // The phone registers again through B (from another port: its NAT moved): one binding,
    // held by B now, and A's calls go through B.
    let mut moved = Phone::udp(b.addr(), "carol");
    assert_eq!(moved.register(Some(300)).status(), Some(200));
    let held_by_b = || {
        let key = redis.cli(&["KEYS", "r4:reg:*"]);
        bindings_in_redis(&redis, "r4") == 1 && redis.cli(&["HGET", key.trim(), "node"]) == "b"
    };
    assert!(eventually(Duration::from_secs(5), held_by_b), "{}", redis.cli(&["KEYS", "r4:*"]));
    let moved = call_reaches(&a, &b, "sip:carol@example.com", moved);
    assert!(first.recv_request(Duration::from_millis(200)).is_none(), "not to where it was");
    // B dies. Once its lease runs out, A no longer sends the phone's calls through it, but
    // to the phone's address directly (a NAT that lets A in, or B's address moved to A).
    let _ = std::process::Command::new("kill").args(["-9", &b.pid().to_string()]).status();
    wait_for(&a, "B gone", |c| c["peers"].as_object().is_some_and(|p| p.is_empty()));
    call_reaches(&a, &a, "sip:carol@example.com", moved);
    assert!(metric(&a, "sbc_cluster_registration_holder_gone_total").unwrap_or(0) >= 1);
}

#[test]
fn a_removal_made_while_redis_is_away_reaches_it_later() {
    let redis = RedisServer::start();
    let (a, b) = two_nodes(&redis, REGISTRAR, "r5");
    peers_known(&a, &b);
    let mut phone = Phone::udp(a.addr(), "carol");
    assert_eq!(phone.register(Some(300)).status(), Some(200));
    assert!(eventually(Duration::from_secs(5), || bindings_in_redis(&redis, "r5") == 1));
    // The phone leaves while Redis is frozen: A forgets it at once, Redis once it answers.
    redis.pause();
    wait_for(&a, "Redis away", |c| c["redis"] == "down");
    assert_eq!(phone.register(Some(0)).status(), Some(200));
    redis.resume();
    wait_for(&a, "back", |c| c["redis"] == "up" && c["lease"] == "held");
    assert!(eventually(Duration::from_secs(5), || bindings_in_redis(&redis, "r5") == 0), "removed in Redis too");
    let mut ua = TestUa::new(b.addr());
    assert_eq!(ua.invite("sip:carol@example.com", &sdp("127.0.0.1", 7080, "")).status(), Some(404));
}
