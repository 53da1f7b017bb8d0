//! Helpers for the end-to-end tests: start a real `sbcd` on free loopback ports, run SIPp
//! peers against it, clean up. Everything stays on 127.0.0.0/8.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub mod cluster;
pub mod dns;
pub mod flood;
pub mod hep;
pub mod pcap;
pub mod phone;
pub mod redis;
pub mod srtp;
pub mod tls;
pub mod ua;

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
static SCRATCH: AtomicU32 = AtomicU32::new(0);

/// Test ports come from just below the kernel's ephemeral range (32768–60999 by default) and
/// above the relay's default media ports (10000–29999): a port the kernel picks for an outgoing
/// connection can then never be the one a test's peer is about to listen on (a SIPp UAS once
/// failed with "address in use" that way).
const TEST_PORTS: std::ops::Range<u16> = 30000..32768;
static NEXT_PORT: AtomicU32 = AtomicU32::new(0);

/// A port free for both UDP and TCP on 127.0.0.1, never handed out twice by this process.
pub fn free_port() -> u16 {
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    // Test binaries run one after another; starting each elsewhere spreads their ports.
    let offset = std::process::id() % span;
    for _ in 0..span {
        let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let port = TEST_PORTS.start + ((offset + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_err() || UdpSocket::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if guard.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("no free port left in {TEST_PORTS:?}");
}

/// The repository root (the tests crate sits in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

pub fn scenario(name: &str) -> PathBuf {
    repo_root().join("tests/scenarios").join(name)
}

pub fn corpus(name: &str) -> Vec<u8> {
    let p = repo_root().join("tests/corpus/rfc4475").join(format!("{name}.dat"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The sbcd binary: `$SBCD_BIN`, else target/release/sbcd, else target/debug/sbcd.
pub fn sbcd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SBCD_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), PathBuf::from);
    for profile in ["release", "debug"] {
        let p = target.join(profile).join("sbcd");
        if p.exists() {
            return p;
        }
    }
    panic!("sbcd is not built: run `cargo build --release -p sbc-core --bin sbcd` (./test.sh does)");
}

/// Polls `done` every 20 ms until it holds: false when `within` passes first (the caller
/// asserts, with what it knows). Tests wait for what they check this way, never a fixed time.
pub fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fresh scratch directory (SIPp writes its logs into its working directory).
pub fn scratch_dir(label: &str) -> PathBuf {
    let n = SCRATCH.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("sbc-e2e-{}-{label}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    d
}

/// `yaml` written as `sbc.yaml` into a fresh scratch directory: the path for `--config`.
pub fn config_file(label: &str, yaml: &str) -> PathBuf {
    config_file_in(&scratch_dir(label), yaml)
}

/// `yaml` written (or rewritten) as `sbc.yaml` in `dir`, beside the files it names (SEMS
/// profiles, CDRs, stores): the path for `--config`.
pub fn config_file_in(dir: &Path, yaml: &str) -> PathBuf {
    let p = dir.join("sbc.yaml");
    std::fs::write(&p, yaml).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    p
}

/// A running sbcd, killed on drop. Its log is kept in `log` for failure messages.
pub struct Sbcd {
    child: Option<Child>,
    pub port: u16,
    /// The admin API's port (every test sbcd gets its own).
    pub admin_port: u16,
    pub log: PathBuf,
}

impl Sbcd {
    /// Starts sbcd on a free port (UDP and TCP) with extra arguments.
    pub fn start(extra: &[&str]) -> Self {
        let port = free_port();
        Self::start_on(port, extra)
    }

    /// sbcd on the configuration `yaml`, with extra arguments.
    pub fn with_config(yaml: &str, extra: &[&str]) -> Self {
        Self::with_config_on(free_port(), yaml, extra)
    }

    /// sbcd on `port` with the configuration `yaml`.
    pub fn with_config_on(port: u16, yaml: &str, extra: &[&str]) -> Self {
        let cfg = config_file("config", yaml);
        let mut args = vec!["--config", cfg.to_str().expect("a UTF-8 scratch path")];
        args.extend_from_slice(extra);
        Self::start_on(port, &args)
    }

    pub fn start_on(port: u16, extra: &[&str]) -> Self {
        let dir = scratch_dir("sbcd");
        let log = dir.join("sbcd.log");
        let log_file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let admin_port = free_port();
        let child = Command::new(sbcd_bin())
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{admin_port}"))
            .arg("--listen")
            .arg(format!("udp:127.0.0.1:{port}"))
            .arg("--listen")
            .arg(format!("tcp:127.0.0.1:{port}"))
            .args(["--shards", "2", "--threads", "2"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start sbcd: {e}"));
        let me = Self { child: Some(child), port, admin_port, log };
        me.wait_ready();
        me
    }

    /// Both the SIP and the admin listeners: sbcd binds them in turn, so the first one up
    /// does not mean the other is.
    fn wait_ready(&self) {
        let up = |port: u16| TcpStream::connect(("127.0.0.1", port)).is_ok();
        if !eventually(Duration::from_secs(10), || up(self.port) && up(self.admin_port)) {
            panic!("sbcd did not come up on {}; log:\n{}", self.port, self.log_text());
        }
    }

    /// The admin API's base URL.
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// True while the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends SIGTERM and waits for the exit status (bounded).
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Sbcd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// SIPp's transport flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn sipp_flag(self) -> &'static str {
        match self {
            Self::Udp => "u1",
            Self::Tcp => "t1",
        }
    }
}

/// A SIPp process in the background (a UAS), killed on drop.
pub struct SippBg {
    child: Option<Child>,
    pub dir: PathBuf,
}

impl SippBg {
    /// Waits up to `within` for the scenario to end and fails the test, with SIPp's errors and
    /// `sbcd`'s log, unless it passed.
    pub fn assert_passed(self, within: Duration, sbcd: &Sbcd) {
        let dir = self.dir.clone();
        let out = self.wait(within);
        assert!(
            out.status.success(),
            "SIPp scenario failed: {}\n{}\nsbcd log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            read_error_logs(&dir),
            sbcd.log_text()
        );
    }

    /// Waits for it to exit by itself and returns its output.
    pub fn wait(mut self, within: Duration) -> Output {
        let Some(mut child) = self.child.take() else { panic!("sipp already collected") };
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap_or_else(|e| panic!("sipp: {e}"))
    }
}

impl Drop for SippBg {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn sipp() -> Command {
    Command::new("sipp")
}

/// Starts a SIPp UAS scenario listening on `port`.
pub fn sipp_uas(scenario_file: &str, port: u16, transport: Transport, calls: u32) -> SippBg {
    sipp_uas_with(scenario_file, port, transport, calls, &[])
}

/// [`sipp_uas`] with extra SIPp arguments (an injection file, `-trace_logs`).
pub fn sipp_uas_with(scenario_file: &str, port: u16, transport: Transport, calls: u32, extra: &[String]) -> SippBg {
    let dir = scratch_dir("uas");
    let mut child = sipp()
        .current_dir(&dir)
        .arg("-sf")
        .arg(scenario(scenario_file))
        .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-m", &calls.to_string()])
        .args(["-t", transport.sipp_flag(), "-nostdin", "-timeout", "40s", "-trace_err"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start sipp (apt-get install sip-tester): {e}"));
    // SIPp binds its socket during start-up; give it a moment before traffic arrives.
    wait_bound(port, transport, &mut child);
    SippBg { child: Some(child), dir }
}

/// Until SIPp holds `port`: a UAS that never binds fails here, not later as a lost call.
fn wait_bound(port: u16, transport: Transport, sipp: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let busy = match transport {
            Transport::Udp => UdpSocket::bind(("127.0.0.1", port)).is_err(),
            Transport::Tcp => TcpListener::bind(("127.0.0.1", port)).is_err(),
        };
        if busy {
            return;
        }
        if let Ok(Some(status)) = sipp.try_wait() {
            panic!("SIPp UAS for port {port} exited at start-up ({status}); is the port in use?");
        }
        assert!(Instant::now() < deadline, "SIPp UAS did not bind port {port} within 15 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a SIPp UAC scenario to completion. `rsa` sends every message to that address while the
/// Request-URI names `dest` (the UAS).
pub fn sipp_uac(
    scenario_file: &str,
    dest: SocketAddr,
    rsa: Option<SocketAddr>,
    transport: Transport,
    calls: u32,
    rate: u32,
) -> Output {
    sipp_uac_from("127.0.0.1", scenario_file, dest, rsa, transport, calls, rate)
}

/// [`sipp_uac`] from another loopback address (sources matter to profile selection).
pub fn sipp_uac_from(
    local_ip: &str,
    scenario_file: &str,
    dest: SocketAddr,
    rsa: Option<SocketAddr>,
    transport: Transport,
    calls: u32,
    rate: u32,
) -> Output {
    UacRun { local_ip, scenario_file, dest, rsa, transport, calls, rate, extra: &[] }.run().0
}

/// A SIPp UAC run to completion: `scenario_file` from a free port on `local_ip` against `dest`
/// (the Request-URI), every message sent to `rsa` when given, `calls` calls at `rate` per
/// second, with `extra` SIPp arguments.
pub struct UacRun<'a> {
    pub local_ip: &'a str,
    pub scenario_file: &'a str,
    pub dest: SocketAddr,
    pub rsa: Option<SocketAddr>,
    pub transport: Transport,
    pub calls: u32,
    pub rate: u32,
    pub extra: &'a [String],
}

impl UacRun<'_> {
    /// Runs it; also returns SIPp's working directory (its `-trace_logs` file is there).
    pub fn run(&self) -> (Output, PathBuf) {
        let dir = scratch_dir("uac");
        let mut cmd = uac_command(&dir, self.local_ip, self.scenario_file, self.dest, self.rsa, self.transport);
        cmd.args(["-m", &self.calls.to_string(), "-r", &self.rate.to_string(), "-timeout", "40s", "-trace_err"]);
        cmd.args(self.extra);
        let out = cmd.output().unwrap_or_else(|e| panic!("cannot run sipp (apt-get install sip-tester): {e}"));
        if !out.status.success() {
            eprintln!("sipp uac error logs:\n{}", read_error_logs(&dir));
        }
        (out, dir)
    }
}

/// A SIPp UAC running in the background (killed on drop), for calls a test interrupts.
pub fn sipp_uac_bg(scenario_file: &str, dest: SocketAddr, rsa: SocketAddr, extra: &[String]) -> SippBg {
    sipp_uac_bg_over(Transport::Udp, scenario_file, dest, rsa, extra)
}

/// [`sipp_uac_bg`] over `transport`.
pub fn sipp_uac_bg_over(
    transport: Transport,
    scenario_file: &str,
    dest: SocketAddr,
    rsa: SocketAddr,
    extra: &[String],
) -> SippBg {
    let dir = scratch_dir("uac-bg");
    let child = uac_command(&dir, "127.0.0.1", scenario_file, dest, Some(rsa), transport)
        .args(["-m", "1", "-timeout", "60s"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start sipp (apt-get install sip-tester): {e}"));
    SippBg { child: Some(child), dir }
}

/// A SIPp UAC command in `dir`: the scenario against `dest` from a free port on `local_ip`,
/// every message sent to `rsa` when given.
fn uac_command(
    dir: &Path,
    local_ip: &str,
    scenario_file: &str,
    dest: SocketAddr,
    rsa: Option<SocketAddr>,
    transport: Transport,
) -> Command {
    let mut cmd = sipp();
    cmd.current_dir(dir)
        .arg(dest.to_string())
        .arg("-sf")
        .arg(scenario(scenario_file))
        .args(["-i", local_ip, "-p", &free_port().to_string(), "-t", transport.sipp_flag(), "-nostdin"])
        .stdin(Stdio::null());
    if let Some(rsa) = rsa {
        cmd.arg("-rsa").arg(rsa.to_string());
    }
    cmd
}

/// The `<log>` lines a SIPp scenario wrote (`-trace_logs`) in `dir`.
pub fn read_scenario_logs(dir: &Path) -> String {
    let mut s = String::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().ends_with("_logs.log") {
                s.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    s
}

/// A SIPp injection file (`-inf`) giving `[field0]` per call, in order.
pub fn injection_file(dir: &Path, values: &[&str]) -> PathBuf {
    let p = dir.join("fields.csv");
    let mut text = String::from("SEQUENTIAL\n");
    for v in values {
        text.push_str(v);
        text.push_str(";\n");
    }
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    p
}

/// The `*_errors.log` files SIPp left in a directory.
pub fn read_error_logs(dir: &Path) -> String {
    let mut s = String::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().contains("errors") {
                s.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    s
}

/// Runs a UAC/UAS scenario pair through sbcd and asserts both sides completed every call.
pub fn call_through(sbcd: &Sbcd, name: &str, transport: Transport, calls: u32) {
    call_through_from("127.0.0.1", sbcd, name, transport, calls);
}

/// [`call_through`] with the UAC on another loopback address.
pub fn call_through_from(local_ip: &str, sbcd: &Sbcd, name: &str, transport: Transport, calls: u32) {
    let uas_port = free_port();
    let uas = sipp_uas(&format!("uas_{name}.xml"), uas_port, transport, calls);
    let uac = sipp_uac_from(
        local_ip,
        &format!("uac_{name}.xml"),
        SocketAddr::from(([127, 0, 0, 1], uas_port)),
        Some(sbcd.addr()),
        transport,
        calls,
        10,
    );
    let uas_dir = uas.dir.clone();
    let uas_out = uas.wait(Duration::from_secs(45));
    assert!(
        uac.status.success() && uas_out.status.success(),
        "{name} over {transport:?}: uac {:?}, uas {:?}\nuac: {}\nuas errors: {}\nsbcd log:\n{}",
        uac.status.code(),
        uas_out.status.code(),
        String::from_utf8_lossy(&uac.stdout).lines().filter(|l| l.contains("call")).collect::<Vec<_>>().join("\n"),
        read_error_logs(&uas_dir),
        sbcd.log_text()
    );
}

/// An sbcd on a configuration that names its own interfaces (no `--listen`): one shard, one
/// thread, no admin API, its log discarded; returned once it answers an OPTIONS at `sip` (UDP).
/// The caller kills it.
pub fn spawn_sbcd_on(config: &str, sip: SocketAddr) -> Child {
    let mut child = Command::new(sbcd_bin())
        .args(["--config", config, "--shards", "1", "--threads", "1", "--admin-listen", "off"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start sbcd: {e}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while options_ping(sip, Duration::from_millis(100)).is_none() {
        if Instant::now() > deadline || !matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sbcd with {config} does not answer at {sip}");
        }
    }
    child
}

/// An OPTIONS to `sip` over UDP: the first datagram answered within `wait`.
pub fn options_ping(sip: SocketAddr, wait: Duration) -> Option<String> {
    let sock = UdpSocket::bind((sip.ip(), 0)).ok()?;
    sock.set_read_timeout(Some(wait)).ok()?;
    let me = sock.local_addr().ok()?;
    let ping = format!(
        "OPTIONS sip:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKping{n};rport\r\nFrom: <sip:mon@{me}>;tag=1\r\nTo: <sip:{sip}>\r\nCall-ID: ping-{n}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        n = me.port()
    );
    sock.send_to(ping.as_bytes(), sip).ok()?;
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// One HTTP/1.1 request to the admin API: (status, body). `token` goes in as a bearer token.
pub fn http(sbcd: &Sbcd, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    let (status, _, body) = http_with_head(sbcd, method, path, token, body);
    (status, body)
}

/// [`http`], with the response's head (status line and headers) too.
pub fn http_with_head(
    sbcd: &Sbcd,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", sbcd.admin_port)).unwrap_or_else(|e| panic!("admin API: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap_or_else(|e| panic!("admin API: {e}"));
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    // The API answers with a length or chunked; undo the chunking.
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_string() };
    (status, head.to_string(), body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// sbcd on a free port and a UDP phone of the test that sends to it; `yaml` is given the SBC's
/// port and the phone's address (to name it as a next hop, say).
pub fn sbcd_with_phone(user: &str, yaml: impl FnOnce(u16, SocketAddr) -> String) -> (Sbcd, phone::Phone) {
    let port = free_port();
    let phone = phone::Phone::udp(SocketAddr::from(([127, 0, 0, 1], port)), user);
    let sbcd = Sbcd::with_config_on(port, &yaml(port, phone.local_addr()), &[]);
    (sbcd, phone)
}

/// A configuration whose one profile sends every call to `next_hop`, with `options` (lines of
/// profile options, each indented by four spaces) added.
pub fn next_hop_config(next_hop: impl std::fmt::Display, options: &str) -> String {
    format!("active_profile: p\nprofiles:\n  p:\n    next_hop: {next_hop}\n{options}")
}
