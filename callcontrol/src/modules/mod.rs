//! Built-in modules.

mod call_timer;
mod cdr;
mod cdr_sems;
mod cps;
mod ctl;
mod pcalls;
pub mod prepaid;
mod registrar;

pub use call_timer::CallTimer;
pub use cdr::{Cdr, CdrSettings, CSV_COLUMNS};
pub use cps::{CallRate, CallRates, LocalRates};
pub use ctl::{Ctl, CTL_KEYS};
pub use pcalls::{CallCounts, LocalCounts, ParallelCalls};
pub use prepaid::Prepaid;

use std::sync::Arc;

use crate::Registry;

/// Module settings from the daemon's configuration (`call_control:` in sbc.yaml).
#[derive(Debug, Clone)]
pub struct ModuleSettings {
    /// cc_pcalls: the reply beyond the limit.
    pub pcalls_refuse_code: u16,
    pub pcalls_refuse_reason: String,
    /// cc_call_timer: the timer when a profile gives none (None: such a call is refused).
    pub call_timer_default_s: Option<u64>,
    /// cc_syslog_cdr: where records go.
    pub cdr: CdrSettings,
    /// cc_prepaid: the balance database (none: the module is not available).
    pub prepaid_db: Option<std::path::PathBuf>,
    pub prepaid_refuse_code: u16,
    pub prepaid_refuse_reason: String,
    /// cc_pcalls: where counts live (`None`: this node's memory; a cluster's store else).
    pub pcalls_counts: Option<Arc<dyn CallCounts>>,
    /// cc_cps: where rates are counted (`None`: this node's memory).
    pub cps_rates: Option<Arc<dyn CallRates>>,
    /// cc_prepaid: balances shared by a cluster; they take the place of `prepaid_db`.
    pub prepaid_balances: Option<Arc<dyn prepaid::BalanceStore>>,
    /// cc_prepaid exists because its balances are a cluster's (checks and dry runs, which
    /// have no cluster to reach).
    pub prepaid_shared: bool,
}

impl Default for ModuleSettings {
    fn default() -> Self {
        Self {
            pcalls_refuse_code: 402,
            pcalls_refuse_reason: "Too Many Simultaneous Calls".into(),
            call_timer_default_s: None,
            cdr: CdrSettings { prefix: "CDR: ".into(), ..CdrSettings::default() },
            prepaid_db: None,
            prepaid_refuse_code: 402,
            prepaid_refuse_reason: "Insufficient Credit".into(),
            pcalls_counts: None,
            cps_rates: None,
            prepaid_balances: None,
            prepaid_shared: false,
        }
    }
}

/// `cc_prepaid` as checks and dry runs see it: its name and mandatory values, no database
/// (checking a configuration or explaining a call must not touch balances).
#[derive(Debug)]
struct PrepaidStandIn;

impl crate::CallControl for PrepaidStandIn {
    fn module(&self) -> &'static str {
        "cc_prepaid"
    }
    fn mandatory(&self) -> &'static [&'static str] {
        &["uuid"]
    }
}

/// The built-in modules without side effects, for configuration checks and `explain`: no CDR
/// output, and `cc_prepaid` (if configured) lets every call through without a balance.
pub fn dry_run(settings: &ModuleSettings) -> Registry {
    let mut r = Registry::new();
    r.add(Arc::new(ParallelCalls::new(settings.pcalls_refuse_code, &settings.pcalls_refuse_reason)));
    r.add(Arc::new(CallTimer::new(settings.call_timer_default_s)));
    r.add(Arc::new(CallRate::default()));
    r.add(Arc::new(Cdr::disabled()));
    r.add(Arc::new(Ctl));
    r.add(Arc::new(registrar::Registrar));
    if settings.prepaid_db.is_some() || settings.prepaid_shared {
        r.add(Arc::new(PrepaidStandIn));
    }
    r
}

/// A module that cannot open what it writes to.
#[derive(Debug, thiserror::Error)]
#[error("{module}: cannot open: {source}")]
pub struct OpenError {
    /// The module's key under `call_control:` (`cc_syslog_cdr`, `cc_prepaid`).
    pub module: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// A registry with every built-in module. Fails when a module cannot open what it writes to
/// (a CDR file, a balance database), naming it.
pub fn builtin(settings: &ModuleSettings) -> Result<Registry, OpenError> {
    let mut r = Registry::new();
    let (code, reason) = (settings.pcalls_refuse_code, &settings.pcalls_refuse_reason);
    r.add(Arc::new(match &settings.pcalls_counts {
        Some(counts) => ParallelCalls::with_counts(code, reason, counts.clone()),
        None => ParallelCalls::new(code, reason),
    }));
    r.add(Arc::new(CallTimer::new(settings.call_timer_default_s)));
    r.add(Arc::new(settings.cps_rates.clone().map_or_else(CallRate::default, CallRate::with_rates)));
    r.add(Arc::new(Cdr::new(settings.cdr.clone()).map_err(|source| OpenError { module: "cc_syslog_cdr", source })?));
    r.add(Arc::new(Ctl));
    r.add(Arc::new(registrar::Registrar));
    let (code, reason) = (settings.prepaid_refuse_code, &settings.prepaid_refuse_reason);
    if let Some(shared) = &settings.prepaid_balances {
        r.add(Arc::new(Prepaid::with_store(shared.clone(), code, reason)));
    } else if let Some(db) = &settings.prepaid_db {
        let prepaid = Prepaid::open(db, code, reason)
            .map_err(|e| OpenError { module: "cc_prepaid", source: std::io::Error::other(e) })?;
        r.add(Arc::new(prepaid));
    }
    Ok(r)
}

impl ModuleSettings {
    /// The settings of a whole configuration: `call_control:`, and in cluster mode a
    /// `cc_prepaid` whose balances are the cluster's.
    pub fn of(cfg: &profiles::config::Config) -> Self {
        Self { prepaid_shared: cfg.cluster.is_some(), ..Self::from_config(&cfg.call_control) }
    }

    /// The settings of the daemon's configuration (`call_control:` in sbc.yaml).
    pub fn from_config(c: &profiles::config::CallControlSettings) -> Self {
        Self {
            pcalls_refuse_code: c.pcalls_refuse_code,
            pcalls_refuse_reason: c.pcalls_refuse_reason.clone(),
            call_timer_default_s: c.call_timer_default_s,
            cdr: CdrSettings {
                csv_file: c.cdr_csv_file.clone(),
                json_file: c.cdr_json_file.clone(),
                syslog: c.cdr_syslog,
                prefix: c.cdr_prefix.clone(),
                fsync: c.cdr_fsync,
                sems_line: c.cdr_sems_line.clone(),
                severity: c.cdr_syslog_severity,
                socket: c.cdr_syslog_socket.clone(),
            },
            prepaid_db: c.prepaid_db.clone(),
            prepaid_refuse_code: c.prepaid_refuse_code,
            prepaid_refuse_reason: c.prepaid_refuse_reason.clone(),
            pcalls_counts: None,
            cps_rates: None,
            prepaid_balances: None,
            prepaid_shared: false,
        }
    }
}
