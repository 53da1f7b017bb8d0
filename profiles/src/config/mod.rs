//! The daemon's configuration: parsed in stages (YAML text → `File*` structs with unknown keys
//! refused → validated [`Config`]), every error naming the file, the line and the key.
//! Interfaces, routing, SIP timers, limits and shutdown are the daemon's; profiles, regex maps
//! and the `active_profile` chain become the reloadable [`Snapshot`]. A SEMS `sbc.conf` is read
//! by [`sems`] (directly as `--config`, or named from the YAML).

mod admission;
mod call_control;
mod capture;
mod cluster;
mod limits;
pub mod migrate;
mod profiles_yaml;
mod routing;
pub mod sems;
mod tls;
mod transport;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

pub use crate::error::ConfigError;
use crate::store::Snapshot;
pub use admission::{AdmissionSettings, Cidr};
use call_control::FileCallControl;
pub use call_control::{CallControlSettings, SemsCdrLine};
pub use capture::{CaptureSettings, HepSettings, HepTarget};
pub use cluster::{redacted as redacted_redis_url, ClusterSettings, RedisAddr};
pub use routing::HealthSettings;
pub use tls::{TlsPeer, TlsSettings, TlsVersion, VerifyClient};
pub use transport::Transport;

/// The configuration used when `sbcd` runs without `--config`.
pub const DEFAULT_CONFIG: &str = include_str!("default.yaml");

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    interfaces: Vec<FileInterface>,
    #[serde(default)]
    routing: routing::FileRouting,
    #[serde(default)]
    sip: FileSip,
    #[serde(default)]
    limits: limits::FileLimits,
    #[serde(default)]
    shutdown: FileShutdown,
    #[serde(default)]
    call_control: FileCallControl,
    #[serde(default)]
    media: FileMediaSettings,
    #[serde(default)]
    admin: FileAdmin,
    #[serde(default)]
    registrations: FileRegistrations,
    #[serde(default)]
    dns: FileDns,
    #[serde(default)]
    cluster: Option<Spanned<cluster::FileCluster>>,
    #[serde(default)]
    capture: Option<Spanned<capture::FileCapture>>,
    /// A SEMS `sbc.conf` whose profiles, maps and chain are loaded (YAML ones are added).
    #[serde(default)]
    sems_config: Option<Spanned<String>>,
    /// Options of every profile that does not set them itself.
    #[serde(default)]
    profile_defaults: profiles_yaml::FileProfile,
    #[serde(default)]
    active_profile: Option<Spanned<profiles_yaml::Chain>>,
    #[serde(default)]
    profiles: std::collections::BTreeMap<String, profiles_yaml::FileProfile>,
    #[serde(default)]
    regex_maps: std::collections::BTreeMap<String, Spanned<profiles_yaml::FileMap>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileInterface {
    name: Spanned<String>,
    listen: Vec<Spanned<String>>,
    #[serde(default)]
    advertise: Option<String>,
    #[serde(default)]
    media: Option<Spanned<FileMedia>>,
    #[serde(default)]
    tls: Option<Spanned<tls::FileTls>>,
}

/// `interfaces[].media`: where this interface's RTP is anchored.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileMedia {
    address: Option<String>,
    advertise: Option<String>,
    ports: Option<String>,
}

/// `admin:`: the REST API and /metrics.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileAdmin {
    listen: String,
    token: Option<String>,
    token_file: Option<String>,
    tls: Option<tls::FileTls>,
}

impl Default for FileAdmin {
    fn default() -> Self {
        Self { listen: "127.0.0.1:8090".into(), token: None, token_file: None, tls: None }
    }
}

/// `registrations:`: the registration cache.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct FileRegistrations {
    /// SQLite file, `off`, or unset (`$STATE_DIRECTORY/registrations.sqlite` under systemd).
    store: Option<String>,
    /// Most bindings the cache holds; a REGISTER needing a new one beyond it gets 503.
    max_bindings: Option<usize>,
}

/// `dns:`: how host names are resolved.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct FileDns {
    /// Name servers (`IP` or `IP:PORT`); empty: the system's (`/etc/resolv.conf`).
    servers: Vec<String>,
}

/// `media:`: relay-wide settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileMediaSettings {
    timeout_s: u64,
    hold_timeout_s: u64,
    latch_window_ms: u64,
    workers: usize,
    max_streams: usize,
    max_packet_rate: u32,
    deny: Vec<String>,
}

impl Default for FileMediaSettings {
    fn default() -> Self {
        Self {
            timeout_s: 60,
            hold_timeout_s: 3600,
            latch_window_ms: 2000,
            workers: 0,
            max_streams: 4,
            // Twenty times a 20 ms audio stream, room for HD video.
            max_packet_rate: 1000,
            deny: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileSip {
    t1_ms: u64,
    t2_ms: u64,
    t4_ms: u64,
    timer_c_s: u64,
}

impl Default for FileSip {
    fn default() -> Self {
        Self { t1_ms: 500, t2_ms: 4000, t4_ms: 5000, timer_c_s: 181 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileShutdown {
    drain_timeout_s: u64,
}

impl Default for FileShutdown {
    fn default() -> Self {
        Self { drain_timeout_s: 30 }
    }
}

/// One `transport:ip:port` listen address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl ListenAddr {
    /// Parses `udp:127.0.0.1:5060`, `tcp:[::1]:5060`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (t, rest) = s.split_once(':').ok_or_else(|| format!("'{s}' is not transport:ip:port"))?;
        let transport =
            Transport::from_name(t.as_bytes()).ok_or_else(|| format!("unknown transport '{t}' (udp, tcp or tls)"))?;
        let addr = rest.parse().map_err(|_| format!("'{rest}' is not ip:port (IPv6 as [::1]:5060)"))?;
        Ok(Self { transport, addr })
    }
}

#[derive(Debug, Clone)]
pub struct InterfaceConfig {
    pub name: String,
    pub listen: Vec<ListenAddr>,
    pub advertise: Option<String>,
    pub media: MediaConfig,
    /// Its certificate, for `tls:` listen addresses and TLS connections it opens.
    pub tls: Option<TlsSettings>,
}

/// RTP ports of an interface (`interfaces[].media`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaConfig {
    /// Bind address; `None` = the IP of the interface's first listen address.
    pub address: Option<IpAddr>,
    /// Written into SDP instead (1:1 NAT); `None` = the bind address.
    pub advertise: Option<IpAddr>,
    pub port_min: u16,
    pub port_max: u16,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self { address: None, advertise: None, port_min: 10000, port_max: 29999 }
    }
}

impl InterfaceConfig {
    /// The address RTP binds to: `media.address`, else the first listen address's IP.
    pub fn media_bind(&self) -> Option<IpAddr> {
        self.media.address.or_else(|| self.listen.first().map(|l| l.addr.ip()))
    }
}

/// The management API (`admin:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// `None`: no API (`listen: off`).
    pub listen: Option<SocketAddr>,
    /// Bearer token every route but /health and /metrics requires.
    pub token: Option<String>,
    /// HTTPS with this certificate (and clients' certificates checked if it says so).
    pub tls: Option<TlsSettings>,
}

impl AdminSettings {
    /// Parses an `--admin-listen` / `admin.listen` value: `ip:port` or `off`.
    pub fn parse_listen(v: &str) -> Result<Option<SocketAddr>, String> {
        match v.trim() {
            "off" | "none" | "" => Ok(None),
            a => a.parse().map(Some).map_err(|_| format!("'{a}' is not ip:port (or off)")),
        }
    }
}

/// Relay-wide media settings (`media:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSettings {
    /// No RTP either way for this long ends an answered call (0 = never).
    pub timeout: Duration,
    /// The same while every stream is on hold (0 = never).
    pub hold_timeout: Duration,
    pub latch_window: Duration,
    /// Forwarder threads (0 = one per core).
    pub workers: usize,
    /// m-lines relayed per call; further ones are rejected (port 0).
    pub max_streams: usize,
    /// Packets a second one side of a stream may send (RTP and RTCP each; 0 = no limit).
    pub max_packet_rate: u32,
    /// Media destinations an SDP may not name (besides the SBC's own sockets, multicast,
    /// link-local and unspecified addresses, which are always refused).
    pub deny: Vec<Cidr>,
}

/// Where the registration cache is kept across restarts (`registrations.store`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RegistrationStore {
    /// Not set: the service's state directory if it has one (`$STATE_DIRECTORY`), else none.
    #[default]
    Auto,
    Off,
    File(PathBuf),
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: String,
    /// Name servers for host names (`dns.servers`); empty: the system's.
    pub dns_servers: Vec<SocketAddr>,
    pub interfaces: Vec<InterfaceConfig>,
    pub outbound_interface: usize,
    pub next_hop: Option<(Transport, SocketAddr)>,
    /// Next hops' probes and blacklist (`routing.health`).
    pub health: HealthSettings,
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
    pub timer_c: Duration,
    pub max_calls: usize,
    pub max_call_duration: Duration,
    pub tcp_max_connections: usize,
    /// Connections one address may open (trusted sources excepted).
    pub tcp_max_connections_per_source: usize,
    pub tcp_idle_timeout: Duration,
    /// A message must be complete this long after its first byte.
    pub tcp_message_timeout: Duration,
    /// A connection a peer opened must bring its first message within this.
    pub tcp_first_message_timeout: Duration,
    /// A TLS handshake a peer began must end within this (then the first message's clock
    /// starts).
    pub tls_handshake_timeout: Duration,
    /// TLS handshakes one untrusted source (IPv6: /64) may begin a second; 0 = no limit.
    pub tls_handshakes_per_source: u32,
    /// TLS handshakes in progress over all sources.
    pub tls_max_handshakes: usize,
    /// Connections the SBC opens, counted apart from those peers open.
    pub tcp_max_outbound_connections: usize,
    /// Bytes of partial messages held over all connections.
    pub tcp_max_buffered: usize,
    /// Bytes each shard's finished transactions may keep to answer retransmissions.
    pub retransmission_cache: usize,
    pub queue_depth: usize,
    pub drain_timeout: Duration,
    pub call_control: CallControlSettings,
    pub media: MediaSettings,
    pub admin: AdminSettings,
    pub registration_store: RegistrationStore,
    pub max_registrations: usize,
    pub admission: AdmissionSettings,
    /// The cluster this node belongs to (`None`: it keeps its state to itself).
    pub cluster: Option<ClusterSettings>,
    /// Copies of SIP messages: to Homer, and into per-call traces.
    pub capture: CaptureSettings,
    /// Profiles, maps and the selection chain: what reloads replace.
    pub profiles: Snapshot,
    /// Worth logging at load, not fatal (duplicate keys, options this version does not apply).
    pub warnings: Vec<String>,
}

impl Config {
    /// Loads and validates a YAML file, a SEMS `sems.conf` (with everything it names:
    /// [`migrate`]) or a SEMS `sbc.conf` (another file ending in `.conf`).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        if migrate::is_sems_core(path) {
            return Self::from_migration(&migrate::translate(path)?);
        }
        if path.extension().is_some_and(|e| e == "conf") {
            let mut cfg = Self::embedded()?;
            cfg.source = file.clone();
            let import = sems::import(path, &cfg.interface_names(), &[])?;
            cfg.profiles = import.snapshot;
            cfg.warnings = import.warnings;
            cfg.warnings.extend(cfg.credential_warnings());
            return Ok(cfg);
        }
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::file(&file, format!("cannot read: {e}")))?;
        Self::from_yaml_at(&text, &file, path.parent().unwrap_or(Path::new(".")))
    }

    /// The configuration a SEMS installation migrates to; its errors name the SEMS line.
    pub fn from_migration(m: &migrate::Migration) -> Result<Self, ConfigError> {
        let mut cfg = Self::from_yaml_at(&m.yaml, &m.yaml_name(), Path::new("/")).map_err(|e| m.locate(e))?;
        cfg.source = m.source.display().to_string();
        let mut warnings = m.notes.clone();
        warnings.append(&mut cfg.warnings);
        cfg.warnings = warnings;
        Ok(cfg)
    }

    /// Interface names profiles may refer to.
    pub fn interface_names(&self) -> Vec<String> {
        self.interfaces.iter().map(|i| i.name.clone()).collect()
    }

    /// The embedded default configuration.
    pub fn embedded() -> Result<Self, ConfigError> {
        Self::from_yaml(DEFAULT_CONFIG, "<embedded default>")
    }

    /// Parses YAML text; relative paths in it are taken from the current folder.
    pub fn from_yaml(text: &str, file: &str) -> Result<Self, ConfigError> {
        Self::from_yaml_at(text, file, Path::new("."))
    }

    /// Parses YAML text; relative paths in it (SEMS files, map files) are taken from `dir`.
    pub fn from_yaml_at(text: &str, file: &str, dir: &Path) -> Result<Self, ConfigError> {
        let mut parsed: FileConfig = if text.trim().is_empty() {
            FileConfig::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| yaml_error(file, &e.to_string()))?
        };
        let sections = profiles_yaml::Sections {
            sems_config: parsed.sems_config.take(),
            chain: parsed.active_profile.take(),
            profile_defaults: std::mem::take(&mut parsed.profile_defaults),
            profiles: std::mem::take(&mut parsed.profiles),
            maps: std::mem::take(&mut parsed.regex_maps),
        };
        let mut cfg = validate(parsed, file, dir)?;
        let names = cfg.interface_names();
        let (snapshot, warnings) = profiles_yaml::build(file, dir, &names, sections)?;
        cfg.profiles = snapshot;
        cfg.warnings = warnings;
        cfg.warnings.extend(cfg.credential_warnings());
        Ok(cfg)
    }

    /// Profiles whose `enable_auth` answers no challenge here (see
    /// [`crate::Profile::credentials_go_nowhere`]); none when a global next hop is set.
    pub fn credential_warnings(&self) -> Vec<String> {
        if self.next_hop.is_some() {
            return Vec::new();
        }
        let snap = &self.profiles;
        let why = snap.profiles.iter().filter_map(|(name, p)| Some((name, p, p.credentials_go_nowhere()?)));
        why.map(|(name, p, w)| format!("{}: profile '{name}': {w}", p.file)).collect()
    }

    /// Replaces the listen addresses (`--listen`): they go to the first interface.
    pub fn override_listen(&mut self, listen: Vec<ListenAddr>) {
        if listen.is_empty() {
            return;
        }
        match self.interfaces.first_mut() {
            Some(i) => i.listen = listen,
            None => self.interfaces.push(InterfaceConfig {
                name: "default".into(),
                listen,
                advertise: None,
                media: MediaConfig::default(),
                tls: None,
            }),
        }
    }

    /// The certificate given on the command line (`--tls-cert`, `--tls-key`): the first
    /// interface's, in place of its `tls:` certificate (its other TLS settings kept).
    pub fn override_tls(&mut self, cert_file: PathBuf, key_file: PathBuf) {
        if let Some(i) = self.interfaces.first_mut() {
            i.tls = Some(match i.tls.take() {
                Some(t) => TlsSettings { cert_file, key_file, ..t },
                None => TlsSettings::from_files(cert_file, key_file),
            });
        }
    }

    /// An interface that listens on TLS without a certificate (checked once the command
    /// line's `--listen`, `--tls-cert` and `--tls-key` apply): its index and name.
    pub fn tls_without_certificate(&self) -> Option<(usize, &str)> {
        self.interfaces
            .iter()
            .enumerate()
            .find(|(_, i)| i.tls.is_none() && i.listen.iter().any(|l| l.transport == Transport::Tls))
            .map(|(n, i)| (n, i.name.as_str()))
    }
}

/// serde-saphyr errors carry "line N column M"; lift the line out so every error has one shape.
pub(crate) fn yaml_error(file: &str, text: &str) -> ConfigError {
    let line = text
        .split("line ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok());
    let key = text.split('`').nth(1).map_or_else(|| "-".to_string(), str::to_string);
    let first = text.lines().next().unwrap_or(text).to_string();
    ConfigError::new(file, line, &key, first)
}

fn validate(f: FileConfig, file: &str, dir: &Path) -> Result<Config, ConfigError> {
    let err = |line: Option<u64>, key: &str, message: String| ConfigError::new(file, line, key, message);
    let mut interfaces = Vec::new();
    for (i, fi) in f.interfaces.iter().enumerate() {
        let name = fi.name.value.trim().to_string();
        if name.is_empty() {
            return Err(err(
                Some(fi.name.referenced.line()),
                &format!("interfaces[{i}].name"),
                "must not be empty".into(),
            ));
        }
        if interfaces.iter().any(|x: &InterfaceConfig| x.name == name) {
            return Err(err(
                Some(fi.name.referenced.line()),
                &format!("interfaces[{i}].name"),
                format!("duplicate interface '{name}'"),
            ));
        }
        let mut listen = Vec::new();
        for l in &fi.listen {
            let a = ListenAddr::parse(l.value.trim())
                .map_err(|m| err(Some(l.referenced.line()), &format!("interfaces[{i}].listen"), m))?;
            listen.push(a);
        }
        let media = match &fi.media {
            None => MediaConfig::default(),
            Some(m) => media_config(&m.value)
                .map_err(|msg| err(Some(m.referenced.line()), &format!("interfaces[{i}].media"), msg))?,
        };
        let tls = match &fi.tls {
            None => None,
            Some(t) => Some(
                TlsSettings::from_file(&t.value, dir)
                    .map_err(|(key, msg)| err(Some(t.referenced.line()), &format!("interfaces[{i}].tls.{key}"), msg))?,
            ),
        };
        interfaces.push(InterfaceConfig { name, listen, advertise: fi.advertise.clone(), media, tls });
    }
    let outbound_interface = match &f.routing.outbound_interface {
        None => 0,
        Some(s) => interfaces.iter().position(|i| i.name == s.value).ok_or_else(|| {
            err(Some(s.referenced.line()), "routing.outbound_interface", format!("no interface named '{}'", s.value))
        })?,
    };
    let next_hop = match &f.routing.next_hop {
        None => None,
        Some(s) => {
            let a =
                ListenAddr::parse(s.value.trim()).map_err(|m| err(Some(s.referenced.line()), "routing.next_hop", m))?;
            Some((a.transport, a.addr))
        }
    };
    let health = HealthSettings::from_file(&f.routing.health).map_err(|(k, m)| err(None, &k, m))?;
    let sip = &f.sip;
    if sip.t1_ms == 0 || sip.t2_ms < sip.t1_ms || sip.t4_ms == 0 {
        return Err(err(None, "sip", "need t1_ms > 0, t2_ms >= t1_ms and t4_ms > 0".into()));
    }
    if sip.timer_c_s < 181 {
        return Err(err(None, "sip.timer_c_s", "must be more than 180 s (RFC 3261 §16.6)".into()));
    }
    let cc = &f.call_control;
    for (key, code) in [
        ("call_control.failure_code", cc.failure_code),
        ("call_control.cc_pcalls.refuse_code", cc.cc_pcalls.refuse_code),
        ("call_control.cc_prepaid.refuse_code", cc.cc_prepaid.refuse_code),
    ] {
        if !(300..=699).contains(&code) {
            return Err(err(None, key, format!("{code} is not a 3xx-6xx reply code")));
        }
    }
    let (cdr_sems_line, cdr_syslog_severity) = cc.cc_syslog_cdr.syslog_line().map_err(|(k, m)| err(None, &k, m))?;
    if cc.hook_timeout_ms == 0 {
        return Err(err(None, "call_control.hook_timeout_ms", "must be at least 1".into()));
    }
    if f.media.timeout_s > 0 && f.media.timeout_s < 5 {
        return Err(err(None, "media.timeout_s", "must be 0 (off) or at least 5 s".into()));
    }
    let admission = AdmissionSettings::from_file(&f.limits.admission).map_err(|(k, m)| err(None, &k, m))?;
    let cluster = match &f.cluster {
        None => None,
        Some(c) => Some(ClusterSettings::from_file(&c.value).map_err(|(k, m)| err(Some(c.referenced.line()), &k, m))?),
    };
    let names: Vec<String> = interfaces.iter().map(|i| i.name.clone()).collect();
    let capture = match &f.capture {
        None => CaptureSettings::default(),
        Some(c) => {
            CaptureSettings::from_file(&c.value, &names).map_err(|(k, m)| err(Some(c.referenced.line()), &k, m))?
        }
    };
    let dns_servers = f
        .dns
        .servers
        .iter()
        .map(|v| {
            v.parse::<SocketAddr>()
                .or_else(|_| v.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| err(None, "dns.servers", format!("'{v}' is not IP or IP:PORT")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let media_deny = f
        .media
        .deny
        .iter()
        .map(|c| Cidr::parse(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| err(None, "media.deny", m))?;
    if f.media.max_streams == 0 {
        return Err(err(None, "media.max_streams", "must be at least 1".into()));
    }
    let admin_listen = AdminSettings::parse_listen(&f.admin.listen).map_err(|m| err(None, "admin.listen", m))?;
    let admin_token = match (&f.admin.token, &f.admin.token_file) {
        (Some(_), Some(_)) => return Err(err(None, "admin.token_file", "give token or token_file, not both".into())),
        (Some(t), None) => Some(t.trim().to_string()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| err(None, "admin.token_file", format!("cannot read {path}: {e}")))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    if admin_token.as_deref() == Some("") {
        return Err(err(None, "admin.token", "is empty".into()));
    }
    let admin_tls = match &f.admin.tls {
        None => None,
        Some(t) => {
            let s = TlsSettings::from_file(t, dir).map_err(|(key, msg)| err(None, &format!("admin.tls.{key}"), msg))?;
            if !s.peers.is_empty() {
                return Err(err(
                    None,
                    "admin.tls.peers",
                    "has no meaning for the admin API (it opens no connection)".into(),
                ));
            }
            Some(s)
        }
    };
    for (key, v) in [
        ("limits.tcp_message_timeout_s", f.limits.tcp_message_timeout_s),
        ("limits.tcp_first_message_timeout_s", f.limits.tcp_first_message_timeout_s),
        ("limits.tcp_idle_timeout_s", f.limits.tcp_idle_timeout_s),
        ("limits.tls_handshake_timeout_s", f.limits.tls_handshake_timeout_s),
        ("limits.tls_max_handshakes", f.limits.tls_max_handshakes as u64),
    ] {
        if v == 0 {
            return Err(err(None, key, "must be at least 1".into()));
        }
    }
    if f.limits.tcp_max_buffered_kib < 2048 {
        return Err(err(
            None,
            "limits.tcp_max_buffered_kib",
            "must be at least 2048 (the largest message fits)".into(),
        ));
    }
    if f.limits.queue_depth == 0 {
        return Err(err(None, "limits.queue_depth", "must be at least 1".into()));
    }
    Ok(Config {
        source: file.into(),
        dns_servers,
        interfaces,
        outbound_interface,
        next_hop,
        health,
        t1: Duration::from_millis(sip.t1_ms),
        t2: Duration::from_millis(sip.t2_ms),
        t4: Duration::from_millis(sip.t4_ms),
        timer_c: Duration::from_secs(sip.timer_c_s),
        max_calls: f.limits.max_calls,
        max_call_duration: Duration::from_secs(f.limits.max_call_duration_s),
        tcp_max_connections: f.limits.tcp_max_connections,
        tcp_max_connections_per_source: f.limits.tcp_max_connections_per_source,
        tcp_idle_timeout: Duration::from_secs(f.limits.tcp_idle_timeout_s),
        tcp_message_timeout: Duration::from_secs(f.limits.tcp_message_timeout_s),
        tcp_first_message_timeout: Duration::from_secs(f.limits.tcp_first_message_timeout_s),
        tls_handshake_timeout: Duration::from_secs(f.limits.tls_handshake_timeout_s),
        tls_handshakes_per_source: f.limits.tls_handshakes_per_source,
        tls_max_handshakes: f.limits.tls_max_handshakes,
        tcp_max_outbound_connections: f.limits.tcp_max_outbound_connections,
        tcp_max_buffered: f.limits.tcp_max_buffered_kib.saturating_mul(1024),
        retransmission_cache: f.limits.retransmission_cache_kib.saturating_mul(1024),
        queue_depth: f.limits.queue_depth,
        drain_timeout: Duration::from_secs(f.shutdown.drain_timeout_s),
        call_control: CallControlSettings {
            hook_timeout: Duration::from_millis(cc.hook_timeout_ms),
            failure_code: cc.failure_code,
            failure_reason: cc.failure_reason.clone(),
            pcalls_refuse_code: cc.cc_pcalls.refuse_code,
            pcalls_refuse_reason: cc.cc_pcalls.refuse_reason.clone(),
            call_timer_default_s: cc.cc_call_timer.default_timer_s,
            cdr_csv_file: cc.cc_syslog_cdr.csv_file.as_ref().map(Into::into),
            cdr_json_file: cc.cc_syslog_cdr.json_file.as_ref().map(Into::into),
            cdr_syslog: cc.cc_syslog_cdr.syslog,
            cdr_prefix: cc.cc_syslog_cdr.prefix.clone(),
            cdr_fsync: cc.cc_syslog_cdr.fsync,
            cdr_sems_line,
            cdr_syslog_severity,
            cdr_syslog_socket: cc.cc_syslog_cdr.syslog_socket.clone().into(),
            prepaid_db: cc.cc_prepaid.db.as_ref().map(Into::into),
            prepaid_refuse_code: cc.cc_prepaid.refuse_code,
            prepaid_refuse_reason: cc.cc_prepaid.refuse_reason.clone(),
        },
        media: MediaSettings {
            timeout: Duration::from_secs(f.media.timeout_s),
            hold_timeout: Duration::from_secs(f.media.hold_timeout_s),
            latch_window: Duration::from_millis(f.media.latch_window_ms),
            workers: f.media.workers,
            max_streams: f.media.max_streams,
            max_packet_rate: f.media.max_packet_rate,
            deny: media_deny,
        },
        admin: AdminSettings { listen: admin_listen, token: admin_token, tls: admin_tls },
        max_registrations: f.registrations.max_bindings.unwrap_or(1_000_000),
        admission,
        cluster,
        capture,
        registration_store: match f.registrations.store.as_deref().map(str::trim) {
            None | Some("") => RegistrationStore::Auto,
            Some("off") => RegistrationStore::Off,
            Some(p) => RegistrationStore::File(p.into()),
        },
        profiles: Snapshot::transparent(file, Vec::new()),
        warnings: Vec::new(),
    })
}

fn media_config(m: &FileMedia) -> Result<MediaConfig, String> {
    let ip = |what: &str, v: &Option<String>| -> Result<Option<IpAddr>, String> {
        v.as_deref()
            .map(|s| s.trim().parse::<IpAddr>().map_err(|_| format!("{what} '{s}' is not an IP address")))
            .transpose()
    };
    let mut c = MediaConfig {
        address: ip("address", &m.address)?,
        advertise: ip("advertise", &m.advertise)?,
        ..MediaConfig::default()
    };
    if c.address.is_some_and(|a| a.is_unspecified()) {
        return Err("address must be a concrete IP (the relay sends from it; SDP names it or `advertise`)".into());
    }
    if let Some(r) = &m.ports {
        let (lo, hi) = r.split_once('-').ok_or_else(|| format!("ports '{r}' is not low-high"))?;
        let num = |s: &str| s.trim().parse::<u16>().map_err(|_| format!("ports '{r}': '{s}' is not a port"));
        (c.port_min, c.port_max) = (num(lo)?, num(hi)?);
        if c.port_min < 1024 || c.port_max <= c.port_min {
            return Err(format!("ports '{r}' must be an increasing range above 1023"));
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded().unwrap();
        assert_eq!(c.interfaces[0].listen.len(), 2);
        assert_eq!(c.interfaces[0].listen[0].addr, "127.0.0.1:5060".parse().unwrap());
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = Config::from_yaml("sip:\n  t1_ms: 500\n  t9_ms: 3\n", "x.yaml").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.to_string().contains("t9_ms"), "{e}");
        assert!(e.to_string().starts_with("x.yaml:3:"), "{e}");
    }

    #[test]
    fn bad_listen_names_line() {
        let e = Config::from_yaml(
            "interfaces:\n  - name: a\n    listen:\n      - udp:127.0.0.1:5060\n      - sctp:1.2.3.4:5\n",
            "y.yaml",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        assert_eq!(e.key, "interfaces[0].listen");
    }

    #[test]
    fn ipv6_listen_and_next_hop() {
        let c = Config::from_yaml(
            "interfaces:\n  - name: ext\n    listen: ['udp:[::1]:5070']\nrouting:\n  next_hop: tcp:127.0.0.1:5080\n",
            "z.yaml",
        )
        .unwrap();
        assert!(c.interfaces[0].listen[0].addr.is_ipv6());
        assert_eq!(c.next_hop.unwrap().0, Transport::Tcp);
    }

    #[test]
    fn media_section_and_its_errors() {
        let c = Config::from_yaml(
            "interfaces:\n  - name: ext\n    listen: ['udp:127.0.0.1:5070']\n    media: {address: 127.0.0.2, advertise: 192.0.2.1, ports: 20000-20999}\nmedia:\n  timeout_s: 30\n",
            "m.yaml",
        )
        .unwrap();
        let m = &c.interfaces[0].media;
        assert_eq!((m.port_min, m.port_max), (20000, 20999));
        assert_eq!(c.interfaces[0].media_bind(), Some("127.0.0.2".parse().unwrap()));
        assert_eq!(c.media.timeout, Duration::from_secs(30));
        let e = Config::from_yaml(
            "interfaces:\n  - name: ext\n    listen: ['udp:127.0.0.1:5070']\n    media:\n      ports: 20000-10\n",
            "m.yaml",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        assert_eq!(e.key, "interfaces[0].media");
    }
}
