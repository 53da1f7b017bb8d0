//! `sbcd`: the SBC daemon. Reads the config (or runs on the embedded default), binds the
//! listen sockets, runs one engine shard per core, and on SIGTERM/SIGINT stops taking new
//! calls and waits (bounded) for calls and transactions to finish.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use callcontrol::Registry;
use clap::{Parser, ValueEnum};
use profiles::{Snapshot, Store};
use sbc_core::admin::{reload_config, AdminControl, PeerAnswers, ReloadStats};
use sbc_core::b2bua::Counter;
use sbc_core::config::{Config, ListenAddr};
use sbc_core::driver::{join_cluster, Runtime};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Session Border Controller daemon.
#[derive(Debug, Parser)]
#[command(name = "sbcd", version, about = "sbcd: the Session Border Controller daemon")]
struct Cli {
    /// Configuration file: YAML, or a SEMS `sbc.conf`. Without it, the embedded default is used.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Listen address, repeatable: udp:IP:PORT, tcp:IP:PORT or tls:IP:PORT (IPv6 as
    /// udp:[::1]:5060). Replaces the listen addresses of the first configured interface.
    #[arg(long, value_name = "TRANSPORT:IP:PORT", value_parser = parse_listen)]
    listen: Vec<ListenAddr>,
    /// TLS certificate chain (PEM) of the first interface, in place of its `tls.cert_file`.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) of the first interface, in place of its `tls.key_file`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Where the admin API and /metrics listen (IP:PORT, or `off`); overrides `admin.listen`.
    #[arg(long, value_name = "IP:PORT|off")]
    admin_listen: Option<String>,
    /// Validate the configuration and exit (non-zero with file, line and key on error).
    #[arg(long)]
    check_config: bool,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log filter (tracing syntax, e.g. `info` or `sbc_core=debug`); RUST_LOG overrides it.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Engine shards (default: one per CPU core).
    #[arg(long)]
    shards: Option<usize>,
    /// Worker threads of the runtime (default: one per CPU core).
    #[arg(long)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Show what the SBC would do with a request (profile chosen, options expanded, the exact
    /// message it would send or the reply it would give). Nothing is sent.
    Explain {
        /// A SIP request as text (LF or CRLF line ends; Content-Length is recomputed).
        request: PathBuf,
        /// Where the request comes from.
        #[arg(long, default_value = "192.0.2.10:5060")]
        source: std::net::SocketAddr,
        /// Transport it arrives on (udp or tcp).
        #[arg(long, default_value = "udp", value_parser = parse_transport)]
        transport: sbc_core::b2bua::Transport,
    },
    /// Write the YAML configuration of a SEMS installation: its sems.conf, the sbc.conf and
    /// module configurations it names, with a comment on each key changed or not applied.
    Migrate {
        /// SEMS's sems.conf, or the folder that holds it.
        sems: PathBuf,
        /// Where to write the YAML (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Read or set cc_prepaid balances (seconds), also while sbcd runs.
    Prepaid {
        /// The balance database (call_control.cc_prepaid.db of the configuration).
        #[arg(long, required_unless_present = "redis", conflicts_with = "redis")]
        db: Option<PathBuf>,
        /// The cluster's Redis (cluster.redis_url), for a cluster's balances.
        #[arg(long)]
        redis: Option<String>,
        /// The cluster's key prefix (cluster.key_prefix).
        #[arg(long, default_value = "sbc", requires = "redis")]
        key_prefix: String,
        #[command(subcommand)]
        action: PrepaidAction,
    },
}

#[derive(Debug, clap::Subcommand)]
enum PrepaidAction {
    /// Print an account's balance.
    Get { account: String },
    /// Set an account's balance (creates the account).
    Set { account: String, seconds: i64 },
    /// Add to an account's balance, creating it at 0 first (SEMS's addCredit).
    Add { account: String, seconds: u32 },
    /// Take from an existing account's balance (SEMS's subtractCredit).
    Subtract { account: String, seconds: u32 },
    /// Print every account and its balance.
    List,
}

/// The balances of a cluster, in its Redis.
fn prepaid_in_redis(url: &str, prefix: &str, action: &PrepaidAction) -> anyhow::Result<()> {
    use cluster::balances;
    let shown = sbc_core::config::redacted_redis_url(url);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let conn = cluster::Connection::new(url, Duration::from_secs(5)).with_context(|| shown.clone())?;
    rt.block_on(async {
        match action {
            PrepaidAction::Get { account } => match balances::balance(&conn, prefix, account).await? {
                Some(s) => println!("{account} {s}"),
                None => anyhow::bail!("no account '{account}'"),
            },
            PrepaidAction::Set { account, seconds } => {
                balances::set_balance(&conn, prefix, account, *seconds).await?;
                println!("{account} {seconds}");
            }
            PrepaidAction::Add { account, seconds } => {
                let now = balances::add_credit(&conn, prefix, account, i64::from(*seconds)).await?;
                println!("{account} {now}");
            }
            PrepaidAction::Subtract { account, seconds } => {
                match balances::subtract_credit(&conn, prefix, account, i64::from(*seconds)).await? {
                    Some(now) => println!("{account} {now}"),
                    None => anyhow::bail!("no account '{account}'"),
                }
            }
            PrepaidAction::List => {
                for (a, s) in balances::balances(&conn, prefix).await? {
                    println!("{a} {s}");
                }
            }
        }
        Ok(())
    })
    .with_context(|| shown)
}

fn prepaid(db: &std::path::Path, action: &PrepaidAction) -> anyhow::Result<()> {
    use callcontrol::modules::prepaid;
    let c = prepaid::open_db(db).with_context(|| db.display().to_string())?;
    match action {
        PrepaidAction::Get { account } => match prepaid::balance(&c, account)? {
            Some(s) => println!("{account} {s}"),
            None => anyhow::bail!("no account '{account}'"),
        },
        PrepaidAction::Set { account, seconds } => {
            prepaid::set_balance(&c, account, *seconds)?;
            println!("{account} {seconds}");
        }
        PrepaidAction::Add { account, seconds } => {
            println!("{account} {}", prepaid::add_credit(&c, account, i64::from(*seconds))?);
        }
        PrepaidAction::Subtract { account, seconds } => {
            match prepaid::subtract_credit(&c, account, i64::from(*seconds))? {
                Some(now) => println!("{account} {now}"),
                None => anyhow::bail!("no account '{account}'"),
            }
        }
        PrepaidAction::List => {
            for (a, s) in prepaid::balances(&c)? {
                println!("{a} {s}");
            }
        }
    }
    Ok(())
}

/// `sbcd migrate`: the YAML is written only once it loads as it is.
fn migrate(sems: &std::path::Path, output: Option<&std::path::Path>) -> anyhow::Result<()> {
    let m = sbc_core::config::migrate::translate(sems)?;
    let cfg = Config::from_migration(&m)?;
    callcontrol::modules::dry_run(&callcontrol::modules::ModuleSettings::of(&cfg)).check(&cfg.profiles)?;
    match output {
        Some(path) => std::fs::write(path, &m.yaml).with_context(|| path.display().to_string())?,
        None => print!("{}", m.yaml),
    }
    eprintln!(
        "sbcd: {} migrated; {} setting(s) changed or not applied, listed at the end of the YAML",
        m.source.display(),
        cfg.warnings.len()
    );
    Ok(())
}

fn parse_transport(s: &str) -> Result<sbc_core::b2bua::Transport, String> {
    sbc_core::b2bua::Transport::from_name(s.as_bytes()).ok_or_else(|| format!("'{s}' is not udp, tcp or tls"))
}

fn parse_listen(s: &str) -> Result<ListenAddr, String> {
    ListenAddr::parse(s)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    sbc_core::crash::abort_on_unsupervised_panic();
    if let Some(Command::Prepaid { db, redis, key_prefix, action }) = &cli.command {
        let done = match (db, redis) {
            (_, Some(url)) => prepaid_in_redis(url, key_prefix, action),
            (Some(db), None) => prepaid(db, action),
            (None, None) => Err(anyhow::anyhow!("--db or --redis is needed")),
        };
        return match done {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sbcd: {e:#}");
                std::process::ExitCode::from(2)
            }
        };
    }
    if let Some(Command::Migrate { sems, output }) = &cli.command {
        return match migrate(sems, output.as_deref()) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sbcd: {e:#}");
                std::process::ExitCode::from(2)
            }
        };
    }
    let cfg = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sbcd: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Some(Command::Explain { request, source, transport }) = &cli.command {
        let raw = match std::fs::read(request) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("sbcd: {}: {e}", request.display());
                return std::process::ExitCode::from(2);
            }
        };
        return match sbc_core::explain::explain(&cfg, &raw, *source, *transport) {
            Ok(text) => {
                print!("{text}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sbcd: {}: {e}", request.display());
                std::process::ExitCode::from(2)
            }
        };
    }
    if cli.check_config {
        for w in &cfg.warnings {
            println!("warning: {w}");
        }
        println!("{}: configuration OK", cfg.source);
        return std::process::ExitCode::SUCCESS;
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.worker_threads(cli.threads.unwrap_or(cores).max(1)).enable_all();
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sbcd: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cfg, cli.config.clone(), cli.shards.unwrap_or(cores))) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("sbcd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config, sbc_core::config::ConfigError> {
    let mut cfg = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded()?,
    };
    // Profiles may only name modules this sbcd has, with their mandatory values (checked
    // without opening what the modules write to: a check must not disturb a running sbcd).
    callcontrol::modules::dry_run(&callcontrol::modules::ModuleSettings::of(&cfg)).check(&cfg.profiles)?;
    cfg.override_listen(cli.listen.clone());
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        cfg.override_tls(cert.clone(), key.clone());
    }
    check_tls(&cfg)?;
    if let Some(a) = &cli.admin_listen {
        cfg.admin.listen = sbc_core::config::AdminSettings::parse_listen(a)
            .map_err(|m| sbc_core::config::ConfigError::new("--admin-listen", None, "admin-listen", m))?;
    }
    // The API can tear down calls and change routing: off loopback it must be protected.
    if cfg.admin.listen.is_some_and(|a| !a.ip().is_loopback()) && cfg.admin.token.is_none() {
        return Err(sbc_core::config::ConfigError::new(
            &cfg.source,
            None,
            "admin.token",
            "the admin API listens on a non-loopback address: set admin.token or admin.token_file",
        ));
    }
    Ok(cfg)
}

/// Every TLS listen address has its interface's certificate, and every certificate, key and
/// CA file loads (at start and with `--check-config`).
fn check_tls(cfg: &Config) -> Result<(), sbc_core::config::ConfigError> {
    if let Some((i, name)) = cfg.tls_without_certificate() {
        let m = format!(
            "interface {name} listens on tls: without a certificate (its tls section, or --tls-cert and --tls-key)"
        );
        return Err(sbc_core::config::ConfigError::new(&cfg.source, None, &format!("interfaces[{i}].tls"), m));
    }
    for (i, iface) in cfg.interfaces.iter().enumerate() {
        if let Some(t) = &iface.tls {
            sbc_core::driver::tls::check(t).map_err(|e| {
                sbc_core::config::ConfigError::new(&cfg.source, None, &format!("interfaces[{i}].tls"), e.to_string())
            })?;
        }
    }
    if let Some(t) = &cfg.admin.tls {
        sbc_core::driver::tls::check(t)
            .map_err(|e| sbc_core::config::ConfigError::new(&cfg.source, None, "admin.tls", e.to_string()))?;
    }
    Ok(())
}

fn init_logging(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log_level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

// The daemon's own bookkeeping (drain timing) reads the clock; the engines never do.
#[allow(clippy::disallowed_methods)]
async fn run(cfg: Config, config_path: Option<PathBuf>, shards: usize) -> anyhow::Result<()> {
    let mut signals = Signals::listen();
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    raise_fd_limit();
    let cluster = match &cfg.cluster {
        Some(settings) => Some(Arc::new(join_cluster(settings).await.context("joining the cluster")?)),
        None => None,
    };
    let registry = Arc::new(call_control_registry(&cfg, cluster.as_deref())?);
    let store = Arc::new(Store::new(cfg.profiles.clone()));
    log_profiles(&store.load());
    let runtime = Arc::new(
        Runtime::start(&cfg, store.clone(), registry.clone(), shards, cluster).await.context("starting transports")?,
    );
    let reloads = Arc::new(ReloadStats::default());
    let cfg = Arc::new(cfg);
    let control = Arc::new(AdminControl::new(
        store.clone(),
        registry.clone(),
        runtime.clone(),
        cfg.clone(),
        config_path.clone(),
        reloads.clone(),
    ));
    if let Some(c) = runtime.cluster() {
        // Other nodes ask this one about its calls (GET /calls, DELETE /calls/{id} anywhere)
        // and have it apply the configuration changes made through their API.
        let answers: Arc<dyn cluster::NodeCalls> = Arc::new(PeerAnswers(control.clone()));
        c.call_registry().serve(answers);
    }
    if let Some(addr) = cfg.admin.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot bind the admin API on {addr}"))?;
        let api = admin_api::ApiConfig { token: cfg.admin.token.clone() };
        let https = cfg.admin.tls.is_some();
        tracing::info!(%addr, token = cfg.admin.token.is_some(), https, "admin API listening");
        sbc_core::admin::serve_api(&runtime, listener, control, api)
            .await
            .with_context(|| format!("cannot serve the admin API on {addr}"))?;
    }
    tracing::info!(config = %cfg.source, shards, "sbcd started");

    while signals.next().await == Signal::Reload {
        match &config_path {
            Some(path) => {
                let result = reload_config(path, &cfg, &store, &registry);
                match &result {
                    Ok(generation) => {
                        tracing::info!(generation, "configuration reloaded");
                        log_profiles(&store.load());
                    }
                    Err(e) => tracing::error!(
                        generation = store.load().generation,
                        "reload failed, configuration unchanged: {e}"
                    ),
                }
                reloads.record_reload_all(&result);
            }
            None => tracing::warn!("SIGHUP: running on the embedded default configuration, nothing to reload"),
        }
        // The certificates too (each result is logged; a file that does not load leaves its
        // interface's running certificate), reading files off the async workers.
        let rt = runtime.clone();
        let _ = tokio::task::spawn_blocking(move || rt.reload_tls()).await;
    }
    tracing::info!(drain_timeout_s = cfg.drain_timeout.as_secs(), calls = runtime.active_calls(), "draining");
    runtime.drain().await;
    let started = Instant::now();
    let mut last_report = Instant::now();
    while !runtime.is_idle() {
        if started.elapsed() >= cfg.drain_timeout {
            tracing::warn!(calls = runtime.active_calls(), "drain timeout reached, exiting with calls up");
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            tracing::info!(calls = runtime.active_calls(), "draining");
            last_report = Instant::now();
        }
        tokio::select! {
            biased;
            // A second SIGTERM/SIGINT ends the drain (an operator who will not wait); a reload
            // would serve no new call, so SIGHUP is ignored.
            sig = signals.next() => match sig {
                Signal::Stop => {
                    tracing::warn!(calls = runtime.active_calls(), "second stop signal, exiting with calls up");
                    break;
                }
                Signal::Reload => tracing::info!("SIGHUP while draining: ignored"),
            },
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    runtime.flush(Duration::from_secs(1)).await;
    runtime.close_registrations();
    if let Some(c) = runtime.cluster() {
        c.leave().await;
    }
    let s = runtime.stats();
    let c = runtime.counters();
    let m = runtime.media_stats();
    tracing::info!(
        packets = m.packets,
        forwarded = m.forwarded,
        latches = m.latches,
        streams = m.streams,
        ports_in_use = s.media_ports,
        allocation_failures = s.get(Counter::MediaAllocationFailures),
        no_destination = m.dropped(rtp_relay::DropReason::NoDestination),
        foreign_source = m.dropped(rtp_relay::DropReason::ForeignSource),
        media_timeouts = s.get(Counter::MediaTimeouts),
        "media relay stopped"
    );
    tracing::info!(
        calls_started = s.get(Counter::CallsStarted),
        calls_answered = s.get(Counter::CallsAnswered),
        requests = s.get(Counter::Requests),
        responses = s.get(Counter::Responses),
        drops = s.get(Counter::Drops),
        parse_errors = c.parse_errors.load(std::sync::atomic::Ordering::Relaxed),
        queue_full_drops = c.queue_full_drops.load(std::sync::atomic::Ordering::Relaxed),
        "sbcd stopped"
    );
    Ok(())
}

/// The built-in call-control modules with the configured settings; in cluster mode
/// `cc_pcalls` and `cc_cps` count on the cluster, and `cc_prepaid` keeps its balances there.
fn call_control_registry(
    cfg: &Config,
    cluster: Option<&cluster::Cluster>,
) -> Result<Registry, sbc_core::config::ConfigError> {
    let mut settings = callcontrol::modules::ModuleSettings::of(cfg);
    if let Some(c) = cluster {
        let counts: Arc<dyn callcontrol::modules::CallCounts> = c.call_counts().clone();
        settings.pcalls_counts = Some(counts);
        let rates: Arc<dyn callcontrol::modules::CallRates> = c.call_rates().clone();
        settings.cps_rates = Some(rates);
        let balances: Arc<dyn callcontrol::modules::prepaid::BalanceStore> = c.balances().clone();
        settings.prepaid_balances = Some(balances);
        if let Some(db) = &cfg.call_control.prepaid_db {
            tracing::warn!(
                db = %db.display(),
                "call_control.cc_prepaid.db is not used in cluster mode: balances are in Redis \
                 (sbcd prepaid --redis URL ...)"
            );
        }
    }
    callcontrol::modules::builtin(&settings).map_err(|e| {
        let key = format!("call_control.{}", e.module);
        sbc_core::config::ConfigError::new(&cfg.source, None, &key, format!("cannot open: {}", e.source))
    })
}

fn log_profiles(snap: &Snapshot) {
    for (name, p) in &snap.profiles {
        tracing::info!(profile = %name, file = %p.file, md5 = p.md5.as_deref().unwrap_or("-"), "profile loaded");
    }
    tracing::info!(active_profile = %snap.selection.render(), generation = snap.generation, "profile selection");
}

#[derive(Debug, PartialEq, Eq)]
enum Signal {
    Stop,
    Reload,
}

/// The stop and reload signals, listened to from the start of `run` to the exit: a signal
/// arriving before the first wait or during a reload is kept for the next wait, not lost (and
/// never takes the default action of killing the process undrained).
struct Signals {
    #[cfg(unix)]
    streams: Option<[tokio::signal::unix::Signal; 3]>,
}

impl Signals {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let streams = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
            ) {
                (Ok(term), Ok(int), Ok(hup)) => Some([term, int, hup]),
                _ => {
                    tracing::warn!("cannot listen for SIGTERM/SIGHUP: Ctrl-C stops, nothing reloads");
                    None
                }
            };
            Self { streams }
        }
        #[cfg(not(unix))]
        Self {}
    }

    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        if let Some([term, int, hup]) = &mut self.streams {
            return tokio::select! {
                biased;
                _ = term.recv() => Signal::Stop,
                _ = int.recv() => Signal::Stop,
                _ = hup.recv() => Signal::Reload,
            };
        }
        let _ = tokio::signal::ctrl_c().await;
        Signal::Stop
    }
}

/// Each relayed stream holds four sockets (RTP and RTCP on both legs): take every descriptor
/// the hard limit allows, and say how many calls that is.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return };
    let limit = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() { hard } else { soft };
    tracing::info!(open_files = limit, relayed_audio_calls = limit / 4, "descriptor limit");
}
