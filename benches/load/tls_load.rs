//! SIP over TLS beside UDP, in one run: a load generator of our own (Debian's SIPp is built
//! without TLS) places calls through sbcd to a SIPp callee on UDP, over UDP and then over
//! TLS, at each rate, and measures sbcd's CPU per call from `/proc`. A call is INVITE (with
//! SDP), 180, 200, ACK, BYE, 200 on the caller's side. Over TLS the calls share a few
//! long-lived connections (as a trunk's do); with `--fresh` each call opens its own and pays a
//! full handshake (the worst case: phones that reconnect).
//!
//! It starts sbcd (`--sbcd PATH`, release build) with a certificate it makes (rcgen), and SIPp.
//! Results: `--results TAG` prints `TAG.<transport>.<rate>.<key> value` lines on stdout; the
//! human summary goes to stderr.
//!
//! Usage: `tls_load --sbcd target/release/sbcd [--rates 200,500,1000] [--seconds 10]
//!   [--workers 8] [--fresh] [--results TAG]`

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use sbc_benches::process_cpu_s as cpu_s;

struct Args {
    sbcd: PathBuf,
    rates: Vec<u64>,
    seconds: u64,
    workers: usize,
    fresh: bool,
    results: Option<String>,
    /// YAML appended to sbcd's configuration (`capture:` for its cost, say).
    extra: String,
}

fn parse_args() -> Args {
    let mut a = Args {
        sbcd: "target/release/sbcd".into(),
        rates: vec![200, 500, 1000],
        seconds: 10,
        workers: 8,
        fresh: false,
        results: None,
        extra: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--fresh" {
            a.fresh = true;
            continue;
        }
        let v = it.next().unwrap_or_else(|| usage(&k));
        match k.as_str() {
            "--sbcd" => a.sbcd = v.into(),
            "--rates" => a.rates = v.split(',').map(|r| r.trim().parse().unwrap_or_else(|_| usage(&k))).collect(),
            "--seconds" => a.seconds = v.parse().unwrap_or_else(|_| usage(&k)),
            "--workers" => a.workers = v.parse::<usize>().unwrap_or_else(|_| usage(&k)).max(1),
            "--results" => a.results = Some(v),
            "--extra-yaml" => a.extra = std::fs::read_to_string(&v).unwrap_or_else(|_| usage(&k)),
            _ => usage(&k),
        }
    }
    a
}

fn usage(k: &str) -> ! {
    eprintln!(
        "tls_load: bad argument {k}\nusage: tls_load --sbcd PATH [--rates 200,500] [--seconds S] [--workers W] [--fresh] [--results TAG] [--extra-yaml FILE]"
    );
    std::process::exit(2)
}

/// A port free for both UDP and TCP (sbcd binds both kinds).
fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = tcp.local_addr().expect("addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A CA and sbcd's certificate for 127.0.0.1, written to `dir`: (CA DER, cert path, key path).
fn certificates(dir: &Path) -> (CertificateDer<'static>, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("ca key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let leaf =
        CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params").signed_by(&key, &ca).expect("leaf");
    let (cert, keyfile) = (dir.join("sbcd.pem"), dir.join("sbcd.key"));
    std::fs::write(&cert, leaf.pem()).expect("cert written");
    std::fs::write(&keyfile, key.serialize_pem()).expect("key written");
    (ca.der().clone(), cert, keyfile)
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One side's way to the SBC.
enum Link {
    Udp(UdpSocket, SocketAddr),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>, Vec<u8>),
}

impl Link {
    fn tls(sbc: SocketAddr, cfg: &Arc<rustls::ClientConfig>) -> std::io::Result<Self> {
        let conn = rustls::ClientConnection::new(cfg.clone(), ServerName::IpAddress(sbc.ip().into()))
            .map_err(std::io::Error::other)?;
        let sock = TcpStream::connect(sbc)?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))?;
        sock.set_nodelay(true)?;
        Ok(Self::Tls(Box::new(rustls::StreamOwned::new(conn, sock)), Vec::new()))
    }

    fn udp(sbc: SocketAddr) -> std::io::Result<Self> {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Self::Udp(s, sbc))
    }

    fn local(&self) -> SocketAddr {
        match self {
            Self::Udp(s, _) => s.local_addr().expect("addr"),
            Self::Tls(t, _) => t.sock.local_addr().expect("addr"),
        }
    }

    fn send(&mut self, msg: &str) -> std::io::Result<()> {
        match self {
            Self::Udp(s, to) => s.send_to(msg.as_bytes(), *to).map(drop),
            Self::Tls(t, _) => {
                t.write_all(msg.as_bytes())?;
                t.flush()
            }
        }
    }

    /// The next message.
    fn recv(&mut self) -> std::io::Result<String> {
        match self {
            Self::Udp(s, _) => {
                let mut b = [0u8; 4096];
                let (n, _) = s.recv_from(&mut b)?;
                Ok(String::from_utf8_lossy(&b[..n]).into_owned())
            }
            Self::Tls(t, buf) => loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").or_else(|| l.strip_prefix("l:")))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        let msg: Vec<u8> = buf.drain(..end + 4 + len).collect();
                        return Ok(String::from_utf8_lossy(&msg).into_owned());
                    }
                }
                let mut b = [0u8; 4096];
                let n = t.read(&mut b)?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&b[..n]);
            },
        }
    }

    /// The final response to `cseq` (provisional ones and anything else skipped).
    fn final_response(&mut self, method: &str, cseq: u32) -> std::io::Result<String> {
        loop {
            let m = self.recv()?;
            let status: u16 = m.get(8..11).and_then(|s| s.parse().ok()).unwrap_or(0);
            let ours = m.lines().any(|l| l.eq_ignore_ascii_case(&format!("CSeq: {cseq} {method}")));
            if m.starts_with("SIP/2.0 ") && ours && status >= 200 {
                return Ok(m);
            }
        }
    }
}

fn header<'a>(m: &'a str, name: &str) -> Option<&'a str> {
    m.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// One call on `link`: true if it was answered and ended cleanly.
fn call(link: &mut Link, uas: SocketAddr, n: u64, tls: bool) -> bool {
    let local = link.local();
    let (via, scheme) = if tls { ("TLS", ";transport=tls") } else { ("UDP", "") };
    let call_id = format!("load-{}-{n}@{local}", std::process::id());
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let req = |method: &str, uri: &str, cseq: u32, to: &str, body: &str| {
        let ct = if body.is_empty() { "" } else { "Content-Type: application/sdp\r\n" };
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/{via} {local};branch=z9hG4bK{n}x{cseq}{m};rport\r\nMax-Forwards: 70\r\nFrom: <sip:load@{local}>;tag=l{n}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:load@{local}{scheme}>\r\n{ct}Content-Length: {}\r\n\r\n{body}",
            body.len(),
            m = method.len()
        )
    };
    let ruri = format!("sip:callee@{uas}");
    let mut run = || -> std::io::Result<bool> {
        link.send(&req("INVITE", &ruri, 1, &format!("<{ruri}>"), sdp))?;
        let ok = link.final_response("INVITE", 1)?;
        if !ok.starts_with("SIP/2.0 200") {
            return Ok(false);
        }
        let to = header(&ok, "To").unwrap_or_default().to_string();
        let target = header(&ok, "Contact")
            .and_then(|c| Some(c.split_once('<')?.1.split_once('>')?.0.to_string()))
            .unwrap_or_else(|| ruri.clone());
        link.send(&req("ACK", &target, 1, &to, ""))?;
        link.send(&req("BYE", &target, 2, &to, ""))?;
        Ok(link.final_response("BYE", 2)?.starts_with("SIP/2.0 200"))
    };
    run().unwrap_or(false)
}

struct Step {
    /// Calls answered a second over the step (each caller places one call at a time: a slow
    /// answer lowers it below the rate asked).
    achieved: f64,
    answered: u64,
    failed: u64,
    cpu_ms_per_call: f64,
    cpu_pct: f64,
}

fn step(
    args: &Args,
    pid: u32,
    sbc: SocketAddr,
    uas: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
    rate: u64,
) -> Step {
    let (answered, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let total = rate * args.seconds;
    let per_worker = total.div_ceil(args.workers as u64);
    let interval = Duration::from_secs_f64(args.workers as f64 / rate as f64);
    let (cpu0, t0) = (cpu_s(pid), Instant::now());
    std::thread::scope(|s| {
        for w in 0..args.workers {
            let (answered, failed) = (answered.clone(), failed.clone());
            s.spawn(move || {
                let open = || match tls {
                    Some(cfg) => Link::tls(sbc, cfg),
                    None => Link::udp(sbc),
                };
                let mut link = open().ok();
                let start =
                    Instant::now() + Duration::from_secs_f64(w as f64 * interval.as_secs_f64() / args.workers as f64);
                for k in 0..per_worker {
                    let due = start + interval * k as u32;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    if args.fresh && tls.is_some() && k > 0 {
                        link = open().ok();
                    }
                    let n = (w as u64) << 32 | k;
                    let ok = link.as_mut().is_some_and(|l| call(l, uas, n, tls.is_some()));
                    if ok {
                        answered.fetch_add(1, Relaxed);
                    } else {
                        failed.fetch_add(1, Relaxed);
                        link = open().ok();
                    }
                }
            });
        }
    });
    let (cpu, wall) = (cpu_s(pid) - cpu0, t0.elapsed().as_secs_f64());
    let answered = answered.load(Relaxed);
    Step {
        achieved: answered as f64 / wall,
        answered,
        failed: failed.load(Relaxed),
        cpu_ms_per_call: cpu * 1000.0 / answered.max(1) as f64,
        cpu_pct: 100.0 * cpu / wall,
    }
}

fn main() {
    let args = parse_args();
    let dir = std::env::temp_dir().join(format!("tls-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("work dir");
    let (ca, cert, key) = certificates(&dir);
    let (sip_port, tls_port, uas_port, admin_port) = (free_port(), free_port(), free_port(), free_port());
    let yaml = format!(
        "interfaces:\n  - name: default\n    listen: [udp:127.0.0.1:{sip_port}, tls:127.0.0.1:{tls_port}]\n    tls: {{cert_file: {}, key_file: {}}}\nlimits:\n  tls_handshakes_per_source: 0\n  tcp_max_connections_per_source: 0\n  admission:\n    per_source_cps: 0\n",
        cert.display(),
        key.display()
    );
    let cfg = dir.join("sbc.yaml");
    std::fs::write(&cfg, yaml + &args.extra).expect("config written");
    let sbcd = Proc(
        Command::new(&args.sbcd)
            .args(["--config", cfg.to_str().expect("utf8"), "--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .env("RUST_LOG", "warn")
            .stderr(std::fs::File::create(dir.join("sbcd.log")).expect("log"))
            .spawn()
            .expect("sbcd starts (--sbcd PATH)"),
    );
    let uas = Proc(
        Command::new("sipp")
            // In the foreground (not -bg): killed with this run.
            .args(["-sn", "uas", "-i", "127.0.0.1", "-p", &uas_port.to_string(), "-nostdin"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp (sip-tester) runs"),
    );
    std::thread::sleep(Duration::from_millis(800));
    let mut sbcd = sbcd;
    if let Ok(Some(status)) = sbcd.0.try_wait() {
        let log = std::fs::read_to_string(dir.join("sbcd.log")).unwrap_or_default();
        eprintln!("sbcd exited ({status}):\n{log}");
        std::process::exit(1);
    }
    let pid = sbcd.0.id();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("ca");
    #[allow(deprecated)] // ring, as sbcd's (sbc-core/src/driver/tls.rs)
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let sbc_udp: SocketAddr = format!("127.0.0.1:{sip_port}").parse().expect("addr");
    let sbc_tls: SocketAddr = format!("127.0.0.1:{tls_port}").parse().expect("addr");
    let uas_addr: SocketAddr = format!("127.0.0.1:{uas_port}").parse().expect("addr");
    let mode = if args.fresh { "a new connection per call" } else { "shared connections" };
    eprintln!("calls over UDP and over TLS ({mode}), {} s per step, {} workers", args.seconds, args.workers);
    for &rate in &args.rates {
        for (name, tls, sbc) in [("udp", None, sbc_udp), ("tls", Some(&client), sbc_tls)] {
            let s = step(&args, pid, sbc, uas_addr, tls, rate);
            eprintln!(
                "{rate:>6}/s {name}: answered={} ({:.0}/s) failed={} sbcd CPU {:.1} % = {:.3} ms per call",
                s.answered, s.achieved, s.failed, s.cpu_pct, s.cpu_ms_per_call
            );
            if let Some(tag) = &args.results {
                for (k, v) in [
                    ("answered", s.answered.to_string()),
                    ("achieved_cps", format!("{:.0}", s.achieved)),
                    ("failed", s.failed.to_string()),
                    ("cpu_pct", format!("{:.1}", s.cpu_pct)),
                    ("cpu_ms_per_call", format!("{:.3}", s.cpu_ms_per_call)),
                ] {
                    println!("{tag}.{name}.{rate}.{k} {v}");
                }
            }
        }
    }
    drop(uas);
    drop(sbcd);
    let _ = std::fs::remove_dir_all(&dir);
}
