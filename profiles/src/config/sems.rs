//! SEMS import: `sbc.conf` (`profiles`, `profiles_path`, `active_profile`, `regex_maps`) with
//! its `*.sbcprofile.conf` profiles and regex-map `.conf` files, read unchanged.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::conf::{relative_to, ConfFile};
use crate::error::ConfigError;
use crate::profile::{Profile, RawOption};
use crate::regex_map::RegexMap;
use crate::selection::Selection;
use crate::store::{ProfileSource, SemsProfileFile, Snapshot};

/// A loaded SEMS configuration.
#[derive(Debug)]
pub struct Import {
    pub snapshot: Snapshot,
    pub warnings: Vec<String>,
}

/// `sbc.conf` keys this version reads but does not act on (with why).
const SBC_CONF_NOT_APPLIED: &[(&str, &str)] = &[
    ("load_cc_plugins", "call control modules are built in"),
    ("core_options_handling", "OPTIONS to the SBC itself are always answered; others are relayed"),
    ("out_of_dialog_threads", "out-of-dialog requests run on the engine shards"),
];

const SBC_CONF_KEYS: &[&str] = &["profiles", "profiles_path", "active_profile", "regex_maps"];

/// `sbc.conf` keys that are defaults of every profile it loads (session timers, as SEMS's
/// session-timer settings there are): a profile's own value wins.
const PROFILE_DEFAULTS: &[&str] = crate::session_timer::OPTIONS;

fn list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// A profile's options after the defaults that stand before them (`sbc.conf`'s session
/// timers, the YAML's `profile_defaults`, `sems.conf`'s routing settings): its own value
/// wins, but an empty one leaves the default standing, as SEMS falls back on an empty value.
/// A default it overrides is left out rather than put first, since some options take their
/// first value (filter modes and lists) or add up (`call_control`); a later default wins
/// over an earlier one the same way.
pub fn with_defaults(defaults: &[RawOption], own: impl IntoIterator<Item = RawOption>) -> Vec<RawOption> {
    let own: Vec<RawOption> = own.into_iter().collect();
    let sets = |key: &str| own.iter().any(|o| o.key == key && !o.value.trim().is_empty());
    // Values of call-control instances a default `call_control` named, when the profile's own
    // list replaces it: they would belong to no instance.
    let own_cc: Vec<&str> = own.iter().filter(|o| o.key == "call_control").flat_map(|o| list(&o.value)).collect();
    let replaced: Vec<&str> = defaults
        .iter()
        .filter(|d| d.key == "call_control" && sets("call_control"))
        .flat_map(|d| list(&d.value))
        .filter(|i| !own_cc.contains(i))
        .collect();
    let of_replaced = |key: &str| replaced.iter().any(|i| key.strip_prefix(i).is_some_and(|r| r.starts_with('_')));
    let mut options: Vec<RawOption> = Vec::with_capacity(defaults.len() + own.len());
    for (n, d) in defaults.iter().enumerate() {
        let later = defaults[n + 1..].iter().any(|l| l.key == d.key);
        if !later && !sets(&d.key) && !of_replaced(&d.key) {
            options.push(d.clone());
        }
    }
    options.extend(own.into_iter().filter(|o| !o.value.trim().is_empty() || !defaults.iter().any(|d| d.key == o.key)));
    options
}

/// Reads `sbc.conf` and everything it names; `more_defaults` (the YAML's `profile_defaults`)
/// stand after `sbc.conf`'s own defaults, before each profile's options.
pub fn import(path: &Path, interfaces: &[String], more_defaults: &[RawOption]) -> Result<Import, ConfigError> {
    let conf = ConfFile::load(path)?;
    let file = conf.path.clone();
    let mut warnings = conf.warnings.clone();
    let mut defaults = Vec::new();
    for e in &conf.entries {
        if SBC_CONF_KEYS.contains(&e.key.as_str()) {
            continue;
        }
        if PROFILE_DEFAULTS.contains(&e.key.as_str()) {
            let (file, line) = (e.file.clone(), Some(e.line));
            defaults.push(RawOption { key: e.key.clone(), value: e.value.clone(), file, line });
            continue;
        }
        match SBC_CONF_NOT_APPLIED.iter().find(|(k, _)| *k == e.key) {
            Some((_, why)) => warnings.push(format!("{}:{}: {}: not applied ({why})", e.file, e.line, e.key)),
            None => return Err(ConfigError::at(&e.file, e.line, &e.key, "unknown sbc.conf option")),
        }
    }
    let mut snapshot = Snapshot::transparent(&file, interfaces.to_vec());
    snapshot.profiles.clear();
    snapshot.profile_sources.clear();
    defaults.extend(more_defaults.iter().cloned());
    let defaults: Arc<[RawOption]> = defaults.into();
    snapshot.profile_defaults = defaults.clone();
    // SEMS reads sbc.conf from its module folder, and every `@file` include from there.
    let sems_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    snapshot.sems_dir = Some(sems_dir.clone());
    if let Some(e) = conf.get("profiles") {
        for (name, p) in profile_files(&conf) {
            let source = SemsProfileFile { path: p, includes: sems_dir.clone(), defaults: defaults.clone() };
            let (profile, w) = load_profile_file(name, &source).map_err(|err| {
                if err.key == "-" {
                    ConfigError::at(&e.file, e.line, "profiles", err.to_string())
                } else {
                    err
                }
            })?;
            warnings.extend(w);
            snapshot.profiles.insert(name.to_string(), Arc::new(profile));
            snapshot.profile_sources.insert(name.to_string(), ProfileSource::SemsFile(source));
        }
    }
    if let Some(e) = conf.get("regex_maps") {
        for name in list(&e.value) {
            let p = path.parent().unwrap_or(Path::new(".")).join(format!("{name}.conf"));
            let map = load_map_file(name, &p).map_err(|err| {
                if err.key == "-" {
                    ConfigError::at(&e.file, e.line, "regex_maps", err.to_string())
                } else {
                    err
                }
            })?;
            snapshot.maps.insert(name.to_string(), Arc::new(map));
            snapshot.map_files.insert(name.to_string(), p);
        }
    }
    let chain =
        conf.get("active_profile").ok_or_else(|| ConfigError::new(&file, None, "active_profile", "is required"))?;
    snapshot.selection = Selection::parse(&chain.value)
        .map_err(|(item, pe)| ConfigError::at(&chain.file, chain.line, "active_profile", format!("'{item}': {pe}")))?;
    snapshot.validate().map_err(|e| {
        if e.line.is_none() && e.file == file {
            ConfigError { line: Some(chain.line), ..e }
        } else {
            e
        }
    })?;
    Ok(Import { snapshot, warnings })
}

/// The profiles `sbc.conf` lists, each with its file (in `profiles_path`, relative to
/// `sbc.conf`, else beside it).
pub(crate) fn profile_files(conf: &ConfFile) -> Vec<(&str, PathBuf)> {
    let sbc_conf = Path::new(&conf.path);
    let dir = match conf.get("profiles_path") {
        Some(p) => relative_to(&conf.path, &p.value),
        None => sbc_conf.parent().unwrap_or(Path::new(".")).to_path_buf(),
    };
    let names = conf.get("profiles").map(|e| list(&e.value).collect::<Vec<_>>()).unwrap_or_default();
    names.into_iter().map(|n| (n, dir.join(format!("{n}.sbcprofile.conf")))).collect()
}

/// Reads one `*.sbcprofile.conf`, its defaults standing before its own options.
pub fn load_profile_file(name: &str, file: &SemsProfileFile) -> Result<(Profile, Vec<String>), ConfigError> {
    let conf = ConfFile::load_including_from(&file.path, &file.includes)?;
    let own = conf.entries.iter().map(|e| RawOption {
        key: e.key.clone(),
        value: e.value.clone(),
        file: e.file.clone(),
        line: Some(e.line),
    });
    let options = with_defaults(&file.defaults, own);
    let profile = Profile::build(name, &conf.path, Some(conf.md5.clone()), options)?;
    let mut warnings = conf.warnings;
    warnings.extend(profile.not_applied.iter().map(|w| format!("{}: profile '{name}': {w}", conf.path)));
    Ok((profile, warnings))
}

/// Reads one regex map file; errors name its line.
pub fn load_map_file(name: &str, path: &Path) -> Result<RegexMap, ConfigError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| ConfigError::file(&file, format!("cannot read: {e}")))?;
    let mut map = RegexMap::parse(name, &String::from_utf8_lossy(&bytes))
        .map_err(|e| ConfigError::at(&file, e.line as u64, name, e.message))?;
    map.md5 = Some(crate::conf::md5_hex(&bytes));
    Ok(map)
}

/// Re-reads a profile from its source (for [`crate::store::Store::reload_profile`]).
pub fn reload(name: &str, source: &ProfileSource) -> Result<Profile, ConfigError> {
    match source {
        ProfileSource::SemsFile(file) => load_profile_file(name, file).map(|(p, _)| p),
        ProfileSource::Inline => Err(ConfigError::file(name, "inline profiles reload with the configuration")),
    }
}
