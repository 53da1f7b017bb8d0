//! A DNS server for the tests, on a loopback UDP port: it answers A queries for the names it
//! was given (TTL 60) and NOERROR with no answer for anything else (without an SOA, so such
//! negative answers are not cached) or, as a name server that hangs, nothing at all for names
//! it does not know. It records every query's name and type. It stops when dropped.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct FakeDns {
    pub addr: SocketAddr,
    queries: Arc<Mutex<Vec<(String, u16)>>>,
    stop: Arc<AtomicBool>,
}

impl FakeDns {
    /// Answers `names` with their addresses.
    pub fn answering(names: &[(&str, Ipv4Addr)]) -> Self {
        Self::start(names.iter().map(|(n, a)| (n.to_ascii_lowercase(), *a)).collect(), false)
    }

    /// Never answers.
    pub fn silent() -> Self {
        Self::start(HashMap::new(), true)
    }

    /// Answers `names` and leaves every other name without an answer.
    pub fn answering_else_silent(names: &[(&str, Ipv4Addr)]) -> Self {
        Self::start(names.iter().map(|(n, a)| (n.to_ascii_lowercase(), *a)).collect(), true)
    }

    fn start(names: HashMap<String, Ipv4Addr>, silent: bool) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind fake dns");
        sock.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
        let addr = sock.local_addr().expect("addr");
        let (queries, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let (q, st) = (queries.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
                let Some((name, qtype, question_end)) = question(&buf[..n]) else { continue };
                q.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((name.clone(), qtype));
                let known = names.get(&name);
                if silent && known.is_none() {
                    continue;
                }
                let answer = known.filter(|_| qtype == 1);
                let _ = sock.send_to(&reply(&buf[..question_end], answer), from);
            }
        });
        Self { addr, queries, stop }
    }

    /// Every name queried so far, in order, once per query (A and AAAA count twice).
    pub fn queries(&self) -> Vec<String> {
        self.queries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().map(|(n, _)| n.clone()).collect()
    }

    /// The A (IPv4) queries for `name` so far.
    pub fn a_queries(&self, name: &str) -> usize {
        self.queries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(n, t)| n == name && *t == 1)
            .count()
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The question of a query: its name (lower case, no trailing dot), type, and where it ends.
fn question(b: &[u8]) -> Option<(String, u16, usize)> {
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*b.get(pos)?);
        pos += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(b.get(pos..pos + len)?).to_ascii_lowercase());
        pos += len;
    }
    let qtype = u16::from_be_bytes([*b.get(pos)?, *b.get(pos + 1)?]);
    Some((labels.join("."), qtype, pos + 4))
}

/// A reply to the query whose header and question are `query`: one A record (pointing back at
/// the question's name), or none.
fn reply(query: &[u8], answer: Option<&Ipv4Addr>) -> Vec<u8> {
    let mut r = query.to_vec();
    r[2] = 0x81 | (query[2] & 0x01); // response, recursion desired as asked
    r[3] = 0x80; // recursion available, NOERROR
    r[6..8].copy_from_slice(&u16::from(answer.is_some()).to_be_bytes());
    r[8..12].copy_from_slice(&[0, 0, 0, 0]);
    if let Some(ip) = answer {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        r.extend_from_slice(&60u32.to_be_bytes());
        r.extend_from_slice(&4u16.to_be_bytes());
        r.extend_from_slice(&ip.octets());
    }
    r
}
