//! RFC 3261 Table 4, encoded as tests with virtual time: every retransmission instant and every
//! wait timer of the four machines, over an unreliable and a reliable transport.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::sip::msg::Message;

const INVITE: &[u8] = b"INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
const OPTIONS: &[u8] = b"OPTIONS sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKdef\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: c2\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

fn msg(b: &[u8]) -> Message {
    Message::parse(Bytes::copy_from_slice(b)).unwrap()
}

fn response(code: u16, method: &str) -> Message {
    let s = format!(
        "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: c1\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    );
    msg(s.as_bytes())
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Runs a machine's timers until it has none left (or `until` passes), returning
/// (offset in ms, output kind) for every transmit and event.
macro_rules! run_timers {
    ($tx:expr, $t0:expr, $until:expr) => {{
        let mut seen = Vec::new();
        let mut out = Vec::new();
        while let Some(at) = $tx.poll_timeout() {
            if at > $t0 + $until {
                break;
            }
            $tx.handle_timeout(at, &mut out);
            for o in out.drain(..) {
                let kind = match o {
                    TxOutput::Transmit(_) => "tx",
                    TxOutput::Response(_) => "resp",
                    TxOutput::Timeout => "timeout",
                    TxOutput::Terminated => "terminated",
                };
                seen.push((ms(at - $t0), kind));
            }
        }
        seen
    }};
}

/// Virtual time starts at an arbitrary instant; only offsets from it matter.
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

fn cfg() -> TimerConfig {
    TimerConfig::default()
}

#[test]
fn table4_defaults() {
    let c = cfg();
    assert_eq!(ms(c.t1), 500);
    assert_eq!(ms(c.t2), 4000);
    assert_eq!(ms(c.t4), 5000);
    assert_eq!(ms(c.t1x64()), 32_000); // B, F, H, J
    assert_eq!(ms(c.timer_d(false)), 32_000);
    assert_eq!(ms(c.timer_d(true)), 0);
    assert_eq!(ms(c.t4_or_zero(false)), 5000); // I, K
    assert_eq!(ms(c.t4_or_zero(true)), 0);
}

#[test]
fn timer_a_doubles_and_timer_b_times_out() {
    let t0 = epoch();
    let mut out = Vec::new();
    let mut tx = ClientInvite::start(msg(INVITE), false, cfg(), t0, &mut out);
    assert!(matches!(out[0], TxOutput::Transmit(_)));
    let seen = run_timers!(tx, t0, Duration::from_secs(60));
    let tx_times: Vec<u64> = seen.iter().filter(|s| s.1 == "tx").map(|s| s.0).collect();
    assert_eq!(tx_times, vec![500, 1500, 3500, 7500, 15500, 31500]);
    assert!(seen.contains(&(32_000, "timeout")));
    assert!(seen.contains(&(32_000, "terminated")));
}

#[test]
fn reliable_invite_client_never_retransmits() {
    let t0 = epoch();
    let mut out = Vec::new();
    let mut tx = ClientInvite::start(msg(INVITE), true, cfg(), t0, &mut out);
    let seen = run_timers!(tx, t0, Duration::from_secs(60));
    assert_eq!(seen, vec![(32_000, "timeout"), (32_000, "terminated")]);
}

#[test]
fn provisional_stops_a_and_b_then_non_2xx_is_acked_and_timer_d_runs() {
    let t0 = epoch();
    let mut out = Vec::new();
    let mut tx = ClientInvite::start(msg(INVITE), false, cfg(), t0, &mut out);
    out.clear();
    tx.handle_response(response(180, "INVITE"), t0 + Duration::from_millis(100), &mut out);
    assert_eq!(tx.state(), client_invite::State::Proceeding);
    assert!(!tx.timers().is_armed(TimerName::A) && !tx.timers().is_armed(TimerName::B));
    out.clear();
    let t1 = t0 + Duration::from_secs(10);
    tx.handle_response(response(486, "INVITE"), t1, &mut out);
    let ack = out.iter().find_map(|o| if let TxOutput::Transmit(b) = o { Some(b.clone()) } else { None }).unwrap();
    let ack = Message::parse(ack).unwrap();
    assert_eq!(ack.method_bytes(), b"ACK");
    assert_eq!(ack.to_tag(), Some(&b"2"[..]));
    assert_eq!(ack.top_via().unwrap().branch(), Some(&b"z9hG4bKabc"[..]));
    assert_eq!(ack.cseq().unwrap().num, 1);
    // A retransmitted 486 is ACKed again and not passed up.
    out.clear();
    tx.handle_response(response(486, "INVITE"), t1 + Duration::from_secs(1), &mut out);
    assert_eq!(out.len(), 1);
    assert!(matches!(out[0], TxOutput::Transmit(_)));
    assert_eq!(tx.poll_timeout(), Some(t1 + Duration::from_secs(32)));
}

#[test]
fn accepted_state_passes_2xx_retransmissions_up_until_timer_m() {
    let t0 = epoch();
    let mut out = Vec::new();
    let mut tx = ClientInvite::start(msg(INVITE), false, cfg(), t0, &mut out);
    out.clear();
    tx.handle_response(response(200, "INVITE"), t0, &mut out);
    tx.handle_response(response(200, "INVITE"), t0 + Duration::from_secs(1), &mut out);
    assert_eq!(out.iter().filter(|o| matches!(o, TxOutput::Response(_))).count(), 2);
    assert_eq!(tx.poll_timeout(), Some(t0 + Duration::from_secs(32)));
}

#[test]
fn timer_e_doubles_to_t2_and_timer_f_times_out() {
    let t0 = epoch();
    let mut out = Vec::new();
    let mut tx = ClientNonInvite::start(msg(OPTIONS), false, cfg(), t0, &mut out);
    let seen = run_timers!(tx, t0, Duration::from_secs(60));
    let tx_times: Vec<u64> = seen.iter().filter(|s| s.1 == "tx").map(|s| s.0).collect();
    assert_eq!(tx_times, vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]);
    assert!(seen.contains(&(32_000, "timeout")));
}

#[test]
fn proceeding_non_invite_retransmits_every_t2_and_timer_k_waits_t4() {
    let t0 = epoch();
    let mut out = Vec::new();
    let mut tx = ClientNonInvite::start(msg(OPTIONS), false, cfg(), t0, &mut out);
    tx.handle_response(response(100, "OPTIONS"), t0 + Duration::from_millis(100), &mut out);
    let seen = run_timers!(tx, t0, Duration::from_millis(8000));
    let tx_times: Vec<u64> = seen.iter().filter(|s| s.1 == "tx").map(|s| s.0).collect();
    // First E was armed at T1 while Trying; from Proceeding on, the interval is T2.
    assert_eq!(tx_times, vec![500, 4500]);
    out.clear();
    let tf = t0 + Duration::from_secs(9);
    tx.handle_response(response(200, "OPTIONS"), tf, &mut out);
    assert_eq!(tx.poll_timeout(), Some(tf + Duration::from_secs(5)));
    let mut rel = ClientNonInvite::start(msg(OPTIONS), true, cfg(), t0, &mut out);
    rel.handle_response(response(200, "OPTIONS"), t0, &mut out);
    assert_eq!(rel.poll_timeout(), Some(t0)); // Timer K = 0 on TCP
}

#[test]
fn timer_g_retransmits_final_until_h() {
    let t0 = epoch();
    let mut out = Vec::new();
    let mut tx = ServerInvite::new(false, cfg());
    tx.send_response(486, Bytes::from_static(b"486"), t0, &mut out);
    let seen = run_timers!(tx, t0, Duration::from_secs(60));
    let tx_times: Vec<u64> = seen.iter().filter(|s| s.1 == "tx").map(|s| s.0).collect();
    assert_eq!(tx_times, vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]);
    assert!(seen.contains(&(32_000, "timeout")));
}

#[test]
fn ack_confirms_and_timer_i_waits_t4() {
    let t0 = epoch();
    let mut out = Vec::new();
    let mut tx = ServerInvite::new(false, cfg());
    tx.send_response(486, Bytes::from_static(b"486"), t0, &mut out);
    let ta = t0 + Duration::from_millis(700);
    tx.handle_ack(ta, &mut out);
    assert_eq!(tx.state(), server_invite::State::Confirmed);
    assert_eq!(tx.poll_timeout(), Some(ta + Duration::from_secs(5)));
    out.clear();
    tx.handle_retransmission(&mut out);
    assert!(out.is_empty(), "Confirmed absorbs retransmitted INVITEs");
    let mut rel = ServerInvite::new(true, cfg());
    rel.send_response(486, Bytes::from_static(b"486"), t0, &mut out);
    assert!(!rel.timers().is_armed(TimerName::G));
    out.clear();
    rel.handle_ack(t0, &mut out);
    assert!(matches!(out.last(), Some(TxOutput::Terminated)));
}

#[test]
fn two_xx_is_retransmitted_until_acked_and_timer_l_ends_it() {
    let t0 = epoch();
    let mut out = Vec::new();
    let mut tx = ServerInvite::new(false, cfg());
    tx.send_response(200, Bytes::from_static(b"200"), t0, &mut out);
    let seen = run_timers!(tx, t0, Duration::from_millis(4000));
    assert_eq!(seen.iter().filter(|s| s.1 == "tx").map(|s| s.0).collect::<Vec<_>>(), vec![500, 1500, 3500]);
    tx.handle_2xx_ack();
    let seen = run_timers!(tx, t0, Duration::from_secs(60));
    assert_eq!(seen, vec![(32_000, "terminated")]);

    // Never acknowledged: Timer L reports a timeout (the TU then ends the call).
    let mut tx = ServerInvite::new(false, cfg());
    tx.send_response(200, Bytes::from_static(b"200"), t0, &mut out);
    let seen = run_timers!(tx, t0, Duration::from_secs(60));
    assert!(seen.contains(&(32_000, "timeout")));
}

#[test]
fn provisional_is_resent_on_invite_retransmission() {
    let t0 = epoch();
    let mut out = Vec::new();
    let mut tx = ServerInvite::new(false, cfg());
    tx.send_response(100, Bytes::from_static(b"100"), t0, &mut out);
    out.clear();
    tx.handle_retransmission(&mut out);
    assert!(matches!(&out[0], TxOutput::Transmit(b) if &b[..] == b"100"));
}

#[test]
fn timer_j_absorbs_retransmissions_then_terminates() {
    let t0 = epoch();
    let mut out = Vec::new();
    let mut tx = ServerNonInvite::new(false, cfg());
    tx.handle_retransmission(&mut out);
    assert!(out.is_empty(), "Trying absorbs retransmissions");
    tx.send_response(200, Bytes::from_static(b"200"), t0, &mut out);
    out.clear();
    tx.handle_retransmission(&mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(tx.poll_timeout(), Some(t0 + Duration::from_secs(32)));
    let mut rel = ServerNonInvite::new(true, cfg());
    rel.send_response(200, Bytes::from_static(b"200"), t0, &mut out);
    assert_eq!(rel.poll_timeout(), Some(t0));
}

#[test]
fn configured_t1_scales_every_timer() {
    let c = TimerConfig { t1: Duration::from_millis(100), t2: Duration::from_millis(400), t4: Duration::from_secs(1) };
    let t0 = epoch();
    let mut out = Vec::new();
    let mut tx = ClientNonInvite::start(msg(OPTIONS), false, c, t0, &mut out);
    let seen = run_timers!(tx, t0, Duration::from_secs(10));
    let tx_times: Vec<u64> = seen.iter().filter(|s| s.1 == "tx").map(|s| s.0).collect();
    assert_eq!(&tx_times[..4], &[100, 300, 700, 1100]);
    assert!(seen.contains(&(6400, "timeout")));
}
