//! `call_control:`: how hooks run, and the settings of the modules the daemon builds.

use std::time::Duration;

use serde::Deserialize;

/// `call_control:`: how hooks run and the modules' own settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileCallControl {
    pub(super) hook_timeout_ms: u64,
    pub(super) failure_code: u16,
    pub(super) failure_reason: String,
    pub(super) cc_pcalls: FilePcalls,
    pub(super) cc_call_timer: FileCallTimer,
    pub(super) cc_syslog_cdr: FileCdr,
    pub(super) cc_prepaid: FilePrepaid,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FilePrepaid {
    pub(super) db: Option<String>,
    pub(super) refuse_code: u16,
    pub(super) refuse_reason: String,
}

impl Default for FilePrepaid {
    fn default() -> Self {
        Self { db: None, refuse_code: 402, refuse_reason: "Insufficient Credit".into() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileCdr {
    pub(super) csv_file: Option<String>,
    pub(super) json_file: Option<String>,
    pub(super) syslog: bool,
    pub(super) prefix: String,
    pub(super) fsync: bool,
    /// `sbcd` (the CSV columns) or `sems` (SEMS's line: `cdr_format`, `quoting`).
    pub(super) syslog_format: String,
    pub(super) cdr_format: Vec<String>,
    pub(super) quoting: Option<bool>,
    /// SEMS's numbering: 0 error, 1 warning, 2 info, 3 debug, 4 notice.
    pub(super) loglevel: u8,
    pub(super) syslog_socket: String,
}

impl Default for FileCdr {
    fn default() -> Self {
        Self {
            csv_file: None,
            json_file: None,
            syslog: false,
            prefix: "CDR: ".into(),
            fsync: false,
            syslog_format: "sbcd".into(),
            cdr_format: Vec::new(),
            quoting: None,
            loglevel: 2,
            syslog_socket: "/dev/log".into(),
        }
    }
}

/// A CDR line as SEMS's cc_syslog_cdr writes it (`syslog_format: sems`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemsCdrLine {
    /// `cdr_format`'s items (`$ltag`, `$start_ts` …, `$name` or a bare value name); empty:
    /// SEMS's default (`$ltag`, the three timestamps, then every value by name).
    pub fields: Vec<String>,
    /// Every field in double quotes, inner quotes doubled (SEMS's default).
    pub quoting: bool,
}

/// The syslog severity of SEMS's `loglevel` 0..4 (RFC 5424 §6.2.1 numbers).
fn severity_of(loglevel: u8) -> Option<u8> {
    [3, 4, 6, 7, 5].get(usize::from(loglevel)).copied()
}

impl FileCdr {
    /// The SEMS line (if chosen) and the syslog severity; `Err((key, why))`.
    pub(super) fn syslog_line(&self) -> Result<(Option<SemsCdrLine>, u8), (String, String)> {
        let key = |k: &str| format!("call_control.cc_syslog_cdr.{k}");
        let severity = severity_of(self.loglevel).ok_or_else(|| {
            (key("loglevel"), format!("{} is not 0-4 (error, warning, info, debug, notice)", self.loglevel))
        })?;
        if let Some(item) = self.cdr_format.iter().find(|i| i.trim().is_empty() || i.trim() == "$") {
            return Err((key("cdr_format"), format!("'{item}' names no field")));
        }
        match self.syslog_format.as_str() {
            "sems" => {
                let fields = self.cdr_format.iter().map(|i| i.trim().to_string()).collect();
                Ok((Some(SemsCdrLine { fields, quoting: self.quoting.unwrap_or(true) }), severity))
            }
            "sbcd" if !self.cdr_format.is_empty() => Err((key("cdr_format"), "needs syslog_format: sems".into())),
            "sbcd" if self.quoting.is_some() => Err((key("quoting"), "needs syslog_format: sems".into())),
            "sbcd" => Ok((None, severity)),
            other => Err((key("syslog_format"), format!("'{other}' is not sbcd or sems"))),
        }
    }
}

impl Default for FileCallControl {
    fn default() -> Self {
        Self {
            hook_timeout_ms: 2000,
            failure_code: 500,
            failure_reason: "Server Internal Error".into(),
            cc_pcalls: FilePcalls::default(),
            cc_call_timer: FileCallTimer::default(),
            cc_syslog_cdr: FileCdr::default(),
            cc_prepaid: FilePrepaid::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FilePcalls {
    pub(super) refuse_code: u16,
    pub(super) refuse_reason: String,
}

impl Default for FilePcalls {
    fn default() -> Self {
        Self { refuse_code: 402, refuse_reason: "Too Many Simultaneous Calls".into() }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileCallTimer {
    pub(super) default_timer_s: Option<u64>,
}

/// Call-control settings of the daemon (`call_control:` in the YAML).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallControlSettings {
    /// A hook running longer than this gives the call the failure reply.
    pub hook_timeout: Duration,
    pub failure_code: u16,
    pub failure_reason: String,
    pub pcalls_refuse_code: u16,
    pub pcalls_refuse_reason: String,
    pub call_timer_default_s: Option<u64>,
    /// cc_syslog_cdr outputs.
    pub cdr_csv_file: Option<std::path::PathBuf>,
    pub cdr_json_file: Option<std::path::PathBuf>,
    pub cdr_syslog: bool,
    pub cdr_prefix: String,
    pub cdr_fsync: bool,
    /// Syslog lines as SEMS writes them; `None`: the CSV columns.
    pub cdr_sems_line: Option<SemsCdrLine>,
    /// Syslog severity of CDR lines (6 = info).
    pub cdr_syslog_severity: u8,
    /// Where the syslog daemon listens.
    pub cdr_syslog_socket: std::path::PathBuf,
    /// cc_prepaid: balance database (the module exists only when it is set).
    pub prepaid_db: Option<std::path::PathBuf>,
    pub prepaid_refuse_code: u16,
    pub prepaid_refuse_reason: String,
}
