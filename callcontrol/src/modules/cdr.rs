//! `cc_syslog_cdr`: one call detail record per call, written when the call ends — answered,
//! rejected, cancelled, refused by a later module or by this SBC. Put the instance first in
//! `call_control` so refusals by later modules are recorded too.
//!
//! Outputs (any combination, from the daemon's configuration): an append-only CSV file, an
//! append-only JSON-lines file, and syslog (`/dev/log`, facility local0). Every record is one
//! `write` to a file opened for appending, done when the call ends: nothing is buffered in the
//! process, so a graceful stop or a crash after that write loses nothing (`fsync: true` also
//! forces each record to disk). The instance's values (`<instance>_<key>=...`, patterns) are
//! added to the record: as `key=value` columns in CSV (in key order), as fields in JSON.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{CallControl, CallEnd, Hook, Times};

/// Where records go.
#[derive(Debug, Clone)]
pub struct CdrSettings {
    pub csv_file: Option<PathBuf>,
    pub json_file: Option<PathBuf>,
    pub syslog: bool,
    /// Before each syslog line (SEMS: `CDR: `).
    pub prefix: String,
    /// fsync after every record.
    pub fsync: bool,
    /// Syslog lines as SEMS writes them (`cdr_sems.rs`); `None`: the CSV columns.
    pub sems_line: Option<profiles::config::SemsCdrLine>,
    /// Syslog severity (RFC 5424 §6.2.1: 6 = info).
    pub severity: u8,
    /// The syslog daemon's socket.
    pub socket: PathBuf,
}

impl Default for CdrSettings {
    fn default() -> Self {
        Self {
            csv_file: None,
            json_file: None,
            syslog: false,
            prefix: String::new(),
            fsync: false,
            sems_line: None,
            severity: 6,
            socket: PathBuf::from("/dev/log"),
        }
    }
}

#[derive(Debug)]
pub struct Cdr {
    settings: CdrSettings,
    csv: Option<Mutex<File>>,
    json: Option<Mutex<File>>,
}

/// The columns of the CSV file, in order (the instance's own values follow).
pub const CSV_COLUMNS: &[&str] = &[
    "call_id",
    "profile",
    "source_ip",
    "from",
    "to",
    "ruri",
    "start",
    "connect",
    "end",
    "setup_s",
    "duration_s",
    "disposition",
    "code",
    "reason",
    "cause",
    "hangup_initiator",
];

fn open(p: &PathBuf) -> std::io::Result<Mutex<File>> {
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(p).map(Mutex::new)
}

/// `seconds.milliseconds` since the epoch (empty when the time was not reached).
fn ts(t: Option<SystemTime>) -> String {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or_else(String::new, |d| format!("{}.{:03}", d.as_secs(), d.subsec_millis()))
}

fn secs(a: Option<SystemTime>, b: Option<SystemTime>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:.3}", b.duration_since(a).unwrap_or_default().as_secs_f64()),
        _ => "0.000".into(),
    }
}

pub(super) fn disposition(end: &CallEnd) -> &'static str {
    match (end.answered, end.reason.as_str()) {
        (true, _) => "answered",
        (false, "cancelled") => "canceled",
        (false, "refused" | "call_control_error" | "setup_failed" | "no_route" | "profile_error" | "dropped") => {
            "refused"
        }
        _ => "failed",
    }
}

/// Longest CDR field in bytes: a header an attacker filled is cut there (ending in "...").
const MAX_FIELD: usize = 512;

pub(super) fn bounded(s: &str) -> Cow<'_, str> {
    if s.len() <= MAX_FIELD {
        return Cow::Borrowed(s);
    }
    let mut end = MAX_FIELD - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}...", &s[..end]))
}

/// A value a spreadsheet would run as a formula ("CSV injection": it starts with `=`, `+`,
/// `-`, `@`, a tab or a CR) gets a leading `'`; a signed number (an E.164 `+4930...`) is left
/// as it is, so billing parsers still read numbers.
fn neutralised(s: &str) -> Cow<'_, str> {
    let mut chars = s.chars();
    let risky = match chars.next() {
        Some('=' | '@' | '\t' | '\r') => true,
        // A sign before digits only is a number; before anything else, a formula.
        Some('+' | '-') => {
            let rest = chars.as_str();
            rest.is_empty() || !rest.chars().all(|c| c.is_ascii_digit() || c == '.')
        }
        _ => false,
    };
    if risky {
        Cow::Owned(format!("'{s}"))
    } else {
        Cow::Borrowed(s)
    }
}

fn csv_field(s: &str) -> String {
    let s = bounded(s);
    let s = neutralised(&s);
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"").replace(['\r', '\n'], " "))
    } else {
        s.to_string()
    }
}

fn json_str(s: &str) -> String {
    let s = bounded(s);
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Cdr {
    /// A CDR module that writes nowhere.
    pub fn disabled() -> Self {
        Self { settings: CdrSettings::default(), csv: None, json: None }
    }

    pub fn new(settings: CdrSettings) -> std::io::Result<Self> {
        let csv = settings.csv_file.as_ref().map(open).transpose()?;
        let json = settings.json_file.as_ref().map(open).transpose()?;
        Ok(Self { settings, csv, json })
    }

    /// The record's fields, in [`CSV_COLUMNS`] order.
    fn fields(hook: &Hook<'_>, times: &Times, end: &CallEnd) -> Vec<(&'static str, String)> {
        let c = hook.call;
        let setup_end = times.connect.or(times.end);
        vec![
            ("call_id", c.call_id.clone()),
            ("profile", c.profile.clone()),
            ("source_ip", c.source.ip().to_string()),
            ("from", c.from.clone()),
            ("to", c.to.clone()),
            ("ruri", c.ruri.clone()),
            ("start", ts(Some(times.start))),
            ("connect", ts(times.connect)),
            ("end", ts(times.end)),
            ("setup_s", secs(Some(times.start), setup_end)),
            ("duration_s", secs(times.connect, times.end)),
            ("disposition", disposition(end).to_string()),
            ("code", end.code.to_string()),
            ("reason", end.phrase.clone()),
            ("cause", end.reason.clone()),
            ("hangup_initiator", end.by.as_str().to_string()),
        ]
    }

    fn write(&self, file: &Option<Mutex<File>>, line: &str) {
        let Some(f) = file else { return };
        let Ok(mut f) = f.lock() else { return };
        if let Err(e) = f.write_all(line.as_bytes()) {
            tracing::error!("CDR write failed: {e}");
            return;
        }
        if self.settings.fsync {
            let _ = f.sync_data();
        }
    }
}

impl CallControl for Cdr {
    fn module(&self) -> &'static str {
        "cc_syslog_cdr"
    }

    /// Only `end` writes, and a write can stall (a slow or network file system, dirty-page
    /// throttling, `fsync`, a syslog socket that fills up): it runs on the blocking pool, so a
    /// stalled disk costs late CDRs, never stuck signalling. The other phases do nothing.
    fn may_block(&self, phase: crate::Phase) -> bool {
        phase == crate::Phase::End
    }

    fn end(&self, hook: &Hook<'_>, times: &Times, end: &CallEnd) {
        let fields = Self::fields(hook, times, end);
        let mut csv = fields.iter().map(|(_, v)| csv_field(v)).collect::<Vec<_>>().join(",");
        for (k, v) in hook.params {
            csv.push(',');
            csv.push_str(&csv_field(&format!("{k}={v}")));
        }
        if self.csv.is_some() {
            self.write(&self.csv, &format!("{csv}\n"));
        }
        if self.json.is_some() {
            let mut j = String::from("{");
            for (i, (k, v)) in fields.iter().enumerate() {
                if i > 0 {
                    j.push(',');
                }
                let _ = write!(j, "{}:{}", json_str(k), json_str(v));
            }
            if !hook.params.is_empty() {
                j.push_str(",\"values\":{");
                for (i, (k, v)) in hook.params.iter().enumerate() {
                    if i > 0 {
                        j.push(',');
                    }
                    let _ = write!(j, "{}:{}", json_str(k), json_str(v));
                }
                j.push('}');
            }
            j.push_str("}\n");
            self.write(&self.json, &j);
        }
        if self.settings.syslog {
            let line = match &self.settings.sems_line {
                Some(fmt) => super::cdr_sems::line(fmt, hook, times, end),
                None => csv,
            };
            syslog(&self.settings, &format!("{}{line}", self.settings.prefix));
        }
    }
}

/// One line to the local syslog daemon (facility local0), if there is one.
fn syslog(settings: &CdrSettings, line: &str) {
    #[cfg(unix)]
    {
        let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else { return };
        // PRI = facility local0 (16) * 8 + severity (RFC 5424 §6.2.1)
        let pri = 16 * 8 + u32::from(settings.severity);
        let _ = sock.send_to(format!("<{pri}>sbcd: {line}").as_bytes(), &settings.socket);
    }
    #[cfg(not(unix))]
    let _ = (settings, line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_a_spreadsheet_would_run_are_neutralised_and_numbers_kept() {
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("-2+3+cmd|' /C calc'!A0"), "'-2+3+cmd|' /C calc'!A0");
        assert_eq!(csv_field("+4930555123"), "+4930555123", "an E.164 number stays a number");
        assert_eq!(csv_field("-1.5"), "-1.5");
        assert_eq!(csv_field("\tx"), "'\tx");
        assert_eq!(csv_field("alice"), "alice");
        assert_eq!(csv_field("é=1"), "é=1", "a multi-byte first character is not cut");
    }

    #[test]
    fn long_fields_are_cut_at_a_character_boundary() {
        let long = "ü".repeat(400);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_FIELD && cut.ends_with("..."), "{}", cut.len());
        assert_eq!(bounded("short"), "short");
        assert!(json_str(&"x".repeat(2000)).len() <= MAX_FIELD + 2);
    }
}
