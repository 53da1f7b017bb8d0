//! Per-call pcap files (SEMS's `msg_logger_path`): every SIP message of a call whose profile
//! names a file, received and sent, as the shard saw it. Each shard hands records to one writer
//! thread through a bounded queue, so a slow disk costs records (counted), never signalling.
//! Records are raw IP packets (`LINKTYPE_RAW`) with a UDP header, whatever the transport the
//! message used, which is what SIP tools decode.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use super::trace::{Direction, TraceEntry};
use crate::b2bua::CallHandle;

/// Records waiting for the writer, over all shards.
const QUEUE: usize = 8192;
/// The longest message written (a UDP payload).
const MAX_PAYLOAD: usize = 65_507;
/// `LINKTYPE_RAW`: each record is an IPv4 or IPv6 packet.
const LINKTYPE_RAW: u32 = 101;

enum Job {
    Record { path: Arc<str>, record: Vec<u8> },
    Close(Arc<str>),
}

/// The writer thread's side, shared by the shards.
pub(crate) struct PcapWriter {
    tx: SyncSender<Job>,
    /// Records not written: the queue was full, or the file could not be written.
    pub(crate) dropped: Arc<AtomicU64>,
    pub(crate) written: Arc<AtomicU64>,
}

impl PcapWriter {
    /// Starts the writer thread.
    pub(crate) fn start() -> std::io::Result<Arc<Self>> {
        let (tx, rx) = sync_channel(QUEUE);
        let (dropped, written) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let counts = (dropped.clone(), written.clone());
        std::thread::Builder::new().name("pcap-writer".into()).spawn(move || write_loop(&rx, &counts.0, &counts.1))?;
        Ok(Arc::new(Self { tx, dropped, written }))
    }

    fn send(&self, job: Job) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(job) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn write_loop(rx: &Receiver<Job>, dropped: &AtomicU64, written: &AtomicU64) {
    // `None`: a file that would not open (said once; its records are counted as dropped).
    let mut files: HashMap<Arc<str>, Option<File>> = HashMap::new();
    while let Ok(job) = rx.recv() {
        match job {
            Job::Record { path, record } => {
                let file = files.entry(path.clone()).or_insert_with(|| open(&path));
                match file.as_mut().map(|f| f.write_all(&record)) {
                    Some(Ok(())) => {
                        written.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(path = %path, "pcap write failed: {e}");
                        dropped.fetch_add(1, Ordering::Relaxed);
                        *file = None;
                    }
                    None => {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Job::Close(path) => {
                files.remove(&path);
            }
        }
    }
}

/// Opens `path` for appending; a new file gets the pcap header first.
fn open(path: &str) -> Option<File> {
    let opened = std::fs::OpenOptions::new().create(true).append(true).open(path).and_then(|mut f| {
        if f.metadata()?.len() == 0 {
            f.write_all(&global_header())?;
        }
        Ok(f)
    });
    opened.map_err(|e| tracing::warn!(path, "cannot open the call's pcap file: {e}")).ok()
}

/// The pcap file header (microsecond timestamps).
fn global_header() -> Vec<u8> {
    let mut h = Vec::with_capacity(24);
    h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&0i32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&65_535u32.to_le_bytes());
    h.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
    h
}

/// The internet checksum (RFC 1071) of `parts` taken as one byte string.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    let mut odd: Option<u8> = None;
    for b in parts.iter().flat_map(|p| p.iter()) {
        match odd.take() {
            Some(hi) => sum += u32::from(u16::from_be_bytes([hi, *b])),
            None => odd = Some(*b),
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// One pcap record: `entry`'s message as a UDP datagram from its sender to its receiver.
fn record(entry: &TraceEntry) -> Vec<u8> {
    let remote = entry.remote.addr().unwrap_or_else(|| SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0));
    let (src, dst) = match entry.direction {
        Direction::In => (remote, entry.local),
        Direction::Out => (entry.local, remote),
    };
    let payload = &entry.message[..entry.message.len().min(MAX_PAYLOAD)];
    let udp_len = (payload.len() + 8) as u16;
    let mut udp = Vec::with_capacity(8);
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    let packet = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            udp.extend_from_slice(&[0, 0]); // optional over IPv4 (RFC 768)
            let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
            ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let sum = checksum(&[&ip]);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            [ip, udp, payload.to_vec()].concat()
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            let (s, d) = (v6(s).octets(), v6(d).octets());
            // Mandatory over IPv6 (RFC 8200 §8.1): over the pseudo-header, then the datagram.
            let pseudo = [&s[..], &d[..], &u32::from(udp_len).to_be_bytes(), &[0, 0, 0, 17]].concat();
            let sum = checksum(&[&pseudo, &udp, &[0, 0], payload]);
            udp.extend_from_slice(&(if sum == 0 { 0xffff } else { sum }).to_be_bytes());
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&udp_len.to_be_bytes());
            ip.extend_from_slice(&[17, 64]);
            ip.extend_from_slice(&s);
            ip.extend_from_slice(&d);
            [ip, udp, payload.to_vec()].concat()
        }
    };
    let at = entry.at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut out = Vec::with_capacity(16 + packet.len());
    out.extend_from_slice(&(at.as_secs() as u32).to_le_bytes());
    out.extend_from_slice(&at.subsec_micros().to_le_bytes());
    out.extend_from_slice(&(packet.len() as u32).to_le_bytes());
    out.extend_from_slice(&(packet.len() as u32).to_le_bytes());
    out.extend_from_slice(&packet);
    out
}

/// A shard's calls that log to a pcap file.
#[derive(Default)]
pub(crate) struct PcapCalls {
    paths: HashMap<CallHandle, Arc<str>>,
    by_call_id: HashMap<Box<[u8]>, CallHandle>,
    /// The batch's messages that may open a call (written once its start names a file).
    pending: Vec<(Box<[u8]>, TraceEntry)>,
}

impl PcapCalls {
    /// Whether a call of this shard logs.
    pub(crate) fn any(&self) -> bool {
        !self.paths.is_empty()
    }

    /// A message of the call with `call_id`, if it logs; one that may open a call waits for
    /// the batch's events.
    pub(crate) fn message(&mut self, writer: &PcapWriter, call_id: &[u8], opens: bool, entry: &TraceEntry) {
        match self.by_call_id.get(call_id).and_then(|c| self.paths.get(c)) {
            Some(path) => writer.send(Job::Record { path: path.clone(), record: record(entry) }),
            None if opens => self.pending.push((call_id.into(), entry.clone())),
            None => {}
        }
    }

    /// A call started that logs to `path`.
    pub(crate) fn started(&mut self, call: CallHandle, a: &[u8], b: &[u8], path: Arc<str>) {
        self.by_call_id.insert(a.into(), call);
        self.by_call_id.insert(b.into(), call);
        self.paths.insert(call, path);
    }

    /// The batch's events are known: waiting messages of calls that log are written.
    pub(crate) fn flush(&mut self, writer: &PcapWriter) {
        for (id, entry) in self.pending.drain(..) {
            if let Some(path) = self.by_call_id.get(&id).and_then(|c| self.paths.get(c)) {
                writer.send(Job::Record { path: path.clone(), record: record(&entry) });
            }
        }
    }

    /// A call ended (its last messages were written): its file is closed.
    pub(crate) fn ended(&mut self, writer: &PcapWriter, call: CallHandle) {
        if let Some(path) = self.paths.remove(&call) {
            self.by_call_id.retain(|_, c| *c != call);
            writer.send(Job::Close(path));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::b2bua::{Peer, Transport};

    fn entry(direction: Direction, local: &str, remote: &str) -> TraceEntry {
        TraceEntry {
            at: UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 250_000),
            direction,
            transport: Transport::Udp,
            local: local.parse().expect("addr"),
            remote: Peer::Addr(remote.parse().expect("addr")),
            interface: "ext".into(),
            message: bytes::Bytes::from_static(b"OPTIONS sip:x SIP/2.0\r\n\r\n"),
        }
    }

    #[test]
    fn records_are_udp_packets_from_sender_to_receiver() {
        let r = record(&entry(Direction::In, "192.0.2.1:5060", "198.51.100.7:5070"));
        let (head, ip) = r.split_at(16);
        assert_eq!(u32::from_le_bytes(head[0..4].try_into().expect("4")), 1_700_000_000);
        assert_eq!(u32::from_le_bytes(head[4..8].try_into().expect("4")), 250);
        assert_eq!(u32::from_le_bytes(head[8..12].try_into().expect("4")) as usize, ip.len());
        assert_eq!((ip[0], ip[9]), (0x45, 17), "IPv4, UDP");
        assert_eq!(checksum(&[&ip[..20]]), 0, "a valid header checksum");
        assert_eq!(&ip[12..16], &[198, 51, 100, 7], "from the peer");
        assert_eq!(u16::from_be_bytes([ip[20], ip[21]]), 5070);
        assert!(ip.ends_with(b"OPTIONS sip:x SIP/2.0\r\n\r\n"));
        let r = record(&entry(Direction::Out, "[2001:db8::1]:5060", "[2001:db8::2]:5060"));
        let ip = &r[16..];
        assert_eq!((ip[0] >> 4, ip[6]), (6, 17), "IPv6, UDP");
        assert_eq!(&ip[8..24], &"2001:db8::1".parse::<std::net::Ipv6Addr>().expect("v6").octets(), "from us");
        let pseudo =
            [&ip[8..40], &u32::from(u16::from_be_bytes([ip[44], ip[45]])).to_be_bytes()[..], &[0, 0, 0, 17]].concat();
        assert_eq!(checksum(&[&pseudo, &ip[40..]]), 0, "a valid UDP checksum");
    }
}
