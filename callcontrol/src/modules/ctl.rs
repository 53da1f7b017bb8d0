//! `cc_ctl`: per-call profile options from a header, for a trusted upstream (a proxy or an
//! application server) that decides routing call by call. Values:
//!
//! - `spec`: where the options come from, normally `$H(P-Call-Control)`; its text is
//!   `key=value;key2="value 2"` (a leading `ctl;` is allowed, as in SEMS specs);
//! - `allow`: the keys the header may set, comma-separated, or `*` for all of
//!   [`CTL_KEYS`]. Nothing is allowed by default: a caller cannot inject control unless the
//!   profile says which options it may set.
//!
//! Values are taken literally (never expanded as patterns) and checked like the profile's own;
//! keys not allowed are ignored and logged. A profile that takes the header from untrusted
//! callers should also filter it (`header_filter`), and select this profile only for trusted
//! sources (e.g. `$M($si=>trusted)`).

use profiles::cc_spec::pairs;

use crate::{CallControl, CcError, Effects, Hook, Verdict};

/// What `cc_ctl` can set: the key a spec uses (SEMS's `ctl` names included) and the profile
/// option it sets. Pattern options are applied by evaluation; the others by building the
/// call's own profile (`profiles/src/per_call.rs`).
pub const CTL_KEYS: &[(&str, &str)] = &[
    ("RURI", "RURI"),
    ("RURI_host", "RURI_host"),
    ("From", "From"),
    ("To", "To"),
    ("Call-ID", "Call-ID"),
    ("next_hop", "next_hop"),
    ("outbound_proxy", "outbound_proxy"),
    ("outbound_interface", "outbound_interface"),
    ("append_headers", "append_headers"),
    ("force_outbound_proxy", "force_outbound_proxy"),
    ("sst_enabled", "enable_session_timer"),
    ("sst_aleg_enabled", "enable_aleg_session_timer"),
    ("rtprelay_enabled", "enable_rtprelay"),
    ("rtprelay_interface", "rtprelay_interface"),
    ("aleg_rtprelay_interface", "aleg_rtprelay_interface"),
    ("headerfilter", "header_filter"),
    ("header_list", "header_list"),
    ("messagefilter", "message_filter"),
    ("message_list", "message_list"),
];

#[derive(Debug)]
pub struct Ctl;

impl CallControl for Ctl {
    fn module(&self) -> &'static str {
        "cc_ctl"
    }

    /// Header values read from the request: nothing to wait for.
    fn may_block(&self, _phase: crate::Phase) -> bool {
        false
    }

    fn mandatory(&self) -> &'static [&'static str] {
        &["spec", "allow"]
    }

    /// With `spec` and `allow` (a profile's instance), the header's options the profile allows.
    /// Without them (an instance of a dynamic `call_control` entry, SEMS's `ctl;RURI=...`,
    /// which only trusted sources get: `evaluate.rs`), the instance's own values.
    fn start(&self, hook: &Hook<'_>, effects: &mut Effects) -> Result<Verdict, CcError> {
        let (given, allow) = match hook.param("spec") {
            Some(spec) => (pairs(spec), hook.param("allow").unwrap_or_default()),
            None => (hook.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect(), "*"),
        };
        let all = allow.trim() == "*";
        let allowed: Vec<&str> = allow.split(',').map(str::trim).filter(|k| !k.is_empty()).collect();
        for (key, value) in given {
            let Some((name, option)) = CTL_KEYS.iter().find(|(k, _)| k.eq_ignore_ascii_case(&key)) else {
                tracing::warn!(call = hook.call.call, key, "cc_ctl: unknown option ignored");
                continue;
            };
            if !all && !allowed.iter().any(|a| a.eq_ignore_ascii_case(name) || a.eq_ignore_ascii_case(option)) {
                tracing::warn!(
                    call = hook.call.call,
                    key = *name,
                    "cc_ctl: option not allowed by the profile, ignored"
                );
                continue;
            }
            // SEMS's lists in a spec are `|`-separated (a `;` would end the value).
            let value = if option.ends_with("_list") { value.replace('|', ",") } else { value };
            effects.overrides.insert((*option).to_string(), value);
        }
        Ok(Verdict::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use profiles::options::{option, Field};

    /// Every key sets a profile option: a pattern, or one the call's own profile is built with.
    #[test]
    fn ctl_keys_are_profile_options() {
        for (key, name) in CTL_KEYS {
            let def = option(name).unwrap_or_else(|| panic!("{key}: {name} is no profile option"));
            assert_eq!(def.status, profiles::options::OptionStatus::Active, "{key}");
            let _ = matches!(def.field, Field::Pattern(..));
        }
    }
}
