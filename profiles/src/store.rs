//! The profile snapshot and its store. A snapshot (profiles, maps, selection chain) is built
//! and validated whole, then published with one atomic swap; a call pins the profile it was
//! started with, so reloads only affect new calls. A change that does not validate leaves the
//! published snapshot as it was and says why.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::error::ConfigError;
use crate::pattern::Env;
use crate::profile::Profile;
use crate::regex_map::{RegexMap, RegexMaps};
use crate::selection::{Selected, Selection};

/// Where a profile came from, so it can be read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileSource {
    /// A SEMS `*.sbcprofile.conf` file.
    SemsFile(SemsProfileFile),
    /// Inline in the YAML configuration (reloaded with the whole configuration).
    Inline,
}

/// A SEMS profile file and what it is read with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemsProfileFile {
    pub path: PathBuf,
    /// The folder its `@file` includes are read from (`conf.rs`).
    pub includes: PathBuf,
    /// The options that stand before its own (`sbc.conf`'s session-timer defaults, the
    /// YAML's `profile_defaults`; the file's own values win).
    pub defaults: Arc<[crate::profile::RawOption]>,
}

impl SemsProfileFile {
    /// A file whose includes are read from its own folder.
    pub fn beside(path: PathBuf, defaults: Arc<[crate::profile::RawOption]>) -> Self {
        let includes = path.parent().unwrap_or(std::path::Path::new(".")).to_path_buf();
        Self { path, includes, defaults }
    }
}

/// Everything the B2BUA needs to choose and apply profiles, immutable once published.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Counts publications (1 = the configuration sbcd started with).
    pub generation: u64,
    /// The configuration file it came from.
    pub source: String,
    pub profiles: BTreeMap<String, Arc<Profile>>,
    pub profile_sources: BTreeMap<String, ProfileSource>,
    pub selection: Selection,
    pub maps: RegexMaps,
    /// Where each map came from (a file to re-read, or inline rules).
    pub map_files: BTreeMap<String, PathBuf>,
    /// Interface names profiles may name in `outbound_interface` (plus `default`).
    pub interfaces: Vec<String>,
    /// Options standing before every profile's own (`sems::with_defaults`), also for one
    /// loaded later through the API.
    pub profile_defaults: Arc<[crate::profile::RawOption]>,
    /// SEMS's module configuration folder (`sbc.conf`'s) when the profiles came from there:
    /// a profile loaded later through the API takes its includes from there too.
    pub sems_dir: Option<PathBuf>,
}

/// Why no profile could be chosen: the request gets a 500.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("active_profile chose '{name}', which is not a loaded profile")]
pub struct NoProfile {
    pub name: String,
    pub rule: Option<usize>,
}

impl Snapshot {
    /// Whether handling a request may read the registration cache (the selection chain or a
    /// profile does): otherwise a new request needs no registrations looked up.
    pub fn uses_registrations(&self) -> bool {
        self.selection.uses_registrations() || self.profiles.values().any(|p| p.uses_registrations())
    }

    /// An empty snapshot whose chain picks `transparent`, an empty profile.
    pub fn transparent(source: &str, interfaces: Vec<String>) -> Self {
        let mut profiles = BTreeMap::new();
        profiles.insert(
            "transparent".to_string(),
            Arc::new(Profile { name: "transparent".into(), file: source.into(), ..Profile::default() }),
        );
        let mut profile_sources = BTreeMap::new();
        profile_sources.insert("transparent".to_string(), ProfileSource::Inline);
        Self {
            generation: 1,
            source: source.into(),
            profiles,
            profile_sources,
            selection: Selection::parse("transparent").unwrap_or(Selection { rules: Vec::new() }),
            maps: RegexMaps::new(),
            map_files: BTreeMap::new(),
            interfaces,
            profile_defaults: Arc::new([]),
            sems_dir: None,
        }
    }

    /// Checks what spans profiles: static chain names, maps referenced, interface names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.selection.rules.is_empty() {
            return Err(ConfigError::new(&self.source, None, "active_profile", "is empty"));
        }
        for name in self.selection.static_names() {
            if !self.profiles.contains_key(&name) {
                return Err(ConfigError::new(
                    &self.source,
                    None,
                    "active_profile",
                    format!(
                        "names '{name}', which is not a loaded profile (loaded: {})",
                        self.profile_names().join(", ")
                    ),
                ));
            }
        }
        for p in self.profiles.values() {
            for (key, map) in p.map_names() {
                if !self.maps.contains_key(map) {
                    let line = p.option(key).and_then(|o| o.line);
                    return Err(ConfigError::new(
                        &p.file,
                        line,
                        key,
                        format!("uses regex map '{map}', which is not loaded"),
                    ));
                }
            }
            for key in
                ["outbound_interface", "aleg_outbound_interface", "rtprelay_interface", "aleg_rtprelay_interface"]
            {
                let lit = match key {
                    "outbound_interface" => p.outbound_interface.as_ref().and_then(|x| x.literal()),
                    "aleg_outbound_interface" => p.aleg_outbound_interface.as_ref().and_then(|x| x.literal()),
                    "rtprelay_interface" => p.rtprelay.interface.clone(),
                    _ => p.rtprelay.aleg_interface.clone(),
                };
                if let Some(name) = lit {
                    if name != "default" && !self.interfaces.contains(&name) {
                        let line = p.option(key).and_then(|o| o.line);
                        return Err(ConfigError::new(
                            &p.file,
                            line,
                            key,
                            format!("no interface named '{name}' (have: default, {})", self.interfaces.join(", ")),
                        ));
                    }
                }
            }
        }
        for r in &self.selection.rules {
            if let crate::selection::Rule::Pattern(p) = r {
                for map in p.map_names() {
                    if !self.maps.contains_key(map) {
                        return Err(ConfigError::new(
                            &self.source,
                            None,
                            "active_profile",
                            format!("uses regex map '{map}', which is not loaded"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    pub fn profile_names(&self) -> Vec<String> {
        self.profiles.keys().cloned().collect()
    }

    /// Runs the selection chain for a request.
    pub fn select(&self, env: &Env<'_>) -> Result<(Arc<Profile>, Selected), NoProfile> {
        let selected = self.selection.select(env);
        match self.profiles.get(&selected.name) {
            Some(p) => Ok((p.clone(), selected)),
            None => Err(NoProfile { name: selected.name, rule: selected.rule }),
        }
    }

    /// First `next_hop` entry of a profile, as written (for `$di`/`$dp`).
    pub fn literal_next_hop(p: &Profile) -> Option<&str> {
        p.next_hop.as_ref().map(|n| n.source())
    }
}

/// Reads a profile again from its source (the loader the configuration layer provides).
pub type ProfileLoader = dyn Fn(&str, &ProfileSource) -> Result<Profile, ConfigError> + Send + Sync;

/// The published snapshot and the operations that replace it.
pub struct Store {
    current: ArcSwap<Snapshot>,
    /// Serialises writers: read, modify, validate, publish.
    write: Mutex<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("generation", &self.current.load().generation).finish()
    }
}

impl Store {
    pub fn new(snapshot: Snapshot) -> Self {
        Self { current: ArcSwap::from_pointee(snapshot), write: Mutex::new(()) }
    }

    /// The snapshot a new call pins (keep the `Arc` for the call's life).
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Applies `change` to a copy of the current snapshot; publishes it only if it validates.
    pub fn update(&self, change: impl FnOnce(&mut Snapshot) -> Result<(), ConfigError>) -> Result<u64, ConfigError> {
        let _guard = self.write.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = Snapshot::clone(&self.current.load());
        change(&mut next)?;
        next.validate()?;
        next.generation += 1;
        let generation = next.generation;
        self.current.store(Arc::new(next));
        Ok(generation)
    }

    /// Replaces everything (SIGHUP, "reload all") with a freshly loaded snapshot.
    pub fn replace(&self, fresh: Snapshot) -> Result<u64, ConfigError> {
        self.update(|s| {
            let generation = s.generation;
            *s = fresh;
            s.generation = generation;
            Ok(())
        })
    }

    /// Sets the `active_profile` chain.
    pub fn set_active_profile(&self, chain: &str) -> Result<u64, ConfigError> {
        self.update(|s| {
            s.selection = Selection::parse(chain)
                .map_err(|(item, e)| ConfigError::new(&s.source, None, "active_profile", format!("'{item}': {e}")))?;
            Ok(())
        })
    }

    /// Adds or replaces a profile.
    pub fn put_profile(&self, profile: Profile, source: ProfileSource) -> Result<u64, ConfigError> {
        self.update(|s| {
            s.profile_sources.insert(profile.name.clone(), source);
            s.profiles.insert(profile.name.clone(), Arc::new(profile));
            Ok(())
        })
    }

    /// Reads a profile again from where it came from.
    pub fn reload_profile(&self, name: &str, loader: &ProfileLoader) -> Result<u64, ConfigError> {
        self.update(|s| {
            let source = s
                .profile_sources
                .get(name)
                .cloned()
                .ok_or_else(|| ConfigError::new(&s.source, None, name, "no such profile"))?;
            if source == ProfileSource::Inline {
                return Err(ConfigError::new(
                    &s.source,
                    None,
                    name,
                    "is defined inline in the configuration: reload the configuration instead",
                ));
            }
            let p = loader(name, &source)?;
            s.profiles.insert(name.to_string(), Arc::new(p));
            Ok(())
        })
    }

    /// Replaces (or adds) a regex map.
    pub fn set_regex_map(&self, map: RegexMap, file: Option<PathBuf>) -> Result<u64, ConfigError> {
        self.update(|s| {
            match file {
                Some(f) => s.map_files.insert(map.name.clone(), f),
                None => s.map_files.remove(&map.name),
            };
            s.maps.insert(map.name.clone(), Arc::new(map));
            Ok(())
        })
    }
}
