//! The call-control modules' own files in `plugin_config_path` (`cc_pcalls.conf`,
//! `cc_call_timer.conf`, `cc_syslog_cdr.conf`) as `call_control:`, with a balance database
//! for cc_prepaid when a loaded profile uses it; files of modules sbcd does not have are named.

use std::path::Path;

use super::interfaces::number;
use super::yaml::{quoted, Origin, Yaml};
use super::Notes;
use crate::conf::ConfFile;
use crate::error::ConfigError;

/// Where cc_prepaid's balances go: the packaged service's state folder.
const PREPAID_DB: &str = "/var/lib/sbc/prepaid.sqlite";

/// Module files sbcd has no module for.
const OTHER_MODULES: &[&str] = &["cc_bl_redis.conf", "bl_redis.conf", "cc_siprec.conf", "cc_prepaid_xmlrpc.conf"];

fn load(dir: &Path, name: &str) -> Result<Option<ConfFile>, ConfigError> {
    let p = dir.join(name);
    if p.is_file() {
        ConfFile::load(&p).map(Some)
    } else {
        Ok(None)
    }
}

/// Notes every key of `conf` other than `known`.
fn unknown_keys(conf: &ConfFile, known: &[&str], notes: &mut Notes) {
    for e in conf.entries.iter().filter(|e| !known.contains(&e.key.as_str())) {
        notes.push(e.into(), "ignored: the module does not read it");
    }
}

/// The first `<entry>_module=<module>` line of a profile `sbc.conf` (in `dir`) loads. Files
/// that do not read are left to the import, which names their error.
fn profile_using(dir: &Path, module: &str) -> Option<Origin> {
    let sbc_conf = ConfFile::load(&dir.join("sbc.conf")).ok()?;
    crate::config::sems::profile_files(&sbc_conf).into_iter().find_map(|(_, path)| {
        let conf = ConfFile::load_including_from(&path, dir).ok()?;
        let e = conf.entries.iter().find(|e| e.key.ends_with("_module") && e.value.trim() == module)?;
        Some(Origin::from(e))
    })
}

pub(super) fn write(y: &mut Yaml, dir: &Path, notes: &mut Notes) -> Result<(), ConfigError> {
    y.key(0, "call_control", "", None, None);
    if let Some(c) = load(dir, "cc_pcalls.conf")? {
        unknown_keys(&c, &["refuse_code", "refuse_reason"], notes);
        y.key(2, "cc_pcalls", "", None, None);
        let code = c.get("refuse_code");
        let code_value: u16 = code.map(number).transpose()?.unwrap_or(402);
        y.key(4, "refuse_code", &code_value.to_string(), Some("cc_pcalls.conf"), code.map(Origin::from));
        let reason = c.get("refuse_reason").map_or("Too Many Simultaneous Calls", |e| e.value.as_str());
        y.key(4, "refuse_reason", &quoted(reason), None, c.get("refuse_reason").map(Origin::from));
    }
    if let Some(c) = load(dir, "cc_call_timer.conf")? {
        unknown_keys(&c, &["default_timer"], notes);
        if let Some(e) = c.get("default_timer") {
            let t: i64 = number(e)?;
            if t > 0 {
                y.key(2, "cc_call_timer", "", None, None);
                y.key(4, "default_timer_s", &t.to_string(), Some("cc_call_timer.conf default_timer"), Some(e.into()));
            } else if t == 0 {
                notes.push(e.into(), "not applied: 0 would refuse every call without a timer value; left unset");
            }
        }
    }
    y.key(2, "cc_syslog_cdr", "", None, None);
    y.key(4, "syslog", "true", Some("SEMS's cc_syslog_cdr writes to syslog"), None);
    y.key(4, "syslog_format", "sems", Some("its lines, as SEMS writes them"), None);
    if let Some(c) = load(dir, "cc_syslog_cdr.conf")? {
        unknown_keys(&c, &["cdr_prefix", "loglevel", "quoting_enabled", "cdr_format"], notes);
        if let Some(e) = c.get("cdr_prefix") {
            y.key(4, "prefix", &quoted(&e.value), Some("cdr_prefix"), Some(e.into()));
        }
        if let Some(e) = c.get("cdr_format") {
            let items: Vec<String> = e.value.split(',').map(str::trim).filter(|i| !i.is_empty()).map(quoted).collect();
            y.key(4, "cdr_format", &format!("[{}]", items.join(", ")), Some("cdr_format"), Some(e.into()));
        }
        if let Some(e) = c.get("quoting_enabled") {
            let on = e.value.trim() == "yes";
            y.key(4, "quoting", if on { "true" } else { "false" }, Some("quoting_enabled"), Some(e.into()));
        }
        if let Some(e) = c.get("loglevel") {
            // SEMS caps it at 4 (notice).
            let level: u64 = number(e)?;
            y.key(4, "loglevel", &level.min(4).to_string(), Some("loglevel"), Some(e.into()));
        }
    }
    if let Some(origin) = profile_using(dir, "cc_prepaid") {
        y.key(2, "cc_prepaid", "", None, None);
        y.key(4, "db", &quoted(PREPAID_DB), Some("SEMS keeps balances in memory"), Some(origin.clone()));
        let why = format!("cc_prepaid balances are kept in {PREPAID_DB} across restarts (SEMS keeps them in memory, empty after a restart)");
        notes.push(origin, why);
    }
    for name in OTHER_MODULES {
        if dir.join(name).is_file() {
            let o = Origin { file: dir.join(name).display().to_string(), line: 0, key: "-".into() };
            notes.push(o, "not read: sbcd has no such module");
        }
    }
    Ok(())
}
