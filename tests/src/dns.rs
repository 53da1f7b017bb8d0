//! A DNS server for the tests, on a loopback UDP port. It answers A, SRV and NAPTR queries
//! from the records it was given (TTL 60), and NOERROR with no answer for anything else
//! (without an SOA, so such negative answers are not cached) or, as a name server that hangs,
//! nothing at all for names it does not know. A name can also be given a malformed answer.
//! It records every query's name and type. It stops when dropped.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A record the server answers with.
#[derive(Debug, Clone)]
pub enum Record {
    A(Ipv4Addr),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Naptr {
        order: u16,
        preference: u16,
        flags: String,
        service: String,
        replacement: String,
    },
    /// An answer whose record does not decode (its length runs past the message).
    Garbage,
}

const A: u16 = 1;
const SRV: u16 = 33;
const NAPTR: u16 = 35;

impl Record {
    fn qtype(&self) -> Option<u16> {
        match self {
            Self::A(_) => Some(A),
            Self::Srv { .. } => Some(SRV),
            Self::Naptr { .. } => Some(NAPTR),
            Self::Garbage => None,
        }
    }

    /// An SRV record.
    pub fn srv(priority: u16, weight: u16, port: u16, target: &str) -> Self {
        Self::Srv { priority, weight, port, target: target.into() }
    }

    /// A terminal NAPTR record (`s` flag) pointing at an SRV name.
    pub fn naptr(order: u16, preference: u16, service: &str, replacement: &str) -> Self {
        Self::Naptr { order, preference, flags: "s".into(), service: service.into(), replacement: replacement.into() }
    }
}

pub struct FakeDns {
    pub addr: SocketAddr,
    queries: Arc<Mutex<Vec<(String, u16)>>>,
    stop: Arc<AtomicBool>,
}

type Zone = HashMap<String, Vec<Record>>;

impl FakeDns {
    /// Answers `names` with their addresses.
    pub fn answering(names: &[(&str, Ipv4Addr)]) -> Self {
        Self::with_records(&names.iter().map(|(n, a)| (*n, Record::A(*a))).collect::<Vec<_>>())
    }

    /// Answers each name with its records (several per name as given).
    pub fn with_records(records: &[(&str, Record)]) -> Self {
        Self::start(zone(records), false)
    }

    /// Never answers.
    pub fn silent() -> Self {
        Self::start(HashMap::new(), true)
    }

    /// Answers `names` and leaves every other name without an answer.
    pub fn answering_else_silent(names: &[(&str, Ipv4Addr)]) -> Self {
        Self::start(zone(&names.iter().map(|(n, a)| (*n, Record::A(*a))).collect::<Vec<_>>()), true)
    }

    fn start(zone: Zone, silent: bool) -> Self {
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
                let known = zone.get(&name);
                if silent && known.is_none() {
                    continue;
                }
                let answers: Vec<&Record> =
                    known.into_iter().flatten().filter(|r| r.qtype().is_none_or(|t| t == qtype)).collect();
                let _ = sock.send_to(&reply(&buf[..question_end], &answers), from);
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
        self.count(name, A)
    }

    /// The queries of type `qtype` (1 A, 33 SRV, 35 NAPTR) for `name` so far.
    pub fn count(&self, name: &str, qtype: u16) -> usize {
        self.queries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(n, t)| n == name && *t == qtype)
            .count()
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn zone(records: &[(&str, Record)]) -> Zone {
    let mut z: Zone = HashMap::new();
    for (name, r) in records {
        z.entry(name.to_ascii_lowercase()).or_default().push(r.clone());
    }
    z
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

/// A reply to the query whose header and question are `query`, with `answers` (each naming
/// the question's name).
fn reply(query: &[u8], answers: &[&Record]) -> Vec<u8> {
    let mut r = query.to_vec();
    r[2] = 0x81 | (query[2] & 0x01); // response, recursion desired as asked
    r[3] = 0x80; // recursion available, NOERROR
    r[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
    r[8..12].copy_from_slice(&[0, 0, 0, 0]);
    let qtype = [query[query.len() - 4], query[query.len() - 3]];
    for a in answers {
        let rtype = a.qtype().map_or(qtype, u16::to_be_bytes);
        r.extend_from_slice(&[0xc0, 0x0c]);
        r.extend_from_slice(&rtype);
        r.extend_from_slice(&[0, 1]);
        r.extend_from_slice(&60u32.to_be_bytes());
        let data = match a {
            Record::A(ip) => ip.octets().to_vec(),
            Record::Srv { priority, weight, port, target } => {
                let mut d = [priority.to_be_bytes(), weight.to_be_bytes(), port.to_be_bytes()].concat();
                d.extend(name(target));
                d
            }
            Record::Naptr { order, preference, flags, service, replacement } => {
                let mut d = [order.to_be_bytes(), preference.to_be_bytes()].concat();
                for s in [flags.as_str(), service.as_str(), ""] {
                    d.push(s.len() as u8);
                    d.extend_from_slice(s.as_bytes());
                }
                d.extend(name(replacement));
                d
            }
            Record::Garbage => {
                // Claims 40 bytes of data and carries 3.
                r.extend_from_slice(&40u16.to_be_bytes());
                r.extend_from_slice(&[1, 2, 3]);
                continue;
            }
        };
        r.extend_from_slice(&(data.len() as u16).to_be_bytes());
        r.extend_from_slice(&data);
    }
    r
}

/// A name in wire form, uncompressed (`.` is the root).
fn name(n: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in n.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}
