//! The management plane's view of the SBC: `sbc-core`'s implementation of the admin API's
//! [`Control`] trait, the configuration reload shared by SIGHUP and the API, and `/metrics`.

mod calls;
mod https;
mod peers;
mod prepaid;
pub use calls::CallViews;
pub use https::serve_api;
pub use peers::PeerAnswers;
mod metrics;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use admin_api::*;
use callcontrol::Registry;
use profiles::config::sems;
use profiles::regex_map::RegexMap;
use profiles::store::{ProfileSource, SemsProfileFile};
use profiles::Store;

use crate::b2bua::{Counter, Transport};
use crate::config::Config;
use crate::driver::Runtime;

// The management plane dates what it reports; the engines never read a clock.
#[allow(clippy::disallowed_methods)]
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Reload outcomes, for metrics.
#[derive(Debug)]
pub struct ReloadStats {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub last_ok_unix: AtomicU64,
    /// When the whole configuration was last reloaded (SIGHUP or API): every profile dates
    /// at least from then.
    pub all_loaded_unix: AtomicU64,
    pub started_unix: u64,
}

impl Default for ReloadStats {
    fn default() -> Self {
        let now = unix_now();
        Self {
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_ok_unix: AtomicU64::new(now),
            all_loaded_unix: AtomicU64::new(now),
            started_unix: now,
        }
    }
}

impl ReloadStats {
    /// Counts a reload of the whole configuration.
    pub fn record_reload_all<T, E>(&self, r: &Result<T, E>) {
        self.record(r);
        if r.is_ok() {
            self.all_loaded_unix.store(unix_now(), Relaxed);
        }
    }

    /// Counts one change attempt.
    pub fn record<T, E>(&self, r: &Result<T, E>) {
        if r.is_ok() {
            self.ok.fetch_add(1, Relaxed);
            self.last_ok_unix.store(unix_now(), Relaxed);
        } else {
            self.failed.fetch_add(1, Relaxed);
        }
    }
}

/// Reloads profiles, maps and the chain from the configuration file (SIGHUP and
/// `POST /profiles/reload`). A file that does not load or validate leaves the running
/// snapshot in place. Interfaces and media settings apply only after a restart.
pub fn reload_config(
    path: &std::path::Path,
    running: &Config,
    store: &Store,
    registry: &Registry,
) -> Result<u64, String> {
    let fresh = Config::load(path).map_err(|e| e.to_string())?;
    for w in &fresh.warnings {
        tracing::warn!("{w}");
    }
    if fresh.interface_names() != running.interface_names()
        || fresh
            .interfaces
            .iter()
            .map(|i| (&i.listen, &i.media))
            .ne(running.interfaces.iter().map(|i| (&i.listen, &i.media)))
        || fresh.media != running.media
        || fresh.admin.token != running.admin.token
    {
        tracing::warn!("reload: interfaces, media or admin settings changed in the file; they apply after a restart");
    }
    // Profiles are checked against the interfaces that are running, not the file's new ones.
    let mut snapshot = fresh.profiles;
    snapshot.interfaces = running.interface_names();
    registry.check(&snapshot).map_err(|e| e.to_string())?;
    store.replace(snapshot).map_err(|e| e.to_string())
}

/// The SBC as the admin API sees it.
pub struct AdminControl {
    store: Arc<Store>,
    registry: Arc<Registry>,
    runtime: Arc<Runtime>,
    config: Arc<Config>,
    config_path: Option<PathBuf>,
    reloads: Arc<ReloadStats>,
    /// When each profile was (re)loaded; profiles not in here date from start.
    loaded_at: Mutex<HashMap<String, u64>>,
    metrics: metrics::Metrics,
    /// Wall clock and monotonic clock read together, to date calls.
    /// This node's calls as the API shows them.
    calls: Arc<CallViews>,
}

impl AdminControl {
    pub fn new(
        store: Arc<Store>,
        registry: Arc<Registry>,
        runtime: Arc<Runtime>,
        config: Arc<Config>,
        config_path: Option<PathBuf>,
        reloads: Arc<ReloadStats>,
    ) -> Self {
        let metrics = metrics::Metrics::new(runtime.clone(), reloads.clone());
        Self {
            store,
            registry,
            calls: Arc::new(CallViews::new(runtime.clone())),
            runtime,
            config,
            config_path,
            reloads,
            loaded_at: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// For an id `<node>:<shard>-<handle>` of another node (cluster mode): the cluster and the
    /// id's two parts. `None`: a call of this node (this node's own prefix is accepted).
    fn remote_call<'a>(&self, id: &'a str) -> Option<(&Arc<cluster::Cluster>, (&'a str, &'a str))> {
        let c = self.runtime.cluster()?;
        let (node, rest) = id.split_once(':')?;
        (node != c.settings().node_id).then_some((c, (node, rest)))
    }

    /// A call id of this node without its node prefix (`<node_id>:`, as other nodes list it).
    fn local_id<'a>(&self, id: &'a str) -> &'a str {
        let me = self.runtime.cluster().map(|c| format!("{}:", c.settings().node_id));
        me.and_then(|p| id.strip_prefix(p.as_str())).unwrap_or(id)
    }

    fn profile_info(&self, name: &str) -> Option<ProfileInfo> {
        let snap = self.store.load();
        let p = snap.profiles.get(name)?;
        let all = self.reloads.all_loaded_unix.load(Relaxed);
        let loaded_at = self.loaded_at.lock().ok().and_then(|m| m.get(name).copied()).map_or(all, |t| t.max(all));
        Some(ProfileInfo {
            name: p.name.clone(),
            file: p.file.clone(),
            md5: p.md5.clone(),
            loaded_at,
            not_applied: p.not_applied.clone(),
        })
    }

    fn mark_loaded(&self, name: &str) {
        if let Ok(mut m) = self.loaded_at.lock() {
            m.insert(name.to_string(), unix_now());
        }
    }

    /// Adds or replaces a profile, checked like the configuration (interfaces, maps, and its
    /// call-control chain) in the same step as it is published: on any error the running
    /// profile stays.
    fn publish_profile(&self, profile: profiles::Profile, source: ProfileSource) -> Result<u64, ApiError> {
        self.store
            .update(|s| {
                s.profile_sources.insert(profile.name.clone(), source);
                s.profiles.insert(profile.name.clone(), Arc::new(profile));
                self.registry.check(s)
            })
            .map_err(bad)
    }

    /// Counts a profile change and answers with the profile as it runs now.
    fn published(&self, name: &str, result: Result<u64, ApiError>, what: &str) -> Result<ProfileInfo, ApiError> {
        self.reloads.record(&result);
        result?;
        self.mark_loaded(name);
        tracing::info!(profile = name, "profile {what} through the API");
        self.profile_info(name).ok_or_else(|| ApiError::internal("profile vanished"))
    }
}

/// The other nodes' calls, their ids prefixed with their node; 503 naming the nodes that did
/// not answer (never a partial list).
async fn others_calls(c: &cluster::Cluster) -> Result<Vec<CallInfo>, ApiError> {
    let others = c
        .call_registry()
        .calls_of_others()
        .await
        .map_err(|e| ApiError::unavailable(format!("{e} (GET /calls?scope=node lists this node's calls alone)")))?;
    let mut all = Vec::new();
    for (node, list) in others {
        let calls: Vec<CallInfo> = serde_json::from_value(list)
            .map_err(|e| ApiError::internal(format!("cluster node {node} answered a list that does not parse: {e}")))?;
        all.extend(calls.into_iter().map(|mut call| {
            call.id = format!("{node}:{}", call.id);
            call.node = Some(node.clone());
            call
        }));
    }
    Ok(all)
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(e.to_string())
}

impl Control for AdminControl {
    fn profiles(&self) -> Vec<ProfileInfo> {
        self.store.load().profiles.keys().filter_map(|n| self.profile_info(n)).collect()
    }

    fn load_profile(&self, name: &str, file: &str) -> Result<ProfileInfo, ApiError> {
        if name.is_empty() || name == "reload" || name.contains(['/', ',', '$']) {
            return Err(ApiError::bad_request(format!("'{name}' is not a profile name")));
        }
        let path = PathBuf::from(file);
        // Only profile files: the API must not become a way to read other files sbcd can see.
        if !path.is_absolute() || path.extension().is_none_or(|e| e != "conf") {
            return Err(ApiError::bad_request("file must be an absolute path to a *.sbcprofile.conf file"));
        }
        let snap = self.store.load();
        let mut source = SemsProfileFile::beside(path, snap.profile_defaults.clone());
        if let Some(dir) = &snap.sems_dir {
            // As SEMS: includes come from its module folder, wherever the profile is.
            source.includes = dir.clone();
        }
        let result = sems::load_profile_file(name, &source).map_err(bad).and_then(|(profile, warnings)| {
            for w in warnings {
                tracing::warn!("{w}");
            }
            if let Some(w) = profile.credentials_go_nowhere().filter(|_| self.config.next_hop.is_none()) {
                tracing::warn!(profile = name, "{w}");
            }
            self.publish_profile(profile, ProfileSource::SemsFile(source))
        });
        self.published(name, result, "loaded")
    }

    fn reload_profile(&self, name: &str) -> Result<ProfileInfo, ApiError> {
        let snap = self.store.load();
        if !snap.profiles.contains_key(name) {
            return Err(ApiError::not_found(format!("no profile named '{name}'")));
        }
        let result = match snap.profile_sources.get(name).cloned() {
            Some(source @ ProfileSource::SemsFile(..)) => {
                sems::reload(name, &source).map_err(bad).and_then(|p| self.publish_profile(p, source))
            }
            _ => Err(ApiError::bad_request(format!(
                "profile '{name}' is defined inline in the configuration: reload the configuration instead"
            ))),
        };
        self.published(name, result, "reloaded")
    }

    fn reload_all(&self) -> Result<Changed, ApiError> {
        let Some(path) = self.config_path.as_deref() else {
            return Err(ApiError::conflict("sbcd runs on its embedded default configuration: nothing to reload"));
        };
        let result = reload_config(path, &self.config, &self.store, &self.registry);
        self.reloads.record_reload_all(&result);
        let generation = result.map_err(ApiError::bad_request)?;
        tracing::info!(generation, "configuration reloaded through the API");
        Ok(Changed { generation })
    }

    fn active_profile(&self) -> ActiveProfile {
        ActiveProfile { chain: self.store.load().selection.render() }
    }

    fn set_active_profile(&self, chain: &str) -> Result<Changed, ApiError> {
        let result = self.store.set_active_profile(chain).map_err(bad);
        self.reloads.record(&result);
        let generation = result?;
        tracing::info!(chain, generation, "active profile set through the API");
        Ok(Changed { generation })
    }

    fn regex_maps(&self) -> Vec<RegexMapInfo> {
        let snap = self.store.load();
        snap.maps
            .iter()
            .map(|(name, m)| RegexMapInfo {
                name: name.clone(),
                rules: m.rules().map(|(r, v)| MapRule { regex: r.into(), value: v.into() }).collect(),
                file: snap.map_files.get(name).map(|p| p.display().to_string()),
            })
            .collect()
    }

    fn set_regex_map(&self, name: &str, body: MapBody) -> Result<RegexMapInfo, ApiError> {
        let map = match (body.text, body.rules) {
            (Some(text), None) => RegexMap::parse(name, &text)
                .map_err(|e| ApiError::bad_request(format!("line {}: {}", e.line, e.message)))?,
            (None, Some(rules)) => {
                let lines: Vec<String> = rules.iter().map(|r| format!("{}=>{}", r.regex, r.value)).collect();
                RegexMap::from_rules(name, lines.iter().map(String::as_str))
                    .map_err(|e| ApiError::bad_request(format!("rule {}: {}", e.line, e.message)))?
            }
            _ => return Err(ApiError::bad_request("give either `text` (SEMS map format) or `rules`")),
        };
        let result = self.store.set_regex_map(map, None).map_err(bad);
        self.reloads.record(&result);
        result?;
        tracing::info!(map = name, "regex map set through the API");
        self.regex_maps().into_iter().find(|m| m.name == name).ok_or_else(|| ApiError::internal("map vanished"))
    }

    async fn calls(&self, this_node_only: bool) -> Result<Vec<CallInfo>, ApiError> {
        let mut all = self.calls.list().await?;
        let Some(c) = self.runtime.cluster() else { return Ok(all) };
        let me = &c.settings().node_id;
        all.iter_mut().for_each(|call| call.node = Some(me.clone()));
        if !this_node_only {
            all.extend(others_calls(c).await?);
        }
        Ok(all)
    }

    #[allow(clippy::disallowed_methods)] // remaining times are reported against the wall clock
    fn registrations(&self) -> Vec<RegistrationInfo> {
        let now = Instant::now();
        let mut all: Vec<RegistrationInfo> = self
            .runtime
            .registrations()
            .all()
            .into_iter()
            .map(|b| RegistrationInfo {
                expires_in: b.ua_expires.saturating_duration_since(now).as_secs(),
                registrar_expires_in: b.registrar_expires.saturating_duration_since(now).as_secs(),
                source: b.source.to_string(),
                origin: b.origin.as_str().into(),
                aor: b.aor,
                alias: b.alias,
                contact: b.contact,
                transport: b.transport,
                interface: b.interface,
                user_agent: b.user_agent,
            })
            .collect();
        all.sort_by(|a, b| (&a.aor, &a.alias).cmp(&(&b.aor, &b.alias)));
        all
    }

    async fn call(&self, id: &str) -> Result<CallInfo, ApiError> {
        match self.remote_call(id) {
            None => self.calls.get(self.local_id(id)).await,
            Some((c, (_, rest))) => {
                calls::parse_call_id(rest)?;
                others_calls(c)
                    .await?
                    .into_iter()
                    .find(|call| call.id == id)
                    .ok_or_else(|| ApiError::not_found(format!("no call {id}")))
            }
        }
    }

    async fn trace(&self, id: &str) -> Result<CallTrace, ApiError> {
        match self.remote_call(id) {
            None => self.calls.trace(self.local_id(id)).await,
            Some((_, (node, _))) => {
                Err(ApiError::not_found(format!("call {id} is on node {node}: ask that node's API for its trace")))
            }
        }
    }

    async fn prepaid(&self, op: PrepaidOp) -> Result<Vec<Balance>, ApiError> {
        prepaid::run(self.runtime.cluster(), self.config.call_control.prepaid_db.clone(), op).await
    }

    async fn teardown(&self, id: &str) -> Result<(), ApiError> {
        match self.remote_call(id) {
            None => self.calls.teardown(self.local_id(id)).await,
            Some((c, (node, rest))) => {
                calls::parse_call_id(rest)?;
                match c.call_registry().teardown_on(node, rest).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(ApiError::not_found(format!("no call {id}"))),
                    Err(e) => Err(ApiError::unavailable(e.to_string())),
                }
            }
        }
    }

    fn call_control(&self) -> CallControlInfo {
        let snap = self.store.load();
        let mut instances = Vec::new();
        for p in snap.profiles.values() {
            for i in &p.call_control {
                let module = i.module.literal().unwrap_or_else(|| "(pattern)".into());
                instances.push(CcInstanceInfo { profile: p.name.clone(), name: i.name.clone(), module });
            }
        }
        CallControlInfo { modules: self.registry.names().into_iter().map(String::from).collect(), instances }
    }

    fn load_call_control_modules(&self, modules: &[String]) -> Result<CallControlInfo, ApiError> {
        // Modules are compiled in: "loading" one checks that it exists, as SEMS's load fails
        // for a module it cannot find.
        let known = self.registry.names();
        if let Some(m) = modules.iter().find(|m| !known.contains(&m.as_str())) {
            return Err(ApiError::not_found(format!("no call-control module '{m}' (built in: {})", known.join(", "))));
        }
        Ok(self.call_control())
    }

    fn explain(&self, req: &ExplainRequest) -> Result<ExplainResult, ApiError> {
        let source: SocketAddr = req
            .source
            .as_deref()
            .unwrap_or("127.0.0.1:5060")
            .parse()
            .map_err(|_| ApiError::bad_request("source must be ip:port"))?;
        let transport = match req.transport.as_deref().unwrap_or("udp") {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            t => return Err(ApiError::bad_request(format!("unknown transport '{t}'"))),
        };
        let mut cfg = (*self.config).clone();
        cfg.profiles = (*self.store.load()).clone();
        crate::explain::explain(&cfg, req.request.as_bytes(), source, transport)
            .map(|text| ExplainResult { text })
            .map_err(bad)
    }

    fn health(&self) -> Health {
        let status = if self.runtime.is_draining() { "draining" } else { "ready" };
        let cluster = self.runtime.cluster().map(|c| {
            let v = c.view();
            let lease = match (v.lease_held, v.node_id_clash) {
                (true, _) => "held",
                (false, true) => "clash",
                (false, false) => "none",
            };
            ClusterHealth {
                node_id: v.node_id,
                redis: if v.redis_up { "up" } else { "down" }.into(),
                lease: lease.into(),
                live_nodes: v.live_nodes,
                peers: v.peers,
                unexpected_nodes: v.unexpected_nodes,
                errors: v.errors,
                timeouts: v.timeouts,
                last_error: v.last_error,
            }
        });
        let now = unix_now() as i64;
        let tls = self
            .runtime
            .tls_expiry()
            .into_iter()
            .map(|(interface, not_after)| TlsHealth { interface, not_after, expires_in_s: not_after - now })
            .collect();
        Health { status: status.into(), calls: self.runtime.active_calls(), cluster, tls, next_hops: self.next_hops() }
    }

    fn next_hops(&self) -> Vec<NextHopInfo> {
        #[allow(clippy::disallowed_methods)] // the API reads the clock for seconds left
        let now = Instant::now();
        self.runtime
            .health()
            .view(now)
            .into_iter()
            .map(|v| NextHopInfo {
                transport: v.key.transport.to_string(),
                address: v.key.addr.to_string(),
                name: v.name,
                state: v.state.into(),
                blacklisted_for_s: v.blacklisted_for_s,
                probes_answered: v.probes_answered,
                probes_unanswered: v.probes_unanswered,
                last_probe_s: v.last_probe_s,
                since_s: v.since_s,
            })
            .collect()
    }

    fn stats(&self) -> serde_json::Value {
        let s = self.runtime.stats();
        let m = self.runtime.media_stats();
        let l = self.runtime.labelled();
        let mut stats = serde_json::json!({
            "calls_active": s.calls,
            "transactions_active": s.transactions,
            "registrations": self.runtime.registrations().len(),
            "admission_refused": self.runtime.admission_stats().refused,
            "admission_ignored": self.runtime.admission_stats().dropped,
            "parse_errors": self.runtime.counters().parse_errors.load(Relaxed),
            "drops_by_reason": l.drops,
            "media": {
                "packets": m.packets, "forwarded": m.forwarded, "bytes": m.bytes, "latches": m.latches,
                "streams": m.streams, "ports_in_use": s.media_ports,
            },
            "callcontrol_refusals": self.runtime.cc_refusals(),
            "callcontrol_tasks": self.runtime.cc_tasks(),
            "config_generation": self.store.load().generation,
            "reloads_ok": self.reloads.ok.load(Relaxed),
            "reloads_failed": self.reloads.failed.load(Relaxed),
        });
        for def in &Counter::DEFS {
            // A dotted key names a field of an object (`media.x`).
            let mut at = &mut stats;
            let mut path = def.key.split('.').peekable();
            while let Some(part) = path.next() {
                let Some(map) = at.as_object_mut() else { break };
                if path.peek().is_none() {
                    map.insert(part.into(), s.get(def.counter).into());
                    break;
                }
                at = map.entry(part).or_insert_with(|| serde_json::json!({}));
            }
        }
        stats
    }

    fn metrics(&self) -> String {
        self.metrics.render()
    }

    fn reload_tls(&self) -> Result<TlsReloaded, ApiError> {
        self.runtime.reload_tls().map(|interfaces| TlsReloaded { interfaces }).map_err(ApiError::bad_request)
    }

    fn cluster_node(&self) -> Option<String> {
        self.runtime.cluster().map(|c| c.settings().node_id.clone())
    }

    fn spread(&self, change: &ConfigChange) -> impl std::future::Future<Output = Option<Spread>> + Send {
        let cluster = self.runtime.cluster().cloned();
        let change = serde_json::to_value(change).map_err(|e| e.to_string());
        async move {
            let c = cluster?;
            let asked = match change {
                Ok(v) => c.call_registry().apply_on_others(v).await.map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            let failed =
                asked.unwrap_or_else(|e| vec![("cluster".into(), format!("not sent to the other nodes: {e}"))]);
            for (node, why) in &failed {
                tracing::warn!(%node, "cluster: a configuration change made through the API did not apply there: {why}");
            }
            Some(Spread { failed })
        }
    }
}
