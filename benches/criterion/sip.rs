//! The signalling path without I/O: parsing (framing + header index) an INVITE, writing a
//! response, and whole calls through the sans-IO B2BUA engine — the B-leg INVITE built from
//! the A-leg one, every transaction and dialog lookup — with no other call, and with 100,000
//! established calls in the engine's tables. Virtual time advances 1 ms per call (1,000
//! calls/s), so finished transactions linger as they do under load. Allocations per operation
//! are printed after criterion's times. Run: `cargo bench -p sbc-benches --bench sip`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sbc_benches::{allocations_per_op, live_bytes, report_allocations, CountingAlloc};
use sbc_engine::b2bua::{Destination, Engine, EngineConfig, Interface, LocalSocket, Output, Peer, Source, Transport};
use sbc_engine::sip::msg::{HeaderName, Message, MessageWriter};
use sbc_engine::sip::transaction::TimerConfig;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const SBC: &str = "127.0.0.1:5060";
const ALICE: &str = "127.0.0.1:5001";
const BOB: &str = "127.0.0.1:5002";
const SDP: &str = "v=0\r\no=alice 2890844526 2890844526 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("bench address")
}

fn invite(n: u64) -> String {
    format!(
        "INVITE sip:bob@{BOB} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {ALICE};branch=z9hG4bKa{n};rport\r\n\
         Max-Forwards: 70\r\n\
         From: \"Alice\" <sip:alice@{ALICE}>;tag=a{n}\r\n\
         To: <sip:bob@{BOB}>\r\n\
         Call-ID: {n}-bench@{ALICE}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:alice@{ALICE}>\r\n\
         User-Agent: bench\r\n\
         Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    )
}

/// A response to `req` (as a peer would build it: its Via, From, To, Call-ID and CSeq).
fn response(req: &Message, code: u16, to_tag: &str, body: &str) -> Bytes {
    let mut w = MessageWriter::response(code, sbc_engine::sip::msg::reason_phrase(code).as_bytes());
    for h in req.headers() {
        if matches!(h.name, HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq) {
            w.copy_row(req, h);
        }
    }
    let to = String::from_utf8_lossy(req.header_value(HeaderName::To).unwrap_or_default()).into_owned();
    let to = if to.contains(";tag=") { to } else { format!("{to};tag={to_tag}") };
    w.header("To", to.as_bytes()).header("Contact", format!("<sip:bob@{BOB}>").as_bytes());
    if !body.is_empty() {
        w.header("Content-Type", b"application/sdp");
    }
    w.finish(body.as_bytes())
}

fn parse(b: Bytes) -> Message {
    Message::parse(b).expect("bench message parses")
}

/// One engine (one shard) with the transparent profile, and its two peers.
struct Bench {
    engine: Engine,
    now: Instant,
    calls: u64,
    to_alice: Vec<Message>,
    to_bob: Vec<Message>,
}

impl Bench {
    fn new() -> Self {
        let cfg = EngineConfig {
            shard: 0,
            timers: TimerConfig::default(),
            timer_c: Duration::from_secs(180),
            max_call_duration: Duration::from_secs(36_000),
            interfaces: vec![Interface {
                name: "default".into(),
                sockets: vec![LocalSocket { id: 0, transport: Transport::Udp, addr: addr(SBC), advertised: None }],
            }],
            outbound_interface: 0,
            next_hop: None,
            max_calls: 10_000_000,
            profiles: Arc::new(profiles::Store::new(profiles::Snapshot::transparent("bench", vec!["default".into()]))),
            media: None,
            reg_cache: Arc::new(regcache::RegCache::in_memory()),
            max_registrations: 1000,
            nonce_key: [7; 32],
            admission: Arc::new(sbc_engine::admission::Unlimited),
            connections: Arc::new(sbc_engine::connections::NoConnections),
            retransmission_cache: 32 << 20,
            health: Arc::new(sbc_engine::health::AlwaysUsable),
            probe_interval: None,
        };
        // Virtual time: an arbitrary start, advanced by the bench only.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        Self { engine: Engine::new(cfg, [1; 32]), now, calls: 0, to_alice: Vec::new(), to_bob: Vec::new() }
    }

    fn input(&mut self, from: &str, msg: Message) {
        let src = Source { transport: Transport::Udp, local: 0, remote: addr(from), conn: None };
        self.engine.handle_message(self.now, msg, src);
        while let Some(o) = self.engine.poll_output() {
            if let Output::Transmit { dest: Destination { peer: Peer::Addr(to), .. }, bytes, .. } = o {
                let m = parse(bytes);
                if to == addr(ALICE) {
                    self.to_alice.push(m)
                } else {
                    self.to_bob.push(m)
                }
            }
        }
    }

    /// 1 ms of virtual time: due timers run (transactions finishing, as at 1,000 calls/s).
    fn tick(&mut self) {
        self.now += Duration::from_millis(1);
        while self.engine.poll_timeout().is_some_and(|t| t <= self.now) {
            self.engine.handle_timeout(self.now);
            while self.engine.poll_output().is_some() {}
        }
    }

    /// INVITE / 100 / 180 / 200 / ACK on both legs; returns what the caller needs to hang up.
    fn establish(&mut self) -> (String, Message) {
        self.calls += 1;
        let n = self.calls;
        self.to_alice.clear();
        self.to_bob.clear();
        self.input(ALICE, parse(Bytes::from(invite(n))));
        let b_invite = self.to_bob.pop().expect("B-leg INVITE");
        let tag = format!("b{n}");
        self.input(BOB, parse(response(&b_invite, 180, &tag, "")));
        self.input(BOB, parse(response(&b_invite, 200, &tag, SDP)));
        let ok = self.to_alice.pop().expect("200 to the caller");
        let to = String::from_utf8_lossy(ok.header_value(HeaderName::To).unwrap_or_default()).into_owned();
        let ack = format!(
            "ACK sip:{SBC} SIP/2.0\r\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKack{n}\r\nMax-Forwards: 70\r\n\
             From: \"Alice\" <sip:alice@{ALICE}>;tag=a{n}\r\nTo: {to}\r\nCall-ID: {n}-bench@{ALICE}\r\n\
             CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        );
        self.input(ALICE, parse(Bytes::from(ack)));
        (to, b_invite)
    }

    /// A basic call: established, then BYE / 200 from the caller's side.
    fn call(&mut self) {
        let (to, _) = self.establish();
        let n = self.calls;
        let bye = format!(
            "BYE sip:{SBC} SIP/2.0\r\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKbye{n}\r\nMax-Forwards: 70\r\n\
             From: \"Alice\" <sip:alice@{ALICE}>;tag=a{n}\r\nTo: {to}\r\nCall-ID: {n}-bench@{ALICE}\r\n\
             CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        );
        self.input(ALICE, parse(Bytes::from(bye)));
        let b_bye = self.to_bob.pop().expect("B-leg BYE");
        self.input(BOB, parse(response(&b_bye, 200, "", "")));
        self.tick();
    }
}

fn run(c: &mut Criterion) {
    let text = Bytes::from(invite(1));
    let mut g = c.benchmark_group("sip");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("parse an INVITE with SDP (framing + header index)", |b| {
        b.iter(|| black_box(Message::parse(black_box(text.clone()))))
    });
    // TCP: a read of 8 messages back to back, cut into messages (then each parsed as above).
    let stream: Vec<u8> = text.iter().copied().cycle().take(text.len() * 8).collect();
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("frame 8 INVITEs from a TCP stream", |b| {
        b.iter(|| {
            let mut rest = black_box(&stream[..]);
            while let Ok(sbc_engine::sip::msg::StreamFrame::Message { len }) = sbc_engine::sip::msg::frame_stream(rest)
            {
                rest = &rest[len..];
            }
            black_box(rest.len())
        })
    });
    g.throughput(Throughput::Bytes(text.len() as u64));
    let msg = parse(text.clone());
    g.bench_function("write a 200 OK for it (copied rows + SDP)", |b| {
        b.iter(|| black_box(response(black_box(&msg), 200, "t1", SDP)))
    });
    g.finish();

    // Whole calls through the engine; the peers' work (parsing what the SBC sent, building their
    // answers) is inside the loop too but small next to the engine's (see the parse figure).
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(1));
    let mut idle = Bench::new();
    g.bench_function("basic call, 14 messages (no other call)", |b| b.iter(|| idle.call()));
    let mut loaded = Bench::new();
    for i in 0..100_000 {
        loaded.establish();
        if i % 100 == 0 {
            loaded.tick();
        }
    }
    g.bench_function("basic call, 14 messages (100,000 calls established)", |b| b.iter(|| loaded.call()));
    g.finish();

    report_allocations("parse an INVITE", allocations_per_op(10_000, || drop(black_box(Message::parse(text.clone())))));
    report_allocations(
        "write a 200 OK",
        allocations_per_op(10_000, || drop(black_box(response(&msg, 200, "t1", SDP)))),
    );
    let mut peers = Bench::new();
    let peers_only = allocations_per_op(2_000, || {
        let m = parse(Bytes::from(invite(1)));
        drop(black_box(response(&m, 180, "b", "")));
    });
    report_allocations("basic call through the engine, peers included", allocations_per_op(10_000, || peers.call()));
    report_allocations("(a peer parsing an INVITE and answering it, for scale)", peers_only);
    held_call_heap();
}

/// The heap an established call holds in the engine once its transactions are gone (RFC 3261
/// keeps a finished one for up to 64·T1 = 32 s), with the transparent profile: every byte the
/// engine requested for it, its tables' spare capacity included; not the allocator's own
/// overhead, nor the runtime's.
fn held_call_heap() {
    const HELD: i64 = 50_000;
    let before = live_bytes();
    let mut held = Bench::new();
    for _ in 0..HELD {
        held.establish();
    }
    held.to_alice.clear();
    held.to_bob.clear();
    let with_transactions = live_bytes() - before;
    for _ in 0..40_000 {
        held.tick(); // 40 s of virtual time: every finished transaction expires
    }
    let established = live_bytes() - before;
    println!(
        "heap per held call ({HELD} established): {} bytes, {} with its finished transactions",
        established / HELD,
        with_transactions / HELD
    );
}

criterion_group!(benches, run);
criterion_main!(benches);
