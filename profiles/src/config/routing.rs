//! `routing:`: where new requests go when no profile says (the outbound interface, a global
//! next hop), and how next hops' health is watched (`routing.health`, docs/manual/sip.md).

use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRouting {
    pub(super) outbound_interface: Option<Spanned<String>>,
    pub(super) next_hop: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) health: FileHealth,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileHealth {
    probe_interval_s: u64,
    down_after: u32,
    up_after: u32,
    blacklist_s: u64,
}

impl Default for FileHealth {
    fn default() -> Self {
        // No probes unless asked; a destination that timed out is left alone for 60 s, as
        // SEMS does.
        Self { probe_interval_s: 0, down_after: 3, up_after: 2, blacklist_s: 60 }
    }
}

/// How next hops' health is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    /// OPTIONS to every configured next hop this often; `None`: no probes.
    pub probe_interval: Option<Duration>,
    /// Probes unanswered (or answered 503) in a row before a next hop is down.
    pub down_after: u32,
    /// Probes answered in a row before a down next hop is up again.
    pub up_after: u32,
    /// How long a destination whose INVITE timed out or could not be sent is skipped (0: never).
    pub blacklist: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self::from_file(&FileHealth::default()).unwrap_or(Self {
            probe_interval: None,
            down_after: 3,
            up_after: 2,
            blacklist: Duration::from_secs(60),
        })
    }
}

impl HealthSettings {
    pub(super) fn from_file(f: &FileHealth) -> Result<Self, (String, String)> {
        let key = |k: &str| format!("routing.health.{k}");
        if f.probe_interval_s != 0 && !(5..=3600).contains(&f.probe_interval_s) {
            return Err((key("probe_interval_s"), "must be 0 (no probes) or 5-3600 s".into()));
        }
        for (k, v) in [("down_after", f.down_after), ("up_after", f.up_after)] {
            if v == 0 {
                return Err((key(k), "must be at least 1".into()));
            }
        }
        if f.blacklist_s > 3600 {
            return Err((key("blacklist_s"), "must be at most 3600 s".into()));
        }
        Ok(Self {
            probe_interval: (f.probe_interval_s > 0).then(|| Duration::from_secs(f.probe_interval_s)),
            down_after: f.down_after,
            up_after: f.up_after,
            blacklist: Duration::from_secs(f.blacklist_s),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_defaults_and_bounds() {
        let d = HealthSettings::default();
        assert_eq!((d.probe_interval, d.down_after, d.up_after, d.blacklist.as_secs()), (None, 3, 2, 60));
        let mut f = FileHealth { probe_interval_s: 2, ..FileHealth::default() };
        assert_eq!(HealthSettings::from_file(&f).expect_err("2 s").0, "routing.health.probe_interval_s");
        f.probe_interval_s = 10;
        f.up_after = 0;
        assert_eq!(HealthSettings::from_file(&f).expect_err("0").0, "routing.health.up_after");
        f.up_after = 1;
        let s = HealthSettings::from_file(&f).expect("valid");
        assert_eq!(s.probe_interval, Some(Duration::from_secs(10)));
    }
}
