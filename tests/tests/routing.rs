//! Routing to carriers like a carrier: next-hop entries with priority and weight, failing
//! targets skipped. Calls are made by in-process UAs to phones of the test; every target is
//! on loopback.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sbc_e2e::phone::Phone;
use sbc_e2e::ua::{sdp, TestUa};
use sbc_e2e::*;

/// A callee that answers every INVITE with `code` (and every BYE with 200) and counts the
/// INVITEs, until dropped.
struct Callee {
    addr: SocketAddr,
    invites: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Callee {
    fn answering(code: u16) -> Self {
        // Responses go where each request came from (the SBC), whatever address is given here.
        let mut phone = Phone::udp("127.0.0.1:9".parse().expect("addr"), "callee");
        let addr = phone.local_addr();
        let (invites, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (n, st) = (invites.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = std::collections::HashSet::new();
            while !st.load(Ordering::Relaxed) {
                let Some(req) = phone.recv_request(Duration::from_millis(50)) else { continue };
                match req.method() {
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
        Self { addr, invites, stop }
    }

    fn invites(&self) -> usize {
        self.invites.load(Ordering::Relaxed)
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
