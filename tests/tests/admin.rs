//! The admin API and /metrics against a live sbcd, with SIPp calls where calls matter.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sbc_e2e::*;
use serde_json::Value;

const TOKEN: &str = "t0ken-for-tests";

fn md5sum(p: &Path) -> String {
    let out = Command::new("md5sum").arg(p).output().expect("md5sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

/// A config whose `allow` profile comes from a SEMS file in a scratch folder (so the test can
/// change it), with `deny` (the SEMS refuse profile) beside it and the admin token set.
fn setup() -> (Sbcd, PathBuf, PathBuf) {
    let dir = scratch_dir("admin");
    let allow = dir.join("allow.sbcprofile.conf");
    std::fs::write(&allow, "header_filter=blacklist\nheader_list=User-Agent\n").expect("write profile");
    let refuse = repo_root().join("tests/sems/refuse.sbcprofile.conf");
    let text = format!(
        "admin:\n  token: {TOKEN}\nactive_profile: allow\nprofiles:\n  allow:\n    sems_file: {}\n  deny:\n    sems_file: {}\n",
        allow.display(),
        refuse.display()
    );
    let cfg = config_file_in(&dir, &text);
    let sbcd = Sbcd::start(&["--config", cfg.to_str().expect("utf8")]);
    (sbcd, allow, cfg)
}

fn json(sbcd: &Sbcd, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let (status, text) = http(sbcd, method, path, Some(TOKEN), body);
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}")))
}

#[test]
fn token_guards_everything_but_health_and_metrics() {
    let (sbcd, _, _) = setup();
    assert_eq!(http(&sbcd, "GET", "/profiles", None, None).0, 401);
    assert_eq!(http(&sbcd, "GET", "/profiles", Some("wrong"), None).0, 401);
    assert_eq!(http(&sbcd, "DELETE", "/calls/0-1", None, None).0, 401);
    let (st, body) = http(&sbcd, "GET", "/health", None, None);
    assert_eq!((st, body.as_str()), (200, r#"{"status":"ready","calls":0}"#));
    assert_eq!(http(&sbcd, "GET", "/metrics", None, None).0, 200);
    let (st, doc) = http(&sbcd, "GET", "/openapi.json", None, None);
    assert_eq!(st, 200);
    assert!(doc.contains("\"/calls/{id}\""));
}

#[test]
fn a_non_loopback_api_without_a_token_refuses_to_start() {
    let out = Command::new(sbcd_bin())
        .args(["--listen", &format!("udp:127.0.0.1:{}", free_port()), "--admin-listen", "0.0.0.0:1", "--check-config"])
        .output()
        .expect("run sbcd");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin.token"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn profiles_list_load_and_reload_with_their_md5() {
    let (sbcd, allow, _) = setup();
    let (st, list) = json(&sbcd, "GET", "/profiles", None);
    assert_eq!(st, 200);
    let find = |list: &Value, name: &str| list.as_array().and_then(|a| a.iter().find(|p| p["name"] == name)).cloned();
    let p = find(&list, "allow").expect("allow listed");
    assert_eq!(p["md5"], md5sum(&allow), "md5 as md5sum prints it");
    assert!(p["loaded_at"].as_u64().is_some_and(|t| t > 1_700_000_000));

    // Change the file and reload just that profile.
    std::fs::write(&allow, "header_filter=blacklist\nheader_list=User-Agent,Server\n").expect("rewrite");
    let (st, p) = json(&sbcd, "POST", "/profiles/allow/reload", None);
    assert_eq!(st, 200, "{p}");
    assert_eq!(p["md5"], md5sum(&allow));

    // A broken file is refused with where and why; the running profile stays.
    std::fs::write(&allow, "header_filter=sometimes\n").expect("rewrite");
    let (st, e) = json(&sbcd, "POST", "/profiles/allow/reload", None);
    assert_eq!(st, 400);
    assert!(
        e["error"].as_str().is_some_and(|m| m.contains("allow.sbcprofile.conf:1") && m.contains("header_filter")),
        "{e}"
    );
    let (_, list) = json(&sbcd, "GET", "/profiles", None);
    assert_ne!(find(&list, "allow").expect("still there")["md5"], md5sum(&allow));

    // A file naming a call-control module sbcd does not have is refused the same way.
    std::fs::write(&allow, "call_control=x\nx_module=cc_nope\n").expect("rewrite");
    let (st, e) = json(&sbcd, "POST", "/profiles/allow/reload", None);
    assert_eq!(st, 400, "{e}");
    assert!(e["error"].as_str().is_some_and(|m| m.contains("cc_nope")), "{e}");

    // Load a new profile from a file; an unknown one cannot be reloaded.
    let sems = repo_root().join("tests/sems/codecfilter.sbcprofile.conf");
    let body = format!(r#"{{"file":"{}"}}"#, sems.display());
    let (st, p) = json(&sbcd, "POST", "/profiles/codecs", Some(&body));
    assert_eq!(st, 200, "{p}");
    assert_eq!(p["md5"], md5sum(&sems));
    assert_eq!(json(&sbcd, "POST", "/profiles/nope/reload", None).0, 404);
    assert_eq!(json(&sbcd, "POST", "/profiles/x", Some(r#"{"file":"/does/not/exist"}"#)).0, 400);
    // Everything again from the configuration file.
    let (st, g) = json(&sbcd, "POST", "/profiles/reload", None);
    assert_eq!(st, 400, "the broken allow file fails the whole reload: {g}");
    std::fs::write(&allow, "header_filter=transparent\n").expect("rewrite");
    let (st, g) = json(&sbcd, "POST", "/profiles/reload", None);
    assert_eq!(st, 200, "{g}");
    assert!(g["generation"].as_u64().is_some());
    let metrics = http(&sbcd, "GET", "/metrics", None, None).1;
    assert!(metrics.contains("sbc_config_reloads_total{result=\"failed\"} 3"), "{metrics}");
    assert!(metrics.contains("sbc_config_reloads_total{result=\"ok\"} 3"), "{metrics}");
}

fn call_timer_fields(dir: &Path) -> PathBuf {
    injection_file(dir, &["alice"])
}

/// A call that stays up until the SBC hangs it up (SIPp's cc_timer pair waits for BYE).
fn held_call(sbcd: &Sbcd) -> (SippBg, SippBg) {
    let uas_port = free_port();
    let uas = sipp_uas("uas_cc_timer.xml", uas_port, Transport::Udp, 1);
    let dir = scratch_dir("admin-uac");
    let inf = call_timer_fields(&dir);
    let dest = std::net::SocketAddr::from(([127, 0, 0, 1], uas_port));
    let uac = sipp_uac_bg("uac_cc_timer.xml", dest, sbcd.addr(), &["-inf".into(), inf.display().to_string()]);
    (uac, uas)
}

fn wait_for_calls(sbcd: &Sbcd, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, calls) = json(sbcd, "GET", "/calls", None);
        let calls = calls.as_array().cloned().unwrap_or_default();
        let connected = calls.iter().filter(|c| c["state"] == "connected").count();
        if connected >= n || Instant::now() > deadline {
            return calls;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_chain_changes_for_new_calls_and_a_running_call_keeps_its_profile_until_torn_down() {
    let (sbcd, _, _) = setup();
    let (uac, uas) = held_call(&sbcd);
    let calls = wait_for_calls(&sbcd, 1);
    assert_eq!(calls.len(), 1, "{calls:?}\n{}", sbcd.log_text());
    let call = &calls[0];
    assert_eq!(call["profile"], "allow");
    assert_eq!(call["legs"].as_array().map(Vec::len), Some(2));
    assert!(call["connected_at"].as_u64().is_some());

    // Switch the chain: a bad chain is refused, a good one applies to the next call.
    let (st, e) = json(&sbcd, "PUT", "/active-profile", Some(r#"{"chain":"nosuch"}"#));
    assert_eq!(st, 400, "{e}");
    let (st, _) = json(&sbcd, "PUT", "/active-profile", Some(r#"{"chain":"deny"}"#));
    assert_eq!(st, 200);
    assert_eq!(json(&sbcd, "GET", "/active-profile", None).1["chain"], "deny");
    let refused = sipp_uac("uac_profile_refused.xml", free_addr(), Some(sbcd.addr()), Transport::Udp, 1, 1);
    assert!(refused.status.success(), "the next call gets the deny profile's 403");
    let id = call["id"].as_str().expect("id").to_string();
    assert_eq!(
        json(&sbcd, "GET", &format!("/calls/{id}"), None).1["profile"],
        "allow",
        "the running call keeps its profile"
    );

    // The codec in use (printCallStats' counterpart).
    assert_eq!(json(&sbcd, "GET", &format!("/calls/{id}"), None).1["codecs"], serde_json::json!(["PCMU/8000"]));
    let (_, stats) = json(&sbcd, "GET", "/call-stats", None);
    assert_eq!(stats, serde_json::json!({"calls": 1, "codecs": [{"codec": "PCMU/8000", "streams": 1}]}));

    // Tear it down with SEMS's postControlCmd: both SIPp sides get a BYE and finish their
    // scenarios. A command SEMS did not know either is refused.
    let control = |cmd: &str| {
        let body = format!(r#"{{"cmd":"{cmd}"}}"#);
        http(&sbcd, "POST", &format!("/calls/{id}/control"), Some(TOKEN), Some(&body)).0
    };
    assert_eq!(control("mute"), 400);
    assert_eq!(control("teardown"), 204);
    let (uac_dir, uas_dir) = (uac.dir.clone(), uas.dir.clone());
    let (a, b) = (uac.wait(Duration::from_secs(15)), uas.wait(Duration::from_secs(15)));
    assert!(
        a.status.success() && b.status.success(),
        "both legs get BYE: {}\n{}\n{}",
        read_error_logs(&uac_dir),
        read_error_logs(&uas_dir),
        sbcd.log_text()
    );
    assert_eq!(http(&sbcd, "DELETE", &format!("/calls/{id}"), Some(TOKEN), None).0, 404);
    assert!(sbcd.log_text().contains("admin_teardown"));
}

fn free_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], free_port()))
}

#[test]
fn regex_maps_call_control_and_explain() {
    let (sbcd, _, _) = setup();
    let (st, m) =
        json(&sbcd, "PUT", "/regex-maps/users", Some(r##"{"text":"# who goes where\n^alice=>allow\n^bob=>deny\n"}"##));
    assert_eq!(st, 200, "{m}");
    assert_eq!(m["rules"].as_array().map(Vec::len), Some(2));
    let (_, maps) = json(&sbcd, "GET", "/regex-maps", None);
    assert!(maps.as_array().is_some_and(|a| a.iter().any(|m| m["name"] == "users")));
    let (st, e) = json(&sbcd, "PUT", "/regex-maps/users", Some(r#"{"text":"(unclosed=>x\n"}"#));
    assert_eq!(st, 400);
    assert!(e["error"].as_str().is_some_and(|m| m.starts_with("line 1")), "{e}");
    // The map drives the chain.
    assert_eq!(json(&sbcd, "PUT", "/active-profile", Some(r#"{"chain":"$M($fU=>users),allow"}"#)).0, 200);

    let (_, cc) = json(&sbcd, "GET", "/call-control", None);
    assert!(cc["modules"].as_array().is_some_and(|m| m.iter().any(|x| x == "cc_pcalls")));
    assert_eq!(json(&sbcd, "POST", "/call-control/modules", Some(r#"{"modules":["cc_pcalls"]}"#)).0, 200);
    assert_eq!(json(&sbcd, "POST", "/call-control/modules", Some(r#"{"modules":["cc_nope"]}"#)).0, 404);

    let req = "INVITE sip:x@127.0.0.1:5099 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5001;branch=z9hG4bK1\nFrom: <sip:bob@a.example>;tag=1\nTo: <sip:x@b.example>\nCall-ID: e1\nCSeq: 1 INVITE\nMax-Forwards: 70\nContact: <sip:bob@127.0.0.1:5001>\nContent-Length: 0\n\n";
    let body = serde_json::json!({ "request": req }).to_string();
    let (st, r) = json(&sbcd, "POST", "/explain", Some(&body));
    assert_eq!(st, 200, "{r}");
    assert!(r["text"].as_str().is_some_and(|t| t.contains("deny") && t.contains("403")), "{r}");
}

#[test]
fn metrics_count_calls_by_profile_and_method() {
    let (sbcd, _, _) = setup();
    let calls = 5;
    call_through(&sbcd, "basic", Transport::Udp, calls);
    let (st, text) = http(&sbcd, "GET", "/metrics", None, None);
    assert_eq!(st, 200);
    let value = |line_start: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{line_start} missing:\n{text}"))
    };
    assert_eq!(value("sbc_calls_started_total "), u64::from(calls));
    assert_eq!(value("sbc_calls_answered_total "), u64::from(calls));
    assert_eq!(value("sbc_calls_ended_total{profile=\"allow\",outcome=\"answered\"} "), u64::from(calls));
    assert_eq!(value("sbc_sip_requests_total{method=\"INVITE\"} "), u64::from(calls));
    assert_eq!(value("sbc_sip_requests_total{method=\"BYE\"} "), u64::from(calls));
    assert_eq!(value("sbc_calls_active "), 0);
    assert!(value("process_resident_memory_bytes ") > 1_000_000);
    assert!(value("process_open_fds ") > 3);
    assert!(text.ends_with("# EOF\n"));
    let (_, stats) = json(&sbcd, "GET", "/stats", None);
    assert_eq!(stats["calls_started"], u64::from(calls));
}

/// Runs a `packaging/bin/sems-sbc-*` tool against `sbcd`: (exit code, stdout, stderr).
fn tool(sbcd: &Sbcd, name: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(repo_root().join("packaging/bin").join(name))
        .args(args)
        .env("SBC_ADMIN_URL", sbcd.admin_url())
        .env("SBC_ADMIN_TOKEN", TOKEN)
        .env("SBC_TOOLS_LIB", repo_root().join("packaging/lib"))
        .output()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_sems_sbc_tool_against_a_live_sbcd() {
    let (sbcd, allow, _) = setup();
    let (rc, out, err) = tool(&sbcd, "sems-sbc-list-profiles", &[]);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.starts_with("Active calls: 0\n"), "{out}");
    assert!(out.contains(&format!("allow\t{}\t{}", md5sum(&allow), allow.display())), "{out}");
    assert_eq!(tool(&sbcd, "sems-sbc-list-profiles", &["extra"]).0, 1, "wrong argument count: usage, exit 1");

    let (rc, out, _) = tool(&sbcd, "sems-sbc-reload-profile", &["allow"]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("OK: allow md5"), "{out}");
    let (rc, _, err) = tool(&sbcd, "sems-sbc-reload-profile", &["nope"]);
    assert_eq!(rc, 2);
    assert!(err.starts_with("Error: no profile named 'nope'"), "{err}");
    let (rc, out, _) = tool(&sbcd, "sems-sbc-reload-profiles", &[]);
    assert_eq!(rc, 0);
    assert!(out.starts_with("0\nOK: configuration generation"), "{out}");

    let sems = repo_root().join("tests/sems/codecfilter.sbcprofile.conf");
    let (rc, out, _) = tool(&sbcd, "sems-sbc-load-profile", &["codecs", sems.to_str().expect("utf8")]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains(&md5sum(&sems)), "{out}");

    let (rc, out, _) = tool(&sbcd, "sems-sbc-set-activeprofile", &["codecs,allow"]);
    assert_eq!((rc, out.lines().last()), (0, Some("OK: active profile codecs,allow")), "{out}");
    let (rc, out, _) = tool(&sbcd, "sems-sbc-get-activeprofile", &[]);
    assert_eq!((rc, out.as_str()), (0, "Active calls: 0\ncodecs,allow\n"));
    assert_eq!(tool(&sbcd, "sems-sbc-set-activeprofile", &["missing"]).0, 2);

    let map = scratch_dir("admin-map").join("users.map");
    std::fs::write(&map, "^alice=>allow\n^bob=>codecs\n").expect("write map");
    let (rc, out, _) = tool(&sbcd, "sems-sbc-set-regex-map", &["users", map.to_str().expect("utf8")]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("OK: users, 2 rules"), "{out}");
    let (rc, out, _) = tool(&sbcd, "sems-sbc-get-regex-map-names", &[]);
    assert_eq!((rc, out.as_str()), (0, "users\n"));

    assert_eq!(tool(&sbcd, "sems-sbc-load-callcontrol-modules", &["cc_pcalls;cc_call_timer"]).0, 0);
    assert_eq!(tool(&sbcd, "sems-sbc-load-callcontrol-modules", &["cc_nope"]).0, 2);

    // Teardown by a leg's local tag, as SEMS's tool took it.
    assert_eq!(json(&sbcd, "PUT", "/active-profile", Some(r#"{"chain":"allow"}"#)).0, 200);
    let (uac, uas) = held_call(&sbcd);
    let calls = wait_for_calls(&sbcd, 1);
    let tag = calls[0]["legs"][0]["local_tag"].as_str().expect("tag").to_string();
    let (rc, out, err) = tool(&sbcd, "sems-sbc-teardown-call", &[&tag]);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.ends_with("OK\n"));
    assert!(uac.wait(Duration::from_secs(15)).status.success() && uas.wait(Duration::from_secs(15)).status.success());
    assert_eq!(tool(&sbcd, "sems-sbc-teardown-call", &[&tag]).0, 2);
}
