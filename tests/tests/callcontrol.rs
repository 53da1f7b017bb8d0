//! Call control on the wire: SIPp UAC → sbcd → SIPp UAS with a profile whose chain runs the
//! built-in modules.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sbc_e2e::{
    eventually, free_port, http, injection_file, read_error_logs, read_scenario_logs, scratch_dir, sipp_uas, Sbcd,
    Transport, UacRun,
};

fn config(text: &str) -> PathBuf {
    sbc_e2e::config_file("cc", text)
}

fn uac(
    sbcd: &Sbcd,
    scenario: &str,
    uas: u16,
    users: &[&str],
    calls: u32,
    extra: &[&str],
) -> (std::process::Output, PathBuf) {
    let dir = scratch_dir("cc-inf");
    let inf = injection_file(&dir, users);
    let mut args = vec!["-inf".to_string(), inf.display().to_string(), "-trace_logs".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    UacRun {
        local_ip: "127.0.0.1",
        scenario_file: scenario,
        dest: SocketAddr::from(([127, 0, 0, 1], uas)),
        rsa: Some(sbcd.addr()),
        transport: Transport::Udp,
        calls,
        rate: 10,
        extra: &args,
    }
    .run()
}

/// `cc_call_timer`: the call is cut by the SBC after the configured time; both sides get BYE.
#[test]
fn call_timer_cuts_the_call_on_both_legs() {
    let cfg = config(
        "active_profile: timed\nprofiles:\n  timed:\n    call_control: timer\n    timer_module: cc_call_timer\n    timer_timer: \"1\"\n",
    );
    let sbcd = Sbcd::start(&["--config", cfg.to_str().unwrap()]);
    let uas_port = free_port();
    let uas = sipp_uas("uas_cc_timer.xml", uas_port, Transport::Udp, 1);
    let (out, _) = uac(&sbcd, "uac_cc_timer.xml", uas_port, &["alice"], 1, &[]);
    let uas_dir = uas.dir.clone();
    let uas_out = uas.wait(Duration::from_secs(30));
    assert!(
        out.status.success() && uas_out.status.success(),
        "both sides must get the BYE: uac {:?} uas {:?}\nuas errors: {}\nsbcd log:\n{}",
        out.status.code(),
        uas_out.status.code(),
        read_error_logs(&uas_dir),
        sbcd.log_text()
    );
    assert!(sbcd.log_text().contains("reason=\"call_timer\""), "{}", sbcd.log_text());
}

/// `cc_pcalls` with a limit of 2 per From user: the third parallel call from alice is refused
/// with 402, a call from bob at the same time goes through, and every count is released.
#[test]
fn parallel_call_limit_per_user() {
    let cfg = config(
        "active_profile: limited\nprofiles:\n  limited:\n    call_control: limit\n    limit_module: cc_pcalls\n    limit_uuid: \"$fU\"\n    limit_max_calls: \"2\"\n",
    );
    let sbcd = Sbcd::start(&["--config", cfg.to_str().unwrap()]);
    let uas_port = free_port();
    // Two of alice's calls and bob's reach the callee.
    let uas = sipp_uas("uas_cc_pcalls.xml", uas_port, Transport::Udp, 3);
    let alice = {
        let sbcd_addr = sbcd.addr();
        std::thread::spawn(move || {
            let dir = scratch_dir("cc-alice");
            let inf = injection_file(&dir, &["alice"]);
            let extra = ["-inf".into(), inf.display().to_string(), "-trace_logs".into(), "-l".into(), "3".into()];
            UacRun {
                local_ip: "127.0.0.1",
                scenario_file: "uac_cc_pcalls.xml",
                dest: SocketAddr::from(([127, 0, 0, 1], uas_port)),
                rsa: Some(sbcd_addr),
                transport: Transport::Udp,
                calls: 3,
                rate: 10,
                extra: &extra,
            }
            .run()
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    let (bob, bob_dir) = uac(&sbcd, "uac_cc_pcalls.xml", uas_port, &["bob"], 1, &[]);
    let (alice, alice_dir) = alice.join().unwrap();
    let uas_dir = uas.dir.clone();
    let uas_out = uas.wait(Duration::from_secs(30));
    let alice_log = read_scenario_logs(&alice_dir);
    let bob_log = read_scenario_logs(&bob_dir);
    let ctx = format!(
        "alice:\n{alice_log}\nbob:\n{bob_log}\nuas errors: {}\nsbcd log:\n{}",
        read_error_logs(&uas_dir),
        sbcd.log_text()
    );
    assert!(alice.status.success() && bob.status.success() && uas_out.status.success(), "{ctx}");
    assert_eq!(alice_log.matches("outcome=answered").count(), 2, "{ctx}");
    assert_eq!(alice_log.matches("outcome=refused why=Too Many Simultaneous Calls").count(), 1, "{ctx}");
    assert_eq!(bob_log.matches("outcome=answered").count(), 1, "{ctx}");

    // Everything was released (once every call's end hook has run): alice can make two
    // calls again.
    let hooks_done = || http(&sbcd, "GET", "/stats", None, None).1.contains("\"callcontrol_tasks\":0");
    assert!(eventually(Duration::from_secs(10), hooks_done), "end hooks still running: {}", sbcd.log_text());
    let uas = sipp_uas("uas_cc_pcalls.xml", uas_port, Transport::Udp, 2);
    let (again, again_dir) = uac(&sbcd, "uac_cc_pcalls.xml", uas_port, &["alice"], 2, &["-l", "2"]);
    let _ = uas.wait(Duration::from_secs(30));
    assert!(again.status.success(), "{}", sbcd.log_text());
    assert_eq!(read_scenario_logs(&again_dir).matches("outcome=answered").count(), 2, "{}", sbcd.log_text());
}

/// `cc_syslog_cdr` first in the chain: one CSV line and one JSON line per call, for an answered,
/// a busy, a cancelled and a refused call, checked field by field.
#[test]
fn cdr_for_every_kind_of_call() {
    let dir = scratch_dir("cdr");
    let (csv, json) = (dir.join("cdr.csv"), dir.join("cdr.jsonl"));
    let cfg = config(&format!(
        r#"call_control:
  cc_call_timer: {{ default_timer_s: 60 }}
  cc_syslog_cdr: {{ csv_file: {}, json_file: {} }}
active_profile: ["$M($si=>by_source)", normal]
regex_maps:
  by_source: ["^127\\.0\\.0\\.2$=>refusing"]
profiles:
  normal:
    call_control: [cdr, timer]
    cdr_module: cc_syslog_cdr
    cdr_account: "$fU"
    timer_module: cc_call_timer
  refusing:
    call_control: [cdr, timer]
    cdr_module: cc_syslog_cdr
    cdr_account: "$fU"
    timer_module: cc_call_timer
    timer_timer: "0"
"#,
        csv.display(),
        json.display()
    ));
    let sbcd = Sbcd::start(&["--config", cfg.to_str().unwrap()]);
    sbc_e2e::call_through(&sbcd, "basic", Transport::Udp, 1);
    sbc_e2e::call_through(&sbcd, "busy", Transport::Udp, 1);
    sbc_e2e::call_through(&sbcd, "cancel", Transport::Udp, 1);
    let out = sbc_e2e::sipp_uac_from(
        "127.0.0.2",
        "uac_cc_refused.xml",
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        Some(sbcd.addr()),
        Transport::Udp,
        1,
        10,
    );
    assert!(out.status.success(), "refused call: {}", sbcd.log_text());
    // The end hooks run off the signalling path: give them a moment.
    let lines = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default().lines().count();
    // The JSON line of a call is written after its CSV line.
    eventually(Duration::from_secs(10), || lines(&csv) >= 4 && lines(&json) >= 4);
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 4, "{text}");
    let col = |name: &str| callcontrol::modules::CSV_COLUMNS.iter().position(|c| *c == name).unwrap();
    let find = |disposition: &str| {
        rows.iter()
            .find(|r| r[col("disposition")] == disposition)
            .unwrap_or_else(|| panic!("no {disposition} row in\n{text}"))
    };
    let answered = find("answered");
    assert_eq!(
        (answered[col("code")], answered[col("cause")], answered[col("hangup_initiator")]),
        ("200", "bye", "caller")
    );
    assert_eq!(answered[col("profile")], "normal");
    assert_eq!(answered[col("source_ip")], "127.0.0.1");
    assert!(!answered[col("connect")].is_empty() && answered[col("duration_s")] != "0.000", "{text}");
    assert_eq!(answered.last().copied(), Some("account=sipp"));
    let busy = find("failed");
    assert_eq!((busy[col("code")], busy[col("cause")], busy[col("hangup_initiator")]), ("486", "rejected", "callee"));
    assert_eq!(busy[col("reason")], "Busy Here");
    assert!(busy[col("connect")].is_empty());
    let cancelled = find("canceled");
    assert_eq!((cancelled[col("code")], cancelled[col("hangup_initiator")]), ("487", "caller"));
    let refused = find("refused");
    assert_eq!(
        (refused[col("code")], refused[col("profile")], refused[col("hangup_initiator")]),
        ("503", "refusing", "local")
    );
    let json_text = std::fs::read_to_string(&json).unwrap();
    assert_eq!(json_text.lines().count(), 4, "{json_text}");
    assert!(
        json_text.lines().all(|l| l.starts_with("{\"call_id\":") && l.ends_with("\"values\":{\"account\":\"sipp\"}}")),
        "{json_text}"
    );
}

fn prepaid_cli(db: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(sbc_e2e::sbcd_bin())
        .args(["prepaid", "--db", db.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "sbcd prepaid {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn prepaid_config(db: &std::path::Path) -> PathBuf {
    prepaid_config_with(db, "")
}

/// The prepaid profile with more `call_control:` settings (`extra`, indented lines).
fn prepaid_config_with(db: &std::path::Path, extra: &str) -> PathBuf {
    config(&format!(
        "call_control:\n{extra}  cc_prepaid: {{ db: {} }}\nactive_profile: paid\nprofiles:\n  paid:\n    call_control: credit\n    credit_module: cc_prepaid\n    credit_uuid: \"$fU\"\n",
        db.display()
    ))
}

/// One call from a fresh SIPp UAC running `scenario` (a call the SBC answers itself).
fn one_call(sbcd: &Sbcd, scenario: &str) -> std::process::Output {
    sbc_e2e::sipp_uac(
        scenario,
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        Some(sbcd.addr()),
        Transport::Udp,
        1,
        10,
    )
}

/// `cc_prepaid`: a 3 s balance gives a call of 3 s (the SBC hangs up both legs), the balance is
/// then 0 and the next call is refused with 402.
#[test]
fn prepaid_balance_limits_and_pays_the_call() {
    let db = scratch_dir("prepaid").join("balances.sqlite");
    assert_eq!(prepaid_cli(&db, &["set", "sipp", "3"]), "sipp 3");
    let sbcd = Sbcd::start(&["--config", prepaid_config(&db).to_str().unwrap()]);
    let uas_port = free_port();
    let uas = sipp_uas("uas_cc_timer.xml", uas_port, Transport::Udp, 1);
    let (out, _) = uac(&sbcd, "uac_cc_timer.xml", uas_port, &["sipp"], 1, &[]);
    let uas_out = uas.wait(Duration::from_secs(30));
    assert!(out.status.success() && uas_out.status.success(), "both legs get BYE: {}", sbcd.log_text());
    eventually(Duration::from_secs(10), || prepaid_cli(&db, &["get", "sipp"]) == "sipp 0");
    assert_eq!(prepaid_cli(&db, &["get", "sipp"]), "sipp 0", "{}", sbcd.log_text());
    let out = one_call(&sbcd, "uac_cc_402.xml");
    assert!(out.status.success(), "no credit: 402: {}", sbcd.log_text());
}

/// A `start` hook later than `hook_timeout_ms` (the balance database is locked by someone else)
/// costs its call the failure reply at the deadline; the late hook still finishes once the lock
/// goes, and its reservation is settled without debiting anything.
#[test]
fn a_late_start_hook_fails_the_call_at_the_deadline_and_is_settled_later() {
    let db = scratch_dir("prepaid-late").join("balances.sqlite");
    prepaid_cli(&db, &["set", "sipp", "100"]);
    let cfg = prepaid_config_with(&db, "  hook_timeout_ms: 300\n");
    let sbcd = Sbcd::start(&["--config", cfg.to_str().unwrap()]);
    // Another writer holds the database: the reservation waits on SQLite's busy timeout (5 s).
    let lock = callcontrol::modules::prepaid::open_db(&db).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE; UPDATE balances SET seconds = seconds WHERE account = 'sipp';").unwrap();
    let out = one_call(&sbcd, "uac_cc_500.xml");
    assert!(out.status.success(), "500 at the deadline: {}", sbcd.log_text());
    assert!(sbcd.log_text().contains("call control hook too late"), "{}", sbcd.log_text());
    lock.execute_batch("ROLLBACK;").unwrap();
    drop(lock);
    // The late `start` reserved once the lock went; then `end` settled the unanswered call.
    let settled = || sbcd.log_text().lines().any(|l| l.contains("cc_prepaid: debited") && l.contains("billed_s=0"));
    assert!(eventually(Duration::from_secs(10), settled), "the late reservation is settled: {}", sbcd.log_text());
    assert!(!sbcd.log_text().contains("debit failed"), "{}", sbcd.log_text());
    let c = callcontrol::modules::prepaid::open_db(&db).unwrap();
    assert_eq!(c.query_row("SELECT COUNT(*) FROM calls", [], |r| r.get::<_, i64>(0)).unwrap(), 0);
    assert_eq!(prepaid_cli(&db, &["get", "sipp"]), "sipp 100", "nothing debited");
}

/// The balance database locked by another writer when a call ends: the debit is deferred, not
/// lost, and done once the lock goes, for the time the call talked.
#[test]
fn a_debit_deferred_by_a_locked_database_is_done_when_the_lock_goes() {
    let db = scratch_dir("prepaid-deferred").join("balances.sqlite");
    prepaid_cli(&db, &["set", "sipp", "100"]);
    let sbcd = Sbcd::start(&["--config", prepaid_config(&db).to_str().unwrap()]);
    let uas_port = free_port();
    let uas = sipp_uas("uas_basic.xml", uas_port, Transport::Udp, 1);
    let dest = SocketAddr::from(([127, 0, 0, 1], uas_port));
    let uac = sbc_e2e::sipp_uac_bg("uac_held.xml", dest, sbcd.addr(), &["-d".into(), "3000".into()]);
    // Locked once the answer is on disk, before the caller's BYE (3 s after the answer).
    let c = callcontrol::modules::prepaid::open_db(&db).unwrap();
    let connected = || {
        c.query_row("SELECT COUNT(*) FROM calls WHERE connected_ms IS NOT NULL", [], |r| r.get::<_, i64>(0))
            .is_ok_and(|n| n == 1)
    };
    assert!(eventually(Duration::from_secs(10), connected), "the call is answered: {}", sbcd.log_text());
    c.execute_batch("BEGIN IMMEDIATE; UPDATE balances SET seconds = seconds WHERE account = 'sipp';").unwrap();
    let deferred = || sbcd.log_text().contains("debit deferred");
    assert!(eventually(Duration::from_secs(20), deferred), "the debit waits: {}", sbcd.log_text());
    c.execute_batch("ROLLBACK;").unwrap();
    let done = || sbcd.log_text().contains("deferred debit done");
    assert!(eventually(Duration::from_secs(10), done), "the debit is done: {}", sbcd.log_text());
    let balance: i64 = prepaid_cli(&db, &["get", "sipp"]).trim_start_matches("sipp ").parse().unwrap();
    assert!((96..=97).contains(&balance), "about 3 s debited once: {balance}\n{}", sbcd.log_text());
    assert!(uac.wait(Duration::from_secs(10)).status.success() && uas.wait(Duration::from_secs(10)).status.success());
}

/// `kill -9` while a prepaid call runs: after the restart the call is debited once (up to the
/// dead process's last heartbeat), and a second restart debits nothing more.
#[test]
fn prepaid_survives_kill_9() {
    let db = scratch_dir("prepaid-crash").join("balances.sqlite");
    prepaid_cli(&db, &["set", "sipp", "100"]);
    let cfg = prepaid_config(&db);
    let mut sbcd = Sbcd::start(&["--config", cfg.to_str().unwrap()]);
    let uas_port = free_port();
    let uas = sipp_uas("uas_cc_timer.xml", uas_port, Transport::Udp, 1);
    let inf = injection_file(&scratch_dir("prepaid-inf"), &["sipp"]);
    let uac = sbc_e2e::sipp_uac_bg(
        "uac_cc_timer.xml",
        SocketAddr::from(([127, 0, 0, 1], uas_port)),
        sbcd.addr(),
        &["-inf".into(), inf.display().to_string()],
    );
    // Talk for about 3 s, then the SBC dies without a word.
    eventually(Duration::from_secs(10), || sbcd.log_text().contains("call answered"));
    let answered_seen = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let status = std::process::Command::new("kill").args(["-9", &sbcd.pid().to_string()]).status().unwrap();
    assert!(status.success());
    // The call talked at least 3 s (more on a slow machine); heartbeats come once a second.
    let talked_s = answered_seen.elapsed().as_secs_f64().ceil() as i64;
    let _ = sbcd.terminate(Duration::from_secs(2));
    drop(uac);
    drop(uas);
    assert_eq!(prepaid_cli(&db, &["get", "sipp"]), "sipp 100", "nothing debited by the dead process");
    let again = Sbcd::start(&["--config", cfg.to_str().unwrap()]);
    let after: i64 = prepaid_cli(&db, &["get", "sipp"]).trim_start_matches("sipp ").parse().unwrap();
    let debited = 100 - after;
    // At least two heartbeats fell inside a 3 s call: recovery bills up to the last one.
    assert!((2..=talked_s + 1).contains(&debited), "{debited} s debited for {talked_s} s\n{}", again.log_text());
    drop(again);
    let third = Sbcd::start(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(prepaid_cli(&db, &["get", "sipp"]), format!("sipp {after}"), "{}", third.log_text());
}

/// `cc_ctl`: the R-URI comes from a `P-Call-Control` header because the profile allows it; the
/// To the header also asks for is not allowed and not applied; the header does not travel on.
#[test]
fn ctl_header_routes_the_call_within_what_the_profile_allows() {
    let cfg = config(
        "active_profile: routed\nprofiles:\n  routed:\n    call_control: ctl\n    ctl_module: cc_ctl\n    ctl_spec: \"$H(P-Call-Control)\"\n    ctl_allow: RURI\n    header_filter: blacklist\n    header_list: [P-Call-Control]\n",
    );
    let sbcd = Sbcd::start(&["--config", cfg.to_str().unwrap()]);
    sbc_e2e::call_through(&sbcd, "cc_ctl", Transport::Udp, 1);
}

/// `syslog_format: sems`: the syslog line a SEMS billing parser reads, with `cdr_format`'s
/// fields, quoting and the severity of `loglevel`, received on a syslog socket of the test's.
#[test]
fn cdr_syslog_line_as_sems_writes_it() {
    let dir = scratch_dir("cdr-sems");
    let socket = dir.join("log.sock");
    let syslog = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
    syslog.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let cfg = config(&format!(
        r#"call_control:
  cc_syslog_cdr:
    syslog: true
    syslog_socket: {}
    syslog_format: sems
    prefix: "CDR: "
    cdr_format: [$ltag, $start_tm, $bill_duration_sec, disposition, invite_code, account, $missing, destination_ip]
    loglevel: 4
active_profile: normal
profiles:
  normal:
    call_control: [cdr]
    cdr_module: cc_syslog_cdr
    cdr_account: "$fU"
"#,
        socket.display()
    ));
    let sbcd = Sbcd::start(&["--config", cfg.to_str().unwrap()]);
    sbc_e2e::call_through(&sbcd, "basic", Transport::Udp, 1);
    let mut buf = [0u8; 4096];
    let n = syslog.recv(&mut buf).unwrap_or_else(|e| panic!("no syslog line: {e}\n{}", sbcd.log_text()));
    let line = String::from_utf8_lossy(&buf[..n]).into_owned();
    // <133>: facility local0, severity notice (SEMS's loglevel 4).
    let fields = line.strip_prefix("<133>sbcd: CDR: ").unwrap_or_else(|| panic!("{line}"));
    let fields: Vec<&str> = fields.split(',').collect();
    assert_eq!(fields.len(), 8, "{line}");
    assert!(fields.iter().all(|f| f.starts_with('"') && f.ends_with('"')), "quoted: {line}");
    assert!(fields[0].trim_matches('"').split('-').count() == 2, "the API's call id: {line}");
    assert_eq!(fields[1].len(), 21, "YYYY-MM-DD HH:MM:SS in quotes: {line}");
    let callee = "\"127.0.0.1\"";
    assert_eq!(&fields[3..], ["\"answered\"", "\"200\"", "\"sipp\"", "\"\"", callee], "{line}");
}

/// SEMS's `addCredit` and `subtractCredit` (and `getCredit`, `setCredit`): through the API and
/// `sbcd prepaid` while sbcd runs, on the database the module uses; a call is then granted
/// what is left, and pays for it.
#[test]
fn credit_is_added_and_subtracted_through_the_api_and_the_cli() {
    let db = scratch_dir("prepaid-credit").join("balances.sqlite");
    let sbcd = Sbcd::start(&["--config", prepaid_config(&db).to_str().unwrap()]);
    let api = |method: &str, path: &str, body: Option<&str>| http(&sbcd, method, path, None, body);
    assert_eq!(
        api("POST", "/prepaid/sipp/add", Some(r#"{"seconds":5}"#)),
        (200, r#"{"account":"sipp","seconds":5}"#.into())
    );
    assert_eq!(prepaid_cli(&db, &["add", "sipp", "2"]), "sipp 7");
    assert_eq!(api("POST", "/prepaid/sipp/subtract", Some(r#"{"seconds":4}"#)).1, r#"{"account":"sipp","seconds":3}"#);
    assert_eq!(api("GET", "/prepaid/sipp", None).1, r#"{"account":"sipp","seconds":3}"#);
    assert_eq!(api("GET", "/prepaid", None).1, r#"[{"account":"sipp","seconds":3}]"#);
    assert_eq!(api("POST", "/prepaid/nobody/subtract", Some(r#"{"seconds":1}"#)).0, 404, "subtract needs the account");
    assert_eq!(api("POST", "/prepaid/sipp/add", Some(r#"{"seconds":-1}"#)).0, 400);
    assert_eq!(api("POST", "/prepaid/sipp/add", Some(r#"{"seconds":9223372036854775807}"#)).0, 400);
    let cli = std::process::Command::new(sbc_e2e::sbcd_bin())
        .args(["prepaid", "--db", db.to_str().unwrap(), "subtract", "nobody", "1"])
        .output()
        .unwrap();
    assert_eq!(cli.status.code(), Some(2), "{}", String::from_utf8_lossy(&cli.stderr));

    let uas_port = free_port();
    let uas = sipp_uas("uas_cc_timer.xml", uas_port, Transport::Udp, 1);
    let (out, _) = uac(&sbcd, "uac_cc_timer.xml", uas_port, &["sipp"], 1, &[]);
    assert!(out.status.success() && uas.wait(Duration::from_secs(30)).status.success(), "{}", sbcd.log_text());
    eventually(Duration::from_secs(10), || api("GET", "/prepaid/sipp", None).1.contains("\"seconds\":0"));
    assert_eq!(api("GET", "/prepaid/sipp", None).1, r#"{"account":"sipp","seconds":0}"#, "the 3 s granted were paid");
}
