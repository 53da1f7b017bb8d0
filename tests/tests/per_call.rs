//! Options SEMS expands per call that are fixed values elsewhere (`enable_rtprelay`,
//! session-timer values …), and dynamic `call_control` entries (`$H(P-Call-Control)` with
//! SEMS's `ctl` specs), through sbcd with in-process UAs: each call gets what its request says,
//! a value that is not what the option takes fails the call, and only trusted sources may
//! choose call control. Also SEMS's options for requests inside a call (`hold_*`,
//! `allow_subless_notify`).

use std::time::Duration;

use sbc_e2e::ua::{sdp, SipText, TestUa};
use sbc_e2e::*;

/// The configuration, its media on `ports` (each test's sbcd its own: they run at once).
fn config(ports: &str) -> String {
    format!(
        "interfaces:\n  - name: default\n    listen: ['udp:127.0.0.1:5060']\n    media: {{ports: {ports}}}\n{PROFILE}"
    )
}

const PROFILE: &str = r#"limits:
  admission:
    trusted: ["127.0.0.2"]
active_profile: p
profiles:
  p:
    enable_rtprelay: "$H(X-Relay)"
    enable_session_timer: "yes"
    session_expires: "$H(X-SE)"
    call_control: "$H(P-Call-Control)"
"#;

/// `caller` calls `callee` with `headers`: the INVITE the callee got (the call is answered and
/// hung up), or the caller's failure.
fn call(mut caller: TestUa, callee: &TestUa, headers: &str) -> Result<SipText, SipText> {
    caller.extra_headers = headers.to_string();
    let uri = format!("sip:bob@{}", callee.local);
    let t = std::thread::spawn(move || {
        let answer = caller.invite(&uri, &sdp("127.0.0.1", 7000, ""));
        if answer.status() == Some(200) {
            assert_eq!(caller.bye().status(), Some(200));
        }
        answer
    });
    let Some(inv) = callee.recv_request(Duration::from_secs(3)) else {
        return Err(t.join().expect("caller"));
    };
    callee.answer(&inv, &sdp("127.0.0.1", 7002, ""));
    let _ack = callee.recv_method("ACK", Duration::from_secs(5)).expect("ACK");
    let bye = callee.recv_method("BYE", Duration::from_secs(5)).expect("BYE");
    callee.ok(&bye);
    let answer = t.join().expect("caller");
    assert_eq!(answer.status(), Some(200), "{}", answer.0);
    Ok(inv)
}

fn media_port(inv: &SipText) -> u16 {
    let m = inv.0.lines().find(|l| l.starts_with("m=audio ")).expect("an m-line");
    m.split(' ').nth(1).and_then(|p| p.parse().ok()).expect("a port")
}

#[test]
fn options_sems_expands_per_call_follow_each_request() {
    let sbcd = Sbcd::with_config(&config("20000-20099"), &[]);
    let bob = TestUa::new(sbcd.addr());
    let relayed = call(TestUa::new(sbcd.addr()), &bob, "X-Relay: yes\r\nX-SE: 1800\r\n").expect("answered");
    assert_ne!(media_port(&relayed), 7000, "anchored: {}", relayed.0);
    assert!(relayed.header("Session-Expires").is_some_and(|v| v.starts_with("1800")), "{}", relayed.0);
    let direct = call(TestUa::new(sbcd.addr()), &bob, "X-Relay: no\r\nX-SE: 600\r\n").expect("answered");
    assert_eq!(media_port(&direct), 7000, "not anchored: {}", direct.0);
    assert!(direct.header("Session-Expires").is_some_and(|v| v.starts_with("600")), "{}", direct.0);
    let failed = call(TestUa::new(sbcd.addr()), &bob, "X-Relay: maybe\r\nX-SE: 600\r\n").expect_err("not a flag");
    assert_eq!(failed.status(), Some(500), "{}", failed.0);
}

#[test]
fn call_control_from_a_header_is_taken_from_trusted_sources_only() {
    let sbcd = Sbcd::with_config(&config("20100-20199"), &[]);
    let (bob, carol) = (TestUa::new(sbcd.addr()), TestUa::new(sbcd.addr()));
    // SEMS's `ctl` spec: the call goes to Carol, without media anchoring.
    let ctl = format!(
        "P-Call-Control: ctl;RURI=sip:carol@{};rtprelay_enabled=no\r\nX-Relay: yes\r\nX-SE: 600\r\n",
        carol.local
    );
    let inv = call(TestUa::new_on("127.0.0.2", sbcd.addr()), &carol, &ctl).expect("Carol answers");
    assert!(inv.0.starts_with(&format!("INVITE sip:carol@{}", carol.local)), "{}", inv.0);
    assert_eq!(media_port(&inv), 7000, "rtprelay_enabled=no from the spec: {}", inv.0);
    // The same header from an untrusted source changes nothing: Bob gets the call, anchored.
    let inv = call(TestUa::new(sbcd.addr()), &bob, &ctl).expect("Bob answers");
    assert!(inv.0.starts_with("INVITE sip:bob@"), "{}", inv.0);
    assert_ne!(media_port(&inv), 7000, "{}", inv.0);
    assert!(carol.recv_request(Duration::from_millis(200)).is_none(), "nothing for Carol");
}

/// SEMS's in-dialog options on the wire: a caller's hold re-offer reaches the callee as
/// `hold_*` say (no direction of hold, the zero address), the resume as it came; and with
/// `allow_subless_notify=no` a NOTIFY of no subscription from the callee gets 481.
#[test]
fn hold_re_offers_are_rewritten_and_stray_notifies_refused() {
    let yaml = "active_profile: p\nprofiles:\n  p:\n    hold_alter_b2b_bleg: yes\n    hold_activity_bleg: sendrecv\n    hold_zero_connection_bleg: yes\n    allow_subless_notify: no\n";
    let sbcd = Sbcd::with_config(yaml, &[]);
    let callee = TestUa::new(sbcd.addr());
    let mut caller = TestUa::new(sbcd.addr());
    let uri = format!("sip:bob@{}", callee.local);
    let t = std::thread::spawn(move || {
        let ok = caller.invite(&uri, &sdp("127.0.0.1", 7000, ""));
        assert_eq!(ok.status(), Some(200), "{}", ok.0);
        caller
    });
    let inv = callee.recv_request(Duration::from_secs(5)).expect("the INVITE");
    callee.answer(&inv, &sdp("127.0.0.1", 7002, ""));
    callee.recv_method("ACK", Duration::from_secs(5)).expect("the ACK");
    let caller = t.join().expect("caller");

    // Hold and resume, each answered by the callee.
    let reoffer = |caller: TestUa, offer: String| {
        let t = std::thread::spawn(move || {
            let mut caller = caller;
            let ok = caller.invite("", &offer);
            assert_eq!(ok.status(), Some(200), "{}", ok.0);
            caller
        });
        let reinv = callee.recv_method("INVITE", Duration::from_secs(5)).expect("the re-INVITE");
        callee.answer(&reinv, &sdp("127.0.0.1", 7002, ""));
        callee.recv_method("ACK", Duration::from_secs(5)).expect("its ACK");
        (t.join().expect("caller"), reinv.body().to_string())
    };
    let (c, held) = reoffer(caller, sdp("127.0.0.1", 7000, "a=sendonly\r\n"));
    assert!(held.contains("c=IN IP4 0.0.0.0") && held.contains("a=sendrecv"), "{held}");
    assert!(!held.contains("sendonly"), "{held}");
    let (mut caller, resumed) = reoffer(c, sdp("127.0.0.1", 7000, ""));
    assert!(resumed.contains("c=IN IP4 127.0.0.1") && !resumed.contains("a=sendrecv"), "as it came: {resumed}");

    // A NOTIFY from the callee in the call's dialog, for no subscription.
    let contact = inv.header("Contact").and_then(|c| Some(c.split_once('<')?.1.split_once('>')?.0)).expect("Contact");
    let notify = format!(
        "NOTIFY {contact} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKstray1;rport\r\nMax-Forwards: 70\r\nFrom: {to};tag=callee{port}\r\nTo: {from}\r\nCall-ID: {cid}\r\nCSeq: 1 NOTIFY\r\nEvent: dialog\r\nSubscription-State: active\r\nContent-Length: 0\r\n\r\n",
        me = callee.local,
        port = callee.local.port(),
        to = inv.header("To").expect("To"),
        from = inv.header("From").expect("From"),
        cid = inv.header("Call-ID").expect("Call-ID"),
    );
    callee.send(&notify);
    let reply = std::iter::from_fn(|| callee.recv(Duration::from_secs(5)))
        .find(|m| m.status().is_some())
        .expect("an answer to the NOTIFY");
    assert_eq!(reply.status(), Some(481), "{}", reply.0);

    let t = std::thread::spawn(move || caller.bye());
    let bye = callee.recv_method("BYE", Duration::from_secs(5)).expect("the BYE");
    callee.ok(&bye);
    assert_eq!(t.join().expect("caller").status(), Some(200));
}
