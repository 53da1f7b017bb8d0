//! A whole SEMS installation (`tests/sems-install`, written in SEMS's shapes): its sems.conf
//! maps onto sbcd's configuration, what is not applied is named with file and line, and bad
//! SEMS input is refused naming its line.

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use profiles::config::{migrate, Config};

fn install() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/sems-install")
}

/// The line of `key=` in the fixture's sems.conf.
fn line_of(key: &str) -> u64 {
    let text = std::fs::read_to_string(install().join("sems.conf")).unwrap();
    text.lines().position(|l| l.starts_with(&format!("{key}="))).unwrap() as u64 + 1
}

#[test]
fn a_sems_installation_loads_as_it_is() {
    let cfg = Config::load(&install().join("sems.conf")).unwrap();
    let names: Vec<_> = cfg.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["intern", "extern"]);
    let ext = &cfg.interfaces[1];
    assert_eq!(
        ext.listen.iter().map(|l| format!("{}:{}", l.transport, l.addr)).collect::<Vec<_>>(),
        ["udp:127.0.0.62:5060", "tcp:127.0.0.62:5060"]
    );
    assert_eq!(ext.advertise.as_deref(), Some("203.0.113.62"), "public_ip in Via and Contact");
    assert_eq!(ext.media.advertise, Some("203.0.113.62".parse::<IpAddr>().unwrap()), "and in SDP");
    assert_eq!((ext.media.port_min, ext.media.port_max), (32000, 32999));
    assert_eq!(cfg.t1.as_millis(), 250, "sip_timer_A");
    assert_eq!(cfg.max_calls, 2000, "session_limit");
    assert_eq!(cfg.admission.max_cps, 200, "cps_limit");
    assert_eq!(cfg.media.timeout.as_secs(), 120, "dead_rtp_time");
    assert_eq!(cfg.drain_timeout.as_secs(), 20, "max_shutdown_time");
    assert_eq!(cfg.tcp_idle_timeout.as_secs(), 900, "the longest tcp_idle_timeout");
    assert!(cfg.warnings.iter().any(|w| w.contains("tcp_idle_timeout: the interfaces' values differ")));
    assert_eq!(cfg.health.blacklist.as_secs(), 30, "default_bl_ttl");
    let cc = &cfg.call_control;
    assert_eq!((cc.pcalls_refuse_code, cc.pcalls_refuse_reason.as_str()), (486, "Too Many Calls"));
    assert_eq!(cc.call_timer_default_s, Some(7200));
    assert!(cc.cdr_syslog);
    assert_eq!(cc.cdr_prefix, "SEMS-CDR: ");

    // sbc.conf from plugin_config_path, its profiles with their @include, its map.
    let snap = &cfg.profiles;
    assert_eq!(snap.profiles.len(), 8);
    assert_eq!(snap.maps["src_ipmap"].lookup("127.0.0.70").as_deref(), Some("refuse"));
    let transparent = &snap.profiles["transparent"];
    assert!(transparent.dlg_nat_handling, "sems.conf's sip_nat_handling is every profile's default");
    assert!(transparent.header_filter.is_some(), "from the @included file");
    let sst = snap.profiles["sst_b2b"].session_timer.unwrap();
    assert_eq!(sst.session_expires, 1800, "sbc.conf's session-timer default");

    // Each key not applied is named with its file and line.
    let warned = |needle: &str| cfg.warnings.iter().any(|w| w.contains(needle));
    assert!(warned(&format!("sems.conf:{}: fork: not applied", line_of("fork"))), "{:#?}", cfg.warnings);
    assert!(warned(&format!("sems.conf:{}: sip_timer_b: ignored", line_of("sip_timer_b"))));
    assert!(warned(&format!("sems.conf:{}: sig_sock_opts_extern: not applied", line_of("sig_sock_opts_extern"))));
    let line = cc.cdr_sems_line.as_ref().expect("SEMS's CDR lines");
    assert!(line.quoting && line.fields[..2] == ["$ltag", "$start_tm"], "{line:?}");
    assert_eq!(cc.cdr_syslog_severity, 6, "loglevel 2: info");
    assert!(warned(&format!("sems.conf:{}: session_limit: sbcd refuses", line_of("session_limit"))));
}

/// `sbcd migrate`'s YAML loads to the same configuration, and says where each key came from.
#[test]
fn the_migrated_yaml_is_the_same_configuration() {
    let m = migrate::translate(&install()).unwrap();
    assert!(m.yaml.contains("max_calls: 2000   # session_limit"), "{}", m.yaml);
    assert!(m.yaml.contains("# - ") && m.yaml.contains("fork: not applied"), "the notes close the file");
    let dir = std::env::temp_dir().join(format!("migrate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("sbc.yaml"), &m.yaml).unwrap();
    let written = Config::load(&dir.join("sbc.yaml")).unwrap();
    let direct = Config::load(&install().join("sems.conf")).unwrap();
    assert_eq!(format!("{:?}", written.interfaces), format!("{:?}", direct.interfaces));
    assert_eq!(
        (written.t1, written.max_calls, written.media.timeout),
        (direct.t1, direct.max_calls, direct.media.timeout)
    );
    assert_eq!(written.profiles.profile_names(), direct.profiles.profile_names());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A scratch SEMS tree: `sems.conf` with `core`, and an sbc.conf with one profile.
fn tree(name: &str, core: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("migrate-{name}-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("sems.conf"), format!("plugin_config_path=etc/\n{core}")).unwrap();
    std::fs::write(dir.join("etc/sbc.conf"), "profiles=p\nactive_profile=p\n").unwrap();
    std::fs::write(dir.join("etc/p.sbcprofile.conf"), "outbound_proxy=\n").unwrap();
    dir
}

#[test]
fn bad_sems_input_is_refused_naming_its_line_and_unknown_keys_are_named() {
    let dir = tree("bad", "sip_ip=127.0.0.1\nsip_port=fifty\n");
    let e = Config::load(&dir.join("sems.conf")).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(3), "sip_port"), "{e}");
    let dir = tree("huge", "sip_ip=127.0.0.1\nsip_timer_A=18446744073709551615\n");
    let e = Config::load(&dir.join("sems.conf")).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(3), "sip_timer_A"), "{e}");

    // A value the written YAML refuses is named by the SEMS line it came from.
    let dir = tree("ports", "sip_ip=127.0.0.1\nmedia_ip=127.0.0.1\nrtp_low_port=500\n");
    let e = Config::load(&dir.join("sems.conf")).unwrap_err();
    assert!(e.file.ends_with("sems.conf") && e.line == Some(4) && e.key == "rtp_low_port", "{e}");

    let dir =
        tree("unknown", "sip_ip=lo\nno_such_key=1\noutbound_proxy=sip:edge.example.net\nforce_outbound_proxy=true\n");
    let cfg = Config::load(&dir.join("sems.conf")).unwrap();
    assert_eq!(cfg.interfaces[0].listen[0].addr.ip(), IpAddr::from([127, 0, 0, 1]), "the device lo");
    assert!(cfg.warnings.iter().any(|w| w.contains("sems.conf:3: no_such_key: ignored")), "{:?}", cfg.warnings);
    let p = &cfg.profiles.profiles["p"];
    assert_eq!(
        p.outbound_proxy.as_ref().map(|p| p.source()),
        Some("sip:edge.example.net"),
        "empty in the profile: sems.conf's"
    );
    assert!(!p.force_outbound_proxy, "SEMS reads only \"yes\" as yes");
    assert!(cfg.warnings.iter().any(|w| w.contains("force_outbound_proxy: 'true' is not \"yes\"")));

    let dir = tree("nosbc", "sip_ip=127.0.0.1\n");
    std::fs::remove_file(dir.join("etc/sbc.conf")).unwrap();
    let e = Config::load(&dir.join("sems.conf")).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(1), "plugin_config_path"), "{e}");
}

/// A profile using cc_prepaid, also through an include from the module folder, gets a balance
/// database (SEMS keeps balances in memory: said in the notes); without one, none is set.
#[test]
fn cc_prepaid_gets_a_database_when_a_loaded_profile_uses_it() {
    let dir = tree("prepaid", "");
    let yaml = migrate::translate(&dir.join("sems.conf")).unwrap().yaml;
    assert!(!yaml.contains("prepaid.sqlite"), "{yaml}");
    std::fs::create_dir_all(dir.join("etc/profiles")).unwrap();
    std::fs::write(dir.join("etc/sbc.conf"), "profiles=p\nprofiles_path=profiles/\nactive_profile=p\n").unwrap();
    std::fs::write(dir.join("etc/profiles/p.sbcprofile.conf"), "call_control=prepaid\n@prepaid.conf\n").unwrap();
    std::fs::write(dir.join("etc/prepaid.conf"), "prepaid_module=cc_prepaid\nprepaid_uuid=$fU\n").unwrap();
    let m = migrate::translate(&dir.join("sems.conf")).unwrap();
    assert!(m.yaml.contains("  cc_prepaid:\n    db: \"/var/lib/sbc/prepaid.sqlite\""), "{}", m.yaml);
    assert!(
        m.notes.iter().any(|n| n.contains("prepaid.conf:1: prepaid_module") && n.contains("memory")),
        "{:?}",
        m.notes
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
