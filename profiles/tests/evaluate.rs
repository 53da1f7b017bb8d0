//! A profile evaluated against one request: what the B2BUA receives.

#![allow(clippy::unwrap_used)]

use std::cell::Cell;

use profiles::evaluate::{CallPlan, EvalError};
use profiles::pattern::{Env, InterfaceFacts, NoCcVars, NoRegCache, RequestView};
use profiles::profile::{NextHop, Profile, RawOption};
use profiles::regex_map::RegexMaps;
use profiles::LocalReply;

struct Req(&'static str);

impl RequestView for Req {
    fn method(&self) -> &[u8] {
        b"INVITE"
    }
    fn request_uri(&self) -> &[u8] {
        self.0.as_bytes()
    }
    fn caller(&self) -> &[u8] {
        b"\"A\" <sip:alice@a.example>;tag=1"
    }
    fn callee(&self) -> &[u8] {
        b"<sip:bob@b.example>"
    }
    fn call_id(&self) -> &[u8] {
        b"cid@a"
    }
    fn for_each_header(&self, _name: &str, _each: &mut dyn FnMut(&[u8])) {}
}

fn profile(opts: &[(&str, &str)]) -> Profile {
    try_profile(opts).unwrap()
}

fn try_profile(opts: &[(&str, &str)]) -> Result<Profile, profiles::ConfigError> {
    let raw = opts
        .iter()
        .enumerate()
        .map(|(i, (k, v))| RawOption {
            key: k.to_string(),
            value: v.to_string(),
            file: "p".into(),
            line: Some(i as u64 + 1),
        })
        .collect();
    Profile::build("p", "p", None, raw)
}

fn with_env<T>(ruri: &'static str, p: &Profile, f: impl FnOnce(&Env<'_>) -> T) -> T {
    with_env_seeded(ruri, p, 1, f)
}

/// The environment with the random generator at `seed` (what differs from call to call).
fn with_env_seeded<T>(ruri: &'static str, p: &Profile, seed: u64, f: impl FnOnce(&Env<'_>) -> T) -> T {
    let maps = RegexMaps::new();
    let rng = Cell::new(seed);
    let req = Req(ruri);
    let env = Env {
        req: &req,
        source: "192.0.2.1:5060".parse().unwrap(),
        local: "192.0.2.2:5060".parse().unwrap(),
        interface: InterfaceFacts::default(),
        next_hop: profiles::Snapshot::literal_next_hop(p),
        peer: None,
        maps: &maps,
        cc_vars: &NoCcVars,
        reg_cache: &NoRegCache,
        rng: &rng,
    };
    f(&env)
}

fn plan(ruri: &'static str, opts: &[(&str, &str)]) -> Result<CallPlan, EvalError> {
    let p = profile(opts);
    with_env(ruri, &p, |env| p.evaluate(env))
}

#[test]
fn ruri_host_keeps_scheme_user_and_params() {
    let p = plan("sips:bob@old.example:5061;transport=tcp", &[("RURI_host", "new.example")]).unwrap();
    assert_eq!(p.ruri.as_deref(), Some("sips:bob@new.example;transport=tcp"));
    let p = plan("sip:bob@old", &[("RURI", "sip:$rU-x@mid"), ("RURI_host", "gw:5080")]).unwrap();
    assert_eq!(p.ruri.as_deref(), Some("sip:bob-x@gw:5080"));
}

#[test]
fn empty_ruri_expansion_keeps_the_original() {
    // SEMS sends an empty R-URI for OoD requests here; we keep the incoming one.
    let p = plan("sip:bob@old", &[("RURI", "$H(X-Missing)")]).unwrap();
    assert_eq!(p.ruri, None);
}

#[test]
fn next_hops_with_priority_and_weight_are_drawn_per_call() {
    let p =
        profile(&[("next_hop", "gw-a:5060;priority=1;weight=3, gw-b:5060/tcp;weight=1;priority=1, backup:5070, last")]);
    let mut a_first = 0;
    for seed in 1..=2000u64 {
        let plan = with_env_seeded("sip:bob@old", &p, seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), |env| p.evaluate(env))
            .unwrap();
        let hosts: Vec<&str> = plan.next_hops.iter().map(|h| h.host.as_str()).collect();
        assert_eq!(&hosts[2..], ["backup", "last"], "entries without a priority follow the one before");
        a_first += usize::from(hosts[0] == "gw-a");
    }
    assert!((1350..1650).contains(&a_first), "gw-a leads {a_first} of 2000 calls at weight 3:1");
    let hop = NextHop::parse("gw-b:5060/tcp;weight=1;priority=1").unwrap();
    assert_eq!(
        (hop.port, hop.transport.as_deref(), hop.priority, hop.weight),
        (Some(5060), Some("tcp"), Some(1), Some(1))
    );
    for bad in ["gw;weight=x", "gw;cost=1", "gw;priority=70000"] {
        let e = try_profile(&[("next_hop", bad)]).expect_err(bad).to_string();
        assert!(e.contains("next_hop") && e.contains(bad), "{bad}: {e}");
    }
    // $di/$dp still read the first entry as written.
    let p = plan("sip:bob@old", &[("next_hop", "10.0.0.9:5090;weight=2"), ("To", "<sip:$di-$dp@x>")]).unwrap();
    assert_eq!(p.to.as_deref(), Some("<sip:10.0.0.9-5090@x>"));
}

#[test]
fn next_hops_failover_list_and_patch() {
    let p = plan(
        "sip:bob@old",
        &[("next_hop", "10.0.0.1:5080/tcp, [2001:db8::1], gw.example"), ("patch_ruri_next_hop", "yes")],
    )
    .unwrap();
    assert_eq!(
        p.next_hops,
        vec![
            NextHop {
                host: "10.0.0.1".into(),
                port: Some(5080),
                transport: Some("tcp".into()),
                priority: None,
                weight: None
            },
            NextHop { host: "[2001:db8::1]".into(), port: None, transport: None, priority: None, weight: None },
            NextHop { host: "gw.example".into(), port: None, transport: None, priority: None, weight: None },
        ]
    );
    assert_eq!(p.ruri.as_deref(), Some("sip:bob@10.0.0.1:5080"));
    // $di/$dp read the literal next hop.
    let p = plan("sip:bob@old", &[("next_hop", "10.0.0.9:5090"), ("To", "<sip:$di-$dp@x>")]).unwrap();
    assert_eq!(p.to.as_deref(), Some("<sip:10.0.0.9-5090@x>"));
    let e = plan("sip:bob@old", &[("next_hop", "$rU:port")]).unwrap_err();
    assert_eq!(e.option, "next_hop");
}

#[test]
fn from_and_to_lose_any_tag_and_must_be_name_addrs() {
    let p = plan("sip:b@x", &[("From", "$f.;tag=evil;x=1")]).unwrap();
    assert_eq!(p.from.as_deref(), Some("\"A\" <sip:alice@a.example>;x=1"));
    let e = plan("sip:b@x", &[("To", "not a uri")]).unwrap_err();
    assert_eq!(e.option, "To");
}

#[test]
fn contact_parts() {
    let p = plan(
        "sip:b@x",
        &[
            ("bleg_contact_user", "$fU"),
            ("bleg_contact_displayname", "SBC"),
            ("bleg_contact_uri_params", "a=1;b"),
            ("bleg_contact_params", "+sip.instance=x"),
        ],
    )
    .unwrap();
    assert_eq!(
        p.bleg_contact.render("192.0.2.2:5060", ";transport=tcp"),
        "\"SBC\" <sip:alice@192.0.2.2:5060;a=1;b;transport=tcp>;+sip.instance=x"
    );
    let p = plan("sip:b@x", &[("aleg_contact_host", "public.example"), ("aleg_contact_port", "5070")]).unwrap();
    assert_eq!(p.aleg_contact.render("10.0.0.1:5060", ""), "<sip:public.example:5070>");
    // As in SEMS, a port alone does not replace the socket's address.
    let p = plan("sip:b@x", &[("aleg_contact_port", "5070")]).unwrap();
    assert_eq!(p.aleg_contact.render("10.0.0.1:5060", ""), "<sip:10.0.0.1:5060>");
    assert!(plan("sip:b@x", &[("aleg_contact_port", "$fU")]).is_err());
}

#[test]
fn append_headers_drop_empty_and_broken_lines() {
    let p = plan("sip:b@x", &[("append_headers", "X-A: $rU\\r\\nX-Empty: $H(none)\\r\\nX-B: 2")]).unwrap();
    assert_eq!(p.append_headers, vec![("X-A".to_string(), "b".to_string()), ("X-B".to_string(), "2".to_string())]);
}

#[test]
fn refusal_with_expanded_headers() {
    let p = profile(&[("refuse_with", "$_s(xyz)04 Not Found Here"), ("append_headers", "X-R: $rh")]);
    let r = with_env("sip:b@host.example", &p, |env| p.refusal(env)).unwrap().unwrap();
    assert_eq!(r, LocalReply::owned(304, "Not Found Here".into()).with("X-R", "host.example"));
    let p = profile(&[("refuse_with", "$rU Busy")]);
    let e = with_env("sip:b@h", &p, |env| p.refusal(env)).unwrap().unwrap_err();
    assert_eq!(e.option, "refuse_with");
    let p = profile(&[("RURI", "sip:x@y")]);
    assert!(with_env("sip:b@h", &p, |env| p.refusal(env)).is_none());
}

#[test]
fn unknown_and_inactive_options() {
    let raw =
        |k: &str, v: &str| vec![RawOption { key: k.into(), value: v.into(), file: "f.conf".into(), line: Some(7) }];
    let e = Profile::build("p", "f.conf", None, raw("RUIR", "x")).unwrap_err();
    assert_eq!(e.to_string(), "f.conf:7: RUIR: unknown profile option (profile 'p')");
    let p = Profile::build("p", "f.conf", None, raw("enable_transcoder", "always")).unwrap();
    assert_eq!(p.not_applied.len(), 1);
    let p = Profile::build("p", "f.conf", None, raw("enable_rtprelay", "yes")).unwrap();
    assert!(p.not_applied.is_empty() && p.rtprelay.enabled);
    // SEMS expands it per call: kept as a pattern, checked with each call's value.
    let p = Profile::build("p", "f.conf", None, raw("rtprelay_interface", "$H(X)")).unwrap();
    assert_eq!(p.per_call.len(), 1);
    let e = Profile::build("p", "f.conf", None, raw("rtprelay_interface", "$H(X")).unwrap_err();
    assert!(e.to_string().starts_with("f.conf:7: rtprelay_interface: pattern"), "{e}");
    let p = Profile::build("p", "f.conf", None, raw("enable_transcoder", "no")).unwrap();
    assert!(p.not_applied.is_empty(), "an option set to its default is not worth a warning");
    // Call-control parameters belong to the instances named in call_control.
    let mut opts = raw("call_control", "pcalls");
    opts.push(RawOption { key: "pcalls_max_calls".into(), value: "3".into(), file: "f.conf".into(), line: Some(8) });
    assert!(Profile::build("p", "f.conf", None, opts).is_ok());
    assert!(Profile::build("p", "f.conf", None, raw("pcalls_max_calls", "3")).is_err());
}

#[test]
fn request_text_cannot_add_values_to_uris() {
    // `$fU` is "alice" here; a header-derived value with <, >, " or , is refused (500).
    let e = plan("sip:b@x", &[("outbound_proxy", "sip:p.example>,<sip:evil")]).unwrap_err();
    assert_eq!(e.option, "outbound_proxy");
    let e = plan("sip:b@x", &[("bleg_contact_user", "a>,<sip:x")]).unwrap_err();
    assert_eq!(e.option, "contact");
    let e = plan("sip:b@x", &[("RURI", "sip:a@b>")]).unwrap_err();
    assert_eq!(e.option, "RURI");
    let p = plan("sip:b@x", &[("bleg_contact_displayname", "a\\\\\\\"b")]).unwrap();
    assert_eq!(p.bleg_contact.render("h:1", ""), "\"a\\\\\\\"b\" <sip:h:1>");
}

/// A profile SEMS loads loads here too: session_expires above the default maximum_timer (900)
/// raises the maximum, and a Min-SE under RFC 4028's 90 s is raised; both are said at load.
#[test]
fn session_timer_values_out_of_order_load_as_sems_takes_them() {
    let p = try_profile(&[("enable_session_timer", "yes"), ("session_expires", "1800")]).expect("loads");
    let t = p.session_timer.expect("on");
    assert_eq!((t.minimum, t.session_expires, t.maximum), (90, 1800, 1800));
    assert!(p.not_applied.iter().any(|w| w.contains("maximum_timer 900 (the default)")), "{:?}", p.not_applied);
    let p = try_profile(&[("enable_session_timer", "yes"), ("minimum_timer", "30"), ("session_expires", "60")])
        .expect("loads");
    let t = p.session_timer.expect("on");
    assert_eq!((t.minimum, t.session_expires, t.maximum), (90, 90, 900));
    let quiet = try_profile(&[("enable_session_timer", "yes"), ("session_expires", "600")]).expect("loads");
    assert!(quiet.not_applied.is_empty(), "{:?}", quiet.not_applied);
}

/// cc_pcalls max_calls=0: SEMS refuses every call, sbcd allows every call; said at load.
#[test]
fn pcalls_max_calls_zero_is_said_at_load() {
    let p = try_profile(&[
        ("call_control", "pcalls"),
        ("pcalls_module", "cc_pcalls"),
        ("pcalls_uuid", "$fU"),
        ("pcalls_max_calls", "0"),
    ])
    .expect("loads");
    assert!(
        p.not_applied.iter().any(|w| w.contains("pcalls_max_calls=0") && w.contains("no limit")),
        "{:?}",
        p.not_applied
    );
    let p = try_profile(&[("call_control", "pcalls"), ("pcalls_module", "cc_pcalls"), ("pcalls_max_calls", "5")])
        .expect("loads");
    assert!(p.not_applied.is_empty(), "{:?}", p.not_applied);
}

/// Credentials go only to configured hops or listed realms (docs/manual/access.md); a SEMS
/// profile relying on SEMS answering any challenger is told so at load.
#[test]
fn enable_auth_without_a_realm_or_fixed_hop_is_said_at_load() {
    let auth = [("enable_auth", "yes"), ("auth_user", "$P(u)"), ("auth_pwd", "$P(p)")];
    let p = try_profile(&[&auth[..], &[("RURI", "sip:$rU@$P(d)")]].concat()).expect("loads");
    assert!(p.credentials_go_nowhere().is_some_and(|w| w.contains("auth_realm")));
    for quiet in [
        ("auth_realm", "example.net"),
        ("auth_realm", "$H(X-Realm)"),
        ("next_hop", "192.0.2.1:5060"),
        ("outbound_proxy", "sip:p.example"),
    ] {
        let p = try_profile(&[&auth[..], &[quiet]].concat()).expect("loads");
        assert_eq!(p.credentials_go_nowhere(), None, "{quiet:?}");
    }
    let p = try_profile(&[&auth[..], &[("next_hop", "$H(X-Hop)")]].concat()).expect("loads");
    assert!(p.credentials_go_nowhere().is_some(), "a hop the request chooses");
    // A global next hop is a configured one: no warning then.
    let yaml = |routing: &str| {
        let text = format!(
            "{routing}active_profile: a\nprofiles:\n  a:\n    enable_auth: yes\n    auth_user: u\n    auth_pwd: p\n"
        );
        profiles::config::Config::from_yaml(&text, "t.yaml").expect("loads").warnings
    };
    assert_eq!(yaml("").iter().filter(|w| w.contains("enable_auth")).count(), 1);
    assert!(yaml("routing:\n  next_hop: udp:192.0.2.1:5060\n").iter().all(|w| !w.contains("enable_auth")));
}

/// A `msg_logger_path` expansion keeps the template's folders: request text that would add a
/// level (`/` in an R-URI parameter here) or climb out gets no file; the call goes on.
#[test]
fn pcap_paths_stay_in_the_templates_folder() {
    let pcap = |ruri: &'static str, template: &str| plan(ruri, &[("msg_logger_path", template)]).unwrap().pcap;
    assert_eq!(pcap("sip:bob@x", "/var/log/sbc/$rU.pcap").as_deref(), Some("/var/log/sbc/bob.pcap"));
    assert_eq!(pcap("sip:bob@x;d=one", "/var/log/sbc/$rP(d).pcap").as_deref(), Some("/var/log/sbc/one.pcap"));
    assert_eq!(pcap("sip:bob@x;d=sub/dir", "/var/log/sbc/$rP(d).pcap"), None, "a folder level from the request");
    assert_eq!(pcap("sip:..@x", "/var/log/sbc/$rU/c.pcap"), None);
    assert_eq!(pcap("sip:a@x", "/var/log/sbc/$rU/c.pcap").as_deref(), Some("/var/log/sbc/a/c.pcap"));
}

/// `log_rtp` writes only the RTP the relay carries into the file `msg_logger_path` names:
/// without either, the load says it writes nothing.
#[test]
fn log_rtp_without_a_file_or_the_relay_is_said_at_load() {
    let said = |opts: &[(&str, &str)]| try_profile(opts).expect("loads").not_applied;
    assert!(said(&[("log_rtp", "yes")])[0].contains("without msg_logger_path"));
    let file = ("msg_logger_path", "/var/log/sbc/$ci.pcap");
    assert!(said(&[("log_rtp", "yes"), file])[0].contains("without enable_rtprelay"));
    assert!(said(&[("log_rtp", "yes"), file, ("enable_rtprelay", "yes")]).is_empty());
    assert!(said(&[("log_rtp", "yes"), file, ("enable_rtprelay", "$H(X-Relay)")]).is_empty());
}
