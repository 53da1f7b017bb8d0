//! The media path without I/O: the per-packet decision of the relay's flow table (latching,
//! destination) for one stream among 100,000, and the SDP rewrite that anchors an offer at the
//! relay (describe the m-lines, then rewrite c= and the ports), and what SRTP termination adds
//! per packet (encrypting a 172-byte G.711 packet, and encrypting then decrypting it, per suite).
//! Allocations per operation are printed after criterion's times.
//! Run: `cargo bench -p sbc-benches --bench media`.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rtp_relay::flow::{FlowLimits, RemoteSpec, StreamFlows, StreamSpec, RTP};
use rtp_relay::srtp::contexts::SideContexts;
use rtp_relay::srtp::{MasterKey, SideCrypto, Suite};
use sbc_benches::{allocations_per_op, report_allocations, CountingAlloc};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const SDP: &str = "v=0\r\no=alice 2890844526 2890844526 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 18 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:18 G729/8000\r\na=fmtp:18 annexb=no\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\nm=video 51372 RTP/AVP 99\r\na=rtpmap:99 h263-1998/90000\r\n";

const STREAMS: usize = 100_000;

fn flows(i: usize) -> StreamFlows {
    let at = |net: u8, port: u16| -> Option<SocketAddr> {
        Some(SocketAddr::from(([10, net, (i >> 8) as u8, i as u8], port)))
    };
    let remote = |net, symmetric| RemoteSpec {
        addr: [at(net, 4000), at(net, 4001)],
        symmetric,
        drop_payload_type: None,
        signalling: None,
        crypto: Default::default(),
    };
    // Policing on, as sbcd's default (its cost is part of the decision).
    let limits = FlowLimits { latch_window_ms: 2000, max_packet_rate: 1000 };
    StreamFlows::new(StreamSpec { remotes: [remote(1, true), remote(2, false)] }, limits, 0)
}

fn run(c: &mut Criterion) {
    // The worker finds a stream by its socket's slot (a Vec index), then asks its flows.
    let mut table: Vec<StreamFlows> = (0..STREAMS).map(flows).collect();
    let packet = [0x80u8, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
    let sources: Vec<SocketAddr> =
        (0..STREAMS).map(|i| SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 4000))).collect();
    // Latch every A side once (its first packet), as in a running call.
    for (i, f) in table.iter_mut().enumerate() {
        f.on_packet(0, RTP, sources[i], &packet, 1);
    }
    let mut g = c.benchmark_group("relay");
    g.throughput(Throughput::Elements(1));
    let mut k = 0usize;
    g.bench_function("flow decision for a packet, 100,000 streams (strided)", |b| {
        b.iter(|| {
            // A large odd stride visits the table out of order, as packets of many calls do.
            k = (k + 7919) % STREAMS;
            black_box(table[k].on_packet(0, RTP, sources[k], black_box(&packet), 5000))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("srtp");
    g.throughput(Throughput::Elements(1));
    for suite in [Suite::AesCm128HmacSha1_80, Suite::AeadAes128Gcm] {
        let (mut seal, mut open, mut seq) = srtp_pair(suite);
        let mut buf = [0u8; 2048];
        g.bench_function(format!("encrypt a 172-byte RTP packet, {}", suite.name()), |b| {
            b.iter(|| black_box(sealed(&mut seal, &mut buf, &mut seq)))
        });
        let (mut seal, mut open2, mut seq) = srtp_pair(suite);
        g.bench_function(format!("encrypt then decrypt it, {}", suite.name()), |b| {
            b.iter(|| {
                let n = sealed(&mut seal, &mut buf, &mut seq);
                black_box(open2.unprotect(false, &mut buf, n))
            })
        });
        let (mut seal, _, mut seq) = srtp_pair(suite);
        report_allocations(
            &format!("encrypt then decrypt, {}", suite.name()),
            allocations_per_op(10_000, || {
                let n = sealed(&mut seal, &mut buf, &mut seq);
                black_box(open.unprotect(false, &mut buf, n)).ok();
            }),
        );
    }
    g.finish();

    let mut g = c.benchmark_group("sdp");
    g.throughput(Throughput::Bytes(SDP.len() as u64));
    let ours: std::net::IpAddr = "203.0.113.1".parse().expect("ip");
    g.bench_function("anchor an offer at the relay (2 m-lines)", |b| {
        b.iter(|| black_box(profiles::sdp::media::anchor(black_box(SDP.as_bytes()), ours, &[Some(30000), Some(30002)])))
    });
    g.finish();

    let mut k = 0usize;
    report_allocations(
        "flow decision for a packet",
        allocations_per_op(100_000, || {
            k = (k + 7919) % STREAMS;
            black_box(table[k].on_packet(0, RTP, sources[k], &packet, 5000));
        }),
    );
    report_allocations(
        "anchor an offer",
        allocations_per_op(10_000, || {
            black_box(profiles::sdp::media::anchor(SDP.as_bytes(), ours, &[Some(30000), Some(30002)]));
        }),
    );
}

/// The relay's contexts towards a side (`seal`) and from it (`open`), on one key.
fn srtp_pair(suite: Suite) -> (SideContexts, SideContexts, u16) {
    let material = [0x3c; 30];
    let key = MasterKey::new(suite, &material[..suite.material_len()]).expect("key length");
    let seal = SideContexts::new(SideCrypto { srtp: true, recv: None, send: Some(key), mux: false });
    let open = SideContexts::new(SideCrypto { srtp: true, recv: Some(key), send: None, mux: false });
    (seal, open, 0)
}

/// The next G.711 packet, sealed in `buf`; its length.
fn sealed(seal: &mut SideContexts, buf: &mut [u8; 2048], seq: &mut u16) -> usize {
    *seq = seq.wrapping_add(1);
    buf[..12].copy_from_slice(&[0x80, 0, (*seq >> 8) as u8, *seq as u8, 0, 0, 0, 160, 0, 0, 0, 1]);
    buf[12..172].fill(0xd5);
    seal.protect(false, buf, 172).unwrap_or(0)
}

criterion_group!(benches, run);
criterion_main!(benches);
