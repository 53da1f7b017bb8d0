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

use crate::{CallControl, CcError, Effects, Hook, Verdict};

/// The profile options `cc_ctl` can set.
pub const CTL_KEYS: &[&str] = &[
    "RURI",
    "RURI_host",
    "From",
    "To",
    "Call-ID",
    "next_hop",
    "outbound_proxy",
    "outbound_interface",
    "append_headers",
];

#[derive(Debug)]
pub struct Ctl;

/// `key=value` pairs of a spec (`;`-separated, values may be double-quoted).
fn pairs(spec: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = spec.trim();
    if let Some(r) = rest.strip_prefix("ctl;").or_else(|| (rest == "ctl").then_some("")) {
        rest = r;
    }
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').unwrap_or((rest, ""));
        let key = key.trim().trim_start_matches(';').trim();
        let (value, next) = if let Some(q) = after.trim_start().strip_prefix('"') {
            // A quoted value: `\"` and `\\` stand for themselves.
            let mut value = String::new();
            let mut end = q.len();
            let mut chars = q.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, q[end.min(q.len())..].trim_start().trim_start_matches(';'))
        } else {
            let (v, n) = after.split_once(';').unwrap_or((after, ""));
            (v.to_string(), n)
        };
        if !key.is_empty() {
            out.push((key.to_string(), value.trim().to_string()));
        }
        if after.is_empty() {
            break;
        }
        rest = next.trim();
    }
    out
}

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

    fn start(&self, hook: &Hook<'_>, effects: &mut Effects) -> Result<Verdict, CcError> {
        let allow = hook.param("allow").unwrap_or_default();
        let all = allow.trim() == "*";
        let allowed: Vec<&str> = allow.split(',').map(str::trim).filter(|k| !k.is_empty()).collect();
        for (key, value) in pairs(hook.param("spec").unwrap_or_default()) {
            let Some(known) = CTL_KEYS.iter().find(|k| k.eq_ignore_ascii_case(&key)) else {
                tracing::warn!(call = hook.call.call, key, "cc_ctl: unknown option ignored");
                continue;
            };
            if !all && !allowed.iter().any(|a| a.eq_ignore_ascii_case(known)) {
                tracing::warn!(
                    call = hook.call.call,
                    key = *known,
                    "cc_ctl: option not allowed by the profile, ignored"
                );
                continue;
            }
            effects.overrides.insert((*known).to_string(), value);
        }
        Ok(Verdict::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `cc_ctl` may set are pattern options of the profile table (`profiles/src/options.rs`).
    #[test]
    fn ctl_keys_are_pattern_options() {
        for key in CTL_KEYS {
            let def = profiles::options::option(key).unwrap_or_else(|| panic!("{key} is no profile option"));
            assert!(matches!(def.field, profiles::options::Field::Pattern(..)), "{key}");
        }
    }

    #[test]
    fn spec_pairs() {
        assert_eq!(
            pairs("ctl;RURI=sip:a@b;From=\"\\\"X\\\" <sip:x@y>\";next_hop=10.0.0.1:5060"),
            vec![
                ("RURI".to_string(), "sip:a@b".to_string()),
                ("From".to_string(), "\"X\" <sip:x@y>".to_string()),
                ("next_hop".to_string(), "10.0.0.1:5060".to_string()),
            ]
        );
        assert_eq!(
            pairs("RURI=sip:a@b; To = <sip:t@u>"),
            vec![("RURI".into(), "sip:a@b".into()), ("To".into(), "<sip:t@u>".into())]
        );
        assert!(pairs("").is_empty());
        assert!(pairs("ctl").is_empty());
    }
}
