//! A SEMS installation taken over as it is: `sbcd --config tests/sems-install/sems.conf` binds
//! SEMS's two interfaces, and calls made through it follow its sbc.conf's chain, profiles,
//! includes and map, with sems.conf's public address in the far side's SDP. `sbcd migrate`
//! writes YAML that loads.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use sbc_e2e::ua::{sdp, SipText, TestUa};
use sbc_e2e::*;

/// `caller` INVITEs `callee` through the SBC; the INVITE the callee got, and the caller's
/// final response (the call is answered, then hung up).
fn call(caller: TestUa, callee: &TestUa, extra: &str) -> (SipText, SipText) {
    let uri = format!("sip:bob@{}", callee.local);
    let mut caller = caller;
    caller.extra_headers = extra.to_string();
    let t = std::thread::spawn(move || {
        let ok = caller.invite(&uri, &sdp("127.0.0.1", 7000, ""));
        let bye = (ok.status() == Some(200)).then(|| caller.bye());
        (ok, bye)
    });
    let inv = callee.recv_request(Duration::from_secs(5)).expect("the INVITE arrives");
    callee.answer(&inv, &sdp("127.0.0.1", 7002, ""));
    let _ack = callee.recv_request(Duration::from_secs(5)).expect("the ACK arrives");
    let bye = callee.recv_request(Duration::from_secs(5)).expect("the BYE arrives");
    callee.ok(&bye);
    let (ok, bye_answer) = t.join().expect("caller");
    assert_eq!(bye_answer.and_then(|b| b.status()), Some(200));
    (inv, ok)
}

#[test]
fn calls_go_through_a_sems_installation_as_it_is() {
    let conf = repo_root().join("tests/sems-install/sems.conf");
    let intern: SocketAddr = "127.0.0.61:5060".parse().expect("addr");
    let mut sbcd = spawn_sbcd_on(conf.to_str().expect("utf-8"), intern);

    // The chain falls through to `transparent`: its @included header filter applies, the B leg
    // leaves from `intern` (the first interface), media anchored there.
    let bob = TestUa::new(intern);
    let (inv, ok) = call(TestUa::new(intern), &bob, "P-App-Name: secret\r\n");
    assert_eq!(ok.status(), Some(200), "{}", ok.0);
    assert!(inv.header("P-App-Name").is_none(), "blacklisted by the included file: {}", inv.0);
    assert!(inv.0.contains("c=IN IP4 127.0.0.61"), "{}", inv.0);

    // P-SBCProfile picks `symmetricrtp`: out through `extern`, whose public_ip is what the far
    // side sees in Via and SDP.
    let (inv, ok) = call(TestUa::new(intern), &bob, "P-SBCProfile: symmetricrtp\r\n");
    assert_eq!(ok.status(), Some(200), "{}", ok.0);
    assert!(inv.header("Via").is_some_and(|v| v.contains("203.0.113.62")), "{}", inv.0);
    assert!(inv.0.contains("c=IN IP4 203.0.113.62"), "{}", inv.0);

    // The source map sends 127.0.0.70 to `refuse`, with its appended header.
    let mut refused = TestUa::new_on("127.0.0.70", intern);
    let reply = refused.invite(&format!("sip:bob@{}", bob.local), &sdp("127.0.0.70", 7004, ""));
    assert_eq!(reply.status(), Some(403), "{}", reply.0);
    assert!(reply.header("Warning").is_some_and(|w| w.contains("refused by policy")), "{}", reply.0);

    let _ = sbcd.kill();
    let _ = sbcd.wait();
}

#[test]
fn sbcd_migrate_writes_yaml_that_loads() {
    let dir = scratch_dir("migrate");
    let out = dir.join("sbc.yaml");
    let run = Command::new(sbcd_bin())
        .args(["migrate", repo_root().join("tests/sems-install").to_str().expect("utf-8"), "-o"])
        .arg(&out)
        .output()
        .expect("sbcd migrate");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let yaml = std::fs::read_to_string(&out).expect("written");
    assert!(yaml.contains("advertise: \"203.0.113.62\"   # public_ip"), "{yaml}");
    let check = Command::new(sbcd_bin()).arg("--config").arg(&out).arg("--check-config").output().expect("check");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    // A SEMS file that does not load is refused with its line, and nothing is written.
    let bad = dir.join("sems.conf");
    std::fs::write(&bad, "plugin_config_path=/nonexistent/\n").expect("write");
    let run = Command::new(sbcd_bin())
        .args(["migrate"])
        .arg(&bad)
        .args(["-o"])
        .arg(dir.join("no.yaml"))
        .output()
        .expect("run");
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("sems.conf:1: plugin_config_path"), "{err}");
    assert!(!dir.join("no.yaml").exists());
}
