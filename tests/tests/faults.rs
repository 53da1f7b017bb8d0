//! Faults of the peers: a callee that never answers, one that vanishes mid-call. Transaction
//! timers are scaled down (T1 = 50 ms, so Timer B/F = 3.2 s) to keep the tests short; the CDR
//! must say how each call ended.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sbc_e2e::phone::Phone;
use sbc_e2e::ua::{sdp, TestUa};
use sbc_e2e::*;

fn config(dir: &Path, next_hop: &str) -> (PathBuf, PathBuf) {
    let csv = dir.join("cdr.csv");
    let text = format!(
        "sip: {{t1_ms: 50, t2_ms: 400}}\ncall_control:\n  cc_syslog_cdr: {{csv_file: {}}}\nactive_profile: p\nprofiles:\n  p:\n    next_hop: {next_hop}\n    call_control: cdr\n    cdr_module: cc_syslog_cdr\n",
        csv.display()
    );
    (config_file_in(dir, &text), csv)
}

/// The CDR row (as columns) once it is written.
fn cdr_row(csv: &Path) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(csv).unwrap_or_default();
        if let Some(line) = text.lines().next() {
            return line.split(',').map(str::to_string).collect();
        }
        assert!(Instant::now() < deadline, "no CDR in {}", csv.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn col(row: &[String], name: &str) -> String {
    let i = callcontrol::modules::CSV_COLUMNS.iter().position(|c| *c == name).expect("column");
    row[i].clone()
}

#[test]
fn a_callee_that_never_answers_times_out_to_408_with_its_cdr() {
    let dir = scratch_dir("fault-silent");
    let port = free_port();
    let _uas = sipp_uas("uas_silent.xml", port, Transport::Udp, 1);
    let (cfg, csv) = config(&dir, &format!("127.0.0.1:{port}"));
    let sbcd = Sbcd::start(&["--config", cfg.to_str().expect("utf8")]);
    let mut ua = TestUa::new(sbcd.addr());
    let t0 = Instant::now();
    let r = ua.invite(&format!("sip:bob@127.0.0.1:{port}"), &sdp("127.0.0.1", 7040, ""));
    assert_eq!(r.status(), Some(408), "{}", r.0);
    assert!(t0.elapsed() < Duration::from_secs(8), "Timer B is 64 x T1: {:?}", t0.elapsed());
    let row = cdr_row(&csv);
    assert_eq!(
        (col(&row, "code"), col(&row, "cause"), col(&row, "disposition")),
        ("408".into(), "timeout".into(), "failed".into()),
        "{row:?}"
    );
}

#[test]
fn a_callee_that_vanishes_mid_call_ends_the_call_when_its_bye_times_out() {
    let dir = scratch_dir("fault-vanish");
    let sbc_port = free_port();
    let mut callee = Phone::udp(std::net::SocketAddr::from(([127, 0, 0, 1], sbc_port)), "bob");
    let (cfg, csv) = config(&dir, &callee.local_addr().to_string());
    let sbcd = Sbcd::start_on(sbc_port, &["--config", cfg.to_str().expect("utf8")]);
    // The callee answers (its Contact, 127.0.0.9:5099, is where nothing listens) and is gone.
    let answering = std::thread::spawn(move || {
        let inv = callee.recv_request(Duration::from_secs(10)).expect("INVITE");
        callee.answer(&inv, 200);
        callee
    });
    let mut ua = TestUa::new(sbcd.addr());
    let ok = ua.invite("sip:bob@127.0.0.1:5099", &sdp("127.0.0.1", 7042, ""));
    assert_eq!(ok.status(), Some(200));
    let _callee = answering.join().expect("callee");
    let t0 = Instant::now();
    let r = ua.bye();
    assert_eq!(r.status(), Some(408), "{}", r.0);
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    let (_, stats) = http(&sbcd, "GET", "/stats", None, None);
    assert!(stats.contains("\"calls_active\":0"), "{stats}");
    let row = cdr_row(&csv);
    assert_eq!((col(&row, "disposition"), col(&row, "cause")), ("answered".into(), "bye_timeout".into()), "{row:?}");
}

#[test]
fn a_tcp_callee_that_resets_mid_call_gets_the_call_ended_at_once() {
    let dir = scratch_dir("fault-reset");
    let port = free_port();
    let uas = sipp_uas("uas_basic.xml", port, Transport::Tcp, 1);
    let (cfg, csv) = config(&dir, &format!("127.0.0.1:{port}/tcp"));
    let sbcd = Sbcd::start(&["--config", cfg.to_str().expect("utf8")]);
    let mut ua = TestUa::new(sbcd.addr());
    ua.extra_headers = "X-Test-Header: reset\r\n".into();
    let ok = ua.invite(&format!("sip:bob@127.0.0.1:{port}"), &sdp("127.0.0.1", 7044, ""));
    assert_eq!(ok.status(), Some(200), "{}", ok.0);
    // The callee dies: its connection is reset and nothing listens any more.
    drop(uas);
    // sbcd has seen the connection close (the readiness probe's closed long ago).
    let closed = || http(&sbcd, "GET", "/metrics", None, None).1.contains("\nsbc_tcp_connections 0\n");
    assert!(eventually(Duration::from_secs(10), closed), "the callee's connection is still open");
    let t0 = Instant::now();
    let r = ua.bye();
    assert!(matches!(r.status(), Some(408 | 503)), "{}", r.0);
    // Below Timer F (64 x T1 = 3.2 s): the BYE failed on the transport, no timer ran out.
    assert!(t0.elapsed() < Duration::from_secs(3), "no waiting for timers: {:?}", t0.elapsed());
    let row = cdr_row(&csv);
    assert_eq!(col(&row, "disposition"), "answered", "{row:?}");
    let (_, stats) = http(&sbcd, "GET", "/stats", None, None);
    assert!(stats.contains("\"calls_active\":0"), "{stats}");
}

#[test]
fn a_caller_that_sends_everything_twice_makes_one_call() {
    let dir = scratch_dir("fault-twice");
    let sbc_port = free_port();
    let mut callee = Phone::udp(std::net::SocketAddr::from(([127, 0, 0, 1], sbc_port)), "bob");
    let (cfg, _csv) = config(&dir, &callee.local_addr().to_string());
    let sbcd = Sbcd::start_on(sbc_port, &["--config", cfg.to_str().expect("utf8")]);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
    let me = sock.local_addr().expect("addr");
    let callee_addr = callee.local_addr();
    let req = |method: &str, cseq: u32, to_tag: &str| {
        let body = if method == "INVITE" { sdp("127.0.0.1", 7060, "") } else { String::new() };
        let ct = if body.is_empty() { "" } else { "Content-Type: application/sdp\r\n" };
        format!(
            "{method} sip:bob@{callee} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKtwice{method}{cseq};rport\r\nMax-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=twice\r\nTo: <sip:bob@example.com>{to_tag}\r\nCall-ID: twice-{port}\r\nCSeq: {cseq} {method}\r\nContact: <sip:a@{me}>\r\n{ct}Content-Length: {}\r\n\r\n{body}",
            body.len(),
            callee = callee_addr,
            port = me.port(),
        )
    };
    let twice = |text: &str| {
        for _ in 0..2 {
            sock.send_to(text.as_bytes(), sbcd.addr()).expect("send");
        }
    };
    // Everything the caller receives until a 200 has come (10 s at most) and 300 ms passed
    // without another datagram.
    let answers_to_the_200 = || {
        let mut got: Vec<String> = Vec::new();
        let mut buf = [0u8; 8192];
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(_) if got.iter().any(|m| m.starts_with("SIP/2.0 200")) || Instant::now() > deadline => break,
                Err(_) => {}
            }
        }
        got
    };
    twice(&req("INVITE", 1, ""));
    let inv = callee.recv_request(Duration::from_secs(5)).expect("INVITE");
    // One INVITE transaction toward the callee (with T1 = 50 ms, sbcd's own retransmissions of
    // it arrive too: same branch).
    let branch = |m: &ua::SipText| m.header("Via").and_then(|v| v.split("branch=").nth(1)).map(str::to_string);
    while let Some(again) = callee.recv_request(Duration::from_millis(300)) {
        assert_eq!(branch(&again), branch(&inv), "a second INVITE transaction:\n{}", again.0);
    }
    callee.answer(&inv, 200);
    let oks: Vec<String> = answers_to_the_200().into_iter().filter(|m| m.starts_with("SIP/2.0 200")).collect();
    assert!(!oks.is_empty(), "no 200 for the caller");
    let to_tag =
        oks[0].split("\r\n").find(|l| l.starts_with("To:")).and_then(|l| l.split(";tag=").nth(1)).expect("tag");
    let to_tag = format!(";tag={to_tag}");
    twice(&req("ACK", 1, &to_tag));
    // The callee's next requests, skipping INVITEs sbcd resent before our 200 reached it.
    let mut next_request = |within: Duration| loop {
        let m = callee.recv_request(within)?;
        if !(m.method() == Some("INVITE") && branch(&m) == branch(&inv)) {
            return Some(m);
        }
    };
    let ack = next_request(Duration::from_secs(5)).expect("ACK");
    assert_eq!(ack.method(), Some("ACK"), "{}", ack.0);
    assert!(next_request(Duration::from_millis(300)).is_none(), "one ACK for the callee");
    let (_, stats) = http(&sbcd, "GET", "/stats", None, None);
    assert!(stats.contains("\"calls_started\":1"), "{stats}");
}

/// `kill -9` while calls come and go: every CDR line on disk is whole and appears once, and
/// after a restart the same file goes on with the next calls' lines.
#[test]
fn sigkill_under_load_leaves_whole_cdr_lines_once() {
    let dir = scratch_dir("fault-kill");
    let port = free_port();
    let _uas = sipp_uas("uas_basic.xml", port, Transport::Udp, 1000);
    let (cfg, csv) = config(&dir, &format!("127.0.0.1:{port}"));
    let sbc_port = free_port();
    let sbcd = Sbcd::start_on(sbc_port, &["--config", cfg.to_str().expect("utf8")]);
    let uas = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let load = sipp_uac_bg("uac_basic.xml", uas, sbcd.addr(), &["-r".into(), "100".into(), "-m".into(), "1000".into()]);
    // Killed once a few dozen calls have ended (their CDRs are on disk), with more under way.
    let ended = || std::fs::read_to_string(&csv).unwrap_or_default().lines().count() >= 30;
    assert!(eventually(Duration::from_secs(20), ended), "no calls ended under load:\n{}", sbcd.log_text());
    let status = std::process::Command::new("kill").args(["-9", &sbcd.pid().to_string()]).status().expect("kill");
    assert!(status.success());
    drop(load);
    drop(sbcd);
    let columns = callcontrol::modules::CSV_COLUMNS.len();
    let check = |text: &str| -> Vec<String> {
        assert!(text.is_empty() || text.ends_with('\n'), "a partial last line:\n{text}");
        let ids: Vec<String> = text.lines().map(|l| l.split(',').next().unwrap_or_default().to_string()).collect();
        for l in text.lines() {
            assert!(l.split(',').count() >= columns, "a short line: {l}");
        }
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "a CDR written twice:\n{text}");
        ids
    };
    let before = check(&std::fs::read_to_string(&csv).unwrap_or_default());
    assert!(before.len() > 20, "calls ended before the kill have their CDRs: {}", before.len());
    // Restarted on the same file: the next calls append, nothing is rewritten.
    let sbcd = Sbcd::start_on(sbc_port, &["--config", cfg.to_str().expect("utf8")]);
    let out = sipp_uac("uac_basic.xml", uas, Some(sbcd.addr()), Transport::Udp, 5, 10);
    assert!(out.status.success(), "{}", sbcd.log_text());
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let ids = check(&std::fs::read_to_string(&csv).unwrap_or_default());
        if ids.len() >= before.len() + 5 || Instant::now() > deadline {
            break ids;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(after.len(), before.len() + 5);
    assert_eq!(&after[..before.len()], &before[..]);
}
