//! A SEMS installation as it is: `sems.conf` (its interfaces, routing, timers and limits),
//! the module configurations in its `plugin_config_path` and the `sbc.conf` there, written as
//! sbcd's YAML with a comment on each key that changed and on each one that is not applied.
//! `sbcd --config sems.conf` loads that YAML; `sbcd migrate` writes it.

mod interfaces;
mod keys;
mod modules;
mod yaml;

use std::path::{Path, PathBuf};

use crate::conf::{ConfEntry, ConfFile};
use crate::error::ConfigError;
use interfaces::number;
use yaml::{quoted, Origin, Yaml};

/// SEMS's `plugin_config_path` when `sems.conf` does not set it.
const DEFAULT_MODULE_DIR: &str = "/etc/sems/etc/";

/// Keys only SEMS's core configuration has (an `sbc.conf` has none of them).
const CORE_MARKERS: &[&str] =
    &["load_plugins", "plugin_config_path", "plugin_path", "sip_ip", "interfaces", "media_ip"];

/// What a migration found that sbcd does differently or not at all, each with its SEMS line.
#[derive(Debug, Default)]
pub(crate) struct Notes(Vec<(Origin, String)>);

impl Notes {
    pub(crate) fn push(&mut self, origin: Origin, text: impl Into<String>) {
        self.0.push((origin, text.into()));
    }

    fn render(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(o, t)| match o.line {
                0 => format!("{}: {}: {t}", o.file, o.key),
                n => format!("{}:{n}: {}: {t}", o.file, o.key),
            })
            .collect()
    }
}

/// The YAML equivalent of a SEMS configuration.
#[derive(Debug)]
pub struct Migration {
    /// The `sems.conf` it came from.
    pub source: PathBuf,
    /// sbcd's configuration, commented.
    pub yaml: String,
    /// Each key not applied or changed: `file:line: key: why` (also in the YAML's comments).
    pub notes: Vec<String>,
    doc: Yaml,
}

impl Migration {
    /// The name the written YAML goes by in errors that no SEMS line explains.
    pub fn yaml_name(&self) -> String {
        format!("{} (migrated: see sbcd migrate)", self.source.display())
    }

    /// An error of the written YAML, named by the SEMS line it came from when there is one.
    pub fn locate(&self, e: ConfigError) -> ConfigError {
        match e.line.filter(|_| e.file == self.yaml_name()).and_then(|l| self.doc.origin_of(l)) {
            Some(o) => ConfigError::at(&o.file, o.line, &o.key, e.message),
            None => e,
        }
    }
}

/// Whether a file is SEMS's core configuration: named `sems.conf`, or holding its keys.
pub fn is_sems_core(path: &Path) -> bool {
    path.is_dir()
        || path.file_name().is_some_and(|n| n == "sems.conf")
        || ConfFile::load(path).is_ok_and(|c| CORE_MARKERS.iter().any(|k| c.get(k).is_some()))
}

/// Reads `sems.conf` (or `DIR/sems.conf`) and what it names.
pub fn translate(path: &Path) -> Result<Migration, ConfigError> {
    let path = if path.is_dir() { path.join("sems.conf") } else { path.to_path_buf() };
    let conf = ConfFile::load(&path)?;
    let mut notes = Notes::default();
    for w in &conf.warnings {
        notes.push(Origin { file: conf.path.clone(), line: 0, key: "-".into() }, w.clone());
    }
    let module_dir = module_dir(&conf, &path, &mut notes);
    // The YAML names it wherever it is read from.
    let module_dir = std::path::absolute(&module_dir).unwrap_or(module_dir);
    let sbc_conf = module_dir.join("sbc.conf");
    if !sbc_conf.is_file() {
        let (file, line) =
            conf.get("plugin_config_path").map_or((conf.path.clone(), None), |e| (e.file.clone(), Some(e.line)));
        return Err(ConfigError::new(
            &file,
            line,
            "plugin_config_path",
            format!("{} has no sbc.conf (SEMS's sbc module reads its profiles from there)", module_dir.display()),
        ));
    }
    check_application(&conf, &mut notes);
    let ifaces = interfaces::read(&conf, &mut notes)?;

    let mut y = Yaml::default();
    y.comment(
        0,
        &format!("sbcd's configuration for the SEMS installation of {}, as sbcd migrate wrote it.", conf.path),
    );
    y.comment(0, "Each key names the SEMS setting it came from; the ones sbcd does not apply are listed at the end.");
    y.blank();
    write_interfaces(&mut y, &ifaces);
    y.key(0, "routing", "", None, None);
    y.key(2, "outbound_interface", &quoted(&ifaces[0].name), Some("the first interface"), None);
    if let (Some(e), true) = (conf.get("interfaces"), ifaces.len() > 1) {
        let first = &ifaces[0].name;
        notes.push(e.into(), format!("SEMS sends a B leg from the interface its route leads to; sbcd from {first} unless a profile's outbound_interface names another"));
    }
    if let Some(e) = conf.get("default_bl_ttl") {
        let ms: u64 = number(e)?;
        y.key(2, "health", "", None, None);
        y.key(4, "blacklist_s", &ms.div_ceil(1000).to_string(), Some("default_bl_ttl"), Some(e.into()));
    }
    write_sip(&mut y, &conf, &mut notes)?;
    write_limits(&mut y, &conf, &ifaces, &mut notes)?;
    write_media_and_shutdown(&mut y, &conf, &mut notes)?;
    modules::write(&mut y, &module_dir, &mut notes)?;
    write_profile_defaults(&mut y, &conf, &mut notes);
    y.key(
        0,
        "sems_config",
        &quoted(&sbc_conf.display().to_string()),
        Some("its profiles, maps and chain, read unchanged"),
        None,
    );
    for e in &conf.entries {
        classify(e, &mut notes);
    }
    let rendered = notes.render();
    if !rendered.is_empty() {
        y.blank();
        y.comment(0, "Not applied or changed (sbcd --check-config prints these too):");
        for n in &rendered {
            y.comment(0, &format!("- {n}"));
        }
    }
    Ok(Migration { source: path, yaml: y.text().to_string(), notes: rendered, doc: y })
}

/// `plugin_config_path`, as SEMS takes it (relative to the current folder); if no `sbc.conf`
/// is there, relative to `sems.conf`'s folder (a copied tree).
fn module_dir(conf: &ConfFile, path: &Path, notes: &mut Notes) -> PathBuf {
    let Some(e) = conf.get("plugin_config_path") else { return PathBuf::from(DEFAULT_MODULE_DIR) };
    let p = Path::new(e.value.trim());
    if p.is_absolute() || p.join("sbc.conf").is_file() {
        return p.to_path_buf();
    }
    let beside = path.parent().unwrap_or(Path::new(".")).join(p);
    if beside.join("sbc.conf").is_file() {
        notes.push(
            e.into(),
            format!("relative: taken from sems.conf's folder ({}), not the current one", beside.display()),
        );
    }
    beside
}

/// `application` and `load_plugins`: sbcd is the SBC application only.
fn check_application(conf: &ConfFile, notes: &mut Notes) {
    if let Some(e) = conf.get("application").filter(|e| e.value.trim() != "sbc") {
        notes.push(e.into(), "not applied: every call goes to the SBC application");
    }
    if let Some(e) = conf.get("load_plugins") {
        let others: Vec<&str> = e
            .value
            .split(';')
            .map(|p| p.trim().trim_end_matches(".so"))
            .filter(|p| !p.is_empty() && !keys::BUILT_IN_PLUGINS.contains(p))
            .collect();
        if !others.is_empty() {
            notes.push(e.into(), format!("not applied: {} (not part of sbcd)", others.join(", ")));
        }
    }
}

fn write_interfaces(y: &mut Yaml, ifaces: &[interfaces::SemsInterface]) {
    y.key(0, "interfaces", "", None, None);
    for i in ifaces {
        let host = match i.sip {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        y.raw(2, &format!("- name: {}", quoted(&i.name)), Some(i.origin.clone()));
        let listen =
            format!("[{}, {}]", quoted(&format!("udp:{host}:{}", i.port)), quoted(&format!("tcp:{host}:{}", i.port)));
        y.key(4, "listen", &listen, Some("SEMS listens on UDP and TCP"), Some(i.origin.clone()));
        if let Some((ip, o)) = &i.public_ip {
            y.key(4, "advertise", &quoted(ip), Some("public_ip: in Via and Contact"), Some(o.clone()));
        }
        // The ports first: an error in this mapping is reported at its first line, and only
        // the ports are not checked before.
        y.key(4, "media", "", None, None);
        let ports = format!("{}-{}", i.ports.0, i.ports.1);
        y.key(6, "ports", &quoted(&ports), Some("rtp_low_port-rtp_high_port"), Some(i.ports_origin.clone()));
        y.key(6, "address", &quoted(&i.media.to_string()), None, Some(i.origin.clone()));
        if let Some((ip, o)) = i.public_ip.as_ref().filter(|(ip, _)| ip.parse::<std::net::IpAddr>().is_ok()) {
            y.key(6, "advertise", &quoted(ip), Some("public_ip: in SDP"), Some(o.clone()));
        }
    }
}

/// SIP timers (ms): A is T1, t2 is T2, K is T4; C in whole seconds. The ones sbcd derives
/// from T1 are noted where they differ.
fn write_sip(y: &mut Yaml, conf: &ConfFile, notes: &mut Notes) -> Result<(), ConfigError> {
    // A day: no SIP timer is longer, and what is derived from them stays far from overflow.
    const LONGEST_MS: u64 = 86_400_000;
    let ms = |k: &str, default: u64| -> Result<(u64, Option<&ConfEntry>), ConfigError> {
        match conf.get(k) {
            Some(e) => match number(e)? {
                v if v > LONGEST_MS => Err(ConfigError::at(&e.file, e.line, k, format!("{v} ms is more than a day"))),
                v => Ok((v, Some(e))),
            },
            None => Ok((default, None)),
        }
    };
    let (t1, a) = ms("sip_timer_A", 500)?;
    let (t2, t2e) = ms("sip_timer_t2", 4000)?;
    let (t4, k) = ms("sip_timer_K", 5000)?;
    let (c, ce) = ms("sip_timer_C", 180_000)?;
    y.key(0, "sip", "", None, None);
    y.key(2, "t1_ms", &t1.to_string(), Some("sip_timer_A"), a.map(Origin::from));
    y.key(2, "t2_ms", &t2.to_string(), Some("sip_timer_t2"), t2e.map(Origin::from));
    y.key(2, "t4_ms", &t4.to_string(), Some("sip_timer_K"), k.map(Origin::from));
    // RFC 3261 §16.6 wants more than 3 minutes; SEMS's default is 3 minutes.
    let c_s = c.div_ceil(1000).max(181);
    y.key(
        2,
        "timer_c_s",
        &c_s.to_string(),
        Some("sip_timer_C; more than 3 min (RFC 3261 §16.6)"),
        ce.map(Origin::from),
    );
    if let Some(e) = ce.filter(|_| c_s * 1000 != c) {
        notes.push(
            e.into(),
            format!("{c} ms is {c_s} s here: timer C is in whole seconds, above 3 min (RFC 3261 §16.6)"),
        );
    }
    for (key, derived) in [("sip_timer_E", t1), ("sip_timer_G", t1), ("sip_timer_I", t4)] {
        if let Some(e) = conf.get(key).filter(|e| number::<u64>(e).is_ok_and(|v| v != derived)) {
            notes.push(e.into(), format!("not applied: sbcd's is {derived} ms here (RFC 3261 §17)"));
        }
    }
    for key in ["sip_timer_B", "sip_timer_F", "sip_timer_H", "sip_timer_J"] {
        if let Some(e) = conf.get(key).filter(|e| number::<u64>(e).is_ok_and(|v| v != 64 * t1)) {
            notes.push(e.into(), format!("not applied: sbcd's is 64×T1 = {} ms (RFC 3261 §17)", 64 * t1));
        }
    }
    Ok(())
}

/// `"limit;code;reason"` as SEMS reads it: exactly three fields.
fn limit_of(e: &ConfEntry) -> Result<(u64, u16, String), ConfigError> {
    let f: Vec<&str> = e.value.split(';').map(str::trim).filter(|f| !f.is_empty()).collect();
    let bad = || ConfigError::at(&e.file, e.line, &e.key, format!("'{}' is not \"limit;code;reason\"", e.value));
    match f.as_slice() {
        [limit, code, reason] => {
            Ok((limit.parse().map_err(|_| bad())?, code.parse().map_err(|_| bad())?, reason.to_string()))
        }
        _ => Err(bad()),
    }
}

fn write_limits(
    y: &mut Yaml,
    conf: &ConfFile,
    ifaces: &[interfaces::SemsInterface],
    notes: &mut Notes,
) -> Result<(), ConfigError> {
    y.key(0, "limits", "", None, None);
    if let Some(e) = conf.get("session_limit") {
        let (limit, code, reason) = limit_of(e)?;
        if limit > 0 {
            y.key(2, "max_calls", &limit.to_string(), Some("session_limit"), Some(e.into()));
            if (code, reason.as_str()) != (503, "Service Unavailable") {
                notes.push(
                    e.into(),
                    format!("sbcd refuses calls over the limit with 503 Service Unavailable, not {code} {reason}"),
                );
            }
        }
    }
    let idle = ifaces.iter().filter_map(|i| i.tcp_idle_ms).max();
    if let Some(ms) = idle {
        let o = Origin { file: conf.path.clone(), line: 0, key: "tcp_idle_timeout".into() };
        if ifaces.iter().filter_map(|i| i.tcp_idle_ms).any(|other| other != ms) {
            let why = format!("the interfaces' values differ; sbcd has one for all, the longest ({ms} ms)");
            notes.push(o.clone(), why);
        }
        y.key(
            2,
            "tcp_idle_timeout_s",
            &ms.div_ceil(1000).to_string(),
            Some("tcp_idle_timeout (the longest of the interfaces')"),
            Some(o),
        );
    } else {
        y.key(2, "tcp_idle_timeout_s", "3600", Some("SEMS's tcp_idle_timeout default"), None);
    }
    y.key(2, "admission", "", None, None);
    // Edge safety SEMS does not have (docs/manual/access.md): said, not switched off.
    y.key(4, "trusted", "[]", Some("trunks and the core: no per-source limits for them"), None);
    use crate::config::admission::{DEFAULT_PER_SOURCE_BURST, DEFAULT_PER_SOURCE_CALLS, DEFAULT_PER_SOURCE_CPS};
    let o = Origin { file: conf.path.clone(), line: 0, key: "-".into() };
    notes.push(
        o,
        format!(
            "sbcd limits each address not in limits.admission.trusted to {DEFAULT_PER_SOURCE_CALLS} calls at a \
             time and {DEFAULT_PER_SOURCE_CPS} new requests a second (burst {DEFAULT_PER_SOURCE_BURST}), which SEMS \
             does not: list trunks and the core there"
        ),
    );
    if let Some(e) = conf.get("cps_limit") {
        let (limit, code, reason) = limit_of(e)?;
        y.key(
            4,
            "max_cps",
            &limit.to_string(),
            Some("cps_limit: new requests a second over all sources"),
            Some(e.into()),
        );
        notes.push(
            e.into(),
            format!("sbcd's limit counts every new request, not only calls, and refuses with 503, not {code} {reason}"),
        );
    }
    Ok(())
}

fn write_media_and_shutdown(y: &mut Yaml, conf: &ConfFile, notes: &mut Notes) -> Result<(), ConfigError> {
    let dead = conf.get("dead_rtp_time");
    let secs: u64 = dead.map(number).transpose()?.unwrap_or(300);
    y.key(0, "media", "", None, None);
    let why = if dead.is_some() { "dead_rtp_time" } else { "SEMS's dead_rtp_time default (5 min)" };
    y.key(2, "timeout_s", &secs.to_string(), Some(why), dead.map(Origin::from));
    let max = conf.get("max_shutdown_time");
    let mut drain: u64 = max.map(number).transpose()?.unwrap_or(10);
    if let (0, Some(e)) = (drain, max) {
        notes.push(e.into(), "0 (no limit) is 1 h here: sbcd always bounds its drain");
        drain = 3600;
    }
    y.key(0, "shutdown", "", None, None);
    let why = if max.is_some() { "max_shutdown_time" } else { "SEMS's max_shutdown_time default" };
    y.key(2, "drain_timeout_s", &drain.to_string(), Some(why), max.map(Origin::from));
    if let Some(e) = conf.get("shutdown_mode_reply") {
        notes.push(e.into(), "not applied: while draining, new requests get 503 Service Unavailable with Retry-After");
    }
    Ok(())
}

/// `outbound_proxy`, `force_outbound_proxy`, `next_hop`, `next_hop_1st_req` and
/// `sip_nat_handling`: SEMS's fallbacks for profiles that leave them empty.
fn write_profile_defaults(y: &mut Yaml, conf: &ConfFile, notes: &mut Notes) {
    let has_next_hop = conf.get("next_hop").is_some_and(|e| !e.value.trim().is_empty());
    let mut rows: Vec<(&str, String, &ConfEntry)> = Vec::new();
    for (sems, ours, flag) in [
        ("outbound_proxy", "outbound_proxy", false),
        ("force_outbound_proxy", "force_outbound_proxy", true),
        ("next_hop", "next_hop", false),
        ("next_hop_1st_req", "next_hop_1st_req", true),
        ("sip_nat_handling", "dlg_nat_handling", true),
    ] {
        let Some(e) = conf.get(sems).filter(|e| !e.value.trim().is_empty()) else { continue };
        if sems == "next_hop_1st_req" && !has_next_hop {
            notes.push(e.into(), "ignored without next_hop, as SEMS ignores it");
            continue;
        }
        let value = if flag {
            let v = e.value.trim();
            if v != "yes" && v != "no" {
                notes.push(e.into(), format!("'{v}' is not \"yes\": SEMS reads it as no, and so does this migration"));
            }
            (if v == "yes" { "yes" } else { "no" }).to_string()
        } else {
            e.value.trim().to_string()
        };
        rows.push((ours, value, e));
    }
    if rows.is_empty() {
        return;
    }
    y.key(0, "profile_defaults", "", None, None);
    y.comment(2, "SEMS's core settings, used by profiles that leave them empty");
    for (key, value, e) in rows {
        let v = if value == "yes" || value == "no" { value.clone() } else { quoted(&value) };
        y.key(2, key, &v, Some(&e.key), Some(e.into()));
    }
}

/// A key no mapping above used: not applied (with why), or unknown to SEMS's core.
fn classify(e: &ConfEntry, notes: &mut Notes) {
    let k = e.key.as_str();
    if keys::MAPPED.contains(&k) || is_interface_key(k) {
        return;
    }
    match keys::NOT_APPLIED.iter().find(|(key, _)| *key == k) {
        Some((_, why)) => notes.push(e.into(), format!("not applied: {why}")),
        None if k.starts_with("sip_timer_") => {
            notes.push(e.into(), "ignored: SEMS does not read it either (its timer keys are upper-case: sip_timer_B)")
        }
        None => notes.push(e.into(), "ignored: not a key of SEMS's core"),
    }
}

fn is_interface_key(k: &str) -> bool {
    keys::INTERFACE_KEYS.iter().any(|base| k == *base || k.strip_prefix(base).is_some_and(|r| r.starts_with('_')))
}
