//! Profiles on the wire: a SEMS `sbc.conf` with its profiles and map loaded unchanged, the
//! selection chain choosing per call, a rewriting profile checked by the callee's SIPp
//! (regexp checks on R-URI, From, To, appended and filtered headers, codecs), hot reload by
//! SIGHUP, and `sbcd explain`.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sbc_e2e::{
    call_through, call_through_from, config_file, eventually, repo_root, sbcd_bin, scratch_dir, sipp_uac,
    sipp_uac_from, spawn_sbcd_on, Sbcd, Transport,
};

fn sems_conf() -> PathBuf {
    repo_root().join("tests/sems/sbc.conf")
}

fn start_with(config: &std::path::Path) -> Sbcd {
    Sbcd::start(&["--config", config.to_str().unwrap()])
}

/// A UAS on a port nobody listens to: the SBC must answer by itself.
fn nobody() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], sbc_e2e::free_port()))
}

fn assert_ok(out: &std::process::Output, what: &str, sbcd: &Sbcd) {
    assert!(out.status.success(), "{what}: sipp exit {:?}\nsbcd log:\n{}", out.status.code(), sbcd.log_text());
}

#[test]
fn sems_config_selects_by_source_map_header_and_refuses_the_rest() {
    let sbcd = start_with(&sems_conf());
    // 127.0.0.2 is mapped to "transparent" by src_ipmap.conf: relayed unchanged.
    call_through_from("127.0.0.2", &sbcd, "basic", Transport::Udp, 1);
    // No map entry, no header: the chain ends in profile "refuse" (403 + expanded Warning).
    let out = sipp_uac("uac_profile_refused.xml", nobody(), Some(sbcd.addr()), Transport::Udp, 1, 10);
    assert_ok(&out, "refuse", &sbcd);
    // 127.0.0.7 maps (with a back-reference) to "codecfilter": a PCMU-only offer gets 488.
    let out =
        sipp_uac_from("127.0.0.7", "uac_profile_no_codec.xml", nobody(), Some(sbcd.addr()), Transport::Udp, 1, 10);
    assert_ok(&out, "codecfilter", &sbcd);
    // P-SBCProfile: replytranslate — the callee's 603 reaches the caller as 488.
    call_through(&sbcd, "profile_translated", Transport::Udp, 1);
}

fn rewrite_config() -> PathBuf {
    config_file(
        "profiles",
        &format!(
            r#"# YAML on top of the SEMS files: their chain and profiles, plus a native one.
sems_config: {}
regex_maps:
  users: ["^(sipp)$=>known-\\1"]
profiles:
  rewrite:
    RURI: "sip:999$rU@$rd;transport=$rP(transport)"
    From: "\"Anonymous\" <sip:anonymous@anonymous.invalid>"
    To: "<sip:$rU@callee.example>"
    append_headers:
      - "X-Caller-IP: $si"
      - "X-Map: $M($fU=>users)"
    header_filter: blacklist
    header_list: [X-Drop-Me]
    sdp_filter: whitelist
    sdpfilter_list: [PCMA, telephone-event]
"#,
            sems_conf().display()
        ),
    )
}

#[test]
fn rewriting_profile_acts_on_the_wire_udp() {
    let sbcd = start_with(&rewrite_config());
    call_through(&sbcd, "profile_rewrite", Transport::Udp, 2);
}

#[test]
fn rewriting_profile_acts_on_the_wire_tcp() {
    let sbcd = start_with(&rewrite_config());
    call_through(&sbcd, "profile_rewrite", Transport::Tcp, 2);
}

fn sighup(sbcd: &Sbcd) {
    let status = std::process::Command::new("kill").args(["-HUP", &sbcd.pid().to_string()]).status().unwrap();
    assert!(status.success());
}

fn wait_for_log(sbcd: &Sbcd, needle: &str, count: usize) {
    let logged = || sbcd.log_text().matches(needle).count() >= count;
    assert!(
        eventually(Duration::from_secs(10), logged),
        "'{needle}' not logged {count} times; log:\n{}",
        sbcd.log_text()
    );
}

#[test]
fn sighup_reloads_and_a_bad_file_keeps_the_running_config() {
    let cfg = config_file("reload", "active_profile: open\nprofiles:\n  open: {}\n");
    let sbcd = start_with(&cfg);
    call_through(&sbcd, "basic", Transport::Udp, 1);

    // Everything refused from now on: new calls get 403.
    let refuse = format!(
        "active_profile: refuse\nprofiles:\n  refuse: {{ sems_file: {} }}\n",
        repo_root().join("tests/sems/refuse.sbcprofile.conf").display()
    );
    std::fs::write(&cfg, refuse).unwrap();
    sighup(&sbcd);
    wait_for_log(&sbcd, "configuration reloaded", 1);
    let out = sipp_uac("uac_profile_refused.xml", nobody(), Some(sbcd.addr()), Transport::Udp, 1, 10);
    assert_ok(&out, "refused after reload", &sbcd);

    // A broken file (unknown option) is reported and changes nothing.
    std::fs::write(&cfg, "active_profile: open\nprofiles:\n  open: { RUIR: x }\n").unwrap();
    sighup(&sbcd);
    wait_for_log(&sbcd, "reload failed", 1);
    assert!(sbcd.log_text().contains("RUIR: unknown profile option"), "{}", sbcd.log_text());
    let out = sipp_uac("uac_profile_refused.xml", nobody(), Some(sbcd.addr()), Transport::Udp, 1, 10);
    assert_ok(&out, "still refused after a bad reload", &sbcd);
}

#[test]
fn explain_shows_rule_profile_expansions_and_the_b_leg_request() {
    let dir = scratch_dir("explain");
    let req = dir.join("invite.sip");
    std::fs::write(
        &req,
        "INVITE sip:4930555@127.0.0.1:5090 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.5:5070;branch=z9hG4bK1\nMax-Forwards: 70\nFrom: <sip:alice@a.example>;tag=1\nTo: <sip:4930555@b.example>\nCall-ID: x1@a\nCSeq: 1 INVITE\nContact: <sip:alice@127.0.0.5:5070>\nP-SBCProfile: auth_b2b\nP-App-Param: u=bob;d=sip.example.org;p=secret\n\n",
    )
    .unwrap();
    let out = std::process::Command::new(sbcd_bin())
        .args([
            "explain",
            "--config",
            sems_conf().to_str().unwrap(),
            req.to_str().unwrap(),
            "--source",
            "127.0.0.5:5070",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("rule 2: $H(P-SBCProfile) -> 'auth_b2b'"), "{text}");
    assert!(text.contains("RURI = sip:$rU@$P(d)  ->  \"sip:4930555@sip.example.org\""), "{text}");
    assert!(text.contains("--- message sent ---\nINVITE sip:4930555@sip.example.org SIP/2.0"), "{text}");
    assert!(text.contains("From: <sip:bob@sip.example.org>;tag="), "{text}");
    assert!(!text.contains("P-App-Param: u="), "the control header stays behind: {text}");

    // Without the header the chain refuses.
    let plain = std::fs::read_to_string(&req).unwrap().replace("P-SBCProfile: auth_b2b\n", "");
    std::fs::write(&req, plain).unwrap();
    let out = std::process::Command::new(sbcd_bin())
        .args(["explain", "--config", sems_conf().to_str().unwrap(), req.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("result: answered by the SBC: SIP/2.0 403 Forbidden"), "{text}");
}

#[test]
fn bad_profile_file_names_file_line_and_key() {
    let dir = scratch_dir("badprofile");
    std::fs::write(dir.join("p.sbcprofile.conf"), "# ok\nRURI=sip:$rU@x\nheader_filter=greylist\n").unwrap();
    std::fs::write(dir.join("sbc.conf"), "profiles=p\nactive_profile=p\n").unwrap();
    let out = std::process::Command::new(sbcd_bin())
        .args(["--check-config", "--config", dir.join("sbc.conf").to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("p.sbcprofile.conf:3: header_filter: 'greylist' is not transparent, whitelist or blacklist"),
        "{err}"
    );
}

/// `outbound_interface` chosen per call from a header: the callee sees the call leave from that
/// interface; an interface that does not exist is a 500 for that call.
#[test]
fn outbound_interface_per_call() {
    use std::net::UdpSocket;
    let (intern_port, extern_port, callee_port) = (sbc_e2e::free_port(), sbc_e2e::free_port(), sbc_e2e::free_port());
    let cfg = config_file(
        "profile-ifaces",
        &format!(
            "interfaces:\n  - name: intern\n    listen: [udp:127.0.0.1:{intern_port}]\n  - name: extern\n    listen: [udp:127.0.0.2:{extern_port}]\n\
             active_profile: out\nprofiles:\n  out:\n    outbound_interface: \"$H(X-Out)\"\n"
        ),
    );
    let mut child = spawn_sbcd_on(cfg.to_str().unwrap(), SocketAddr::from(([127, 0, 0, 1], intern_port)));
    let callee = UdpSocket::bind(("127.0.0.1", callee_port)).unwrap();
    callee.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
    caller.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let me = caller.local_addr().unwrap();
    let invite = |n: u32, out: &str| {
        format!(
            "INVITE sip:bob@127.0.0.1:{callee_port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKpi{n};rport\r\nFrom: <sip:alice@example.com>;tag=a{n}\r\nTo: <sip:bob@example.com>\r\nCall-ID: pifaces-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{me}>\r\nMax-Forwards: 70\r\nX-Out: {out}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    caller.send_to(invite(1, "extern").as_bytes(), ("127.0.0.1", intern_port)).unwrap();
    let mut buf = [0u8; 4096];
    let (n, from) = callee.recv_from(&mut buf).expect("the INVITE reaches the callee");
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    caller.send_to(invite(2, "nowhere").as_bytes(), ("127.0.0.1", intern_port)).unwrap();
    let mut answers = Vec::new();
    while let Ok((n, _)) = caller.recv_from(&mut buf) {
        answers.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        if answers.iter().any(|a| a.contains("pifaces-2") && a.starts_with("SIP/2.0 500")) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(from, SocketAddr::from(([127, 0, 0, 2], extern_port)), "sent from extern: {text}");
    assert!(text.contains(&format!("Via: SIP/2.0/UDP 127.0.0.2:{extern_port};")), "{text}");
    assert!(
        answers.iter().any(|a| a.contains("pifaces-2") && a.starts_with("SIP/2.0 500")),
        "an unknown interface is a 500: {answers:?}"
    );
}

/// `next_hop` alternatives on the wire: the first hop answers 503, the call goes to the second
/// (same dialog, next CSeq) and completes; the caller never sees the 503.
#[test]
fn next_hop_failover_on_503() {
    let (busy_port, good_port) = (sbc_e2e::free_port(), sbc_e2e::free_port());
    let cfg = config_file(
        "failover",
        &format!(
            "active_profile: p\nprofiles:\n  p:\n    next_hop: \"127.0.0.1:{busy_port}, 127.0.0.1:{good_port}\"\n"
        ),
    );
    let sbcd = start_with(&cfg);
    let overloaded = sbc_e2e::sipp_uas("uas_overloaded.xml", busy_port, Transport::Udp, 1);
    let good = sbc_e2e::sipp_uas("uas_basic.xml", good_port, Transport::Udp, 1);
    let out = sipp_uac("uac_basic.xml", nobody(), Some(sbcd.addr()), Transport::Udp, 1, 10);
    let (o, g) = (overloaded.wait(Duration::from_secs(30)), good.wait(Duration::from_secs(30)));
    assert!(out.status.success() && o.status.success() && g.status.success(), "{}", sbcd.log_text());
    assert!(sbcd.log_text().contains("B leg failing over to the next hop"), "{}", sbcd.log_text());
}

/// `transparent_dlg_id` on the wire: the callee sees the caller's Call-ID and From tag, and
/// the whole call (200, ACK, BYE from the caller) completes with one set of identifiers.
#[test]
fn transparent_dialog_ids_on_the_wire() {
    let cfg = config_file("transparent-ids", "active_profile: p\nprofiles:\n  p: { transparent_dlg_id: yes }\n");
    let sbcd = start_with(&cfg);
    call_through(&sbcd, "transparent_ids", Transport::Udp, 2);
}
