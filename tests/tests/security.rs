//! What must not cross the SBC: one side's addresses, Via, Record-Route, Call-ID and tags
//! never reach the other side (topology hiding, without any profile asking for it).

use std::time::Duration;

use sbc_e2e::ua::{sdp, TestUa};
use sbc_e2e::*;

#[test]
fn neither_side_sees_the_others_topology() {
    let (sbcd, mut callee) = sbcd_with_phone("bob", |_, phone| next_hop_config(phone, ""));
    let callee_addr = callee.local_addr();

    let answering = std::thread::spawn(move || {
        let inv = callee.recv_request(Duration::from_secs(10)).expect("INVITE");
        // The callee's side has its own proxies and addresses the caller must not see.
        callee.answer_with(&inv, 200, "Record-Route: <sip:core-proxy.internal.example;lr>\r\n");
        let ack = callee.recv_request(Duration::from_secs(10)).expect("ACK");
        (callee, inv, ack)
    });
    let mut caller = TestUa::new_on("127.0.0.5", sbcd.addr());
    caller.extra_headers = "Record-Route: <sip:edge-proxy.caller.example;lr>\r\n".into();
    let ok = caller.invite(&format!("sip:bob@{callee_addr}"), &sdp("127.0.0.5", 7050, ""));
    assert_eq!(ok.status(), Some(200), "{}", ok.0);
    let (_callee, inv, ack) = answering.join().expect("callee");

    // Toward the callee: no address, proxy, Call-ID or tag of the caller's side in the rows
    // that route (From/To URIs are identities and SDP is content: profiles and the relay
    // rewrite those).
    let routing_rows = |text: &str| -> String {
        text.split("\r\n")
            .take_while(|l| !l.is_empty())
            .filter(|l| {
                let n = l.split(':').next().unwrap_or_default().to_ascii_lowercase();
                matches!(n.as_str(), "via" | "contact" | "record-route" | "route" | "call-id")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let caller_call_id = format!("ua-{}-", std::process::id());
    for msg in [&inv, &ack] {
        let rows = routing_rows(&msg.0);
        for leak in ["127.0.0.5", "edge-proxy.caller.example", caller_call_id.as_str()] {
            assert!(!rows.contains(leak), "{leak} reached the callee:\n{}", msg.0);
        }
        assert!(!msg.0.contains(";tag=t"), "the caller's From tag reached the callee:\n{}", msg.0);
    }
    assert_eq!(inv.0.matches("\r\nVia:").count(), 1, "only the SBC's Via:\n{}", inv.0);
    // Toward the caller: nothing of the callee's side (its port, its proxy, its tag, its Contact).
    let rows = routing_rows(&ok.0);
    for leak in [format!(":{}", callee_addr.port()), "core-proxy.internal.example".into(), PRIVATE_HOST.into()] {
        assert!(!rows.contains(&leak), "{leak} reached the caller:\n{}", ok.0);
    }
    assert!(!ok.0.contains("tag=phone"), "the callee's To tag reached the caller:\n{}", ok.0);
}

const PRIVATE_HOST: &str = "127.0.0.9";
