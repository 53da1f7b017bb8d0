//! The profile half of the YAML configuration: `profiles`, `regex_maps`, `active_profile`, and
//! optionally a SEMS `sbc.conf` (`sems_config`) whose contents they add to.
//!
//! ```yaml
//! active_profile: ["$M($si=>src_ipmap)", "$H(P-SBCProfile)", refuse]
//! regex_maps:
//!   src_ipmap: ["^127\\.0\\.0\\.2$=>internal"]     # or { file: src_ipmap.conf }
//! profiles:
//!   internal: { RURI: "sip:$rU@gw.example.com", header_filter: blacklist, header_list: [User-Agent] }
//!   refuse:   { refuse_with: "403 Forbidden" }
//!   legacy:   { sems_file: /etc/sems/etc/auth_b2b.sbcprofile.conf }
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::sems;
use crate::error::ConfigError;
use crate::profile::{Profile, RawOption};
use crate::regex_map::RegexMap;
use crate::selection::Selection;
use crate::store::{ProfileSource, SemsProfileFile, Snapshot};

/// `active_profile`: a comma chain or a list of rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Chain {
    One(String),
    Many(Vec<String>),
}

/// One option value: text, a number, a boolean, or a list (joined as SEMS would write it).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum OptValue {
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<String>),
}

pub(crate) type FileProfile = BTreeMap<String, Spanned<OptValue>>;

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum FileMap {
    File { file: String },
    Rules(Vec<String>),
}

fn text_of(key: &str, v: &OptValue) -> String {
    match v {
        OptValue::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
        OptValue::Int(i) => i.to_string(),
        OptValue::Str(s) => s.clone(),
        // Headers are separated by CRLF in SEMS's append_headers; every other list by commas.
        OptValue::List(items) if key.contains("append_headers") => items.join("\\r\\n"),
        OptValue::List(items) => items.join(","),
    }
}

/// The YAML sections that make the snapshot.
pub(crate) struct Sections {
    pub(crate) sems_config: Option<Spanned<String>>,
    pub(crate) chain: Option<Spanned<Chain>>,
    pub(crate) profile_defaults: FileProfile,
    pub(crate) profiles: BTreeMap<String, FileProfile>,
    pub(crate) maps: BTreeMap<String, Spanned<FileMap>>,
}

/// `profile_defaults`: options of every profile that does not set them itself (checked as
/// a profile would be, so a bad one is named even without profiles).
fn defaults_of(file: &str, opts: &FileProfile) -> Result<(Vec<RawOption>, Vec<String>), ConfigError> {
    let options: Vec<RawOption> = opts
        .iter()
        .map(|(key, v)| RawOption {
            key: key.clone(),
            value: text_of(key, &v.value),
            file: file.to_string(),
            line: Some(v.referenced.line()),
        })
        .collect();
    let checked = Profile::build("profile_defaults", file, None, options.clone())?;
    let warnings = checked.not_applied.iter().map(|w| format!("{file}: profile_defaults: {w}")).collect();
    Ok((options, warnings))
}

/// Builds the snapshot from the YAML sections.
pub(crate) fn build(
    file: &str,
    dir: &Path,
    interfaces: &[String],
    sections: Sections,
) -> Result<(Snapshot, Vec<String>), ConfigError> {
    let Sections { sems_config, chain, profile_defaults, profiles, maps } = sections;
    let (defaults, mut warnings) = defaults_of(file, &profile_defaults)?;
    let mut snap = match &sems_config {
        Some(p) => {
            let path = dir.join(&p.value);
            let import = sems::import(&path, interfaces, &defaults).map_err(|e| {
                if e.key == "-" {
                    ConfigError::new(file, Some(p.referenced.line()), "sems_config", e.to_string())
                } else {
                    e
                }
            })?;
            warnings.extend(import.warnings);
            import.snapshot
        }
        None => Snapshot { profile_defaults: defaults.into(), ..Snapshot::transparent(file, interfaces.to_vec()) },
    };
    snap.source = file.to_string();
    let implicit_transparent = sems_config.is_none();
    if implicit_transparent && !profiles.is_empty() {
        // The built-in `transparent` only stands in when nothing is configured.
        snap.profiles.clear();
        snap.profile_sources.clear();
    }
    for (name, m) in maps {
        let line = m.referenced.line();
        let map = match &m.value {
            FileMap::File { file: f } => {
                let p = dir.join(f);
                let map = sems::load_map_file(&name, &p)?;
                snap.map_files.insert(name.clone(), p);
                map
            }
            FileMap::Rules(rules) => RegexMap::from_rules(&name, rules.iter().map(String::as_str)).map_err(|e| {
                ConfigError::new(file, Some(line), &format!("regex_maps.{name}[{}]", e.line), e.message)
            })?,
        };
        snap.maps.insert(name, Arc::new(map));
    }
    for (name, opts) in profiles {
        let (profile, source) = build_profile(file, dir, &name, opts, &snap.profile_defaults, &mut warnings)?;
        snap.profiles.insert(name.clone(), Arc::new(profile));
        snap.profile_sources.insert(name, source);
    }
    match chain {
        Some(c) => {
            let text = match &c.value {
                Chain::One(s) => s.clone(),
                Chain::Many(v) => v.join(","),
            };
            snap.selection = Selection::parse(&text).map_err(|(item, e)| {
                ConfigError::new(file, Some(c.referenced.line()), "active_profile", format!("'{item}': {e}"))
            })?;
        }
        None if sems_config.is_none() && !snap.profiles.contains_key("transparent") => {
            return Err(ConfigError::new(file, None, "active_profile", "is required when profiles are configured"));
        }
        None => {}
    }
    snap.validate()?;
    Ok((snap, warnings))
}

fn build_profile(
    file: &str,
    dir: &Path,
    name: &str,
    opts: FileProfile,
    defaults: &Arc<[RawOption]>,
    warnings: &mut Vec<String>,
) -> Result<(Profile, ProfileSource), ConfigError> {
    let mut options: Vec<RawOption> = Vec::new();
    let mut source = ProfileSource::Inline;
    let mut profile_file = file.to_string();
    let mut md5 = None;
    if let Some(f) = opts.get("sems_file") {
        let OptValue::Str(p) = &f.value else {
            return Err(ConfigError::new(
                file,
                Some(f.referenced.line()),
                &format!("profiles.{name}.sems_file"),
                "is a path",
            ));
        };
        let path = dir.join(p);
        let conf = crate::conf::ConfFile::load(&path).map_err(|e| {
            if e.key == "-" {
                ConfigError::new(file, Some(f.referenced.line()), &format!("profiles.{name}.sems_file"), e.to_string())
            } else {
                e
            }
        })?;
        warnings.extend(conf.warnings.iter().cloned());
        options.extend(conf.entries.iter().map(|e| RawOption {
            key: e.key.clone(),
            value: e.value.clone(),
            file: e.file.clone(),
            line: Some(e.line),
        }));
        profile_file = conf.path.clone();
        md5 = Some(conf.md5.clone());
        source = ProfileSource::SemsFile(SemsProfileFile::beside(path, defaults.clone()));
    }
    for (key, v) in &opts {
        if key == "sems_file" {
            continue;
        }
        // Inline keys override the same key from the SEMS file.
        options.retain(|o| &o.key != key);
        options.push(RawOption {
            key: key.clone(),
            value: text_of(key, &v.value),
            file: file.to_string(),
            line: Some(v.referenced.line()),
        });
    }
    if source != ProfileSource::Inline && opts.len() > 1 {
        // Edited inline: a reload must go through the whole configuration.
        source = ProfileSource::Inline;
    }
    let profile = Profile::build(name, &profile_file, md5, sems::with_defaults(defaults, options))?;
    warnings.extend(profile.not_applied.iter().map(|w| format!("{file}: profile '{name}': {w}")));
    Ok((profile, source))
}
