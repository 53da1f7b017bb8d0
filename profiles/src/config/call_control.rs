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
}

impl Default for FileCdr {
    fn default() -> Self {
        Self { csv_file: None, json_file: None, syslog: false, prefix: "CDR: ".into(), fsync: false }
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
    /// cc_prepaid: balance database (the module exists only when it is set).
    pub prepaid_db: Option<std::path::PathBuf>,
    pub prepaid_refuse_code: u16,
    pub prepaid_refuse_reason: String,
}
