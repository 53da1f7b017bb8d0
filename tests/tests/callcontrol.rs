//! Call control on the wire: SIPp UAC → sbcd → SIPp UAS with a profile whose chain runs the
//! built-in modules.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sbc_e2e::{
    free_port, injection_file, read_error_logs, read_scenario_logs, scratch_dir, sipp_uac_run, sipp_uas, Sbcd,
    Transport,
};

fn config(text: &str) -> PathBuf {
    let dir = scratch_dir("cc");
    let p = dir.join("sbc.yaml");
    std::fs::write(&p, text).unwrap();
    p
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
    sipp_uac_run(
        "127.0.0.1",
        scenario,
        SocketAddr::from(([127, 0, 0, 1], uas)),
        Some(sbcd.addr()),
        Transport::Udp,
        calls,
        10,
        &args,
    )
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
            sipp_uac_run(
                "127.0.0.1",
                "uac_cc_pcalls.xml",
                SocketAddr::from(([127, 0, 0, 1], uas_port)),
                Some(sbcd_addr),
                Transport::Udp,
                3,
                10,
                &["-inf".into(), inf.display().to_string(), "-trace_logs".into(), "-l".into(), "3".into()],
            )
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

    // Everything was released: alice can make two calls again.
    let uas = sipp_uas("uas_cc_pcalls.xml", uas_port, Transport::Udp, 2);
    let (again, again_dir) = uac(&sbcd, "uac_cc_pcalls.xml", uas_port, &["alice"], 2, &["-l", "2"]);
    let _ = uas.wait(Duration::from_secs(30));
    assert!(again.status.success(), "{}", sbcd.log_text());
    assert_eq!(read_scenario_logs(&again_dir).matches("outcome=answered").count(), 2, "{}", sbcd.log_text());
}
