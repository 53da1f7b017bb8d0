//! An INVITE flood from one address, as fast as asked (or as one thread can send), bounded in
//! time: what an attacker or a broken PBX aims at an SBC. Every INVITE is new (its own Call-ID
//! and branch), so none is absorbed as a retransmission. Used by the red-team test and by the
//! flood benchmark (`benches/load/flood.sh`, through the `flood` binary).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a flood did.
#[derive(Debug, Clone, Copy)]
pub struct FloodReport {
    /// INVITEs sent.
    pub sent: u64,
    /// Seconds the sending took.
    pub seconds: f64,
    /// Datagrams the flooding address received back (replies of any kind).
    pub replies: u64,
}

impl FloodReport {
    /// INVITEs per second achieved.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.seconds.max(1e-9)
    }
}

/// Floods `to` from `from_ip` with new INVITEs for `duration` at `rate` per second (0: as fast
/// as the socket takes them). The Request-URI names `callee` (where an admitted INVITE would
/// be relayed). Replies are counted until one second after the last INVITE.
pub fn flood_invites(from_ip: &str, to: SocketAddr, callee: SocketAddr, rate: u32, duration: Duration) -> FloodReport {
    flood_invites_from(&[from_ip.to_string()], to, callee, rate, duration)
}

/// [`flood_invites`] from several addresses in turn (a distributed flood, each source below
/// the per-source limits when there are enough of them).
pub fn flood_invites_from(
    from_ips: &[String],
    to: SocketAddr,
    callee: SocketAddr,
    rate: u32,
    duration: Duration,
) -> FloodReport {
    let socks: Vec<UdpSocket> =
        from_ips.iter().map(|ip| UdpSocket::bind((ip.as_str(), 0)).expect("bind a flooding socket")).collect();
    let done = Arc::new(AtomicBool::new(false));
    let replies = Arc::new(AtomicU64::new(0));
    let counters: Vec<_> = socks
        .iter()
        .map(|sock| {
            let (sock, done, replies) = (sock.try_clone().expect("clone socket"), done.clone(), replies.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                sock.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
                while !done.load(Ordering::Relaxed) {
                    if sock.recv_from(&mut buf).is_ok() {
                        replies.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    let mut sent = 0u64;
    let mut msg = Vec::with_capacity(512);
    while start.elapsed() < duration {
        // Paced in 1 ms steps: send what the rate allows by now, then wait for the next step.
        let allowed = if rate == 0 { sent + 64 } else { (start.elapsed().as_secs_f64() * f64::from(rate)) as u64 };
        if sent >= allowed {
            std::thread::sleep(Duration::from_micros(500));
            continue;
        }
        while sent < allowed {
            let sock = &socks[(sent % socks.len() as u64) as usize];
            let me = sock.local_addr().expect("flood addr");
            msg.clear();
            msg.extend_from_slice(
                format!(
                    "INVITE sip:flood@{callee} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKfl{sent}\r\nMax-Forwards: 70\r\nFrom: <sip:flood@{me}>;tag=f{sent}\r\nTo: <sip:flood@{callee}>\r\nCall-ID: flood-{sent}@{me}\r\nCSeq: 1 INVITE\r\nContact: <sip:flood@{me}>\r\nContent-Length: 0\r\n\r\n"
                )
                .as_bytes(),
            );
            // A full socket buffer refuses: that datagram is not counted and the next step sends again.
            if sock.send_to(&msg, to).is_ok() {
                sent += 1;
            } else {
                break;
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    done.store(true, Ordering::Relaxed);
    for c in counters {
        let _ = c.join();
    }
    FloodReport { sent, seconds, replies: replies.load(Ordering::Relaxed) }
}

/// Peak resident memory of process `pid` in bytes (`VmHWM`), where /proc has it.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    Some(kb * 1024)
}
