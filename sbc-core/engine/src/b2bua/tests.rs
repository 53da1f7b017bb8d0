//! Call flows through one engine with virtual time: a scripted caller (A) and callee (B) on
//! fake addresses, every message the SBC emits inspected.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use profiles::LocalReply;

use super::*;
use crate::sip::msg::{HeaderName, Message};
use crate::sip::transaction::TimerConfig;

const SBC: &str = "127.0.0.1:5060";
const ALICE: &str = "127.0.0.1:5001";
const BOB: &str = "127.0.0.1:5002";
const CAROL: &str = "127.0.0.1:5003";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Harness {
    engine: Engine,
    now: Instant,
    /// Call-control requests the engine emitted, in order.
    cc: Vec<CcRequest>,
    /// The fake relay: streams opened (their pairs), what activity probes answer, and
    /// whether opens fail (their ports would not bind).
    streams: HashMap<rtp_relay::forwarder::StreamId, [(usize, u16); 2]>,
    media_activity: Option<Instant>,
    media_fails: bool,
}

#[derive(Debug)]
struct Sent {
    to: Peer,
    msg: Message,
}

impl Harness {
    fn new() -> Self {
        Self::with_profiles(profiles::Snapshot::transparent("test", vec!["default".into()]))
    }

    /// An engine whose calls use the profiles of `yaml` (a configuration's profile sections).
    fn with_yaml(yaml: &str) -> Self {
        let cfg = profiles::config::Config::from_yaml(yaml, "test.yaml").expect("test config loads");
        Self::with_profiles(cfg.profiles)
    }

    fn with_profiles(snapshot: profiles::Snapshot) -> Self {
        let cfg = EngineConfig {
            shard: 0,
            timers: TimerConfig::default(),
            timer_c: Duration::from_secs(180),
            max_call_duration: Duration::from_secs(3600),
            interfaces: vec![Interface {
                name: "default".into(),
                sockets: vec![LocalSocket { id: 0, transport: Transport::Udp, addr: addr(SBC), advertised: None }],
            }],
            outbound_interface: 0,
            next_hop: None,
            max_calls: 100,
            profiles: std::sync::Arc::new(profiles::Store::new(snapshot)),
            media: None,
            reg_cache: std::sync::Arc::new(regcache::RegCache::in_memory()),
            max_registrations: 1000,
            nonce_key: [7; 32],
            admission: std::sync::Arc::new(crate::admission::Unlimited),
            retransmission_cache: 32 << 20,
        };
        // Virtual time: an arbitrary start, advanced only by the test.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        Self {
            engine: Engine::new(cfg, [7; 32]),
            now,
            cc: Vec::new(),
            streams: Default::default(),
            media_activity: None,
            media_fails: false,
        }
    }

    fn send(&mut self, from: &str, text: &str) -> Vec<Sent> {
        let msg = Message::parse(Bytes::from(text.replace('\n', "\r\n"))).expect("test message parses");
        let src = Source { transport: Transport::Udp, local: 0, remote: addr(from), conn: None };
        self.engine.handle_message(self.now, msg, src);
        self.drain()
    }

    fn advance(&mut self, d: Duration) -> Vec<Sent> {
        let end = self.now + d;
        let mut all = Vec::new();
        while let Some(at) = self.engine.poll_timeout() {
            if at > end {
                break;
            }
            self.now = at.max(self.now);
            self.engine.handle_timeout(self.now);
            all.extend(self.drain());
        }
        self.now = end;
        all
    }

    fn drain(&mut self) -> Vec<Sent> {
        let mut v = Vec::new();
        while let Some(o) = self.engine.poll_output() {
            match o {
                Output::Transmit { dest, bytes, .. } => {
                    v.push(Sent { to: dest.peer, msg: Message::parse(bytes).expect("SBC output parses") });
                }
                Output::CallControl(r) => self.cc.push(r),
                Output::Media(cmd) => self.relay(cmd),
                Output::MediaProbe { call, streams } => {
                    assert!(streams.iter().all(|s| self.streams.contains_key(s)), "probes name open streams");
                    self.engine.handle_media_activity(self.now, call, self.media_activity);
                }
                Output::Event(_) => {}
            }
        }
        v
    }

    /// What a shard does with the engine's media commands, without sockets: a closed
    /// stream's pairs come back at once.
    fn relay(&mut self, cmd: rtp_relay::MediaCommand) {
        match cmd {
            rtp_relay::MediaCommand::Open { stream, ports, .. } => {
                assert!(self.streams.insert(stream, ports).is_none(), "a stream is opened once");
                if self.media_fails {
                    self.engine.handle_media_error(self.now, stream);
                }
            }
            rtp_relay::MediaCommand::Update { stream, .. } => {
                assert!(self.streams.contains_key(&stream), "updates name open streams");
            }
            rtp_relay::MediaCommand::Close { stream } => {
                let ports = self.streams.remove(&stream).expect("closes name open streams");
                for (iface, port) in ports {
                    self.engine.handle_media_released(iface, port);
                }
            }
        }
    }

    fn verdict(&mut self, call: CallHandle, verdict: CcVerdict) -> Vec<Sent> {
        self.engine.handle_cc_verdict(self.now, call, verdict);
        self.drain()
    }
}

fn to(sent: &[Sent], who: &str) -> Vec<Message> {
    sent.iter().filter(|s| s.to == Peer::Addr(addr(who))).map(|s| s.msg.clone()).collect()
}

/// The first message to `who` (later ones are retransmissions while time runs).
fn first(sent: &[Sent], who: &str) -> Message {
    to(sent, who).into_iter().next().unwrap_or_else(|| panic!("nothing to {who}: {sent:#?}"))
}

fn one(sent: &[Sent], who: &str) -> Message {
    let v = to(sent, who);
    assert_eq!(v.len(), 1, "expected one message to {who}, got {sent:#?}");
    v.into_iter().next().unwrap()
}

fn hv(m: &Message, name: HeaderName) -> String {
    String::from_utf8_lossy(m.header_value(name).unwrap_or_default()).into_owned()
}

const SDP: &str = "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 6000 RTP/AVP 0\n";

fn invite(call_id: &str, extra: &str) -> String {
    invite_sdp(call_id, extra, SDP)
}

fn invite_sdp(call_id: &str, extra: &str, sdp: &str) -> String {
    let body = sdp.replace('\n', "\r\n");
    format!(
        "INVITE sip:bob@{BOB} SIP/2.0\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bK{call_id};rport\nMax-Forwards: 70\nFrom: \"Alice\" <sip:alice@atlanta.example>;tag=at\nTo: <sip:bob@biloxi.example>\nCall-ID: {call_id}\nCSeq: 10 INVITE\nContact: <sip:alice@{ALICE}>\nX-Custom:   keep  me\n{extra}Content-Type: application/sdp\nContent-Length: {}\n\n{}",
        body.len(),
        sdp
    )
}

fn response_to(req: &Message, code: u16, to_tag: &str, extra: &str) -> String {
    response_from(BOB, req, code, to_tag, extra)
}

fn response_from(who: &str, req: &Message, code: u16, to_tag: &str, extra: &str) -> String {
    let mut s = format!("SIP/2.0 {code} Whatever\n");
    for h in req.headers_named(HeaderName::Via) {
        s.push_str(&format!("Via: {}\n", String::from_utf8_lossy(req.value(h))));
    }
    let to_val = hv(req, HeaderName::To);
    let to_val = if to_val.contains("tag=") || to_tag.is_empty() { to_val } else { format!("{to_val};tag={to_tag}") };
    s.push_str(&format!(
        "From: {}\nTo: {to_val}\nCall-ID: {}\nCSeq: {}\nContact: <sip:peer@{who}>\n{extra}Content-Length: 0\n\n",
        hv(req, HeaderName::From),
        hv(req, HeaderName::CallId),
        hv(req, HeaderName::CSeq)
    ));
    s
}

/// In-dialog request from a peer to the SBC's Contact, built from the dialog rows it learned.
fn in_dialog(method: &str, via: &str, from: &str, to: &str, call_id: &str, cseq: u32, extra: &str) -> String {
    format!(
        "{method} sip:{SBC} SIP/2.0\nVia: SIP/2.0/UDP {via};branch=z9hG4bK{method}{cseq}{call_id}\nMax-Forwards: 70\nFrom: {from}\nTo: {to}\nCall-ID: {call_id}\nCSeq: {cseq} {method}\n{extra}Content-Length: 0\n\n"
    )
}

/// Sets up an answered call; returns (B's INVITE as received, A's 200 as received).
fn established(h: &mut Harness) -> (Message, Message) {
    let out = h.send(ALICE, &invite("call-1@alice", ""));
    let b_inv = one(&out, BOB);
    let out = h.send(BOB, &response_to(&b_inv, 200, "bt", ""));
    let ok = one(&out, ALICE);
    let out = h.send(
        ALICE,
        &in_dialog("ACK", ALICE, &hv(&ok, HeaderName::From), &hv(&ok, HeaderName::To), "call-1@alice", 10, ""),
    );
    let ack = one(&out, BOB);
    assert_eq!(ack.method(), Some(Method::Ack));
    assert_eq!(ack.cseq().unwrap().num, b_inv.cseq().unwrap().num);
    (b_inv, ok)
}

#[test]
fn basic_call_hides_topology_and_keeps_other_headers() {
    let mut h = Harness::new();
    let out = h.send(ALICE, &invite("call-1@alice", ""));
    let trying = one(&out, ALICE);
    assert_eq!(trying.status(), Some(100));
    let b_inv = one(&out, BOB);
    assert_ne!(b_inv.call_id(), Some(&b"call-1@alice"[..]));
    assert_eq!(b_inv.values(HeaderName::Via).count(), 1, "only our Via");
    assert!(!String::from_utf8_lossy(b_inv.bytes()).contains(ALICE), "no trace of the caller's address");
    assert_eq!(b_inv.max_forwards(), Some(Ok(69)));
    assert_eq!(b_inv.other_header("X-Custom"), Some(&b"keep  me"[..]));
    assert_eq!(b_inv.body(), SDP.replace('\n', "\r\n").as_bytes());
    assert_ne!(b_inv.from_tag(), Some(&b"at"[..]));
    assert!(b_inv.from_hdr().unwrap().display.starts_with(b"\"Alice\""));

    let out = h.send(BOB, &response_to(&b_inv, 180, "bt", ""));
    let ringing = one(&out, ALICE);
    assert_eq!(ringing.status(), Some(180));
    assert_eq!(ringing.call_id(), Some(&b"call-1@alice"[..]));
    let a_tag = ringing.to_tag().unwrap().to_vec();
    assert_ne!(a_tag, b"bt");
    assert!(ringing.top_via().unwrap().param(b"rport") == Some(b"5001"));
    assert!(!String::from_utf8_lossy(ringing.bytes()).contains(BOB), "no trace of the callee");

    let out = h.send(BOB, &response_to(&b_inv, 200, "bt", ""));
    let ok = one(&out, ALICE);
    assert_eq!(ok.to_tag(), Some(&a_tag[..]));
    assert_eq!(ok.contact().unwrap().uri, format!("sip:{SBC}").as_bytes());
    assert_eq!(ok.reason(), b"Whatever", "reason phrase relayed as is");

    let from = hv(&ok, HeaderName::From);
    let to_hdr = hv(&ok, HeaderName::To);
    let out = h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, "call-1@alice", 10, ""));
    let ack = one(&out, BOB);
    assert_eq!(ack.call_id(), b_inv.call_id());
    assert_eq!(ack.to_tag(), Some(&b"bt"[..]));
    assert_eq!(ack.request_uri(), format!("sip:peer@{BOB}").as_bytes());

    let out = h.send(ALICE, &in_dialog("BYE", ALICE, &from, &to_hdr, "call-1@alice", 11, ""));
    let bye = one(&out, BOB);
    assert_eq!(bye.method(), Some(Method::Bye));
    assert_eq!(bye.cseq().unwrap().num, 2);
    let out = h.send(BOB, &response_to(&bye, 200, "", ""));
    let ok = one(&out, ALICE);
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.cseq().unwrap().num, 11);
    assert_eq!(h.engine.active_calls(), 0);
    // Transactions linger only for their RFC wait timers, then everything is gone.
    h.advance(Duration::from_secs(40));
    assert!(h.engine.is_idle(), "txs left: {}", h.engine.active_transactions());
}

#[test]
fn busy_is_acked_hop_by_hop_and_relayed() {
    let mut h = Harness::new();
    let out = h.send(ALICE, &invite("c486", ""));
    let b_inv = one(&out, BOB);
    let out = h.send(BOB, &response_to(&b_inv, 486, "bt", ""));
    let ack = one(&out, BOB);
    assert_eq!(ack.method(), Some(Method::Ack));
    assert_eq!(ack.top_via().unwrap().branch(), b_inv.top_via().unwrap().branch());
    let busy = one(&out, ALICE);
    assert_eq!(busy.status(), Some(486));
    assert_eq!(h.engine.active_calls(), 0);
    // The caller's retransmitted INVITE gets the 486 again, not a new call.
    let out = h.send(ALICE, &invite("c486", ""));
    assert_eq!(one(&out, ALICE).status(), Some(486));
    assert!(to(&out, BOB).is_empty());
}

#[test]
fn cancel_after_ringing() {
    let mut h = Harness::new();
    let inv_text = invite("ccancel", "");
    let out = h.send(ALICE, &inv_text);
    let b_inv = one(&out, BOB);
    h.send(BOB, &response_to(&b_inv, 180, "bt", ""));
    let cancel = inv_text.replacen("INVITE sip", "CANCEL sip", 1).replace("CSeq: 10 INVITE", "CSeq: 10 CANCEL");
    let cancel = cancel.split("Content-Type").next().unwrap().to_string() + "Content-Length: 0\n\n";
    let out = h.send(ALICE, &cancel);
    let to_a = to(&out, ALICE);
    assert!(to_a.iter().any(|m| m.status() == Some(200) && m.cseq().unwrap().method == Method::Cancel));
    assert!(to_a.iter().any(|m| m.status() == Some(487)));
    let b_cancel = one(&out, BOB);
    assert_eq!(b_cancel.method(), Some(Method::Cancel));
    assert_eq!(b_cancel.top_via().unwrap().branch(), b_inv.top_via().unwrap().branch());
    let out = h.send(BOB, &response_to(&b_inv, 487, "bt", ""));
    assert_eq!(one(&out, BOB).method(), Some(Method::Ack));
    assert!(to(&out, ALICE).is_empty(), "487 already sent to the caller");
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn cancel_before_any_provisional_waits_for_one() {
    let mut h = Harness::new();
    let inv_text = invite("cearly", "");
    let out = h.send(ALICE, &inv_text);
    let b_inv = one(&out, BOB);
    let cancel = inv_text.replacen("INVITE sip", "CANCEL sip", 1).replace("CSeq: 10 INVITE", "CSeq: 10 CANCEL");
    let cancel = cancel.split("Content-Type").next().unwrap().to_string() + "Content-Length: 0\n\n";
    let out = h.send(ALICE, &cancel);
    assert!(to(&out, BOB).iter().all(|m| m.method() != Some(Method::Cancel)), "no CANCEL before a provisional");
    let out = h.send(BOB, &response_to(&b_inv, 180, "bt", ""));
    assert_eq!(one(&out, BOB).method(), Some(Method::Cancel));
    assert!(to(&out, ALICE).is_empty(), "180 not relayed after the caller cancelled");
}

#[test]
fn no_answer_times_out_with_408() {
    let mut h = Harness::new();
    let out = h.send(ALICE, &invite("ctimeout", ""));
    one(&out, BOB);
    let out = h.advance(Duration::from_secs(33));
    let retrans = to(&out, BOB).len();
    assert_eq!(retrans, 6, "Timer A: 6 retransmissions before Timer B");
    let final_ = to(&out, ALICE).into_iter().find(|m| m.status().is_some_and(|c| c >= 200)).unwrap();
    assert_eq!(final_.status(), Some(408));
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn timer_c_cancels_a_call_that_rings_forever() {
    let mut h = Harness::new();
    let out = h.send(ALICE, &invite("cring", ""));
    let b_inv = one(&out, BOB);
    h.send(BOB, &response_to(&b_inv, 180, "bt", ""));
    let out = h.advance(Duration::from_secs(181));
    assert!(to(&out, ALICE).iter().any(|m| m.status() == Some(408)));
    assert!(to(&out, BOB).iter().any(|m| m.method() == Some(Method::Cancel)));
    // The callee never answers even the CANCEL: the call is still forgotten.
    h.advance(Duration::from_secs(70));
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn bye_from_callee_and_reinvite_hold() {
    let mut h = Harness::new();
    let (b_inv, ok) = established(&mut h);
    let b_call_id = String::from_utf8_lossy(b_inv.call_id().unwrap()).into_owned();
    let from_b = format!("{};tag=bt", hv(&b_inv, HeaderName::To));
    let to_b = hv(&b_inv, HeaderName::From);
    // Callee puts the call on hold with a re-INVITE.
    let out =
        h.send(BOB, &in_dialog("INVITE", BOB, &from_b, &to_b, &b_call_id, 1, "Contact: <sip:bob@127.0.0.1:5002>\n"));
    assert!(to(&out, BOB).iter().any(|m| m.status() == Some(100)));
    let reinv = one(&out, ALICE);
    assert_eq!(reinv.call_id(), Some(&b"call-1@alice"[..]));
    assert_eq!(reinv.request_uri(), format!("sip:alice@{ALICE}").as_bytes());
    assert_eq!(reinv.from_tag(), ok.to_tag());
    // Caller tries its own re-INVITE meanwhile: glare.
    let out = h.send(
        ALICE,
        &in_dialog("INVITE", ALICE, &hv(&ok, HeaderName::From), &hv(&ok, HeaderName::To), "call-1@alice", 12, ""),
    );
    assert_eq!(one(&out, ALICE).status(), Some(491));
    let out = h.send(ALICE, &response_from(ALICE, &reinv, 200, "", ""));
    let ok2 = one(&out, BOB);
    assert_eq!(ok2.status(), Some(200));
    assert_eq!(ok2.cseq().unwrap().num, 1);
    let out = h.send(BOB, &in_dialog("ACK", BOB, &from_b, &to_b, &b_call_id, 1, ""));
    let ack = one(&out, ALICE);
    assert_eq!(ack.cseq().unwrap().num, reinv.cseq().unwrap().num);
    // Callee hangs up.
    let out = h.send(BOB, &in_dialog("BYE", BOB, &from_b, &to_b, &b_call_id, 2, ""));
    let bye = one(&out, ALICE);
    let out = h.send(ALICE, &response_from(ALICE, &bye, 200, "", ""));
    assert_eq!(one(&out, BOB).status(), Some(200));
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn reliable_provisional_and_prack_are_mapped() {
    let mut h = Harness::new();
    let out = h.send(ALICE, &invite("c100rel", "Supported: 100rel\n"));
    let b_inv = one(&out, BOB);
    let out = h.send(BOB, &response_to(&b_inv, 183, "bt", "Require: 100rel\nRSeq: 777\n"));
    let p = one(&out, ALICE);
    assert_eq!(p.header_value(HeaderName::RSeq), Some(&b"1"[..]));
    // Retransmitted by us until PRACK.
    let out = h.advance(Duration::from_millis(600));
    assert_eq!(to(&out, ALICE).len(), 1);
    let out = h.send(
        ALICE,
        &in_dialog(
            "PRACK",
            ALICE,
            &hv(&p, HeaderName::From),
            &hv(&p, HeaderName::To),
            "c100rel",
            11,
            "RAck: 1 10 INVITE\n",
        ),
    );
    let prack = one(&out, BOB);
    assert_eq!(prack.header_value(HeaderName::RAck), Some(&b"777 1 INVITE"[..]));
    assert_eq!(prack.to_tag(), Some(&b"bt"[..]));
    let out = h.send(BOB, &response_to(&prack, 200, "", ""));
    assert_eq!(one(&out, ALICE).cseq().unwrap().method, Method::Prack);
    let out = h.advance(Duration::from_secs(5));
    assert!(to(&out, ALICE).is_empty(), "no more 183 retransmissions after PRACK");
}

#[test]
fn missing_ack_ends_the_call_with_bye_both_ways() {
    let mut h = Harness::new();
    let out = h.send(ALICE, &invite("cnoack", ""));
    let b_inv = one(&out, BOB);
    h.send(BOB, &response_to(&b_inv, 200, "bt", ""));
    let out = h.advance(Duration::from_secs(33));
    assert!(to(&out, ALICE).iter().filter(|m| m.status() == Some(200)).count() >= 5, "2xx retransmitted");
    assert!(to(&out, ALICE).iter().any(|m| m.method() == Some(Method::Bye)));
    assert!(to(&out, BOB).iter().any(|m| m.method() == Some(Method::Bye)));
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn local_replies() {
    let mut h = Harness::new();
    let ping = format!("OPTIONS sip:{SBC} SIP/2.0\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKp\nMax-Forwards: 0\nFrom: <sip:mon@x>;tag=1\nTo: <sip:{SBC}>\nCall-ID: ping1\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n");
    let out = h.send(ALICE, &ping);
    let ok = one(&out, ALICE);
    assert_eq!(ok.status(), Some(200));
    assert!(ok.header_value(HeaderName::Other).is_none() || ok.other_header("Allow").is_some());

    let out = h.send(ALICE, &invite("cmf", "").replace("Max-Forwards: 70", "Max-Forwards: 0"));
    assert_eq!(one(&out, ALICE).status(), Some(483));

    // A request that comes back to us with a Call-ID we generated is a loop.
    let out = h.send(ALICE, &invite("first", ""));
    let b_inv = one(&out, BOB);
    let looped = invite(std::str::from_utf8(b_inv.call_id().unwrap()).unwrap(), "");
    let out = h.send(ALICE, &looped);
    assert_eq!(one(&out, ALICE).status(), Some(482));

    let out = h.send(ALICE, &invite("c415", "").replace("application/sdp", "application/unknownformat"));
    assert_eq!(one(&out, ALICE).status(), Some(415));

    h.engine.set_draining(true);
    let out = h.send(ALICE, &invite("cdrain", ""));
    assert_eq!(one(&out, ALICE).status(), Some(503));
}

#[test]
fn out_of_dialog_message_is_relayed_with_fresh_identifiers() {
    let mut h = Harness::new();
    let msg = format!("MESSAGE sip:bob@{BOB} SIP/2.0\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKm1\nMax-Forwards: 70\nFrom: <sip:alice@x>;tag=mf\nTo: <sip:bob@y>\nCall-ID: msg1\nCSeq: 5 MESSAGE\nContent-Type: text/plain\nContent-Length: 5\n\nhello");
    let out = h.send(ALICE, &msg);
    let b = one(&out, BOB);
    assert_ne!(b.call_id(), Some(&b"msg1"[..]));
    assert_eq!(b.body(), b"hello");
    assert_eq!(b.values(HeaderName::Via).count(), 1);
    let out = h.send(BOB, &response_to(&b, 202, "bt", ""));
    let r = one(&out, ALICE);
    assert_eq!(r.status(), Some(202));
    assert_eq!(r.call_id(), Some(&b"msg1"[..]));
    assert_eq!(r.cseq().unwrap().num, 5);
    assert!(r.to_tag().is_some());
}

#[test]
fn unknown_dialog_gets_481_and_stray_responses_are_dropped() {
    let mut h = Harness::new();
    let out = h.send(ALICE, &in_dialog("BYE", ALICE, "<sip:a@x>;tag=1", "<sip:b@y>;tag=nope", "gone", 3, ""));
    assert_eq!(one(&out, ALICE).status(), Some(481));
    let stray = format!("SIP/2.0 200 OK\nVia: SIP/2.0/UDP {SBC};branch=z9hG4bKsbc00deadbeef\nFrom: <sip:a@x>;tag=1\nTo: <sip:b@y>;tag=2\nCall-ID: x\nCSeq: 1 INVITE\nContent-Length: 0\n\n");
    let out = h.send(BOB, &stray);
    assert!(out.is_empty());
    assert_eq!(h.engine.stats.get(Counter::Drops), 1);
}

/// Ended calls leave nothing behind: no transaction, dialog, reserved Call-ID, and no timer
/// entry beyond a small constant (stale deadlines are compacted away).
#[test]
fn thousands_of_calls_leave_no_state_behind() {
    let mut h = Harness::new();
    for i in 0..3000 {
        let cid = format!("many-{i}");
        let out = h.send(ALICE, &invite(&cid, ""));
        let b_inv = one(&out, BOB);
        let out = h.send(BOB, &response_to(&b_inv, 200, "bt", ""));
        let ok = one(&out, ALICE);
        let from = hv(&ok, HeaderName::From);
        let to_hdr = hv(&ok, HeaderName::To);
        h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, &cid, 10, ""));
        let out = h.send(ALICE, &in_dialog("BYE", ALICE, &from, &to_hdr, &cid, 11, ""));
        let bye = one(&out, BOB);
        h.send(BOB, &response_to(&bye, 200, "", ""));
        h.advance(Duration::from_millis(10));
    }
    h.advance(Duration::from_secs(40));
    let e = &h.engine;
    assert_eq!((e.txs.len(), e.tx_keys.len(), e.calls.len(), e.dialogs.len(), e.own_call_ids.len()), (0, 0, 0, 0, 0));
    // Each ended call left a 12 h max-duration deadline behind; compaction keeps the heap small.
    assert!(e.timers.len() <= TIMER_COMPACT_FLOOR * 2 + 8, "timer heap holds {} entries", e.timers.len());
}

fn cancel_for_invite(inv_text: &str) -> String {
    let cancel = inv_text.replacen("INVITE sip", "CANCEL sip", 1).replace("CSeq: 10 INVITE", "CSeq: 10 CANCEL");
    cancel.split("Content-Type").next().unwrap().to_string() + "Content-Length: 0\n\n"
}

#[test]
fn a_200_crossing_the_cancel_is_acked_and_hung_up() {
    let mut h = Harness::new();
    let inv_text = invite("ccross", "");
    let out = h.send(ALICE, &inv_text);
    let b_inv = one(&out, BOB);
    h.send(BOB, &response_to(&b_inv, 180, "bt", ""));
    h.send(ALICE, &cancel_for_invite(&inv_text));
    let out = h.send(BOB, &response_to(&b_inv, 200, "bt", ""));
    let to_b = to(&out, BOB);
    assert!(to_b.iter().any(|m| m.method() == Some(Method::Ack) && m.to_tag() == Some(&b"bt"[..])), "{to_b:#?}");
    assert!(to_b.iter().any(|m| m.method() == Some(Method::Bye) && m.to_tag() == Some(&b"bt"[..])));
    assert!(to(&out, ALICE).is_empty(), "the caller already has its 487");
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn bye_on_an_early_dialog_closes_both_invites() {
    let mut h = Harness::new();
    let out = h.send(ALICE, &invite("cearlybye", ""));
    let b_inv = one(&out, BOB);
    let out = h.send(BOB, &response_to(&b_inv, 180, "bt", ""));
    let ringing = one(&out, ALICE);
    let out = h.send(
        ALICE,
        &in_dialog("BYE", ALICE, &hv(&ringing, HeaderName::From), &hv(&ringing, HeaderName::To), "cearlybye", 11, ""),
    );
    let bye = one(&out, BOB);
    let out = h.send(BOB, &response_to(&bye, 200, "", ""));
    assert!(to(&out, ALICE).iter().any(|m| m.status() == Some(487)), "the caller's INVITE is answered");
    assert!(to(&out, BOB).iter().any(|m| m.method() == Some(Method::Cancel)), "the callee's INVITE is cancelled");
    h.send(BOB, &response_to(&b_inv, 487, "bt", ""));
    h.advance(Duration::from_secs(40));
    assert!(
        h.engine.is_idle() && h.engine.active_transactions() == 0,
        "nothing left: {}",
        h.engine.active_transactions()
    );
}

#[test]
fn a_relayed_reinvite_that_only_rings_is_ended_by_timer_c() {
    let mut h = Harness::new();
    let (_, ok) = established(&mut h);
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    let out = h.send(ALICE, &in_dialog("INVITE", ALICE, &from, &to_hdr, "call-1@alice", 12, ""));
    let reinv = one(&out, BOB);
    h.send(BOB, &response_from(BOB, &reinv, 180, "", ""));
    let out = h.advance(Duration::from_secs(182));
    assert!(to(&out, ALICE).iter().any(|m| m.status() == Some(408)));
    assert!(to(&out, BOB).iter().any(|m| m.method() == Some(Method::Cancel)));
    // The offer is no longer pending: a new re-INVITE is relayed, not refused.
    let out = h.send(ALICE, &in_dialog("INVITE", ALICE, &from, &to_hdr, "call-1@alice", 13, ""));
    assert_eq!(one(&out, BOB).method(), Some(Method::Invite));
}

#[test]
fn rfc2543_ack_without_magic_cookie_reaches_the_callee() {
    let mut h = Harness::new();
    let text = invite("c2543", "").replace("branch=z9hG4bKc2543;rport", "branch=oldstyle");
    let out = h.send(ALICE, &text);
    let b_inv = one(&out, BOB);
    let out = h.send(BOB, &response_to(&b_inv, 200, "bt", ""));
    let ok = one(&out, ALICE);
    let ack = format!(
        "ACK sip:{SBC} SIP/2.0\nVia: SIP/2.0/UDP {ALICE};branch=oldstyle\nMax-Forwards: 70\nFrom: {}\nTo: {}\nCall-ID: c2543\nCSeq: 10 ACK\nContent-Length: 0\n\n",
        hv(&ok, HeaderName::From),
        hv(&ok, HeaderName::To)
    );
    let out = h.send(ALICE, &ack);
    assert_eq!(one(&out, BOB).method(), Some(Method::Ack));
}

#[test]
fn a_second_fork_answering_is_acked_and_hung_up() {
    let mut h = Harness::new();
    let (b_inv, _) = established(&mut h);
    let out = h.send(BOB, &response_to(&b_inv, 200, "fork2", ""));
    let to_b = to(&out, BOB);
    assert!(to_b.iter().any(|m| m.method() == Some(Method::Ack) && m.to_tag() == Some(&b"fork2"[..])));
    assert!(to_b.iter().any(|m| m.method() == Some(Method::Bye) && m.to_tag() == Some(&b"fork2"[..])));
    assert!(to(&out, ALICE).is_empty());
    assert_eq!(h.engine.active_calls(), 1, "the answered call goes on");
}

#[test]
fn reinvite_is_relayed_without_100rel_and_dialog_headers_stay_on_their_leg() {
    let mut h = Harness::new();
    let (_, ok) = established(&mut h);
    let extra =
        "Supported: timer, 100rel\nReplaces: call-1@alice;to-tag=x;from-tag=y\nPath: <sip:edge.intern.example;lr>\n";
    let out = h.send(
        ALICE,
        &in_dialog("INVITE", ALICE, &hv(&ok, HeaderName::From), &hv(&ok, HeaderName::To), "call-1@alice", 12, extra),
    );
    let reinv = one(&out, BOB);
    assert_eq!(reinv.header_value(HeaderName::Supported), Some(&b"timer"[..]));
    assert!(reinv.header(HeaderName::Replaces).is_none());
    assert!(reinv.header(HeaderName::Path).is_none());
}

#[test]
fn an_undeliverable_answer_to_the_caller_hangs_up_the_callee() {
    let mut h = Harness::new();
    let out = h.send(ALICE, &invite("cunreach", ""));
    let b_inv = one(&out, BOB);
    // Deliver the 200 by hand to learn the transaction it belongs to, then fail it.
    let msg = Message::parse(Bytes::from(response_to(&b_inv, 200, "bt", "").replace('\n', "\r\n"))).unwrap();
    let src = Source { transport: Transport::Udp, local: 0, remote: addr(BOB), conn: None };
    h.engine.handle_message(h.now, msg, src);
    let mut a_tx = None;
    while let Some(o) = h.engine.poll_output() {
        if let Output::Transmit { dest, tx, .. } = o {
            if dest.peer == Peer::Addr(addr(ALICE)) {
                a_tx = tx;
            }
        }
    }
    h.engine.handle_transport_error(h.now, a_tx.expect("the 200 went to the caller through its transaction"));
    let out = h.drain();
    assert!(to(&out, BOB).iter().any(|m| m.method() == Some(Method::Bye)), "{out:#?}");
    assert_eq!(h.engine.active_calls(), 0);
}

/// Finished transactions shrink to tombstones that still answer retransmissions correctly.
#[test]
fn finished_transactions_still_absorb_retransmissions() {
    let mut h = Harness::new();
    let (_, ok) = established(&mut h);
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    let bye_text = in_dialog("BYE", ALICE, &from, &to_hdr, "call-1@alice", 11, "");
    let out = h.send(ALICE, &bye_text);
    let bye = one(&out, BOB);
    h.send(BOB, &response_to(&bye, 200, "", ""));
    // The caller did not get our 200 and sends its BYE again: the same 200, nothing relayed.
    let out = h.send(ALICE, &bye_text);
    assert_eq!(one(&out, ALICE).status(), Some(200));
    assert!(to(&out, BOB).is_empty());
    // A retransmitted 486 gets the ACK again.
    let out = h.send(ALICE, &invite("cbusy2", ""));
    let b_inv = one(&out, BOB);
    h.send(BOB, &response_to(&b_inv, 486, "bt", ""));
    let out = h.send(BOB, &response_to(&b_inv, 486, "bt", ""));
    assert_eq!(one(&out, BOB).method(), Some(Method::Ack));
    assert!(to(&out, ALICE).is_empty());
    h.advance(Duration::from_secs(40));
    assert_eq!(h.engine.active_transactions(), 0);
}

#[test]
fn subscription_dialogs_carry_their_notifies_both_ways() {
    let mut h = Harness::new();
    let sub = format!(
        "SUBSCRIBE sip:bob@{BOB} SIP/2.0\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKsub1\nMax-Forwards: 70\nFrom: <sip:alice@atlanta.example>;tag=as\nTo: <sip:bob@biloxi.example>\nCall-ID: sub-1\nCSeq: 1 SUBSCRIBE\nContact: <sip:alice@{ALICE}>\nEvent: presence\nExpires: 600\nContent-Length: 0\n\n"
    );
    let out = h.send(ALICE, &sub);
    let b_sub = one(&out, BOB);
    assert_ne!(b_sub.call_id(), Some(&b"sub-1"[..]));
    assert_eq!(b_sub.contact().unwrap().uri, format!("sip:{SBC}").as_bytes());
    // The notifier's first NOTIFY may overtake its 200.
    let b_call_id = String::from_utf8_lossy(b_sub.call_id().unwrap()).into_owned();
    let notify = |state: &str, cseq: u32| {
        in_dialog(
            "NOTIFY",
            BOB,
            &format!("{};tag=bt", hv(&b_sub, HeaderName::To)),
            &hv(&b_sub, HeaderName::From),
            &b_call_id,
            cseq,
            &format!("Event: presence\nSubscription-State: {state}\nContact: <sip:bob@{BOB}>\n"),
        )
    };
    let out = h.send(BOB, &notify("active;expires=600", 1));
    let a_notify = one(&out, ALICE);
    assert_eq!(a_notify.call_id(), Some(&b"sub-1"[..]));
    assert_eq!(a_notify.to_tag(), Some(&b"as"[..]));
    assert_eq!(a_notify.request_uri(), format!("sip:alice@{ALICE}").as_bytes());
    let out = h.send(ALICE, &response_from(ALICE, &a_notify, 200, "", ""));
    assert_eq!(one(&out, BOB).status(), Some(200));
    let out = h.send(BOB, &response_to(&b_sub, 200, "bt", "Expires: 600\n"));
    let ok = one(&out, ALICE);
    assert_eq!(ok.to_tag(), a_notify.from_tag(), "one A-leg tag for the 200 and the NOTIFYs");
    // The final NOTIFY ends the pair once answered.
    let out = h.send(BOB, &notify("terminated;reason=timeout", 2));
    let last = one(&out, ALICE);
    h.send(ALICE, &response_from(ALICE, &last, 200, "", ""));
    assert_eq!(h.engine.active_calls(), 0);
}

/// A transfer's NOTIFY (Subscription-State: terminated) inside a call does not end the call.
#[test]
fn refer_notify_inside_a_call_leaves_the_call_up() {
    let mut h = Harness::new();
    let (b_inv, ok) = established(&mut h);
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    let out = h.send(
        ALICE,
        &in_dialog("REFER", ALICE, &from, &to_hdr, "call-1@alice", 11, "Refer-To: <sip:carol@example.com>\n"),
    );
    let refer = one(&out, BOB);
    h.send(BOB, &response_from(BOB, &refer, 202, "", ""));
    let b_call_id = String::from_utf8_lossy(b_inv.call_id().unwrap()).into_owned();
    let notify = in_dialog(
        "NOTIFY",
        BOB,
        &format!("{};tag=bt", hv(&b_inv, HeaderName::To)),
        &hv(&b_inv, HeaderName::From),
        &b_call_id,
        5,
        "Event: refer\nSubscription-State: terminated;reason=noresource\n",
    );
    let out = h.send(BOB, &notify);
    let a_notify = one(&out, ALICE);
    h.send(ALICE, &response_from(ALICE, &a_notify, 200, "", ""));
    assert_eq!(h.engine.active_calls(), 1, "the call survives its transfer subscription");
}

/// After Timer C gave up on a relayed re-INVITE, a 2xx that comes anyway is ACKed (the call
/// goes on), and a premature ACK from the caller is not taken for one.
#[test]
fn late_answer_after_timer_c_and_premature_ack() {
    let mut h = Harness::new();
    let (_, ok) = established(&mut h);
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    let out = h.send(ALICE, &in_dialog("INVITE", ALICE, &from, &to_hdr, "call-1@alice", 12, ""));
    let reinv = one(&out, BOB);
    // An ACK before any 2xx: dropped, not relayed.
    let out = h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, "call-1@alice", 12, ""));
    assert!(to(&out, BOB).is_empty());
    h.send(BOB, &response_from(BOB, &reinv, 180, "", ""));
    let out = h.advance(Duration::from_secs(182));
    assert!(to(&out, ALICE).iter().any(|m| m.status() == Some(408)));
    let out = h.send(BOB, &response_from(BOB, &reinv, 200, "", ""));
    let to_b = to(&out, BOB);
    assert!(to_b.iter().any(|m| m.method() == Some(Method::Ack)), "{to_b:#?}");
    assert!(to_b.iter().all(|m| m.method() != Some(Method::Bye)));
    assert!(to(&out, ALICE).is_empty());
    assert_eq!(h.engine.active_calls(), 1);
}

/// A long call refreshed by many re-INVITEs keeps a bounded ACK-mapping history and still maps
/// the latest exchange.
#[test]
fn many_reinvites_keep_bounded_state() {
    let mut h = Harness::new();
    let (_, ok) = established(&mut h);
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    for cseq in 12..40 {
        // A refresh every 200 ms: within the dialog's rate (dialog_limits.rs).
        h.advance(Duration::from_millis(200));
        let out = h.send(ALICE, &in_dialog("INVITE", ALICE, &from, &to_hdr, "call-1@alice", cseq, ""));
        let reinv = one(&out, BOB);
        let out = h.send(BOB, &response_from(BOB, &reinv, 200, "", ""));
        assert_eq!(one(&out, ALICE).status(), Some(200));
        let out = h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, "call-1@alice", cseq, ""));
        assert_eq!(one(&out, BOB).cseq().unwrap().num, reinv.cseq().unwrap().num);
    }
    let call = h.engine.calls.values().next().unwrap();
    assert!(call.invite_relays.len() <= 4);
}

// ---- profiles applied on the wire ----

const REWRITE: &str = r#"
active_profile: ["$H(P-SBCProfile)", rewrite]
profiles:
  rewrite:
    RURI: "sip:$rU-x@$rd"
    From: "\"Anon\" <sip:anonymous@invalid>"
    To: "<sip:$rU@callee.example>"
    Call-ID: "$ci_leg2"
    append_headers: ["X-Src: $si", "X-Prof: $M($si=>map)"]
    append_headers_req: "X-Every: 1"
    aleg_append_headers_req: "X-To-Caller: 1"
    header_filter: blacklist
    header_list: [X-Custom]
    message_filter: blacklist
    message_list: [info]
    sdp_filter: whitelist
    sdpfilter_list: [pcma]
    reply_translations: "486=>603 Declined here"
  refuse:
    refuse_with: "403 Forbidden"
    append_headers: "Warning: 399 $rd \"not here\""
regex_maps:
  map: ["^127\\.0\\.0\\.1$=>local"]
"#;

fn invite_with_codecs(call_id: &str, extra: &str) -> String {
    invite_sdp(
        call_id,
        extra,
        "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 6000 RTP/AVP 0 8\na=rtpmap:0 PCMU/8000\na=rtpmap:8 PCMA/8000\n",
    )
}

#[test]
fn profile_rewrites_the_b_leg_request() {
    let mut h = Harness::with_yaml(REWRITE);
    let out = h.send(ALICE, &invite_with_codecs("p1@alice", "P-App-Param: x=1\n"));
    let b = one(&out, BOB);
    assert_eq!(b.request_uri(), format!("sip:bob-x@{BOB}").as_bytes());
    assert_eq!(hv(&b, HeaderName::From).split(";tag=").next(), Some("\"Anon\" <sip:anonymous@invalid>"));
    assert_eq!(hv(&b, HeaderName::To), "<sip:bob@callee.example>");
    assert_eq!(hv(&b, HeaderName::CallId), "p1@alice_leg2");
    assert_eq!(b.other_header("X-Src"), Some(&b"127.0.0.1"[..]));
    assert_eq!(b.other_header("X-Prof"), Some(&b"local"[..]));
    assert_eq!(b.other_header("X-Every"), Some(&b"1"[..]));
    assert_eq!(b.other_header("X-Custom"), None, "blacklisted");
    assert_eq!(b.other_header("P-App-Param"), None, "control headers stay at the SBC");
    let body = String::from_utf8_lossy(b.body()).into_owned();
    assert!(body.contains("m=audio 6000 RTP/AVP 8\r\n") && !body.contains("PCMU"), "{body}");
    assert_eq!(b.header_value(HeaderName::ContentLength), Some(body.len().to_string().as_bytes()));

    // Replies are translated; the class never changes.
    let out = h.send(BOB, &response_to(&b, 486, "bt", ""));
    let busy = one(&out, ALICE);
    assert_eq!((busy.status(), busy.reason()), (Some(603), &b"Declined here"[..]));
}

#[test]
fn profile_filters_in_dialog_methods_and_appends_per_leg() {
    let mut h = Harness::with_yaml(REWRITE);
    let out = h.send(ALICE, &invite_with_codecs("p2@alice", ""));
    let b = one(&out, BOB);
    let out = h.send(BOB, &response_to(&b, 200, "bt", ""));
    let ok = one(&out, ALICE);
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, "p2@alice", 10, ""));
    let out = h.send(ALICE, &in_dialog("INFO", ALICE, &from, &to_hdr, "p2@alice", 11, ""));
    let refused = one(&out, ALICE);
    assert_eq!(refused.status(), Some(405));
    assert!(refused.other_header("Allow").is_some_and(|a| a.starts_with(b"INVITE, ACK, BYE")));
    assert!(to(&out, BOB).is_empty(), "a filtered request is not relayed");
    // The callee hangs up: the BYE to the caller carries the A-leg headers only.
    let b_from = hv(&b, HeaderName::To) + ";tag=bt";
    let b_to = hv(&b, HeaderName::From);
    let out = h.send(BOB, &in_dialog("BYE", BOB, &b_from, &b_to, "p2@alice_leg2", 1, ""));
    let bye = one(&out, ALICE);
    assert_eq!(bye.other_header("X-To-Caller"), Some(&b"1"[..]));
    assert_eq!(bye.other_header("X-Every"), None);
}

#[test]
fn profile_selection_refusal_and_unknown_profile() {
    let mut h = Harness::with_yaml(REWRITE);
    let out = h.send(ALICE, &invite("p3@alice", "P-SBCProfile: refuse\n"));
    let r = one(&out, ALICE);
    assert_eq!((r.status(), r.reason()), (Some(403), &b"Forbidden"[..]));
    assert_eq!(r.other_header("Warning"), Some(format!("399 {BOB} \"not here\"").as_bytes()));
    assert!(to(&out, BOB).is_empty());
    let out = h.send(ALICE, &invite("p4@alice", "P-SBCProfile: nonesuch\n"));
    assert_eq!(one(&out, ALICE).status(), Some(500), "an unknown name does not fall through");
}

#[test]
fn codec_filter_leaving_nothing_answers_488() {
    let mut h = Harness::with_yaml(REWRITE);
    // The default test offer has PCMU only; the profile keeps PCMA only.
    let out = h.send(ALICE, &invite("p5@alice", ""));
    let r = to(&out, ALICE);
    assert_eq!(r.last().and_then(Message::status), Some(488));
    assert!(to(&out, BOB).is_empty());
}

#[test]
fn reload_does_not_touch_running_calls() {
    let mut h = Harness::with_yaml(REWRITE);
    let out = h.send(ALICE, &invite_with_codecs("p6@alice", ""));
    let b = one(&out, BOB);
    // Swap in a transparent snapshot: the running call keeps its reply translation.
    let fresh = profiles::config::Config::from_yaml("", "empty.yaml").unwrap().profiles;
    h.engine.config().profiles.replace(fresh).unwrap();
    let out = h.send(BOB, &response_to(&b, 486, "bt", ""));
    assert_eq!(one(&out, ALICE).status(), Some(603));
    // A new call uses the new snapshot: no rewriting, no filtering.
    let out = h.send(ALICE, &invite("p7@alice", ""));
    let b2 = one(&out, BOB);
    assert_eq!(b2.request_uri(), format!("sip:bob@{BOB}").as_bytes());
    assert_eq!(b2.other_header("X-Custom"), Some(&b"keep  me"[..]));
}

#[test]
fn next_hop_and_outbound_proxy() {
    let yaml = format!(
        "active_profile: p\nprofiles:\n  p:\n    next_hop: \"{CAROL}\"\n    outbound_proxy: \"sip:proxy.example\"\n"
    );
    let mut h = Harness::with_yaml(&yaml);
    let out = h.send(ALICE, &invite("p8@alice", ""));
    let b = one(&out, CAROL);
    assert_eq!(b.request_uri(), format!("sip:bob@{BOB}").as_bytes(), "R-URI kept, sent to the next hop");
    assert_eq!(hv(&b, HeaderName::Route), "<sip:proxy.example;lr>");
}

#[test]
fn next_hop_alternatives_take_over_on_503_and_timeout() {
    // (The TCP alternative is skipped: this SBC has no TCP socket.)
    let yaml = format!(
        "active_profile: p\nprofiles:\n  p:\n    next_hop: \"{BOB}, 127.0.0.1:5009/tcp, {CAROL}, 127.0.0.1:5004\"\n"
    );
    let mut h = Harness::with_yaml(&yaml);
    let out = h.send(ALICE, &invite("f1@alice", ""));
    let first = one(&out, BOB);
    // The first hop is overloaded: the same dialog goes to the second, with the next CSeq.
    let out = h.send(BOB, &response_to(&first, 503, "", ""));
    assert!(to(&out, ALICE).iter().all(|m| m.status() != Some(503)), "the caller does not see the 503");
    let second = one(&out, CAROL);
    assert_eq!(second.call_id(), first.call_id());
    assert_eq!(second.from_tag(), first.from_tag());
    assert_eq!(second.cseq().unwrap().num, first.cseq().unwrap().num + 1);
    assert_ne!(second.top_via().unwrap().branch(), first.top_via().unwrap().branch());
    // The second never answers: after Timer B the third is tried.
    let out = h.advance(Duration::from_secs(33));
    // (with its retransmissions, as for any INVITE over UDP)
    let third = to(&out, "127.0.0.1:5004").into_iter().next().expect("INVITE to the third hop");
    assert_eq!(third.cseq().unwrap().num, first.cseq().unwrap().num + 2);
    // The third answers: the call is up with it.
    let out = h.send("127.0.0.1:5004", &response_to(&third, 200, "ct", ""));
    assert_eq!(one(&out, ALICE).status(), Some(200));
}

#[test]
fn last_next_hop_failure_reaches_the_caller() {
    let yaml = format!("active_profile: p\nprofiles:\n  p:\n    next_hop: \"{BOB}, {CAROL}\"\n");
    let mut h = Harness::with_yaml(&yaml);
    let out = h.send(ALICE, &invite("f2@alice", ""));
    let first = one(&out, BOB);
    let out = h.send(BOB, &response_to(&first, 503, "", ""));
    let second = one(&out, CAROL);
    let out = h.send(CAROL, &response_to(&second, 503, "", ""));
    assert_eq!(to(&out, ALICE).last().and_then(Message::status), Some(503));
}

#[test]
fn transparent_dialog_ids_cross_the_sbc() {
    let mut h = Harness::with_yaml("active_profile: p\nprofiles:\n  p: { transparent_dlg_id: yes }\n");
    let out = h.send(ALICE, &invite("t1@alice", ""));
    let b = one(&out, BOB);
    assert_eq!(b.call_id(), Some(&b"t1@alice"[..]));
    assert_eq!(b.from_tag(), Some(&b"at"[..]));
    assert_eq!(b.cseq().unwrap().num, 10);
    let out = h.send(BOB, &response_to(&b, 180, "bt", ""));
    let ringing = one(&out, ALICE);
    assert_eq!(ringing.to_tag(), Some(&b"bt"[..]), "the callee's tag reaches the caller");
    let out = h.send(BOB, &response_to(&b, 200, "bt", ""));
    let ok = one(&out, ALICE);
    assert_eq!(ok.to_tag(), Some(&b"bt"[..]));
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    let out = h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, "t1@alice", 10, ""));
    assert_eq!(one(&out, BOB).cseq().unwrap().num, 10);
    // The caller hangs up with the identifiers it saw; the callee gets the same ones.
    let out = h.send(ALICE, &in_dialog("BYE", ALICE, &from, &to_hdr, "t1@alice", 11, ""));
    let bye = one(&out, BOB);
    assert_eq!(
        (bye.call_id(), bye.from_tag(), bye.to_tag()),
        (Some(&b"t1@alice"[..]), Some(&b"at"[..]), Some(&b"bt"[..]))
    );
    let out = h.send(BOB, &response_to(&bye, 200, "", ""));
    assert_eq!(one(&out, ALICE).status(), Some(200));
}

#[test]
fn profile_routing_contact_and_sdp_options_on_the_wire() {
    let yaml = format!(
        r#"active_profile: p
profiles:
  p:
    RURI_host: "core.example.net:5090"
    next_hop: "{CAROL}"
    next_hop_1st_req: yes
    patch_ruri_next_hop: no
    outbound_proxy: "sip:edge.example.net"
    force_outbound_proxy: yes
    bleg_contact_user: "$fU"
    bleg_contact_params: "+sip.instance=x"
    aleg_contact_host: "sbc.example.net"
    aleg_next_hop: "{ALICE}"
    aleg_outbound_proxy: "sip:a-edge.example.net"
    aleg_force_outbound_proxy: yes
    media_filter: blacklist
    mediafilter_list: [video]
    sdp_alines_filter: blacklist
    sdp_alinesfilter_list: [ptime]
    sdp_anonymize: yes
    codec_preference: [pcma]
    aleg_sdp_filter: blacklist
    aleg_sdpfilter_list: [pcmu]
"#
    );
    let mut h = Harness::with_yaml(&yaml);
    let offer = "v=0\no=alice 7 7 IN IP4 127.0.0.1\ns=Talk\nu=http://x\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 6000 RTP/AVP 0 8\na=rtpmap:0 PCMU/8000\na=rtpmap:8 PCMA/8000\na=ptime:20\nm=video 6002 RTP/AVP 96\na=rtpmap:96 H264/90000\n";
    let out = h.send(ALICE, &invite_sdp("r1@alice", "", offer));
    let b = one(&out, CAROL);
    assert_eq!(b.request_uri(), b"sip:bob@core.example.net:5090");
    assert_eq!(hv(&b, HeaderName::Route), "<sip:edge.example.net;lr>");
    assert_eq!(hv(&b, HeaderName::Contact), format!("<sip:alice@{SBC}>;+sip.instance=x"));
    let body = String::from_utf8_lossy(b.body()).into_owned();
    assert!(body.contains("m=audio 6000 RTP/AVP 8 0\r\n"), "codec order: {body}");
    assert!(body.contains("m=video 0 RTP/AVP 96"), "video disabled: {body}");
    assert!(!body.contains("a=ptime"), "attribute filtered: {body}");
    assert!(body.contains("o=- 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc="), "anonymised: {body}");

    // The answer toward the caller: PCMU filtered by the A-side filter, our A-side Contact.
    let answer = "v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n";
    let ok_text = response_from(CAROL, &b, 200, "bt", "Content-Type: application/sdp\n")
        .replace("Content-Length: 0\n\n", &format!("Content-Length: {}\n\n{answer}", answer.len()));
    let out = h.send(CAROL, &ok_text);
    let ok = one(&out, ALICE);
    assert_eq!(hv(&ok, HeaderName::Contact), "<sip:sbc.example.net>");
    let body = String::from_utf8_lossy(ok.body()).into_owned();
    assert!(body.contains("m=audio 7000 RTP/AVP 8\r\n") && !body.contains("PCMU"), "{body}");

    // next_hop_1st_req: in-dialog requests no longer go to the next hop but, the proxy being
    // forced, to the proxy, its Route first and the callee's Contact as Request-URI.
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, "r1@alice", 10, ""));
    let out = h.send(ALICE, &in_dialog("INFO", ALICE, &from, &to_hdr, "r1@alice", 11, ""));
    let proxy = Peer::Host("edge.example.net".into(), 5060);
    let info = out.iter().find(|s| s.to == proxy).map(|s| s.msg.clone()).expect("INFO through the forced proxy");
    assert!(to(&out, CAROL).is_empty());
    assert_eq!(info.request_uri(), format!("sip:peer@{CAROL}").as_bytes());
    assert_eq!(hv(&info, HeaderName::Route), "<sip:edge.example.net;lr>");
    // Toward the caller: aleg_next_hop decides where, the forced A-side proxy is routed through.
    let b_from = hv(&b, HeaderName::To) + ";tag=bt";
    let b_to = hv(&b, HeaderName::From);
    let b_call_id = hv(&b, HeaderName::CallId);
    let out = h.send(CAROL, &in_dialog("BYE", CAROL, &b_from, &b_to, &b_call_id, 1, ""));
    let bye = one(&out, ALICE);
    assert_eq!(hv(&bye, HeaderName::Route), "<sip:a-edge.example.net;lr>");
}

#[test]
fn out_of_dialog_relay_applies_the_profile_both_ways() {
    let yaml = "active_profile: p\nprofiles:\n  p:\n    RURI: \"sip:relay-$rU@$rd\"\n    header_filter: blacklist\n    header_list: [X-Secret]\n    append_headers: \"X-Via-Sbc: $Rn\"\n    reply_translations: \"404=>480 Gone Away\"\n";
    let mut h = Harness::with_yaml(yaml);
    let msg = format!(
        "MESSAGE sip:bob@{BOB} SIP/2.0\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKm1\nMax-Forwards: 70\nFrom: <sip:alice@a>;tag=m1\nTo: <sip:bob@b>\nCall-ID: m1@alice\nCSeq: 1 MESSAGE\nX-Secret: s\nContent-Length: 0\n\n"
    );
    let out = h.send(ALICE, &msg);
    let relayed = one(&out, BOB);
    assert_eq!(relayed.request_uri(), format!("sip:relay-bob@{BOB}").as_bytes());
    assert_eq!(relayed.other_header("X-Secret"), None);
    assert_eq!(relayed.other_header("X-Via-Sbc"), Some(&b"default"[..]));
    let out = h.send(BOB, &response_to(&relayed, 404, "bt", "X-Secret: r\n"));
    let resp = one(&out, ALICE);
    assert_eq!((resp.status(), resp.reason()), (Some(480), &b"Gone Away"[..]));
    assert_eq!(resp.other_header("X-Secret"), None, "the filter applies to replies too");
}

#[test]
fn transparent_ids_fall_back_when_the_callers_tag_is_taken() {
    let mut h = Harness::with_yaml("active_profile: p\nprofiles:\n  p: { transparent_dlg_id: yes }\n");
    let out = h.send(ALICE, &invite("t2@alice", ""));
    let first = one(&out, BOB);
    assert_eq!(first.from_tag(), Some(&b"at"[..]));
    // A second call with the same From tag must not take over the first one's dialog.
    let out = h.send(ALICE, &invite("t3@alice", ""));
    let second = one(&out, BOB);
    assert_ne!(second.from_tag(), Some(&b"at"[..]));
    let out = h.send(BOB, &response_to(&first, 200, "b1", ""));
    assert_eq!(one(&out, ALICE).status(), Some(200));
}

// ---- call control ----

const CC_PROFILE: &str = r#"
active_profile: p
profiles:
  p:
    call_control: [limit, timer]
    limit_module: cc_pcalls
    limit_uuid: "$fU"
    timer_module: cc_call_timer
    timer_timer: "$H(X-Max)"
    RURI: "sip:$V(route::user)@$rd"
"#;

fn started(h: &Harness) -> (CallHandle, Vec<callcontrol::CcInstance>) {
    match h.cc.first() {
        Some(CcRequest::Start { call, chain, .. }) => (*call, chain.to_vec()),
        other => panic!("expected a Start, got {other:?}"),
    }
}

fn go(timer: Option<u64>, vars: &[(&str, &str)]) -> CcVerdict {
    CcVerdict::Continue {
        call_timer: timer.map(Duration::from_secs),
        vars: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        overrides: BTreeMap::new(),
    }
}

#[test]
fn call_control_parks_the_call_then_applies_timer_and_variables() {
    let mut h = Harness::with_yaml(CC_PROFILE);
    let out = h.send(ALICE, &invite("cc1@alice", "X-Max: 5\n"));
    assert_eq!(one(&out, ALICE).status(), Some(100));
    assert!(to(&out, BOB).is_empty(), "no B leg before the verdict");
    let (call, chain) = started(&h);
    assert_eq!(chain.len(), 2);
    assert_eq!((chain[0].module.as_str(), chain[0].params["uuid"].as_str()), ("cc_pcalls", "alice"));
    assert_eq!(chain[1].params["timer"], "5");

    let out = h.verdict(call, go(Some(5), &[("route::user", "routed")]));
    let b = one(&out, BOB);
    assert_eq!(b.request_uri(), format!("sip:routed@{BOB}").as_bytes(), "$V() set by a module");
    let out = h.send(BOB, &response_to(&b, 200, "bt", ""));
    let ok = one(&out, ALICE);
    assert!(matches!(h.cc.get(1), Some(CcRequest::Connect { call: c }) if *c == call));
    h.send(ALICE, &in_dialog("ACK", ALICE, &hv(&ok, HeaderName::From), &hv(&ok, HeaderName::To), "cc1@alice", 10, ""));
    // The call timer runs from the answer: both legs get BYE after 5 s.
    let out = h.advance(Duration::from_secs(5));
    assert_eq!(one(&out, ALICE).method(), Some(Method::Bye));
    assert_eq!(one(&out, BOB).method(), Some(Method::Bye));
    match h.cc.get(2) {
        Some(CcRequest::End { call: c, end }) => {
            assert_eq!(*c, call);
            assert_eq!((end.by, end.reason.as_str(), end.answered), (callcontrol::EndedBy::Sbc, "call_timer", true));
        }
        other => panic!("expected End, got {other:?}"),
    }
    assert_eq!(h.cc.len(), 3, "end is announced once");
}

#[test]
fn call_control_refusal_and_failure_answer_the_caller() {
    let mut h = Harness::with_yaml(CC_PROFILE);
    h.send(ALICE, &invite("cc2@alice", ""));
    let (call, _) = started(&h);
    let refuse = CcVerdict::Refuse(LocalReply::new(402, "Too Many Simultaneous Calls").with("X-Why", "limit"));
    let out = h.verdict(call, refuse);
    let r = one(&out, ALICE);
    assert_eq!((r.status(), r.other_header("X-Why")), (Some(402), Some(&b"limit"[..])));
    assert!(to(&out, BOB).is_empty());
    assert!(matches!(h.cc.last(), Some(CcRequest::End { end, .. }) if !end.answered && end.code == 402));

    let mut h = Harness::with_yaml(CC_PROFILE);
    h.send(ALICE, &invite("cc3@alice", ""));
    let (call, _) = started(&h);
    let out = h.verdict(call, CcVerdict::Failed(LocalReply::new(503, "Service Unavailable")));
    assert_eq!(one(&out, ALICE).status(), Some(503));
}

#[test]
fn cancel_while_call_control_runs() {
    let mut h = Harness::with_yaml(CC_PROFILE);
    let inv = invite("cc4@alice", "");
    h.send(ALICE, &inv);
    let (call, _) = started(&h);
    let cancel = format!(
        "CANCEL sip:bob@{BOB} SIP/2.0\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKcc4@alice;rport\nMax-Forwards: 70\nFrom: \"Alice\" <sip:alice@atlanta.example>;tag=at\nTo: <sip:bob@biloxi.example>\nCall-ID: cc4@alice\nCSeq: 10 CANCEL\nContent-Length: 0\n\n"
    );
    let out = h.send(ALICE, &cancel);
    let codes: Vec<_> = to(&out, ALICE).iter().filter_map(Message::status).collect();
    assert!(codes.contains(&200) && codes.contains(&487), "{codes:?}");
    assert!(matches!(h.cc.last(), Some(CcRequest::End { end, .. }) if end.by == callcontrol::EndedBy::Caller));
    // The verdict that arrives afterwards changes nothing.
    let out = h.verdict(call, go(None, &[]));
    assert!(out.is_empty());
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn call_control_overrides_replace_profile_options_literally() {
    let mut h = Harness::with_yaml(CC_PROFILE);
    h.send(ALICE, &invite("cc5@alice", ""));
    let (call, _) = started(&h);
    let overrides: BTreeMap<String, String> = [
        ("RURI".to_string(), format!("sip:$rU-literal@{BOB}")),
        ("To".to_string(), "<sip:other@x.example>".to_string()),
    ]
    .into_iter()
    .collect();
    let out = h.verdict(call, CcVerdict::Continue { call_timer: None, vars: BTreeMap::new(), overrides });
    let b = one(&out, BOB);
    assert_eq!(b.request_uri(), format!("sip:$rU-literal@{BOB}").as_bytes(), "never expanded");
    assert_eq!(hv(&b, HeaderName::To), "<sip:other@x.example>");
    // An override that fails the checks is a 500, like a bad expansion.
    let mut h = Harness::with_yaml(CC_PROFILE);
    h.send(ALICE, &invite("cc6@alice", ""));
    let (call, _) = started(&h);
    let bad: BTreeMap<String, String> = [("RURI".to_string(), "sip:a@b>,<sip:evil".to_string())].into_iter().collect();
    let out = h.verdict(call, CcVerdict::Continue { call_timer: None, vars: BTreeMap::new(), overrides: bad });
    assert_eq!(one(&out, ALICE).status(), Some(500));
}

#[test]
fn out_of_dialog_requests_wait_for_route_hooks() {
    let mut h = Harness::with_yaml(CC_PROFILE);
    let msg = format!(
        "MESSAGE sip:bob@{BOB} SIP/2.0\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKr1\nMax-Forwards: 70\nFrom: <sip:alice@a>;tag=r1\nTo: <sip:bob@b>\nCall-ID: r1@alice\nCSeq: 1 MESSAGE\nContent-Length: 0\n\n"
    );
    let out = h.send(ALICE, &msg);
    assert!(out.is_empty(), "nothing relayed or answered before the verdict");
    let Some(CcRequest::Route { call, chain, .. }) = h.cc.first().cloned() else {
        panic!("expected Route: {:?}", h.cc)
    };
    assert_eq!(chain.len(), 2);
    // A retransmission is absorbed meanwhile.
    assert!(h.send(ALICE, &msg).is_empty());
    let out = h.verdict(call, go(None, &[("route::user", "routed")]));
    assert_eq!(one(&out, BOB).request_uri(), format!("sip:routed@{BOB}").as_bytes());

    let mut h = Harness::with_yaml(CC_PROFILE);
    h.send(ALICE, &msg.replace("r1", "r2"));
    let Some(CcRequest::Route { call, .. }) = h.cc.first().cloned() else { panic!() };
    let out = h.verdict(call, CcVerdict::Refuse(LocalReply::new(403, "Forbidden")));
    assert_eq!(one(&out, ALICE).status(), Some(403));
}

#[test]
fn call_control_hears_in_call_requests_and_replies() {
    let mut h = Harness::with_yaml(CC_PROFILE);
    h.send(ALICE, &invite("ev1@alice", ""));
    let (call, _) = started(&h);
    let out = h.verdict(call, go(None, &[("route::user", "bob")]));
    let b = one(&out, BOB);
    let out = h.send(BOB, &response_to(&b, 200, "bt", ""));
    let ok = one(&out, ALICE);
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, "ev1@alice", 10, ""));
    let out = h.send(ALICE, &in_dialog("INFO", ALICE, &from, &to_hdr, "ev1@alice", 11, ""));
    let info = one(&out, BOB);
    h.send(BOB, &response_to(&info, 200, "", ""));
    let events: Vec<_> =
        h.cc.iter()
            .filter_map(|r| match r {
                CcRequest::Event { event, .. } => Some(event.clone()),
                _ => None,
            })
            .collect();
    assert_eq!(
        events,
        vec![
            callcontrol::LegEvent::Request { from: callcontrol::Party::Caller, method: "INFO".into() },
            callcontrol::LegEvent::Reply { from: callcontrol::Party::Callee, code: 200, method: "INFO".into() },
        ]
    );
}

// ---- RTP relay (the harness plays the relay: no sockets; time is virtual) ----

const RELAY_YAML: &str = "active_profile: relay\nprofiles:\n  relay:\n    enable_rtprelay: yes\n";

fn with_relay(ports: (u16, u16)) -> Harness {
    let mut h = Harness::with_yaml(RELAY_YAML);
    let book = rtp_relay::BookConfig {
        interfaces: vec![rtp_relay::MediaInterface {
            name: "default".into(),
            bind: "127.0.0.1".parse().unwrap(),
            advertise: Some("192.0.2.99".parse().unwrap()),
            port_min: ports.0,
            port_max: ports.1,
        }],
        max_streams: rtp_relay::session::DEFAULT_MAX_STREAMS,
        policy: None,
    };
    let mut cfg = h.engine.cfg.clone();
    cfg.media = Some(MediaSettings {
        book,
        shards: 1,
        timeout: Duration::from_secs(60),
        hold_timeout: Duration::from_secs(600),
    });
    h.engine = Engine::new(cfg, [7; 32]);
    h
}

fn with_sdp(msg: String, sdp: &str) -> String {
    let body = sdp.replace('\n', "\r\n");
    msg.replace(
        "Content-Length: 0\n\n",
        &format!("Content-Type: application/sdp\nContent-Length: {}\n\n{}", body.len(), sdp),
    )
}

fn sdp_port(m: &Message) -> u16 {
    let body = String::from_utf8_lossy(m.body()).to_string();
    let line = body.lines().find(|l| l.starts_with("m=audio")).expect("an audio m-line");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

const BOB_SDP: &str = "v=0\no=- 2 2 IN IP4 127.0.0.2\ns=-\nc=IN IP4 127.0.0.2\nt=0 0\nm=audio 7000 RTP/AVP 0\n";

#[test]
fn relayed_call_sdp_names_only_the_relay_and_silence_ends_it_with_bye_both_ways() {
    let mut h = with_relay((43000, 43099));
    let out = h.send(ALICE, &invite("media-1@alice", ""));
    let b_inv = one(&out, BOB);
    let offer = String::from_utf8_lossy(b_inv.body()).to_string();
    assert!(offer.contains("c=IN IP4 192.0.2.99\r\n"), "{offer}");
    assert!(!offer.contains("127.0.0.1"), "the caller's media address is hidden: {offer}");
    let b_port = sdp_port(&b_inv);
    assert!((43000..43100).contains(&b_port) && b_port.is_multiple_of(2));
    let out = h.send(BOB, &with_sdp(response_to(&b_inv, 200, "bt", ""), BOB_SDP));
    let ok = one(&out, ALICE);
    let answer = String::from_utf8_lossy(ok.body()).to_string();
    assert!(answer.contains("c=IN IP4 192.0.2.99\r\n") && !answer.contains("127.0.0.2"), "{answer}");
    let a_port = sdp_port(&ok);
    assert_ne!(a_port, b_port);
    assert_eq!(h.engine.media_ports_in_use(), 2);
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, "media-1@alice", 10, ""));
    // 59 s of silence: still up. At 60 s: BYE to both sides.
    assert!(h.advance(Duration::from_secs(59)).is_empty());
    let out = h.advance(Duration::from_millis(1100));
    for who in [ALICE, BOB] {
        let bye = to(&out, who).into_iter().find(|m| m.method() == Some(Method::Bye)).expect("a BYE each way");
        assert!(String::from_utf8_lossy(bye.bytes()).contains("text=\"media_timeout\""));
    }
    assert_eq!(h.engine.stats.get(Counter::MediaTimeouts), 1);
    assert_eq!(h.engine.active_calls(), 0);
    assert_eq!(h.engine.media_ports_in_use(), 0, "the relay closed the stream and the pairs came back");
}

/// Media the relay saw keeps a call up: the check at 60 s asks, the answer says a packet came
/// at 50 s, so the call lasts until 110 s of the last packet, not 60 s of the answer.
#[test]
fn reported_media_activity_keeps_the_call_up_until_the_relay_goes_silent() {
    let mut h = with_relay((43500, 43599));
    let out = h.send(ALICE, &invite("media-6@alice", ""));
    let b_inv = one(&out, BOB);
    let out = h.send(BOB, &with_sdp(response_to(&b_inv, 200, "bt", ""), BOB_SDP));
    let ok = one(&out, ALICE);
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, "media-6@alice", 10, ""));
    h.media_activity = Some(h.now + Duration::from_secs(50));
    assert!(!h.advance(Duration::from_secs(100)).iter().any(|s| s.msg.method() == Some(Method::Bye)));
    let out = h.advance(Duration::from_secs(15));
    assert!(out.iter().any(|s| s.msg.method() == Some(Method::Bye)), "60 s after the last packet");
    assert_eq!(h.engine.stats.get(Counter::MediaTimeouts), 1);
    assert_eq!(h.engine.media_ports_in_use(), 0);
}

/// Ports the relay cannot bind (another process holds one) fail the call that drew them: its
/// SDP already names them. The caller gets 503, the callee a CANCEL once it rings, and the
/// pairs go back.
#[test]
fn a_stream_the_relay_cannot_open_ends_its_call() {
    let mut h = with_relay((43600, 43699));
    h.media_fails = true;
    let out = h.send(ALICE, &invite("media-7@alice", ""));
    let answers: Vec<_> = to(&out, ALICE).into_iter().filter_map(|m| m.status()).collect();
    assert!(answers.contains(&503), "{answers:?}");
    assert_eq!(h.engine.counter(Counter::MediaAllocationFailures), 1);
    let b_inv = first(&out, BOB);
    h.send(BOB, &response_to(&b_inv, 180, "bt", ""));
    let out = h.send(BOB, &response_to(&b_inv, 487, "bt", ""));
    assert!(to(&out, ALICE).is_empty() || to(&out, ALICE).iter().all(|m| m.status() != Some(200)));
    h.advance(Duration::from_secs(40));
    assert_eq!(h.engine.active_calls(), 0);
    assert_eq!(h.engine.media_ports_in_use(), 0);
}

#[test]
fn a_held_call_waits_for_the_hold_timeout_and_a_relay_off_profile_leaves_sdp_alone() {
    let mut h = with_relay((43100, 43199));
    let (b_inv, ok) = {
        let out = h.send(ALICE, &invite("media-2@alice", ""));
        let b_inv = one(&out, BOB);
        let out = h.send(BOB, &with_sdp(response_to(&b_inv, 200, "bt", ""), BOB_SDP));
        (b_inv, one(&out, ALICE))
    };
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, "media-2@alice", 10, ""));
    // Bob puts the call on hold with a re-INVITE.
    let hold = BOB_SDP.replace("m=audio 7000 RTP/AVP 0\n", "m=audio 7000 RTP/AVP 0\na=sendonly\n");
    let b_from = hv(&b_inv, HeaderName::To).replace(">", ">;tag=bt");
    let b_to = hv(&b_inv, HeaderName::From);
    let b_cid = String::from_utf8_lossy(b_inv.call_id().unwrap()).to_string();
    let reinv =
        with_sdp(in_dialog("INVITE", BOB, &b_from, &b_to, &b_cid, 1, &format!("Contact: <sip:peer@{BOB}>\n")), &hold);
    let out = h.send(BOB, &reinv);
    let to_alice = to(&out, ALICE);
    let a_reinv = to_alice.iter().find(|m| m.method() == Some(Method::Invite)).expect("re-INVITE relayed");
    assert!(String::from_utf8_lossy(a_reinv.body()).contains("a=sendonly"));
    assert_eq!(sdp_port(a_reinv), sdp_port(&ok), "the same stream keeps its port");
    let out = h.send(ALICE, &with_sdp(response_from(ALICE, a_reinv, 200, "", ""), SDP));
    assert!(!to(&out, BOB).is_empty());
    h.send(BOB, &in_dialog("ACK", BOB, &b_from, &b_to, &b_cid, 1, ""));
    assert!(!h.advance(Duration::from_secs(120)).iter().any(|s| s.msg.method() == Some(Method::Bye)), "on hold: 600 s");
    let out = h.advance(Duration::from_secs(500));
    assert!(out.iter().any(|s| s.msg.method() == Some(Method::Bye)));

    // A profile without the relay: the SDP goes through untouched.
    let mut plain = Harness::new();
    let out = plain.send(ALICE, &invite("media-3@alice", ""));
    assert_eq!(one(&out, BOB).body(), SDP.replace('\n', "\r\n").as_bytes());
}

#[test]
fn no_media_ports_refuses_the_call_with_503_and_leaves_nothing_behind() {
    // One port pair on the interface; a relayed call needs one per leg.
    let mut h = with_relay((43200, 43201));
    let out = h.send(ALICE, &invite("media-4@alice", ""));
    let answers: Vec<_> = to(&out, ALICE).into_iter().filter_map(|m| m.status()).collect();
    assert!(answers.contains(&503), "{answers:?}");
    assert!(to(&out, BOB).is_empty(), "nothing goes to the callee");
    assert_eq!(h.engine.active_calls(), 0);
    assert_eq!(h.engine.counter(Counter::MediaAllocationFailures), 1);
    assert_eq!(h.engine.media_ports_in_use(), 0);
}

#[test]
fn p_msgflags_forces_symmetric_rtp_as_sems_reads_it() {
    let m = |v: &str| {
        Message::parse(Bytes::from(format!("OPTIONS sip:x SIP/2.0\r\nP-MsgFlags: {v}\r\nContent-Length: 0\r\n\r\n")))
            .unwrap()
    };
    // SEMS reads the hex digits least significant first: bit value 2 is in the first digit.
    assert!(media::msgflags_symmetric(&m("2")));
    assert!(media::msgflags_symmetric(&m("30")));
    assert!(!media::msgflags_symmetric(&m("1")));
    assert!(!media::msgflags_symmetric(&m("02")));
    assert!(!media::msgflags_symmetric(&m("zz")));
}

#[test]
fn sdp_inside_a_multipart_body_is_anchored_and_the_other_parts_kept() {
    let mut h = with_relay((43300, 43399));
    let body = "--b1\r\nContent-Type: application/isup;version=itu-t92+\r\n\r\nISUP-BYTES\r\n--b1\r\nContent-Type: application/sdp\r\n\r\nv=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n\r\n--b1--\r\n";
    let inv = invite("media-5@alice", "")
        .replace("Content-Type: application/sdp\n", "Content-Type: multipart/mixed;boundary=b1\n");
    let (head, _) = inv.split_once("Content-Length:").unwrap();
    let msg = Message::parse(Bytes::from(format!(
        "{}Content-Length: {}\r\n\r\n{body}",
        head.replace('\n', "\r\n"),
        body.len()
    )))
    .unwrap();
    let src = Source { transport: Transport::Udp, local: 0, remote: addr(ALICE), conn: None };
    h.engine.handle_message(h.now, msg, src);
    let b_inv = one(&h.drain(), BOB);
    let out = String::from_utf8_lossy(b_inv.body()).to_string();
    assert!(out.contains("ISUP-BYTES") && out.contains("c=IN IP4 192.0.2.99\r\n"), "{out}");
    assert!(!out.contains("m=audio 6000 "), "{out}");
    assert!(out.ends_with("\r\n--b1--\r\n"));
}

#[test]
fn a_call_with_nothing_relayed_is_not_timed_out() {
    let mut h = with_relay((43400, 43499));
    let msrp = "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=message 7394 TCP/MSRP *\n";
    let out = h.send(ALICE, &invite_sdp("media-6@alice", "", msrp));
    let b_inv = one(&out, BOB);
    assert!(String::from_utf8_lossy(b_inv.body()).contains("m=message 0 TCP/MSRP"), "TCP media is rejected");
    let out = h.send(BOB, &with_sdp(response_to(&b_inv, 200, "bt", ""), &msrp.replace("7394", "0")));
    let ok = one(&out, ALICE);
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, "media-6@alice", 10, ""));
    assert!(!h.advance(Duration::from_secs(300)).iter().any(|s| s.msg.method() == Some(Method::Bye)));
    assert_eq!(h.engine.active_calls(), 1);
}

mod access;

mod admission;

mod edge;

/// Calls whose profile evaluates alike share one set of rules (a held call costs a kilobyte
/// less); a profile that takes values from the request gives each call its own.
#[test]
fn calls_share_rules_only_when_their_profile_evaluates_alike() {
    let distinct_rules = |h: &Harness| {
        let mut ptrs: Vec<_> = h.engine.calls.values().map(|c| std::sync::Arc::as_ptr(&c.rules)).collect();
        ptrs.sort();
        ptrs.dedup();
        ptrs.len()
    };
    let mut transparent = Harness::new();
    for n in 0..3 {
        one(&transparent.send(ALICE, &invite(&format!("t{n}@alice"), "")), BOB);
    }
    assert_eq!((transparent.engine.calls.len(), distinct_rules(&transparent)), (3, 1));

    let mut rewriting = Harness::with_yaml(REWRITE);
    for n in 0..3 {
        one(&rewriting.send(ALICE, &invite_with_codecs(&format!("r{n}@alice"), "")), BOB);
    }
    // `Call-ID: $ci_leg2` differs per call.
    assert_eq!((rewriting.engine.calls.len(), distinct_rules(&rewriting)), (3, 3));
}
