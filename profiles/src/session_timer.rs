//! Session timers (RFC 4028) of a profile: each leg's rules, and how a profile's options
//! make them (SEMS's `enable_session_timer` and its siblings, `aleg_` ones falling back).

use crate::error::ConfigError;
use crate::profile::{parse_bool, seconds, RawOption};

/// The options that switch session timers on and give the callee leg's values (the caller
/// leg's fall back on them): also the defaults sbc.conf gives every profile (`config/sems.rs`).
pub const OPTIONS: &[&str] = &[
    "enable_session_timer",
    "enable_aleg_session_timer",
    "session_expires",
    "minimum_timer",
    "maximum_timer",
    "session_refresh_method",
    "accept_501_reply",
];

/// The caller leg's own values.
pub const ALEG_OPTIONS: &[&str] = &[
    "aleg_session_expires",
    "aleg_minimum_timer",
    "aleg_maximum_timer",
    "aleg_session_refresh_method",
    "aleg_accept_501_reply",
];

/// How the SBC refreshes a session it is the refresher of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RefreshMethod {
    Invite,
    Update,
    /// UPDATE, and re-INVITE from then on if the peer does not take UPDATE (405/501).
    UpdateFallbackInvite,
}

/// One leg's session-timer values (RFC 4028), seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionTimerRules {
    /// The interval the SBC asks for.
    pub session_expires: u32,
    /// The shortest interval it accepts (its Min-SE); a shorter one is answered 422.
    pub minimum: u32,
    /// The longest interval it agrees to (a longer Session-Expires is lowered to it).
    pub maximum: u32,
    pub refresh_method: RefreshMethod,
    /// A 501 to a refresh counts as success (a peer without UPDATE or timer support).
    pub accept_501: bool,
}

impl Default for SessionTimerRules {
    /// SEMS's session_timer module defaults.
    fn default() -> Self {
        Self {
            session_expires: 120,
            minimum: 90,
            maximum: 900,
            refresh_method: RefreshMethod::UpdateFallbackInvite,
            accept_501: true,
        }
    }
}

/// One leg's session-timer rules, or none (the leg has no session timer).
type LegTimers = Option<SessionTimerRules>;

/// The session-timer options of a profile, read together: `aleg_x` falls back to `x`, `x` to
/// the default (docs/manual/access.md, Session timers). Values out of RFC 4028's order are
/// put in order, as SEMS takes them, each change reported in `warnings`.
pub(crate) fn session_timers(
    options: &[RawOption],
    warnings: &mut Vec<String>,
) -> Result<(LegTimers, LegTimers), ConfigError> {
    let find = |k: &str| options.iter().rev().find(|o| o.key == k);
    let bad = |o: &RawOption, m: String| ConfigError::new(&o.file, o.line, &o.key, m);
    let enabled = |o: Option<&RawOption>| -> Result<Option<bool>, ConfigError> {
        o.map(|o| parse_bool(&o.value).map_err(|m| bad(o, m))).transpose()
    };
    let b_on = enabled(find("enable_session_timer"))?.unwrap_or(false);
    let a_on = enabled(find("enable_aleg_session_timer"))?.unwrap_or(b_on);
    let mut leg = |prefix: &str| -> Result<SessionTimerRules, ConfigError> {
        let mut r = SessionTimerRules::default();
        let pick =
            |key: &str| find(&format!("{prefix}{key}")).or_else(|| find(key)).filter(|o| !o.value.trim().is_empty());
        let secs = |key: &str, into: &mut u32| -> Result<(), ConfigError> {
            if let Some(o) = pick(key) {
                *into = seconds(&o.value).map_err(|m| bad(o, m))?;
            }
            Ok(())
        };
        secs("session_expires", &mut r.session_expires)?;
        secs("minimum_timer", &mut r.minimum)?;
        secs("maximum_timer", &mut r.maximum)?;
        if let Some(o) = pick("session_refresh_method") {
            r.refresh_method = match o.value.trim().to_ascii_uppercase().as_str() {
                "INVITE" => RefreshMethod::Invite,
                "UPDATE" => RefreshMethod::Update,
                "UPDATE_FALLBACK_INVITE" => RefreshMethod::UpdateFallbackInvite,
                v => return Err(bad(o, format!("'{v}' is not INVITE, UPDATE or UPDATE_FALLBACK_INVITE"))),
            };
        }
        if let Some(o) = pick("accept_501_reply") {
            r.accept_501 = parse_bool(&o.value).map_err(|m| bad(o, m))?;
        }
        // RFC 4028 §4: Min-SE is at least 90 s; the interval sits between the two bounds.
        // SEMS loads other values (a profile with session_expires=1800 and the default
        // maximum_timer of 900 is common): they are put in order and said.
        let asked = (r.minimum, r.session_expires, r.maximum);
        r.minimum = r.minimum.max(90);
        r.session_expires = r.session_expires.max(r.minimum);
        r.maximum = r.maximum.max(r.session_expires);
        if (r.minimum, r.session_expires, r.maximum) != asked {
            let (min, se, max) = asked;
            let implicit = if pick("maximum_timer").is_none() { " (the default)" } else { "" };
            warnings.push(format!(
                "{prefix}session timer: minimum_timer {min}, session_expires {se}, maximum_timer {max}{implicit} \
                 are out of RFC 4028's order; taken as {}, {}, {}",
                r.minimum, r.session_expires, r.maximum
            ));
        }
        Ok(r)
    };
    let b = b_on.then(|| leg("")).transpose()?;
    let a = a_on.then(|| leg("aleg_")).transpose()?;
    Ok((b, a))
}
