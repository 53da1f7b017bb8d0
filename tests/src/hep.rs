//! A Homer stand-in for the tests: takes HEPv3 packets on a loopback UDP port or TCP listener
//! and decodes them (its own decoder, written from the HEP3 chunk list, not sbcd's encoder).
//! It stops when dropped.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One decoded packet.
#[derive(Debug, Clone)]
pub struct HepPacket {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// IP protocol: 17 UDP, 6 TCP.
    pub protocol: u8,
    pub time: SystemTime,
    pub agent_id: Option<u32>,
    pub password: Option<String>,
    pub node_name: Option<String>,
    pub correlation: Option<String>,
    pub payload: String,
}

impl HepPacket {
    /// The payload's Call-ID header.
    pub fn call_id(&self) -> Option<&str> {
        self.payload.split("\r\n").find_map(|l| {
            let (n, v) = l.split_once(':')?;
            (n.trim().eq_ignore_ascii_case("call-id") || n.trim().eq_ignore_ascii_case("i")).then(|| v.trim())
        })
    }

    /// The payload's first line.
    pub fn first_line(&self) -> &str {
        self.payload.split("\r\n").next().unwrap_or_default()
    }
}

pub struct HepListener {
    pub addr: SocketAddr,
    packets: Arc<Mutex<Vec<HepPacket>>>,
    /// Packets that did not decode.
    bad: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
}

impl HepListener {
    /// Listens on UDP, one packet per datagram.
    pub fn udp() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind hep");
        sock.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
        let me = Self::new(sock.local_addr().expect("addr"));
        let (packets, bad, stop) = (me.packets.clone(), me.bad.clone(), me.stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 70_000];
            while !stop.load(Ordering::Relaxed) {
                let Ok(n) = sock.recv(&mut buf) else { continue };
                keep(&packets, &bad, decode(&buf[..n]));
            }
        });
        me
    }

    /// Listens on TCP: packets back to back on each connection, framed by their length field.
    pub fn tcp() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind hep");
        l.set_nonblocking(true).expect("nonblocking");
        let me = Self::new(l.local_addr().expect("addr"));
        let (packets, bad, stop) = (me.packets.clone(), me.bad.clone(), me.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let (packets, bad, stop) = (packets.clone(), bad.clone(), stop.clone());
                std::thread::spawn(move || {
                    conn.set_nonblocking(false).ok();
                    let mut head = [0u8; 6];
                    while !stop.load(Ordering::Relaxed) {
                        // Waits for a packet's first byte in short steps (to see `stop`), then
                        // reads the packet whole: a timeout never falls inside one.
                        conn.set_read_timeout(Some(Duration::from_millis(50))).ok();
                        match conn.read(&mut head[..1]) {
                            Ok(0) => return,
                            Ok(_) => {}
                            Err(_) => continue,
                        }
                        conn.set_read_timeout(Some(Duration::from_secs(2))).ok();
                        if conn.read_exact(&mut head[1..]).is_err() {
                            return;
                        }
                        let len = usize::from(u16::from_be_bytes([head[4], head[5]]));
                        let mut rest = vec![0u8; len.saturating_sub(6)];
                        if conn.read_exact(&mut rest).is_err() {
                            return;
                        }
                        let whole: Vec<u8> = head.iter().chain(&rest).copied().collect();
                        keep(&packets, &bad, decode(&whole));
                    }
                });
            }
        });
        me
    }

    fn new(addr: SocketAddr) -> Self {
        Self { addr, packets: Arc::default(), bad: Arc::default(), stop: Arc::default() }
    }

    pub fn packets(&self) -> Vec<HepPacket> {
        self.packets.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Packets that did not decode as HEPv3.
    pub fn undecodable(&self) -> usize {
        *self.bad.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The packets once `done` holds of them, or all there are after `within`.
    pub fn wait_until(&self, within: Duration, done: impl Fn(&[HepPacket]) -> bool) -> Vec<HepPacket> {
        let deadline = Instant::now() + within;
        loop {
            let p = self.packets();
            if done(&p) || Instant::now() > deadline {
                return p;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for HepListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn keep(packets: &Mutex<Vec<HepPacket>>, bad: &Mutex<usize>, p: Option<HepPacket>) {
    match p {
        Some(p) => packets.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(p),
        None => *bad.lock().unwrap_or_else(std::sync::PoisonError::into_inner) += 1,
    }
}

/// A HEPv3 packet, or `None` when its framing, a vendor id, the family or the protocol type
/// is wrong or a mandatory chunk is missing.
pub fn decode(b: &[u8]) -> Option<HepPacket> {
    if b.len() < 6 || &b[..4] != b"HEP3" || usize::from(u16::from_be_bytes([b[4], b[5]])) != b.len() {
        return None;
    }
    let (mut src_ip, mut dst_ip, mut ports) = (None, None, (None, None));
    let (mut secs, mut micros, mut protocol) = (None, 0u32, None);
    let (mut family, mut sip) = (None, false);
    let mut p = HepPacket {
        src: SocketAddr::from(([0, 0, 0, 0], 0)),
        dst: SocketAddr::from(([0, 0, 0, 0], 0)),
        protocol: 0,
        time: UNIX_EPOCH,
        agent_id: None,
        password: None,
        node_name: None,
        correlation: None,
        payload: String::new(),
    };
    let mut payload = None;
    let mut at = 6;
    while at < b.len() {
        let h = b.get(at..at + 6)?;
        if h[..2] != [0, 0] {
            return None;
        }
        let kind = u16::from_be_bytes([h[2], h[3]]);
        let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
        let data = b.get(at + 6..at + len.max(6))?;
        let text = || Some(String::from_utf8_lossy(data).into_owned());
        match kind {
            0x01 => family = data.first().copied(),
            0x02 => protocol = data.first().copied(),
            0x0b => sip = data == [1],
            0x03 | 0x04 => {
                let ip = IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(data).ok()?));
                if kind == 0x03 {
                    src_ip = Some(ip)
                } else {
                    dst_ip = Some(ip)
                }
            }
            0x05 | 0x06 => {
                let ip = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(data).ok()?));
                if kind == 0x05 {
                    src_ip = Some(ip)
                } else {
                    dst_ip = Some(ip)
                }
            }
            0x07 => ports.0 = Some(u16::from_be_bytes(data.try_into().ok()?)),
            0x08 => ports.1 = Some(u16::from_be_bytes(data.try_into().ok()?)),
            0x09 => secs = Some(u32::from_be_bytes(data.try_into().ok()?)),
            0x0a => micros = u32::from_be_bytes(data.try_into().ok()?),
            0x0c => p.agent_id = Some(u32::from_be_bytes(data.try_into().ok()?)),
            0x0e => p.password = text(),
            0x0f => payload = text(),
            0x11 => p.correlation = text(),
            0x13 => p.node_name = text(),
            _ => {}
        }
        at += len.max(6);
    }
    let (src_ip, dst_ip) = (src_ip?, dst_ip?);
    let expected = if src_ip.is_ipv4() && dst_ip.is_ipv4() { 2 } else { 10 };
    if family != Some(expected) || src_ip.is_ipv4() != dst_ip.is_ipv4() || !sip {
        return None;
    }
    p.src = SocketAddr::new(src_ip, ports.0?);
    p.dst = SocketAddr::new(dst_ip, ports.1?);
    p.protocol = protocol?;
    p.time = UNIX_EPOCH + Duration::from_secs(u64::from(secs?)) + Duration::from_micros(u64::from(micros));
    p.payload = payload?;
    Some(p)
}
