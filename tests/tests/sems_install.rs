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
    call_with(caller, callee, &uri, extra, &sdp("127.0.0.1", 7000, ""))
}

/// The same, to `uri` with `offer`.
fn call_with(caller: TestUa, callee: &TestUa, uri: &str, extra: &str, offer: &str) -> (SipText, SipText) {
    let (uri, offer) = (uri.to_string(), offer.to_string());
    let mut caller = caller;
    caller.extra_headers = extra.to_string();
    let t = std::thread::spawn(move || {
        let ok = caller.invite(&uri, &offer);
        let bye = (ok.status() == Some(200)).then(|| caller.bye());
        (ok, bye)
    });
    let inv = callee.recv_request(Duration::from_secs(5)).expect("the INVITE arrives");
    callee.answer(&inv, &sdp("127.0.0.1", 7002, ""));
    let _ack = callee.recv_method("ACK", Duration::from_secs(5)).expect("the ACK arrives");
    let bye = callee.recv_method("BYE", Duration::from_secs(5)).expect("the BYE arrives");
    callee.ok(&bye);
    let (ok, bye_answer) = t.join().expect("caller");
    assert_eq!(bye_answer.and_then(|b| b.status()), Some(200));
    (inv, ok)
}

#[test]
fn calls_go_through_a_sems_installation_as_it_is() {
    let conf = repo_root().join("tests/sems-install/sems.conf");
    let intern: SocketAddr = "127.0.0.61:5060".parse().expect("addr");
    let _sbcd = Running(spawn_sbcd_on(conf.to_str().expect("utf-8"), intern));

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

    // The source map sends 127.0.0.71 to `codecfilter`: GSM leaves the offer.
    let offer = "v=0\r\no=ua 1 1 IN IP4 127.0.0.71\r\ns=-\r\nc=IN IP4 127.0.0.71\r\nt=0 0\r\nm=audio 7006 RTP/AVP 0 3 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:3 GSM/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
    let uri = format!("sip:bob@{}", bob.local);
    let (inv, ok) = call_with(TestUa::new_on("127.0.0.71", intern), &bob, &uri, "", offer);
    assert_eq!(ok.status(), Some(200), "{}", ok.0);
    assert!(inv.body().contains("m=audio") && inv.body().contains(" RTP/AVP 0 8 101\r\n"), "{}", inv.0);
    assert!(!inv.body().contains("GSM"), "{}", inv.0);

    // `sst_b2b`: session timers on both legs, with sbc.conf's values.
    let (inv, ok) = call(TestUa::new(intern), &bob, "P-SBCProfile: sst_b2b\r\n");
    assert_eq!(ok.status(), Some(200), "{}", ok.0);
    assert!(inv.header("Session-Expires").is_some_and(|v| v.starts_with("1800")), "{}", inv.0);
    assert!(inv.header("Min-SE").is_some_and(|v| v.trim() == "90"), "{}", inv.0);

    // `replytranslate`: the callee's 603 reaches the caller as 488.
    let mut caller = TestUa::new(intern);
    caller.extra_headers = "P-SBCProfile: replytranslate\r\n".into();
    let t = std::thread::spawn(move || caller.invite(&uri, &sdp("127.0.0.1", 7008, "")));
    let inv = bob.recv_request(Duration::from_secs(5)).expect("the INVITE arrives");
    bob.reply(&inv, "603 Decline", "");
    let reply = t.join().expect("caller");
    assert_eq!(reply.status(), Some(488), "{}", reply.0);
    assert!(reply.0.starts_with("SIP/2.0 488 Not acceptable here"), "{}", reply.0);
    assert!(bob.recv_method("ACK", Duration::from_secs(5)).is_some(), "the 603 is acknowledged");

    // `auth_b2b` as SEMS ships it names no realm and sends calls where the request says: the
    // callee's challenge is relayed, not answered with the operator's password (a load warning
    // says so; the copy below lists the realm).
    assert_eq!(auth_b2b_call(intern, &bob), None);

    // `call_timer`: the Request-URI's t=1 ends the call after a second, on both legs.
    let mut caller = TestUa::new(intern);
    caller.extra_headers = "P-SBCProfile: call_timer\r\n".into();
    let uri = format!("sip:bob@{};t=1", bob.local);
    let t = std::thread::spawn(move || {
        let ok = caller.invite(&uri, &sdp("127.0.0.1", 7014, ""));
        let bye = caller.recv_method("BYE", Duration::from_secs(10));
        if let Some(b) = &bye {
            caller.ok(b);
        }
        (ok, bye)
    });
    let inv = bob.recv_request(Duration::from_secs(5)).expect("the INVITE arrives");
    bob.answer(&inv, &sdp("127.0.0.1", 7016, ""));
    let _ack = bob.recv_method("ACK", Duration::from_secs(5)).expect("the ACK arrives");
    let bye = bob.recv_method("BYE", Duration::from_secs(10)).expect("the SBC hangs up the callee");
    assert_eq!(bye.method(), Some("BYE"));
    bob.ok(&bye);
    let (ok, bye) = t.join().expect("caller");
    assert_eq!(ok.status(), Some(200), "{}", ok.0);
    assert_eq!(bye.as_ref().and_then(SipText::method), Some("BYE"), "the SBC hangs up the caller");
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

    // A copy that loads the prepaid profile, on addresses of its own: the migration keeps
    // the balances in a database (SEMS: in memory); set where this test may write, a call
    // goes through on the header's account's credit, and not without.
    let copy = dir.join("sems");
    copy_tree(&repo_root().join("tests/sems-install"), &copy);
    let edit = |file: &str, from: &str, to: &str| {
        let p = copy.join(file);
        let text = std::fs::read_to_string(&p).expect("read").replace(from, to);
        std::fs::write(&p, text).expect("write");
    };
    edit("etc/sbc.conf", "profiles=transparent,", "profiles=prepaid,transparent,");
    edit("etc/auth_b2b.sbcprofile.conf", "enable_auth=yes", "enable_auth=yes\nauth_realm=sems.test");
    edit("sems.conf", "127.0.0.61", "127.0.0.65");
    edit("sems.conf", "127.0.0.62", "127.0.0.66");
    let run = Command::new(sbcd_bin()).arg("migrate").arg(&copy).output().expect("sbcd migrate");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let yaml = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(yaml.contains("db: \"/var/lib/sbc/prepaid.sqlite\""), "{yaml}");
    let db = dir.join("prepaid.sqlite");
    let prepaid_yaml = dir.join("prepaid.yaml");
    std::fs::write(&prepaid_yaml, yaml.replace("/var/lib/sbc/prepaid.sqlite", db.to_str().expect("utf-8")))
        .expect("write");
    for (account, seconds) in [("alice", "60"), ("broke", "0")] {
        let set = Command::new(sbcd_bin()).arg("prepaid").arg("--db").arg(&db).args(["set", account, seconds]).output();
        assert!(set.is_ok_and(|o| o.status.success()), "sbcd prepaid set {account}");
    }
    let intern: SocketAddr = "127.0.0.65:5060".parse().expect("addr");
    let sbcd = Running(spawn_sbcd_on(prepaid_yaml.to_str().expect("utf-8"), intern));
    let bob = TestUa::new(intern);
    let uri = format!("sip:bob@{}", bob.local);
    let headers =
        |who: &str| format!("P-SBCProfile: prepaid\r\nP-Caller-Uuid: {who}\r\nP-Proxy: {uri}\r\nP-R-Uri: {uri}\r\n");
    let (inv, ok) = call(TestUa::new(intern), &bob, &headers("alice"));
    assert_eq!(ok.status(), Some(200), "{}", ok.0);
    assert!(inv.header("To").is_some_and(|t| t.contains(&uri)), "{}", inv.0);
    // With the realm listed, as the load warning asks, the challenge is answered.
    let auth = auth_b2b_call(intern, &bob).expect("the challenge is answered");
    assert!(auth.contains("username=\"alice\"") && auth.contains("realm=\"sems.test\""), "{auth}");
    assert!(auth.contains("nonce=\"n0nce\"") && auth.contains("response=\""), "{auth}");
    let mut broke = TestUa::new(intern);
    broke.extra_headers = headers("broke");
    let refused = broke.invite(&uri, &sdp("127.0.0.1", 7020, ""));
    assert_eq!(refused.status(), Some(402), "no credit: {}", refused.0);
    drop(sbcd);

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

/// A call through `auth_b2b` whose callee challenges it (realm `sems.test`): the
/// Authorization of the INVITE sent again, or `None` when the caller got the 401 instead.
/// Either way the B leg's identity is built from P-App-Param, which does not travel on.
fn auth_b2b_call(sbc: SocketAddr, bob: &TestUa) -> Option<String> {
    let mut caller = TestUa::new(sbc);
    caller.extra_headers = format!("P-SBCProfile: auth_b2b\r\nP-App-Param: u=alice;p=secret;d={}\r\n", bob.local);
    let uri = format!("sip:bob@{}", bob.local);
    let t = std::thread::spawn(move || {
        let ok = caller.invite(&uri, &sdp("127.0.0.1", 7010, ""));
        let bye = (ok.status() == Some(200)).then(|| caller.bye());
        (ok, bye)
    });
    let inv = bob.recv_request(Duration::from_secs(5)).expect("the INVITE arrives");
    assert!(inv.header("From").is_some_and(|f| f.contains(&format!("sip:alice@{}", bob.local))), "{}", inv.0);
    assert!(inv.header("P-App-Param").is_none(), "the credentials do not travel on: {}", inv.0);
    let challenge = "WWW-Authenticate: Digest realm=\"sems.test\", nonce=\"n0nce\", algorithm=MD5\r\n";
    bob.reply(&inv, "401 Unauthorized", challenge);
    let ack = bob.recv_method("ACK", Duration::from_secs(5)).expect("the ACK of the 401");
    assert_eq!(ack.method(), Some("ACK"));
    // The INVITE sent again is a new transaction (a resent first one would keep its CSeq).
    let first = inv.header("CSeq").map(str::to_string);
    let again = std::iter::from_fn(|| bob.recv_method("INVITE", Duration::from_secs(3)))
        .find(|m| m.header("CSeq").map(str::to_string) != first);
    let Some(inv) = again else {
        let (reply, _) = t.join().expect("caller");
        assert_eq!(reply.status(), Some(401), "the challenge reaches the caller: {}", reply.0);
        return None;
    };
    let auth = inv.header("Authorization").unwrap_or_else(|| panic!("no Authorization: {}", inv.0)).to_string();
    bob.answer(&inv, &sdp("127.0.0.1", 7012, ""));
    let _ack = bob.recv_method("ACK", Duration::from_secs(5)).expect("the ACK arrives");
    let bye = bob.recv_method("BYE", Duration::from_secs(5)).expect("the BYE arrives");
    bob.ok(&bye);
    let (ok, bye) = t.join().expect("caller");
    assert_eq!(ok.status(), Some(200), "{}", ok.0);
    assert_eq!(bye.and_then(|b| b.status()), Some(200));
    Some(auth)
}

/// An sbcd on the fixture's fixed addresses, stopped however the test ends (one left running
/// would answer the next run).
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
