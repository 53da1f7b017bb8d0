//! Loading profiles: YAML, the SEMS import, errors that name file/line/key, and the store's
//! validated, atomic updates.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use profiles::config::Config;
use profiles::regex_map::RegexMap;
use profiles::store::{ProfileSource, SemsProfileFile};
use profiles::Store;

fn sems_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/sems")
}

#[test]
fn sems_sbc_conf_loads_unchanged() {
    let cfg = Config::load(&sems_dir().join("sbc.conf")).unwrap();
    let snap = &cfg.profiles;
    assert_eq!(snap.profile_names(), ["auth_b2b", "codecfilter", "refuse", "replytranslate", "transparent"]);
    assert_eq!(snap.selection.render(), "$M($si=>src_ipmap),$H(P-SBCProfile),refuse");
    assert_eq!(snap.maps["src_ipmap"].lookup("127.0.0.7").as_deref(), Some("codecfilter"));
    let refuse = &snap.profiles["refuse"];
    assert!(refuse.refuse_with.is_some() && refuse.append_headers.is_some());
    // MD5 as md5sum prints it, of the file's bytes.
    let bytes = std::fs::read(sems_dir().join("refuse.sbcprofile.conf")).unwrap();
    assert_eq!(refuse.md5.as_deref(), Some(profiles::conf::md5_hex(&bytes).as_str()));
    assert_eq!(snap.profiles["replytranslate"].reply_translations.len(), 2);
    // SEMS's auth_b2b sample: B-leg digest credentials from P-App-Param.
    let auth = &snap.profiles["auth_b2b"].auth;
    assert!(auth.enabled && auth.user.is_some() && auth.password.is_some());
    // It names no realm and sends calls where the request says: its challenges are relayed,
    // where SEMS answers them, and the load says so.
    let said = cfg.warnings.iter().filter(|w| w.contains("'auth_b2b': enable_auth") && w.contains("auth_realm"));
    assert_eq!(said.count(), 1, "{:?}", cfg.warnings);
}

fn yaml(text: &str) -> Result<Config, profiles::ConfigError> {
    Config::from_yaml_at(text, "t.yaml", &sems_dir())
}

#[test]
fn yaml_profiles_maps_and_chain() {
    let cfg = yaml(
        "active_profile: [\"$M($si=>src)\", \"$H(P-SBCProfile)\", fallback]\n\
         regex_maps:\n  src: ['^10\\.=>inner']\n  file_map: { file: src_ipmap.conf }\n\
         profiles:\n\
         \x20 inner:\n    RURI: sip:$rU@gw.example\n    header_list: [A, B]\n    header_filter: whitelist\n    sdp_anonymize: true\n\
         \x20 fallback: { sems_file: refuse.sbcprofile.conf }\n\
         \x20 patched:\n    sems_file: codecfilter.sbcprofile.conf\n    sdpfilter_list: [pcma]\n",
    )
    .unwrap();
    let s = &cfg.profiles;
    assert_eq!(s.profile_names(), ["fallback", "inner", "patched"]);
    let inner = &s.profiles["inner"];
    assert!(inner.sdp_anonymize);
    assert!(inner.header_filter.as_ref().unwrap().allows("b"));
    assert!(!inner.header_filter.as_ref().unwrap().allows("c"));
    assert_eq!(
        s.profile_sources["fallback"],
        ProfileSource::SemsFile(SemsProfileFile::beside(sems_dir().join("refuse.sbcprofile.conf"), Default::default()))
    );
    // An inline key overrides the SEMS file's, and the profile then reloads with the config.
    let patched = &s.profiles["patched"];
    assert!(patched.sdp_filter.as_ref().unwrap().allows("PCMA"));
    assert!(!patched.sdp_filter.as_ref().unwrap().allows("g729"));
    assert_eq!(s.profile_sources["patched"], ProfileSource::Inline);
    assert!(s.maps["file_map"].md5.is_some());
}

#[test]
fn no_profiles_means_transparent() {
    let cfg = yaml("").unwrap();
    assert_eq!(cfg.profiles.profile_names(), ["transparent"]);
    assert_eq!(cfg.profiles.selection.render(), "transparent");
}

#[test]
fn errors_name_file_line_and_key() {
    let cases = [
        (
            "active_profile: p\nprofiles:\n  p:\n    RURI: sip:x\n    RUIR: y\n",
            "t.yaml:5: RUIR: unknown profile option",
        ),
        ("active_profile: p\nprofiles:\n  p:\n    RURI: \"sip:$Qx\"\n", "t.yaml:4: RURI: pattern"),
        ("active_profile: nope\nprofiles:\n  p: {}\n", "active_profile: names 'nope'"),
        (
            "active_profile: p\nprofiles:\n  p:\n    From: \"$M($fU=>missing)\"\n",
            "t.yaml:4: From: uses regex map 'missing'",
        ),
        (
            "active_profile: p\nprofiles:\n  p:\n    outbound_interface: nowhere\n",
            "t.yaml:4: outbound_interface: no interface named 'nowhere'",
        ),
        (
            "active_profile: p\nprofiles:\n  p:\n    reply_translations: \"200=>486 x\"\n",
            "t.yaml:4: reply_translations",
        ),
        ("active_profile: p\nprofiles:\n  p:\n    refuse_with: \"x y\"\n", "t.yaml:4: refuse_with"),
        ("active_profile: p\nprofiles:\n  p:\n    next_hop: \"10.0.0.1:99999\"\n", "t.yaml:4: next_hop"),
        (
            "active_profile: p\nprofiles:\n  p:\n    header_list: [a]\n",
            "t.yaml:4: header_list: has no effect without header_filter",
        ),
        ("active_profile: p\nprofiles:\n  p:\n    append_headers: \"no colon here\"\n", "t.yaml:4: append_headers"),
        ("active_profile: p\nregex_maps:\n  m: ['ok=>1', 'bad']\nprofiles:\n  p: {}\n", "t.yaml:3: regex_maps.m[1]"),
        ("active_profile: p\nprofiles:\n  p: { sems_file: missing.conf }\n", "t.yaml:3: profiles.p.sems_file"),
        (
            "active_profile: p\nprofiles:\n  p:\n    next_hop_1st_req: yes\n    next_hop_fixed: yes\n",
            "next_hop_fixed: contradicts",
        ),
        (
            "active_profile: p\nprofiles:\n  p:\n    sdp_anonymize: maybe\n",
            "t.yaml:4: sdp_anonymize: 'maybe' is not yes or no",
        ),
    ];
    for (text, want) in cases {
        let e = yaml(text).err().unwrap_or_else(|| panic!("{text} should fail"));
        assert!(e.to_string().contains(want), "{text}\n  got:  {e}\n  want: {want}");
    }
}

#[test]
fn sems_conf_errors_name_file_and_line() {
    let dir = std::env::temp_dir().join(format!("profiles-sems-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("sbc.conf"), "profiles=p\nactive_profile=p\nsession_expires=90\nunknown_key=1\n").unwrap();
    std::fs::write(dir.join("p.sbcprofile.conf"), "RURI=sip:$rU@x\n").unwrap();
    let e = Config::load(&dir.join("sbc.conf")).unwrap_err();
    assert!(e.to_string().ends_with("sbc.conf:4: unknown_key: unknown sbc.conf option"), "{e}");
    std::fs::write(dir.join("sbc.conf"), "profiles=p,q\nactive_profile=p\n").unwrap();
    let e = Config::load(&dir.join("sbc.conf")).unwrap_err();
    assert!(e.to_string().contains("sbc.conf:1: profiles:") && e.to_string().contains("q.sbcprofile.conf"), "{e}");
    std::fs::write(dir.join("sbc.conf"), "profiles=p\nactive_profile=p,other\n").unwrap();
    let e = Config::load(&dir.join("sbc.conf")).unwrap_err();
    assert!(e.to_string().contains("sbc.conf:2: active_profile: names 'other'"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn store_updates_are_validated_and_atomic() {
    let cfg = Config::load(&sems_dir().join("sbc.conf")).unwrap();
    let store = Store::new(cfg.profiles);
    let before = store.load();
    assert_eq!(before.generation, 1);

    // Unknown names in a static rule are refused; the published snapshot is untouched.
    let e = store.set_active_profile("transparent,nonesuch").unwrap_err();
    assert!(e.to_string().contains("nonesuch"), "{e}");
    assert_eq!(store.load().generation, 1);

    assert_eq!(store.set_active_profile("refuse").unwrap(), 2);
    assert_eq!(store.load().selection.render(), "refuse");
    // The old snapshot is still whole for whoever pinned it.
    assert_eq!(before.selection.render(), "$M($si=>src_ipmap),$H(P-SBCProfile),refuse");

    let map = RegexMap::parse("src_ipmap", "^1=>refuse\n").unwrap();
    assert_eq!(store.set_regex_map(map, None).unwrap(), 3);
    assert_eq!(store.load().maps["src_ipmap"].lookup("1.2.3.4").as_deref(), Some("refuse"));

    // A reload that fails keeps the old profile.
    let failing = |_: &str, _: &ProfileSource| Err(profiles::ConfigError::file("x", "broken"));
    assert!(store.reload_profile("refuse", &failing).is_err());
    assert_eq!(store.load().generation, 3);
    assert_eq!(store.reload_profile("refuse", &profiles::config::sems::reload).unwrap(), 4);
    assert!(store.reload_profile("nonesuch", &profiles::config::sems::reload).is_err());
}

/// A request as profile selection sees it: a method, arriving on an interface.
struct Arriving(&'static [u8]);

impl profiles::pattern::RequestView for Arriving {
    fn method(&self) -> &[u8] {
        self.0
    }
    fn request_uri(&self) -> &[u8] {
        b"sip:bob@example.com"
    }
    fn caller(&self) -> &[u8] {
        b"<sip:alice@example.com>;tag=1"
    }
    fn callee(&self) -> &[u8] {
        b"<sip:bob@example.com>"
    }
    fn call_id(&self) -> &[u8] {
        b"c@x"
    }
    fn for_each_header(&self, _name: &str, _each: &mut dyn FnMut(&[u8])) {}
}

#[test]
fn the_reg_caching_example_loads_and_splits_by_method_and_interface() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/regcache");
    let cfg = Config::load(&dir.join("sbc.yaml")).unwrap();
    let snap = &cfg.profiles;
    let reg = &snap.profiles["reg"];
    assert!(reg.reg_caching.enabled && reg.dlg_nat_handling);
    assert_eq!((reg.reg_caching.min_reg_expires, reg.reg_caching.max_ua_expires), (3600, 60));
    assert!(snap.profiles["inex"].reg_caching.enabled);
    let exin = &snap.profiles["exin"];
    assert!(exin.auth.enabled && exin.session_timer.is_some() && exin.aleg_session_timer.is_none());
    assert_eq!(exin.session_timer.map(|t| t.session_expires), Some(1800));
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    let pick = |method: &'static [u8], iface: &'static str| {
        let rng = std::cell::Cell::new(1);
        let req = Arriving(method);
        let env = profiles::pattern::Env {
            req: &req,
            source: "192.0.2.1:5060".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            interface: profiles::pattern::InterfaceFacts { index: 0, name: iface, public_ip: "" },
            next_hop: None,
            peer: None,
            maps: &snap.maps,
            cc_vars: &profiles::pattern::NoCcVars,
            reg_cache: &profiles::pattern::NoRegCache,
            rng: &rng,
        };
        snap.select(&env).map(|(p, _)| p.name.clone()).unwrap()
    };
    assert_eq!(pick(b"REGISTER", "ext"), "reg");
    assert_eq!(pick(b"INVITE", "int"), "inex");
    assert_eq!(pick(b"INVITE", "ext"), "exin");
}

/// sbc.conf's session-timer settings are defaults of the profiles it loads (a profile's own
/// value wins), and a profile read again keeps them.
#[test]
fn sbc_conf_session_timer_settings_are_profile_defaults() {
    let dir = std::env::temp_dir().join(format!("profiles-sst-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sbc_conf = "profiles=plain,own\nactive_profile=plain\nenable_session_timer=yes\nsession_expires=1800\nsession_refresh_method=INVITE\n";
    std::fs::write(dir.join("sbc.conf"), sbc_conf).unwrap();
    std::fs::write(dir.join("plain.sbcprofile.conf"), "RURI=sip:$rU@x\n").unwrap();
    std::fs::write(dir.join("own.sbcprofile.conf"), "session_expires=600\n").unwrap();
    let cfg = Config::load(&dir.join("sbc.conf")).unwrap();
    let timer = |name: &str| cfg.profiles.profiles[name].session_timer.expect("session timer on");
    let plain = timer("plain");
    assert_eq!((plain.session_expires, plain.maximum), (1800, 1800), "the default's maximum raised, as SEMS");
    assert_eq!(plain.refresh_method, profiles::profile::RefreshMethod::Invite);
    assert_eq!(timer("own").session_expires, 600, "the profile's own value wins");
    assert!(cfg.warnings.iter().any(|w| w.contains("plain") && w.contains("maximum_timer 900")), "{:?}", cfg.warnings);
    // Read again on its own (the API's reload), it keeps sbc.conf's defaults.
    let source = &cfg.profiles.profile_sources["plain"];
    let again = profiles::config::sems::reload("plain", source).unwrap();
    assert_eq!(again.session_timer.map(|t| t.session_expires), Some(1800));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `profile_defaults` stand before every profile's options: a profile's own value wins, an
/// empty one leaves the default (as SEMS falls back on sems.conf's value), and a bad key is
/// named with its line even when no profile uses it.
#[test]
fn profile_defaults_apply_to_every_profile_that_does_not_set_them() {
    let cfg = yaml(
        "profile_defaults:\n  outbound_proxy: sip:proxy.example.com\n  next_hop_1st_req: yes\nactive_profile: a\nprofiles:\n  a: { RURI: \"sip:$rU@x\" }\n  b: { outbound_proxy: \"sip:other.example.com\" }\n  c: { outbound_proxy: \"\" }\n",
    )
    .unwrap();
    let proxy = |name: &str| cfg.profiles.profiles[name].outbound_proxy.as_ref().map(|p| p.source().to_string());
    assert_eq!(proxy("a").as_deref(), Some("sip:proxy.example.com"));
    assert_eq!(proxy("b").as_deref(), Some("sip:other.example.com"), "the profile's own value wins");
    assert_eq!(proxy("c").as_deref(), Some("sip:proxy.example.com"), "an empty value leaves the default");
    assert!(cfg.profiles.profiles["b"].next_hop_1st_req);
    assert_eq!(cfg.profiles.profile_defaults.len(), 2, "kept for profiles loaded later");

    let e = yaml("profile_defaults:\n  outbound_proxy: sip:p\n  no_such_option: 1\n").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(3), "no_such_option"), "{e}");

    // Options read by their first value, options that add up, and a default written with a
    // variable: the profile's own value still wins.
    let cfg = yaml(
        "profile_defaults:\n  header_filter: blacklist\n  header_list: [X-A]\n  call_control: [timer]\n  timer_module: cc_call_timer\n  timer_timer: 60\n  outbound_proxy: \"sip:$H(X-Proxy)\"\nactive_profile: a\nprofiles:\n  a:\n    header_filter: whitelist\n    header_list: [X-B]\n    call_control: [pcalls]\n    pcalls_module: cc_pcalls\n    pcalls_uuid: $fU\n    pcalls_max_calls: 2\n    outbound_proxy: sip:fixed.example\n",
    )
    .unwrap();
    let a = &cfg.profiles.profiles["a"];
    let filter = a.header_filter.as_ref().expect("a filter");
    assert!(filter.allows("X-B") && !filter.allows("X-C"), "the profile's whitelist: {filter:?}");
    let cc: Vec<&str> = a.call_control.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(cc, ["pcalls"], "the profile's list replaces the default's, its values with it");
    assert_eq!(a.outbound_proxy.as_ref().map(|p| p.source()), Some("sip:fixed.example"));
    assert!(a.per_call.iter().all(|(k, _)| k != "outbound_proxy"), "the default's pattern is gone");
}

/// The SEMS CDR line's keys are checked at load, each error naming its key.
#[test]
fn cdr_syslog_format_keys_are_checked() {
    let key_of = |cdr: &str| yaml(&format!("call_control:\n  cc_syslog_cdr: {{ {cdr} }}\n")).unwrap_err().key;
    assert_eq!(key_of("syslog_format: csv"), "call_control.cc_syslog_cdr.syslog_format");
    assert_eq!(key_of("cdr_format: [$ltag]"), "call_control.cc_syslog_cdr.cdr_format", "needs the sems format");
    assert_eq!(key_of("quoting: false"), "call_control.cc_syslog_cdr.quoting");
    assert_eq!(key_of("syslog_format: sems, loglevel: 5"), "call_control.cc_syslog_cdr.loglevel");
    assert_eq!(key_of("syslog_format: sems, cdr_format: [$ltag, \"\"]"), "call_control.cc_syslog_cdr.cdr_format");
    let cfg = yaml("call_control:\n  cc_syslog_cdr: { syslog_format: sems, loglevel: 0 }\n").unwrap();
    let cc = &cfg.call_control;
    assert_eq!(cc.cdr_sems_line, Some(profiles::config::SemsCdrLine { fields: Vec::new(), quoting: true }));
    assert_eq!(cc.cdr_syslog_severity, 3, "SEMS's 0 is error");
}

/// SEMS takes `@file` includes from its module folder (where sbc.conf is), also for a
/// profile kept in another `profiles_path`, and again when the profile is reloaded.
#[test]
fn sems_includes_come_from_the_module_folder() {
    let dir = std::env::temp_dir().join(format!("sems-includes-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("profiles")).unwrap();
    std::fs::write(dir.join("common.conf"), "header_filter=blacklist\nheader_list=P-App-Name\n").unwrap();
    std::fs::write(dir.join("profiles/edge.sbcprofile.conf"), "@common.conf\nRURI=sip:$rU@core\n").unwrap();
    std::fs::write(dir.join("sbc.conf"), "profiles=edge\nprofiles_path=profiles/\nactive_profile=edge\n").unwrap();
    let cfg = Config::load(&dir.join("sbc.conf")).unwrap();
    let snap = &cfg.profiles;
    assert!(snap.profiles["edge"].header_filter.is_some(), "the include was read");
    let ProfileSource::SemsFile(source) = &snap.profile_sources["edge"] else { panic!("a SEMS file") };
    assert_eq!(source.includes, dir);
    assert!(profiles::config::sems::reload("edge", &snap.profile_sources["edge"]).unwrap().header_filter.is_some());
    std::fs::remove_dir_all(&dir).unwrap();
}
