//! Per-call pcap files (SEMS's `msg_logger_path`): every SIP message of a call whose profile
//! names a file, received and sent, as the shard saw it, and with `log_rtp` the packets the
//! relay carries for it, from the media threads. All hand their copies to one writer thread
//! through a bounded queue, so a slow disk costs records (counted), never signalling or media;
//! RTP may take half the queue at most, so a busy `log_rtp` call cannot crowd out SIP.
//! Records are raw IP packets (`LINKTYPE_RAW`) with a UDP header, whatever the transport the
//! message used, which is what SIP tools decode.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::trace::{Direction, TraceEntry};
use crate::b2bua::CallHandle;

/// Records waiting for the writer, over all shards and media threads.
const QUEUE: usize = 8192;
/// Of those, RTP and RTCP records (`log_rtp`).
const QUEUE_RTP: usize = QUEUE / 2;
/// The longest message written (a UDP payload).
const MAX_PAYLOAD: usize = 65_507;
/// `LINKTYPE_RAW`: each record is an IPv4 or IPv6 packet.
const LINKTYPE_RAW: u32 = 101;

enum Job {
    /// A copy of one message or packet: the record is built on the writer thread.
    Record { path: Arc<str>, at: SystemTime, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>, rtp: bool },
    /// One more holder of the file: a call's SIP side, or one of its tapped streams.
    Hold(Arc<str>),
    /// A holder let go; the last one closes the file.
    Release(Arc<str>),
}

/// The writer thread's side, shared by the shards and the media threads.
pub(crate) struct PcapWriter {
    /// Unbounded so that holds and releases are never lost (there is one of each per holder);
    /// records are bounded by `queued`.
    tx: Sender<Job>,
    queued: Arc<Queued>,
    /// Records not written: the queue was full, or the file could not be written.
    pub(crate) dropped: Arc<AtomicU64>,
    pub(crate) written: Arc<AtomicU64>,
}

/// Records in the queue: all, and RTP ones.
#[derive(Default)]
struct Queued {
    all: AtomicUsize,
    rtp: AtomicUsize,
}

impl Queued {
    /// Takes a place for a record, if one is left.
    fn take(&self, rtp: bool) -> bool {
        if self.all.fetch_add(1, Ordering::Relaxed) >= QUEUE {
            self.all.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        if rtp && self.rtp.fetch_add(1, Ordering::Relaxed) >= QUEUE_RTP {
            self.give_back(true);
            return false;
        }
        true
    }

    fn give_back(&self, rtp: bool) {
        self.all.fetch_sub(1, Ordering::Relaxed);
        if rtp {
            self.rtp.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl PcapWriter {
    /// Starts the writer thread.
    pub(crate) fn start() -> std::io::Result<Arc<Self>> {
        let (tx, rx) = channel();
        let (dropped, written) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let queued = Arc::new(Queued::default());
        let counts = (queued.clone(), dropped.clone(), written.clone());
        std::thread::Builder::new()
            .name("pcap-writer".into())
            .spawn(move || write_loop(&rx, &counts.0, &counts.1, &counts.2))?;
        Ok(Arc::new(Self { tx, queued, dropped, written }))
    }

    /// Queues a copy of `bytes`. A full queue (a slow disk) costs the copy, never the
    /// sender's time: the place is taken before anything is copied.
    fn record(&self, path: &Arc<str>, at: SystemTime, (from, to): (SocketAddr, SocketAddr), bytes: &[u8], rtp: bool) {
        if !self.queued.take(rtp) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let job = Job::Record { path: path.clone(), at, from, to, bytes: bytes.to_vec(), rtp };
        if self.tx.send(job).is_err() {
            self.queued.give_back(rtp);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One holder of a call's pcap file: records go to it while any holder lives, and the file
/// closes when the last one is dropped (the call's SIP side and its streams end apart).
#[derive(Debug)]
pub(crate) struct PcapFile {
    path: Arc<str>,
    writer: Arc<PcapWriter>,
}

impl PcapFile {
    pub(crate) fn hold(writer: &Arc<PcapWriter>, path: Arc<str>) -> Arc<Self> {
        let _ = writer.tx.send(Job::Hold(path.clone()));
        Arc::new(Self { path, writer: writer.clone() })
    }

    fn message(&self, entry: &TraceEntry) {
        let remote = entry.remote.addr().unwrap_or_else(|| SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0));
        let (from, to) = match entry.direction {
            Direction::In => (remote, entry.local),
            Direction::Out => (entry.local, remote),
        };
        self.writer.record(&self.path, entry.at, (from, to), &entry.message, false);
    }
}

impl Drop for PcapFile {
    fn drop(&mut self) {
        let _ = self.writer.tx.send(Job::Release(self.path.clone()));
    }
}

impl std::fmt::Debug for PcapWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapWriter").finish_non_exhaustive()
    }
}

/// RTP and RTCP of a call's streams (SEMS's `log_rtp`), from the media threads.
impl rtp_relay::PacketTap for PcapFile {
    fn packet(&self, at: SystemTime, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        self.writer.record(&self.path, at, (from, to), bytes, true);
    }
}

/// A file the writer keeps: how many hold it, and the file once a record opened it (`None`
/// inside: it would not open, said once; its records are counted as dropped).
#[derive(Default)]
struct Held {
    holders: usize,
    file: Option<Option<BufWriter<File>>>,
}

fn write_loop(rx: &Receiver<Job>, queued: &Queued, dropped: &AtomicU64, written: &AtomicU64) {
    let mut files: HashMap<Arc<str>, Held> = HashMap::new();
    loop {
        // Records are buffered, and written out whenever the queue runs dry.
        let job = match rx.try_recv() {
            Ok(job) => job,
            Err(TryRecvError::Empty) => {
                files.values_mut().for_each(|held| flush(held, dropped));
                match rx.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            }
            Err(TryRecvError::Disconnected) => return,
        };
        match job {
            Job::Record { path, at, from, to, bytes, rtp } => {
                queued.give_back(rtp);
                let held = files.entry(path.clone()).or_default();
                let file = held.file.get_or_insert_with(|| open(&path));
                match file.as_mut().map(|f| f.write_all(&record(at, from, to, &bytes))) {
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
                // Nobody holds it (cannot happen: a holder's hold is queued before its
                // records): written and closed at once.
                if held.holders == 0 {
                    flush(held, dropped);
                    files.remove(&path);
                }
            }
            Job::Hold(path) => files.entry(path).or_default().holders += 1,
            Job::Release(path) => {
                if let Some(held) = files.get_mut(&path) {
                    held.holders = held.holders.saturating_sub(1);
                    if held.holders == 0 {
                        flush(held, dropped);
                        files.remove(&path);
                    }
                }
            }
        }
    }
}

/// Writes out a file's buffered records; a failure loses what was buffered (counted once).
fn flush(held: &mut Held, dropped: &AtomicU64) {
    if let Some(file) = held.file.as_mut() {
        if let Some(Err(e)) = file.as_mut().map(BufWriter::flush) {
            tracing::warn!("pcap write failed: {e}");
            dropped.fetch_add(1, Ordering::Relaxed);
            *file = None;
        }
    }
}

/// Opens `path` for appending; a new file gets the pcap header first.
fn open(path: &str) -> Option<BufWriter<File>> {
    let opened = std::fs::OpenOptions::new().create(true).append(true).open(path).and_then(|mut f| {
        if f.metadata()?.len() == 0 {
            f.write_all(&global_header())?;
        }
        Ok(BufWriter::new(f))
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

/// One pcap record: `payload` as a UDP datagram from `src` to `dst` at `at`.
fn record(at: SystemTime, src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(MAX_PAYLOAD)];
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
    let at = at.duration_since(UNIX_EPOCH).unwrap_or_default();
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
    files: HashMap<CallHandle, Arc<PcapFile>>,
    by_call_id: HashMap<Box<[u8]>, CallHandle>,
    /// The batch's messages that may open a call (written once its start names a file).
    pending: Vec<(Box<[u8]>, TraceEntry)>,
}

impl PcapCalls {
    /// Whether a call of this shard logs.
    pub(crate) fn any(&self) -> bool {
        !self.files.is_empty()
    }

    /// A message of the call with `call_id`, if it logs; one that may open a call waits for
    /// the batch's events.
    pub(crate) fn message(&mut self, call_id: &[u8], opens: bool, entry: &TraceEntry) {
        match self.by_call_id.get(call_id).and_then(|c| self.files.get(c)) {
            Some(file) => file.message(entry),
            None if opens => self.pending.push((call_id.into(), entry.clone())),
            None => {}
        }
    }

    /// A call started that logs to `path`.
    pub(crate) fn started(&mut self, writer: &Arc<PcapWriter>, call: CallHandle, a: &[u8], b: &[u8], path: Arc<str>) {
        self.by_call_id.insert(a.into(), call);
        self.by_call_id.insert(b.into(), call);
        self.files.insert(call, PcapFile::hold(writer, path));
    }

    /// The batch's events are known: waiting messages of calls that log are written.
    pub(crate) fn flush(&mut self) {
        for (id, entry) in self.pending.drain(..) {
            if let Some(file) = self.by_call_id.get(&id).and_then(|c| self.files.get(c)) {
                file.message(&entry);
            }
        }
    }

    /// A call ended (its last messages were written): its SIP side lets go of the file.
    pub(crate) fn ended(&mut self, call: CallHandle) {
        if self.files.remove(&call).is_some() {
            self.by_call_id.retain(|_, c| *c != call);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::b2bua::{Peer, Transport};
    use rtp_relay::PacketTap as _;

    const AT: std::time::Duration = std::time::Duration::new(1_700_000_000, 250_000);
    const OPTIONS: &[u8] = b"OPTIONS sip:x SIP/2.0\r\n\r\n";

    fn addr(a: &str) -> SocketAddr {
        a.parse().expect("addr")
    }

    #[test]
    fn records_are_udp_packets_from_sender_to_receiver() {
        let r = record(UNIX_EPOCH + AT, addr("198.51.100.7:5070"), addr("192.0.2.1:5060"), OPTIONS);
        let (head, ip) = r.split_at(16);
        assert_eq!(u32::from_le_bytes(head[0..4].try_into().expect("4")), 1_700_000_000);
        assert_eq!(u32::from_le_bytes(head[4..8].try_into().expect("4")), 250);
        assert_eq!(u32::from_le_bytes(head[8..12].try_into().expect("4")) as usize, ip.len());
        assert_eq!((ip[0], ip[9]), (0x45, 17), "IPv4, UDP");
        assert_eq!(checksum(&[&ip[..20]]), 0, "a valid header checksum");
        assert_eq!(&ip[12..16], &[198, 51, 100, 7], "from the peer");
        assert_eq!(u16::from_be_bytes([ip[20], ip[21]]), 5070);
        assert!(ip.ends_with(OPTIONS));
        let r = record(UNIX_EPOCH + AT, addr("[2001:db8::1]:5060"), addr("[2001:db8::2]:5060"), OPTIONS);
        let ip = &r[16..];
        assert_eq!((ip[0] >> 4, ip[6]), (6, 17), "IPv6, UDP");
        assert_eq!(&ip[8..24], &"2001:db8::1".parse::<std::net::Ipv6Addr>().expect("v6").octets(), "from us");
        let pseudo =
            [&ip[8..40], &u32::from(u16::from_be_bytes([ip[44], ip[45]])).to_be_bytes()[..], &[0, 0, 0, 17]].concat();
        assert_eq!(checksum(&[&pseudo, &ip[40..]]), 0, "a valid UDP checksum");
    }

    /// A call's SIP side and a stream write to one file; it stays open until both let go, and
    /// a holder that comes later appends to it (one header).
    #[test]
    fn holders_share_the_file_and_the_last_closes_it() {
        let dir = std::env::temp_dir().join(format!("sbc-pcap-holders-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path: Arc<str> = dir.join("call.pcap").to_str().expect("utf-8").into();
        let _ = std::fs::remove_file(&*path);
        let writer = PcapWriter::start().expect("writer");
        let (sip, rtp) = (PcapFile::hold(&writer, path.clone()), PcapFile::hold(&writer, path.clone()));
        let entry = TraceEntry {
            at: UNIX_EPOCH + AT,
            direction: Direction::In,
            transport: Transport::Udp,
            local: addr("127.0.0.1:5060"),
            remote: Peer::Addr(addr("127.0.0.2:5060")),
            interface: "ext".into(),
            message: bytes::Bytes::from_static(OPTIONS),
        };
        sip.message(&entry);
        drop(sip);
        rtp.packet(UNIX_EPOCH + AT, addr("127.0.0.2:4000"), addr("127.0.0.1:30000"), &[0x80, 0, 0, 1]);
        drop(rtp);
        PcapFile::hold(&writer, path.clone()).message(&entry);
        let sip_len = 16 + 20 + 8 + OPTIONS.len();
        let whole = 24 + 2 * sip_len + 16 + 20 + 8 + 4;
        // Up to 5 s for the writer thread.
        let mut bytes = Vec::new();
        for _ in 0..1000 {
            bytes = std::fs::read(&*path).unwrap_or_default();
            if bytes.len() >= whole {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(writer.dropped.load(Ordering::Relaxed), 0);
        assert_eq!(writer.written.load(Ordering::Relaxed), 3);
        assert_eq!(bytes.len(), whole, "one header, three records");
        assert!(bytes[24 + sip_len..].windows(4).any(|w| w == [0x80, 0, 0, 1]), "the RTP packet");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
