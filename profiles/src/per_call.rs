//! Options SEMS expands per call that are fixed values in the rest of a profile (flags,
//! interface names, codec lists, session-timer values): written with a variable, they are kept
//! as patterns at load and the profile is built again for each call with their expansions
//! ([`Profile::specialised`]); the values go into the call's plan, so a node adopting the
//! call builds the same profile. So are the options a call-control module sets for one call that
//! are not patterns themselves (`cc_ctl`'s `force_outbound_proxy`, `rtprelay_interface` …).
//! An expansion is taken literally: a value that is not what the option takes fails the call
//! (500), as in SEMS.

use std::collections::BTreeMap;

use crate::error::ConfigError;
use crate::evaluate::EvalError;
use crate::options::{option, Field};
use crate::pattern::{Env, Pattern};
use crate::profile::{Profile, RawOption};

/// The options SEMS expands per call whose value is not a pattern here
/// (docs/manual/profiles.md), besides every session-timer option ([`is_per_call`]).
pub const PER_CALL: &[&str] = &[
    "enable_rtprelay",
    "rtprelay_force_symmetric_rtp",
    "rtprelay_interface",
    "aleg_rtprelay_interface",
    "codec_preference",
    "codec_preference_aleg",
    "fix_replaces_ref",
    "aleg_force_outbound_proxy",
];

/// Whether SEMS expands `key` per call where it is a fixed value here.
pub fn is_per_call(key: &str) -> bool {
    use crate::session_timer::{ALEG_OPTIONS, OPTIONS};
    PER_CALL.contains(&key) || OPTIONS.contains(&key) || ALEG_OPTIONS.contains(&key)
}

/// Per-call options and their patterns.
pub type PerCall = Vec<(String, Pattern)>;

/// The options written with a variable (kept as patterns), and the others.
pub(crate) fn split(options: Vec<RawOption>) -> Result<(PerCall, Vec<RawOption>), ConfigError> {
    let mut per_call = Vec::new();
    let mut fixed = Vec::with_capacity(options.len());
    for o in options {
        if is_per_call(&o.key) && o.value.contains('$') {
            let p = Pattern::compile(&o.value)
                .map_err(|pe| ConfigError::new(&o.file, o.line, &o.key, format!("pattern '{}': {pe}", o.value)))?;
            per_call.retain(|(k, _)| *k != o.key);
            per_call.push((o.key, p));
        } else {
            fixed.push(o);
        }
    }
    Ok((per_call, fixed))
}

/// Whether a call-control module's override of `key` is applied by a rebuild (the pattern
/// options are applied by evaluation itself).
fn is_rebuilt(key: &str) -> bool {
    option(key).is_some_and(|d| !matches!(d.field, Field::Pattern(..)))
}

impl Profile {
    /// The values one call's own profile is built with: the per-call options expanded, then
    /// the call-control `overrides` of fixed options. Empty: the shared profile serves.
    pub fn per_call_values(&self, env: &Env<'_>, overrides: &BTreeMap<String, String>) -> Vec<(String, String)> {
        let mut values: Vec<(String, String)> = self.per_call.iter().map(|(k, p)| (k.clone(), p.expand(env))).collect();
        values.extend(overrides.iter().filter(|(k, _)| is_rebuilt(k)).map(|(k, v)| (k.clone(), v.clone())));
        values
    }

    /// This profile built again with `values` (from [`Profile::per_call_values`]), each taken
    /// literally.
    pub fn with_values(&self, values: &[(String, String)]) -> Result<Self, EvalError> {
        let mut options = self.options.clone();
        for (key, value) in values {
            options.retain(|o| o.key != *key);
            options.push(RawOption { key: key.clone(), value: value.clone(), file: self.file.clone(), line: None });
        }
        Self::build_for_call(&self.name, &self.file, self.md5.clone(), options).map_err(|e| EvalError {
            option: option(&e.key).map_or("profile", |d| d.key),
            message: format!("{}: {}", e.key, e.message),
        })
    }

    /// This profile for one call: `None` when nothing in it depends on the call.
    pub fn specialised(&self, env: &Env<'_>, overrides: &BTreeMap<String, String>) -> Result<Option<Self>, EvalError> {
        let values = self.per_call_values(env, overrides);
        if values.is_empty() {
            return Ok(None);
        }
        self.with_values(&values).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::tests::{invite, TestRequest};
    use crate::pattern::{InterfaceFacts, NoCcVars, NoRegCache};

    fn build(options: &[(&str, &str)]) -> Profile {
        let options = options
            .iter()
            .map(|(k, v)| RawOption { key: (*k).into(), value: (*v).into(), file: "t.conf".into(), line: Some(1) })
            .collect();
        Profile::build("t", "t.conf", None, options).expect("loads")
    }

    /// An INVITE whose `X-Relay` header is `value`.
    fn req(value: &'static str) -> TestRequest {
        TestRequest { headers: vec![("X-Relay", value)], ..invite() }
    }

    /// `check` given the environment of `req`.
    fn with_env<T>(req: &TestRequest, check: impl FnOnce(&Env<'_>) -> T) -> T {
        let (maps, rng) = (crate::regex_map::RegexMaps::new(), std::cell::Cell::new(1));
        let env = Env {
            req,
            source: "192.0.2.1:5060".parse().expect("addr"),
            local: "192.0.2.2:5060".parse().expect("addr"),
            interface: InterfaceFacts { index: 0, name: "int", public_ip: "" },
            next_hop: None,
            peer: None,
            maps: &maps,
            cc_vars: &NoCcVars,
            reg_cache: &NoRegCache,
            rng: &rng,
        };
        check(&env)
    }

    #[test]
    fn options_with_variables_are_expanded_per_call_and_checked_then() {
        let p = build(&[
            ("enable_rtprelay", "$H(X-Relay)"),
            ("rtprelay_interface", "ext"),
            ("session_expires", "$H(X-Relay)"),
        ]);
        assert!(!p.rtprelay.enabled, "unknown until a call");
        assert_eq!(p.per_call.len(), 2);
        let none = BTreeMap::new();
        let on =
            with_env(&req("yes"), |env| p.specialised(env, &none)).expect("expands").expect("a profile of its own");
        assert!(on.rtprelay.enabled && on.rtprelay.interface.as_deref() == Some("ext"));
        let e = with_env(&req("maybe"), |env| p.specialised(env, &none)).expect_err("not a flag");
        assert_eq!(e.option, "enable_rtprelay", "{}", e.message);
        let fixed = build(&[("enable_rtprelay", "yes")]);
        assert!(with_env(&req(""), |env| fixed.specialised(env, &none)).expect("ok").is_none());
    }

    #[test]
    fn overrides_of_fixed_options_rebuild_the_profile() {
        let p = build(&[("enable_rtprelay", "yes")]);
        let overrides: BTreeMap<String, String> =
            [("rtprelay_interface", "int"), ("RURI", "sip:x@y")].map(|(k, v)| (k.to_string(), v.to_string())).into();
        let call = with_env(&req(""), |env| p.specialised(env, &overrides)).expect("ok").expect("rebuilt");
        assert_eq!(call.rtprelay.interface.as_deref(), Some("int"));
        assert!(call.ruri.is_none(), "a pattern option is evaluation's to apply");
        let literal: BTreeMap<String, String> = [("rtprelay_interface".to_string(), "$H(X)".to_string())].into();
        assert!(with_env(&req(""), |env| p.specialised(env, &literal)).is_err(), "an override is taken literally");
    }
}
