//! RTP relay load: N unidirectional RTP streams at a fixed packet rate through the userspace
//! forwarder, measured from outside.
//!
//! A "stream" is one direction of one relayed m-line, so N streams are N/2 calls' worth of
//! media (each m-line carries one stream each way, as a call does). A generator thread paces
//! 160-byte G.711-sized packets evenly over each 20 ms period and sends them in sendmmsg
//! batches from one socket per side; a receiver thread per side reads them back. Every packet
//! carries its stream number, a sequence number and its send time, so the receiver counts loss
//! and latency. The same traffic is then sent straight from sender to receiver (no relay) to
//! get the baseline latency of the machine; "added" latency is the difference.
//!
//! CPU per packet is the forwarder threads' own CPU time (`/proc/self/task/*/schedstat`) over
//! the packets they relayed in the measured window.
//!
//! With `--rtpengine ADDR --rtpengine-pid PID` the same traffic then goes through a running
//! rtpengine (its calls set up over the ng control protocol, offer then answer, one per pair of
//! streams), and its CPU is the whole rtpengine process's over the packets received back.
//! `--results TAG` prints `TAG.<system>.<key> value` lines on stdout for benches/load/report.sh;
//! the human summary goes to stderr.
//!
//! With `--srtp on` side A speaks SRTP (AES_CM_128_HMAC_SHA1_80, SDES) and side B plain RTP:
//! the relay decrypts A's packets and encrypts B's (rtpengine is asked for the same bridging).
//! The generator seals A's packets beforehand; send times ride in the RTP timestamp field,
//! which SRTP leaves in the clear.
//!
//! Usage: `relay_load [--streams N] [--pps P] [--seconds S] [--workers W] [--srtp on]
//!   [--rtpengine ADDR --rtpengine-pid PID] [--results TAG]`
//! (`cargo run --release -p sbc-benches --bin relay_load -- --streams 1000`).

use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage};
mod rtpengine;

use rtp_relay::ports::ReleaseSink;
use rtp_relay::srtp::negotiation::Security;
use rtp_relay::srtp::sdes::CryptoLine;
use rtp_relay::srtp::{sdes, MasterKey, Policy, Suite};
use rtp_relay::{
    BookConfig, MediaBook, MediaCommand, MediaInterface, Offered, Relay, RelayConfig, Session, SideOptions,
};
use sbc_benches::tasks_cpu_ns;

const PAYLOAD: usize = 172; // 12-byte RTP header + 160 bytes of G.711 (20 ms)
const BATCH: usize = 64;

struct Args {
    streams: usize,
    pps: u64,
    seconds: u64,
    workers: usize,
    /// Side A speaks SRTP with this key (side B plain).
    srtp: Option<MasterKey>,
    rtpengine: Option<(SocketAddr, u32)>,
    results: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args { streams: 1000, pps: 50, seconds: 10, workers: 0, srtp: None, rtpengine: None, results: None };
    let mut ng: Option<SocketAddr> = None;
    let mut pid: Option<u32> = None;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| usage(&k));
        let num = || v.parse::<u64>().unwrap_or_else(|_| usage(&k));
        match k.as_str() {
            "--streams" => a.streams = (num() as usize).max(2) & !1,
            "--pps" => a.pps = num().max(1),
            "--seconds" => a.seconds = num().max(1),
            "--workers" => a.workers = num() as usize,
            "--srtp" => {
                let material: Vec<u8> = (0..30u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
                a.srtp = (v == "on").then(|| MasterKey::new(Suite::AesCm128HmacSha1_80, &material)).flatten();
            }
            "--rtpengine" => ng = Some(v.parse().unwrap_or_else(|_| usage(&k))),
            "--rtpengine-pid" => pid = Some(num() as u32),
            "--results" => a.results = Some(v),
            _ => usage(&k),
        }
    }
    a.rtpengine = match (ng, pid) {
        (Some(ng), Some(pid)) => Some((ng, pid)),
        (None, None) => None,
        _ => usage("--rtpengine"),
    };
    a
}

fn usage(k: &str) -> ! {
    eprintln!(
        "relay_load: bad argument {k}\nusage: relay_load [--streams N] [--pps P] [--seconds S] [--workers W] [--srtp on] \
         [--rtpengine ADDR --rtpengine-pid PID] [--results TAG]"
    );
    std::process::exit(2)
}

/// Where the generator sends each stream, and from which of its two sockets.
struct Plan {
    /// Per stream: (sending side 0/1, destination).
    targets: Vec<(usize, SocketAddr)>,
}

struct Measured {
    sent: u64,
    received: u64,
    latencies_us: Vec<u32>,
}

/// Whose CPU a run measures, and how many packets it forwarded.
enum Meter {
    /// The baseline: nothing in between.
    Nothing,
    /// sbcd's relay, in this process: its worker threads.
    Relay,
    /// An external relay (rtpengine): the whole process, the packets that came back.
    Process(u32),
}

impl Meter {
    fn cpu_ns(&self) -> Option<u64> {
        match self {
            Self::Nothing => None,
            Self::Relay => Some(tasks_cpu_ns("self", |comm| comm.starts_with("rtp-"))),
            Self::Process(pid) => Some(tasks_cpu_ns(&pid.to_string(), |_| true)),
        }
    }
}

fn main() {
    let args = parse_args();
    let calls = args.streams / 2;
    let socks = [bind(), bind()];
    let addrs = [local(&socks[0]), local(&socks[1])];

    // Baseline: the same pacing, straight to the receiving socket.
    let direct = Plan { targets: (0..args.streams).map(|s| (s % 2, addrs[1 - s % 2])).collect() };
    let base = run(&args, &socks, &direct, &Meter::Nothing);

    let interfaces = vec![MediaInterface {
        name: "bench".into(),
        bind: "127.0.0.1".parse().expect("ip"),
        advertise: None,
        // Below the kernel's ephemeral ports, where the generator's sockets are: the relay
        // refuses an SDP naming one of its own ports.
        port_min: 20000,
        port_max: 32767,
    }];
    let cfg = RelayConfig {
        interfaces: interfaces.clone(),
        latch_window: Duration::from_secs(2),
        workers: args.workers,
        // Policing on, as sbcd runs it (its cost is part of the per-packet figure).
        max_packet_rate: 1000,
    };
    let relay = Relay::start(&cfg).expect("relay starts");
    // One shard's book, its commands carried out as sbcd's shard does (driver/media.rs).
    let mut book = MediaBook::new(
        BookConfig { interfaces, max_streams: rtp_relay::session::DEFAULT_MAX_STREAMS, policy: None },
        0,
        1,
        [7; 32],
    );
    let sink: ReleaseSink = Arc::new(|_, _| {});
    let carry_out = |book: &mut MediaBook| {
        while let Some(c) = book.pop_command() {
            match c {
                MediaCommand::Open { stream, ports, spec, .. } => {
                    relay.open(stream, ports, spec, None, &sink).expect("the pairs bind");
                }
                MediaCommand::Update { stream, spec } => relay.update(stream, spec),
                MediaCommand::Close { stream } => relay.close(stream),
            }
        }
    };
    let mut sessions: Vec<Session> = Vec::with_capacity(calls);
    let mut targets = Vec::with_capacity(args.streams);
    for _ in 0..calls {
        // Latching on, as rtpengine learns its peers by default.
        let side = |srtp| SideOptions {
            interface: "bench".into(),
            symmetric: true,
            dtmf_filtering: false,
            signalling: None,
            srtp,
        };
        let a_policy = if args.srtp.is_some() { Policy::Sdes { required: true } } else { Policy::Passthrough };
        let b_policy = if args.srtp.is_some() { Policy::Plain } else { Policy::Passthrough };
        let mut s = book.session([side(a_policy), side(b_policy)]).expect("session");
        let offer = |a: SocketAddr, security: Security| Offered {
            relayable: true,
            rejected: false,
            rtp: Some(a),
            rtcp: None,
            held: false,
            dtmf_payload_type: None,
            sends_first: false,
            security,
        };
        let a_security = match args.srtp {
            Some(k) => Security { savp: true, lines: vec![CryptoLine { tag: 1, key: Ok(k) }], ..Security::default() },
            None => Security::default(),
        };
        let to_b = s.update(&mut book, 0, &[offer(addrs[0], a_security)]).adverts[0].clone().expect("ports for side B");
        let to_a = s.update(&mut book, 1, &[offer(addrs[1], Security::default())]).adverts[0]
            .clone()
            .expect("ports for side A");
        carry_out(&mut book);
        // Stream 2k: A→B (sent to the relay's A-facing port); 2k+1: B→A.
        targets.push((0, SocketAddr::new(to_a.addr, to_a.port)));
        targets.push((1, SocketAddr::new(to_b.addr, to_b.port)));
        sessions.push(s);
    }
    std::thread::sleep(Duration::from_millis(300)); // workers register the sockets
    let relayed = run(&args, &socks, &Plan { targets }, &Meter::Relay);
    let stats = relay.stats();
    for s in &mut sessions {
        s.close(&mut book);
    }
    carry_out(&mut book);
    drop(relay);

    let mut out = Report::new(&args);
    out.direct(&base.0);
    out.system("sbcd", &relayed);
    eprintln!("sbcd relay counters: forwarded={} drops={:?}", stats.forwarded, stats.drops);

    if let Some((ng, pid)) = args.rtpengine {
        match rtpengine::Ng::connect(ng).and_then(|ng| {
            let crypto = args.srtp.map(|k| sdes::format(1, &k));
            let targets = ng.set_up(calls, addrs, crypto.as_deref())?;
            Ok((ng, targets))
        }) {
            Ok((ng, targets)) => {
                std::thread::sleep(Duration::from_millis(300));
                let through = run(&args, &socks, &Plan { targets }, &Meter::Process(pid));
                ng.tear_down(calls);
                out.system("rtpengine", &through);
            }
            Err(e) => eprintln!("rtpengine at {ng}: {e}"),
        }
    }
}

fn bind() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind generator socket");
    let _ = nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBuf, &(8 << 20));
    let _ = nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::SndBuf, &(8 << 20));
    s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    s
}

fn local(s: &UdpSocket) -> SocketAddr {
    s.local_addr().expect("addr")
}

/// Sends `args.pps` packets per second per stream for `args.seconds`, receives on both
/// sockets, returns counts and latencies and the CPU per forwarded packet (µs) of the meter.
fn run(args: &Args, socks: &[UdpSocket; 2], plan: &Plan, meter: &Meter) -> (Measured, Option<f64>) {
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let receivers: Vec<_> = socks
        .iter()
        .map(|s| {
            let s = s.try_clone().expect("clone socket");
            let stop = stop.clone();
            let received = received.clone();
            std::thread::spawn(move || receive(&s, epoch, &stop, &received))
        })
        .collect();
    // Per packet that came back, for every system alike (a lost packet costs, not counts).
    let forwarded = || received.load(Relaxed);
    let (cpu_before, fwd_before) = (meter.cpu_ns(), forwarded());
    let sent = generate(args, socks, plan, epoch);
    std::thread::sleep(Duration::from_millis(300)); // let the last packets arrive
    let (cpu_after, fwd_after) = (meter.cpu_ns(), forwarded());
    stop.store(true, Relaxed);
    let mut latencies_us = Vec::new();
    for r in receivers {
        latencies_us.extend(r.join().expect("receiver"));
    }
    let cpu_per_packet_us = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) if fwd_after > fwd_before => {
            Some(b.saturating_sub(a) as f64 / 1000.0 / (fwd_after - fwd_before) as f64)
        }
        _ => None,
    };
    (Measured { sent, received: received.load(Relaxed), latencies_us }, cpu_per_packet_us)
}

/// Paces packets evenly: the 20 ms period is cut into 1 ms slots, each sending its share.
fn generate(args: &Args, socks: &[UdpSocket; 2], plan: &Plan, epoch: Instant) -> u64 {
    let n = plan.targets.len();
    let period = Duration::from_nanos(1_000_000_000 / args.pps);
    let slots = (period.as_millis() as usize).max(1);
    let per_slot = n.div_ceil(slots);
    let mut hdrs = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(PAYLOAD + 16)).collect();
    let mut seal = args.srtp.map(|k| {
        let profile = libsrtp::ProtectionProfile::Aes128CmHmacSha180;
        let mut cfg =
            libsrtp::StreamConfig::new(vec![libsrtp::MasterKey::new(k.key(), k.salt(), &None)], &profile, &profile);
        cfg.allow_send_repeat(true);
        let mut s = libsrtp::SendSession::new();
        s.add_stream(None, &cfg).expect("an SRTP sender");
        s
    });
    let mut seq = 0u32;
    let mut sent = 0u64;
    let end = epoch + Duration::from_secs(args.seconds);
    let mut next = Instant::now();
    'outer: loop {
        for slot in 0..slots {
            let now = Instant::now();
            if now >= end {
                break 'outer;
            }
            if next > now {
                std::thread::sleep(next - now);
            }
            next += period / slots as u32;
            let range = (slot * per_slot).min(n)..((slot + 1) * per_slot).min(n);
            for (side, sock) in socks.iter().enumerate() {
                let mine: Vec<usize> = range.clone().filter(|&s| plan.targets[s].0 == side).collect();
                for chunk in mine.chunks(BATCH) {
                    let t = epoch.elapsed().as_micros() as u32;
                    let mut dests = [None; BATCH];
                    for (k, &s) in chunk.iter().enumerate() {
                        let b = &mut bufs[k];
                        b.clear();
                        b.resize(PAYLOAD, 0);
                        b[0] = 0x80;
                        b[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
                        b[4..8].copy_from_slice(&t.to_be_bytes());
                        b[8..12].copy_from_slice(&(s as u32).to_be_bytes());
                        if let (0, Some(seal)) = (side, seal.as_mut()) {
                            *b = seal.rtp_protect(std::mem::take(b)).expect("seal");
                        }
                        dests[k] = Some(SockaddrStorage::from(plan.targets[s].1));
                    }
                    let slices: Vec<[IoSlice<'_>; 1]> = bufs[..chunk.len()].iter().map(|b| [IoSlice::new(b)]).collect();
                    let none: [ControlMessage<'_>; 0] = [];
                    if let Ok(r) = sendmmsg(
                        sock.as_raw_fd(),
                        &mut hdrs,
                        slices.iter(),
                        &dests[..chunk.len()],
                        none,
                        MsgFlags::empty(),
                    ) {
                        sent += r.count() as u64;
                    }
                }
            }
            seq = seq.wrapping_add(1);
        }
    }
    sent
}

fn receive(s: &UdpSocket, epoch: Instant, stop: &AtomicBool, received: &AtomicU64) -> Vec<u32> {
    let mut lat = Vec::new();
    let mut buf = [0u8; 2048];
    while !stop.load(Relaxed) {
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            if n >= 12 {
                let sent_us = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
                let now_us = epoch.elapsed().as_micros() as u32;
                lat.push(now_us.wrapping_sub(sent_us));
                received.fetch_add(1, Relaxed);
            }
        }
    }
    lat
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The human summary (stderr) and, with `--results`, the machine lines (stdout).
struct Report {
    tag: Option<String>,
    seconds: f64,
    base_p50: u32,
    base_p99: u32,
}

fn loss_pct(m: &Measured) -> f64 {
    100.0 * (m.sent.saturating_sub(m.received)) as f64 / m.sent.max(1) as f64
}

fn sorted(m: &Measured) -> Vec<u32> {
    let mut v = m.latencies_us.clone();
    v.sort_unstable();
    v
}

impl Report {
    fn new(args: &Args) -> Self {
        eprintln!(
            "streams={} ({} calls) pps_per_stream={} seconds={}",
            args.streams,
            args.streams / 2,
            args.pps,
            args.seconds
        );
        Self { tag: args.results.clone(), seconds: args.seconds as f64, base_p50: 0, base_p99: 0 }
    }

    fn line(&self, system: &str, key: &str, value: String) {
        if let Some(tag) = &self.tag {
            println!("{tag}.{system}.{key} {value}");
        }
    }

    fn direct(&mut self, m: &Measured) {
        let v = sorted(m);
        (self.base_p50, self.base_p99) = (percentile(&v, 0.5), percentile(&v, 0.99));
        eprintln!(
            "direct   : sent={} received={} loss={:.3}% latency_us p50={} p99={}",
            m.sent,
            m.received,
            loss_pct(m),
            self.base_p50,
            self.base_p99
        );
        self.line("direct", "offered_pps", format!("{:.0}", m.sent as f64 / self.seconds));
        self.line("direct", "latency_p50_us", self.base_p50.to_string());
        self.line("direct", "latency_p99_us", self.base_p99.to_string());
    }

    fn system(&self, name: &str, (m, cpu): &(Measured, Option<f64>)) {
        let v = sorted(m);
        let (p50, p99) = (percentile(&v, 0.5), percentile(&v, 0.99));
        let (a50, a99) = (p50.saturating_sub(self.base_p50), p99.saturating_sub(self.base_p99));
        let cpu = cpu.unwrap_or(f64::NAN);
        eprintln!(
            "{name:9}: sent={} received={} loss={:.3}% rate={:.0} pkt/s cpu_us_per_packet={cpu:.2} \
             added_latency_us p50={a50} p99={a99}",
            m.sent,
            m.received,
            loss_pct(m),
            m.received as f64 / self.seconds
        );
        self.line(name, "offered_pps", format!("{:.0}", m.sent as f64 / self.seconds));
        self.line(name, "relayed_pps", format!("{:.0}", m.received as f64 / self.seconds));
        self.line(name, "loss_pct", format!("{:.3}", loss_pct(m)));
        self.line(name, "cpu_us_per_packet", format!("{cpu:.2}"));
        self.line(name, "added_p50_us", a50.to_string());
        self.line(name, "added_p99_us", a99.to_string());
    }
}
