//! The chain runner and the built-in modules, without a network.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use callcontrol::modules::{builtin, ModuleSettings};
use callcontrol::{CallEnd, CallFacts, CcInstance, EndedBy, LocalReply, Times, Verdict};

fn facts(n: u64) -> CallFacts {
    CallFacts {
        call: n,
        profile: "p".into(),
        source: "127.0.0.1:5060".parse().unwrap(),
        from: "<sip:a@x>".into(),
        to: "<sip:b@x>".into(),
        ruri: "sip:b@x".into(),
        call_id: format!("c{n}"),
    }
}

fn inst(name: &str, module: &str, params: &[(&str, &str)]) -> CcInstance {
    CcInstance {
        name: name.into(),
        module: module.into(),
        params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
    }
}

fn times() -> Times {
    Times { start: SystemTime::UNIX_EPOCH, connect: None, end: None }
}

fn end() -> CallEnd {
    CallEnd {
        by: EndedBy::Caller,
        code: 200,
        phrase: "OK".into(),
        reason: "bye".into(),
        answered: true,
        destination_ip: None,
    }
}

#[test]
fn pcalls_limits_per_key_and_releases_on_end() {
    let r = builtin(&ModuleSettings::default()).unwrap();
    let chain = |user: &str| vec![inst("limit", "cc_pcalls", &[("uuid", user), ("max_calls", "2")])];
    let started = AtomicUsize::new(0);
    for n in 0..2 {
        let out = r.run_start(&chain("alice"), &facts(n), &times(), &started).unwrap();
        assert_eq!(out.verdict, Verdict::Continue);
    }
    let third = r.run_start(&chain("alice"), &facts(3), &times(), &started).unwrap();
    assert_eq!(third.verdict, Verdict::Refuse(LocalReply::new(402, "Too Many Simultaneous Calls")));
    assert_eq!(started.load(Ordering::SeqCst), 0);
    assert_eq!(r.run_start(&chain("bob"), &facts(4), &times(), &started).unwrap().verdict, Verdict::Continue);
    r.run_end(&chain("alice"), &facts(0), &times(), &end());
    assert_eq!(r.run_start(&chain("alice"), &facts(5), &times(), &started).unwrap().verdict, Verdict::Continue);
}

#[test]
fn pcalls_zero_means_no_limit_and_uuid_is_required() {
    let r = builtin(&ModuleSettings::default()).unwrap();
    let started = AtomicUsize::new(0);
    let chain = vec![inst("limit", "cc_pcalls", &[("uuid", "x"), ("max_calls", "0")])];
    for n in 0..5 {
        assert_eq!(r.run_start(&chain, &facts(n), &times(), &started).unwrap().verdict, Verdict::Continue);
    }
    let chain = vec![inst("limit", "cc_pcalls", &[("uuid", " ")])];
    assert!(r.run_start(&chain, &facts(9), &times(), &started).is_err());
}

#[test]
fn cps_refuses_beyond_the_rate_with_503_and_needs_its_values() {
    let r = builtin(&ModuleSettings::default()).unwrap();
    let started = AtomicUsize::new(0);
    let chain = vec![inst("rate", "cc_cps", &[("uuid", "trunk"), ("max_cps", "2")])];
    let verdicts: Vec<_> =
        (0..3).map(|n| r.run_start(&chain, &facts(n), &times(), &started).unwrap().verdict).collect();
    assert_eq!(verdicts[..2], [Verdict::Continue, Verdict::Continue]);
    let Verdict::Refuse(reply) = &verdicts[2] else {
        panic!("the third call in a second: {:?}", verdicts[2])
    };
    assert_eq!(reply.code, 503);
    assert!(reply.headers.iter().any(|(n, v)| n == "Retry-After" && v == "1"), "{reply:?}");
    let bad = vec![inst("rate", "cc_cps", &[("uuid", "trunk"), ("max_cps", "many")])];
    assert!(r.run_start(&bad, &facts(9), &times(), &started).is_err());
    let load = |yaml: &str| profiles::config::Config::from_yaml(yaml, "t.yaml").unwrap().profiles;
    let e = r
        .check(&load(
            "active_profile: p\nprofiles:\n  p:\n    call_control: rate\n    rate_module: cc_cps\n    rate_uuid: $si\n",
        ))
        .unwrap_err();
    assert!(e.to_string().contains("module cc_cps needs rate_max_cps"), "{e}");
}

#[test]
fn call_timer_values() {
    let r = builtin(&ModuleSettings { call_timer_default_s: Some(60), ..ModuleSettings::default() }).unwrap();
    let started = AtomicUsize::new(0);
    let run = |v: &str| r.run_start(&[inst("t", "cc_call_timer", &[("timer", v)])], &facts(1), &times(), &started);
    assert_eq!(run("5").unwrap().effects.call_timer, Some(Duration::from_secs(5)));
    assert_eq!(run("1.5").unwrap().effects.call_timer, Some(Duration::from_millis(1500)));
    assert_eq!(run("").unwrap().effects.call_timer, Some(Duration::from_secs(60)), "default");
    assert!(matches!(run("0").unwrap().verdict, Verdict::Refuse(LocalReply { code: 503, .. })));
    assert!(run("-3").is_err());
    let r = builtin(&ModuleSettings::default()).unwrap();
    assert!(r.run_start(&[inst("t", "cc_call_timer", &[])], &facts(1), &times(), &started).is_err());
}

#[test]
fn a_refusal_ends_the_modules_already_started() {
    let r = builtin(&ModuleSettings::default()).unwrap();
    let started = AtomicUsize::new(0);
    // The limit counts the call, then the timer refuses it: the count must be released.
    let chain = vec![inst("limit", "cc_pcalls", &[("uuid", "carol")]), inst("t", "cc_call_timer", &[("timer", "0")])];
    let out = r.run_start(&chain, &facts(1), &times(), &started).unwrap();
    assert!(matches!(out.verdict, Verdict::Refuse(LocalReply { code: 503, .. })));
    let again = vec![inst("limit", "cc_pcalls", &[("uuid", "carol")])];
    assert_eq!(r.run_start(&again, &facts(2), &times(), &started).unwrap().verdict, Verdict::Continue);
    assert_eq!(started.load(Ordering::SeqCst), 1);
}

#[test]
fn the_shortest_timer_wins_and_unknown_modules_fail() {
    let r = builtin(&ModuleSettings::default()).unwrap();
    let started = AtomicUsize::new(0);
    let chain = vec![inst("a", "cc_call_timer", &[("timer", "30")]), inst("b", "cc_call_timer", &[("timer", "10")])];
    assert_eq!(
        r.run_start(&chain, &facts(1), &times(), &started).unwrap().effects.call_timer,
        Some(Duration::from_secs(10))
    );
    assert!(r.run_start(&[inst("x", "cc_nonesuch", &[])], &facts(1), &times(), &started).is_err());
}

#[test]
fn load_check_names_module_and_mandatory_values() {
    let r = builtin(&ModuleSettings::default()).unwrap();
    let load = |yaml: &str| profiles::config::Config::from_yaml(yaml, "t.yaml").unwrap().profiles;
    let ok = load("active_profile: p\nprofiles:\n  p:\n    call_control: limit\n    limit_module: cc_pcalls\n    limit_uuid: $fU\n");
    assert!(r.check(&ok).is_ok());
    let e = r
        .check(&load("active_profile: p\nprofiles:\n  p:\n    call_control: limit\n    limit_module: cc_pcalls\n"))
        .unwrap_err();
    assert!(e.to_string().contains("t.yaml:5: limit_module: module cc_pcalls needs limit_uuid"), "{e}");
    let e =
        r.check(&load("active_profile: p\nprofiles:\n  p:\n    call_control: x\n    x_module: cc_nope\n")).unwrap_err();
    assert!(e.to_string().contains("no call-control module 'cc_nope'"), "{e}");
}

#[test]
fn ctl_applies_only_what_the_profile_allows() {
    let r = builtin(&ModuleSettings::default()).unwrap();
    let started = AtomicUsize::new(0);
    let spec = "ctl;RURI=sip:x@gw.example;To=<sip:t@x>;next_hop=10.9.9.9";
    let out = r
        .run_start(
            &[inst("c", "cc_ctl", &[("spec", spec), ("allow", "RURI, next_hop")])],
            &facts(1),
            &times(),
            &started,
        )
        .unwrap();
    assert_eq!(out.effects.overrides.get("RURI").map(String::as_str), Some("sip:x@gw.example"));
    assert_eq!(out.effects.overrides.get("next_hop").map(String::as_str), Some("10.9.9.9"));
    assert!(!out.effects.overrides.contains_key("To"), "not allowed");
    let none =
        r.run_start(&[inst("c", "cc_ctl", &[("spec", spec), ("allow", "")])], &facts(1), &times(), &started).unwrap();
    assert!(none.effects.overrides.is_empty(), "nothing allowed by default");
    let all =
        r.run_start(&[inst("c", "cc_ctl", &[("spec", spec), ("allow", "*")])], &facts(1), &times(), &started).unwrap();
    assert_eq!(all.effects.overrides.len(), 3);
}

/// A module of the operator's own: `route` decides for out-of-dialog requests, `on_event`
/// follows the call.
#[derive(Debug, Default)]
struct Screening(std::sync::Mutex<Vec<String>>);

impl callcontrol::CallControl for Screening {
    fn module(&self) -> &'static str {
        "screening"
    }
    fn route(
        &self,
        hook: &callcontrol::Hook<'_>,
        effects: &mut callcontrol::Effects,
    ) -> Result<Verdict, callcontrol::CcError> {
        if hook.call.from.contains("spammer") {
            return Ok(Verdict::Refuse(LocalReply::new(403, "Forbidden")));
        }
        effects.vars.insert("screening::ok".into(), "yes".into());
        Ok(Verdict::Continue)
    }
    fn on_event(&self, _hook: &callcontrol::Hook<'_>, event: &callcontrol::LegEvent) {
        self.0.lock().unwrap().push(format!("{event:?}"));
    }
}

#[test]
fn route_and_events_reach_modules() {
    let mut r = callcontrol::Registry::new();
    let screening = std::sync::Arc::new(Screening::default());
    r.add(screening.clone());
    let chain = [inst("s", "screening", &[])];
    let mut f = facts(1);
    let ok = r.run_route(&chain, &f).unwrap();
    assert_eq!(
        (ok.verdict, ok.effects.vars.get("screening::ok").map(String::as_str)),
        (Verdict::Continue, Some("yes"))
    );
    f.from = "<sip:spammer@x>".into();
    assert!(matches!(r.run_route(&chain, &f).unwrap().verdict, Verdict::Refuse(LocalReply { code: 403, .. })));
    // Built-in modules have no route logic: they let requests through.
    let builtins = builtin(&ModuleSettings::default()).unwrap();
    let pcalls = [inst("l", "cc_pcalls", &[("uuid", "x")])];
    assert_eq!(builtins.run_route(&pcalls, &f).unwrap().verdict, Verdict::Continue);
    r.run_event(
        &chain,
        &f,
        &callcontrol::LegEvent::Request { from: callcontrol::Party::Caller, method: "INFO".into() },
    );
    assert_eq!(screening.0.lock().unwrap().len(), 1);
}

#[test]
fn hooks_in_which_no_module_may_wait_run_inline_the_others_on_the_blocking_pool() {
    use callcontrol::Phase;
    let dir = std::env::temp_dir().join(format!("cc-may-block-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = ModuleSettings {
        cdr: callcontrol::modules::CdrSettings { csv_file: Some(dir.join("cdr.csv")), ..Default::default() },
        ..ModuleSettings::default()
    };
    let r = builtin(&file).unwrap();
    let counters = [inst("l", "cc_pcalls", &[]), inst("t", "cc_call_timer", &[]), inst("c", "cc_ctl", &[])];
    for phase in [Phase::Start, Phase::Connect, Phase::Event, Phase::End, Phase::Route] {
        assert!(!r.chain_may_block(&counters, phase), "counters, timers, header checks never wait");
    }
    assert!(!r.chain_may_block(&[inst("x", "no_such_module", &[])], Phase::Start), "unknown: fails at once");
    let with_cdr = [inst("cdr", "cc_syslog_cdr", &[]), inst("l", "cc_pcalls", &[])];
    assert!(!r.chain_may_block(&with_cdr, Phase::Start), "the CDR does nothing at start");
    assert!(!r.chain_may_block(&with_cdr, Phase::Connect));
    assert!(r.chain_may_block(&with_cdr, Phase::End), "its write can stall: off the runtime's workers");
    let prepaid = ModuleSettings { prepaid_db: Some(dir.join("prepaid.db")), ..ModuleSettings::default() };
    let r = builtin(&prepaid).unwrap();
    assert!(
        r.chain_may_block(&[inst("l", "cc_pcalls", &[]), inst("p", "cc_prepaid", &[])], Phase::Start),
        "a database"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
