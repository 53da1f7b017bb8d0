//! Cluster nodes relaying calls to each other's phones (`peer_relay.rs`), with virtual time.

use super::*;

/// Another node of the cluster, and the phone behind NAT that registered through one.
const PEER: &str = "127.0.0.1:5070";
const PHONE_NAT: &str = "127.0.0.1:7001";
const PHONE_PRIVATE: &str = "10.0.0.9:5060";

/// An engine whose store knows `PEER` as a node of its cluster.
fn node(yaml: &str) -> Harness {
    let mut h = Harness::with_yaml(yaml);
    let mut cfg = h.engine.cfg.clone();
    cfg.reg_cache = std::sync::Arc::new(TestRegs { cache: h.regs.clone(), at_once: true, peer: Some(addr(PEER)) });
    h.engine = Engine::new(cfg, [7; 32]);
    h
}

/// The phone's binding, held by `relay` (`None`: this node).
fn bind(h: &Harness, alias: &str, relay: Option<regcache::Relay>) {
    let expires = h.now + Duration::from_secs(600);
    h.regs.put(regcache::Binding {
        alias: alias.into(),
        aor: "sip:alice@example.com".into(),
        contact: format!("sip:alice@{PHONE_PRIVATE};ob"),
        source: addr(PHONE_NAT),
        transport: "udp".into(),
        interface: "default".into(),
        user_agent: "phone".into(),
        call_id: String::new(),
        ua_call_id: String::new(),
        ua_expires: expires,
        registrar_expires: expires,
        origin: regcache::Origin::Upstream,
        relay,
    });
}

fn relay_header(m: &Message) -> Option<String> {
    m.other_header(crate::registrations::RELAY_HEADER).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The header a peer sends for `alias` on a request with `call_id`.
fn signed(alias: &str, call_id: &str) -> String {
    crate::b2bua::peer_relay::relay_value(&RELAY_KEY, alias, call_id.as_bytes()).expect("mac")
}

const REG: &str = "active_profile: reg\nprofiles:\n  reg:\n    enable_reg_caching: yes\n    next_hop: 127.0.0.1:5002\n";
const TRUNK: &str = "active_profile: trunk\nprofiles:\n  trunk:\n    next_hop: 127.0.0.1:5002\n";

#[test]
fn a_call_to_a_phone_another_node_holds_goes_through_that_node() {
    let mut h = node(REG);
    let relay = regcache::Relay { node: "a".into(), addr: addr(PEER), transport: "udp".into() };
    bind(&h, "0123456789abcdef", Some(relay));
    let inv =
        invite("via-peer", "").replace(&format!("INVITE sip:bob@{BOB}"), &format!("INVITE sip:0123456789abcdef@{SBC}"));
    let out = h.send(CAROL, &inv);
    let relayed = one(&out, PEER);
    assert_eq!(relayed.request_uri(), format!("sip:alice@{PHONE_PRIVATE};ob").as_bytes(), "the phone's contact");
    let call_id = hv(&relayed, HeaderName::CallId);
    assert_eq!(
        relay_header(&relayed),
        Some(signed("0123456789abcdef", &call_id)),
        "the binding named for the peer, signed with the leg's Call-ID"
    );
    assert!(to(&out, PHONE_NAT).is_empty(), "never to the phone's NAT directly");
    assert_eq!(h.engine.stats.get(Counter::RelayedToPeer), 1);
    // The same phone held here: straight to its NAT address, nothing named.
    bind(&h, "0123456789abcdef", None);
    let out = h.send(CAROL, &inv.replace("via-peer", "direct"));
    assert_eq!(relay_header(&one(&out, PHONE_NAT)), None);
    assert_eq!(h.engine.stats.get(Counter::RelayedToPeer), 1);
    // A node without the cluster's key (Redis not yet read) cannot name the binding: it
    // tries the phone directly.
    let mut keyless = Harness::with_yaml(REG);
    let relay = regcache::Relay { node: "a".into(), addr: addr(PEER), transport: "udp".into() };
    bind(&keyless, "0123456789abcdef", Some(relay));
    let out = keyless.send(CAROL, &inv.replace("via-peer", "keyless"));
    assert!(to(&out, PEER).is_empty());
    assert_eq!(relay_header(&one(&out, PHONE_NAT)), None);
}

#[test]
fn a_peers_call_reaches_the_phone_this_node_holds_as_it_came() {
    let mut h = node(TRUNK);
    bind(&h, "a1", None);
    let inv = |id: &str, alias: &str| {
        invite(id, &format!("X-Sbc-Relay: {}\n", signed(alias, id)))
            .replace(&format!("INVITE sip:bob@{BOB}"), &format!("INVITE sip:alice@{PHONE_PRIVATE};ob"))
    };
    let out = h.send(PEER, &inv("from-peer", "a1"));
    let to_phone = one(&out, PHONE_NAT);
    assert_eq!(to_phone.method(), Some(Method::Invite));
    assert_eq!(to_phone.request_uri(), format!("sip:alice@{PHONE_PRIVATE};ob").as_bytes());
    assert_eq!(relay_header(&to_phone), None, "the header stays inside the cluster");
    assert!(String::from_utf8_lossy(to_phone.bytes()).contains("X-Custom"), "otherwise as it came");
    assert!(to(&out, BOB).is_empty(), "the operator's profile was the peer's to apply");
    assert_eq!(h.engine.stats.get(Counter::RelayedForPeer), 1);
    // Anyone else naming the binding is an ordinary caller: its profile applies, the header
    // goes no further.
    let out = h.send(CAROL, &inv("from-outside", "a1"));
    let to_trunk = one(&out, BOB);
    assert_eq!(relay_header(&to_trunk), None);
    assert!(to(&out, PHONE_NAT).is_empty());
    // The peer's address with a MAC that is not the cluster's (a forged source), or one made
    // for another request: 503, neither relayed to the phone nor routed as an ordinary call.
    let forged = inv("forged", "a1").replace(&signed("a1", "forged"), &signed("a1", "another-call"));
    let out = h.send(PEER, &forged);
    let last = to(&out, PEER).into_iter().find(|m| m.status().is_some_and(|s| s >= 200)).expect("final");
    assert_eq!(last.status(), Some(503));
    assert!(to(&out, PHONE_NAT).is_empty() && to(&out, BOB).is_empty());
    // A binding this node does not hold (unknown, or another node's): 404, never relayed again.
    let relay = regcache::Relay { node: "c".into(), addr: addr("127.0.0.1:5080"), transport: "udp".into() };
    bind(&h, "c1", Some(relay));
    for (id, alias) in [("unknown", "ffffffffffffffff"), ("elsewhere", "c1")] {
        let out = h.send(PEER, &inv(id, alias));
        let last = to(&out, PEER).into_iter().find(|m| m.status().is_some_and(|s| s >= 200)).expect("final");
        assert_eq!(last.status(), Some(404), "{id}");
        assert!(to(&out, "127.0.0.1:5080").is_empty() && to(&out, PHONE_NAT).is_empty());
    }
    assert_eq!(h.engine.stats.get(Counter::RelayedForPeer), 1);
}
