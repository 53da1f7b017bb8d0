//! `/metrics`: read at scrape time from the counters the shards, the driver and the relay
//! already keep, so the per-message path does no extra work for Prometheus.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::ReloadStats;
use crate::b2bua::{Counter, CounterDef, Labels};
use crate::driver::Runtime;
use crate::sip::msg::Method;

struct SbcCollector {
    runtime: Arc<Runtime>,
    reloads: Arc<ReloadStats>,
}

impl std::fmt::Debug for SbcCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SbcCollector")
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    ConstCounter::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// A counter family with one label, outside the engine's table.
fn labelled(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = (String, u64)>,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (l, v) in values {
        let labels = [(label, l)];
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A gauge family with one label.
fn labelled_gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = (String, i64)>,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (l, v) in values {
        let labels = [(label, l)];
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// An engine counter's family, labelled as its row says: `N` values per sample, in the order
/// of the row's label names.
fn counters<const N: usize>(
    e: &mut DescriptorEncoder,
    def: &CounterDef,
    values: impl IntoIterator<Item = ([String; N], u64)>,
) -> std::fmt::Result {
    let names: &[&'static str] = match def.labels {
        Labels::Method => &["method"],
        Labels::Events(names) => names,
        Labels::None => &[],
    };
    let mut m = e.encode_descriptor(def.metric, def.help, None, MetricType::Counter)?;
    for (values, v) in values {
        let labels: Vec<(&'static str, String)> = names.iter().copied().zip(values).collect();
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for SbcCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rt = &self.runtime;
        let s = rt.stats();
        let l = rt.labelled();
        let d = rt.counters();
        let e = &mut e;
        gauge(e, "sbc_calls_active", "Calls (and subscription dialog pairs) in progress", s.calls as i64)?;
        gauge(e, "sbc_transactions_active", "SIP transactions in the engines' tables", s.transactions as i64)?;
        for def in &Counter::DEFS {
            match def.labels {
                Labels::None => counter(e, def.metric, def.help, s.get(def.counter))?,
                Labels::Method => {
                    let by = s.by_method(def.counter);
                    let name = |k: usize| Method::ALL[k].as_str().unwrap_or("other").to_string();
                    let values = (0..Method::COUNT).filter(|&k| by[k] > 0).map(|k| (name(k), by[k]));
                    counters(e, def, values.map(|(m, v)| ([m], v)))?;
                }
                Labels::Events(_) => match def.counter {
                    Counter::CallsEnded => {
                        counters(e, def, l.calls_ended.iter().map(|((p, o), v)| ([p.clone(), (*o).to_string()], *v)))?
                    }
                    Counter::LocalReplies => counters(e, def, l.refused.iter().map(|(c, v)| ([c.to_string()], *v)))?,
                    Counter::Drops => {
                        // The engine's reasons, and the driver's own drops before a message
                        // reaches an engine.
                        let mut drops: Vec<([String; 1], u64)> =
                            l.drops.iter().map(|(r, v)| ([(*r).to_string()], *v)).collect();
                        drops.push((["parse_error".into()], d.parse_errors.load(Relaxed)));
                        drops.push((["queue_full".into()], d.queue_full_drops.load(Relaxed)));
                        drops.push((["overload_shed".into()], d.overload_shed.load(Relaxed)));
                        counters(e, def, drops)?;
                    }
                    _ => {}
                },
            }
        }
        counter(
            e,
            "sbc_sip_parse_errors",
            "Datagrams and TCP frames that did not parse as SIP",
            d.parse_errors.load(Relaxed),
        )?;
        gauge(e, "sbc_tcp_connections", "Open SIP TCP connections", d.tcp_connections.load(Relaxed) as i64)?;
        let dns = rt.dns_counters();
        labelled(
            e,
            "sbc_dns_lookups",
            "Host-name lookups by result (shed: too many in flight)",
            "result",
            [("resolved", &dns.resolved), ("failed", &dns.failed), ("shed", &dns.shed)]
                .into_iter()
                .map(|(r, c)| (r.to_string(), c.load(Relaxed))),
        )?;
        labelled(
            e,
            "sbc_dns_errors",
            "Lookups that gave nothing, and records left unused (RFC 3263), by kind",
            "kind",
            crate::driver::DnsError::ALL.iter().map(|k| (k.label().to_string(), dns.errors(*k))),
        )?;
        if let Some(h) = rt.hep_counters() {
            use crate::driver::capture::HepDrop;
            counter(e, "sbc_capture_hep_sent", "SIP messages sent to Homer (HEPv3)", h.sent.load(Relaxed))?;
            labelled(
                e,
                "sbc_capture_hep_dropped",
                "SIP messages not sent to Homer, by reason",
                "reason",
                HepDrop::ALL.iter().map(|r| (r.label().to_string(), h.dropped(*r))),
            )?;
        }
        let (written, dropped) = rt.pcap_counters();
        counter(
            e,
            "sbc_capture_pcap_written",
            "SIP messages and RTP packets (log_rtp) written to per-call pcap files (msg_logger_path)",
            written,
        )?;
        counter(
            e,
            "sbc_capture_pcap_dropped",
            "SIP messages and RTP packets not written to per-call pcap files (queue full, file not writable)",
            dropped,
        )?;
        #[allow(clippy::disallowed_methods)] // metrics read the clock for blacklistings left
        let hops = rt.health().view(std::time::Instant::now());
        let hop = |v: &crate::health::HopView| format!("{}:{}", v.key.transport, v.key.addr);
        labelled_gauge(
            e,
            "sbc_next_hop_up",
            "Probed next hops: 1 up, 0 down (routing.health)",
            "hop",
            hops.iter().filter(|v| v.state != "unknown").map(|v| (hop(v), i64::from(v.state == "up"))),
        )?;
        labelled_gauge(
            e,
            "sbc_next_hop_blacklisted",
            "Next hops known to health: 1 while blacklisted",
            "hop",
            hops.iter().map(|v| (hop(v), i64::from(v.blacklisted_for_s > 0))),
        )?;
        let hc = &rt.health().counters;
        counter(
            e,
            "sbc_next_hop_blacklistings",
            "Destinations blacklisted after a failed INVITE",
            hc.blacklisted.load(Relaxed),
        )?;
        labelled(
            e,
            "sbc_next_hop_transitions",
            "Next hops that went down or came up again, by their new state",
            "to",
            [("down", &hc.went_down), ("up", &hc.came_up)].into_iter().map(|(s, c)| (s.to_string(), c.load(Relaxed))),
        )?;
        counter(
            e,
            "sbc_tcp_refused",
            "TCP connections refused at accept (overall or per-source cap)",
            d.tcp_refused.load(Relaxed),
        )?;
        counter(
            e,
            "sbc_tls_handshakes_refused",
            "TLS connections closed before their handshake (a source's handshake rate, or the handshakes in progress)",
            d.tls_handshakes_refused.load(Relaxed),
        )?;
        labelled(
            e,
            "sbc_tcp_cuts",
            "TCP connections the SBC closed, by reason",
            "reason",
            d.tcp_cuts().into_iter().map(|(r, v)| (r.to_string(), v)),
        )?;
        let m = rt.media_stats();
        counter(e, "sbc_media_packets", "RTP/RTCP packets received by the relay", m.packets)?;
        counter(e, "sbc_media_bytes", "RTP/RTCP bytes received by the relay", m.bytes)?;
        counter(e, "sbc_media_forwarded", "RTP/RTCP packets relayed", m.forwarded)?;
        labelled(
            e,
            "sbc_media_drops",
            "Packets the relay did not forward, by reason",
            "reason",
            rtp_relay::DropReason::ALL.iter().map(|r| (r.label().to_string(), m.dropped(*r))),
        )?;
        counter(e, "sbc_media_latches", "Symmetric-RTP latching events", m.latches)?;
        gauge(e, "sbc_media_streams_active", "Relayed streams (m-lines) in the forwarder", m.streams as i64)?;
        gauge(e, "sbc_media_ports_in_use", "RTP/RTCP port pairs taken from the pools", s.media_ports as i64)?;
        gauge(e, "sbc_registrations", "Registered contacts in the cache", rt.registrations().len() as i64)?;
        let expiry = rt.tls_expiry();
        if !expiry.is_empty() {
            let now = super::unix_now() as i64;
            labelled_gauge(
                e,
                "sbc_tls_certificate_expiry_seconds",
                "Seconds until each TLS interface's certificate runs out (negative: it has)",
                "interface",
                expiry.into_iter().map(|(i, t)| (i, t - now)),
            )?;
        }
        if let Some(c) = rt.cluster() {
            let v = c.view();
            gauge(
                e,
                "sbc_cluster_redis_up",
                "1 if the last Redis operation of cluster mode succeeded",
                v.redis_up.into(),
            )?;
            gauge(e, "sbc_cluster_lease_held", "1 while this node holds its cluster lease", v.lease_held.into())?;
            gauge(e, "sbc_cluster_nodes_live", "Cluster nodes whose lease had not run out", v.live_nodes as i64)?;
            gauge(
                e,
                "sbc_cluster_nodes_unexpected",
                "Live nodes under this cluster's key prefix that cluster.nodes does not list",
                v.unexpected_nodes.len() as i64,
            )?;
            counter(e, "sbc_cluster_redis_operations", "Redis operations of cluster mode", v.operations)?;
            let (pc, b) = (c.call_counts().stats(), c.balances().stats());
            let mut counts = vec![
                (
                    "sbc_cluster_pcalls_counted_locally",
                    "cc_pcalls calls counted on this node alone because Redis did not answer",
                    pc.counted_locally.load(Relaxed),
                ),
                (
                    "sbc_cluster_pcalls_reconciled",
                    "cc_pcalls counts sent to Redis after it came back",
                    pc.reconciled.load(Relaxed),
                ),
                (
                    "sbc_cluster_cps_rated_locally",
                    "cc_cps calls rated on this node alone because Redis did not answer",
                    c.call_rates().rated_locally.load(Relaxed),
                ),
                (
                    "sbc_cluster_prepaid_refused_unavailable",
                    "cc_prepaid calls refused with 503 because Redis did not answer (prepaid fails closed)",
                    b.refused_unavailable.load(Relaxed),
                ),
                (
                    "sbc_cluster_prepaid_debits_deferred",
                    "cc_prepaid debits Redis did not take at the call's end (kept and retried)",
                    b.debits_deferred.load(Relaxed),
                ),
            ];
            let registrations = c.registrations();
            let r = registrations.as_ref().map(|r| r.stats());
            if let Some(r) = r {
                counts.extend([
                    ("sbc_cluster_registration_writes", "Registration changes written to Redis", r.writes.load(Relaxed)),
                    (
                        "sbc_cluster_registration_writes_lost",
                        "Registration changes that did not reach Redis (the node writes its bindings again when it answers)",
                        r.writes_lost.load(Relaxed),
                    ),
                    (
                        "sbc_cluster_registration_rewritten",
                        "Bindings written to Redis again after it came back or lost its data",
                        r.rewritten.load(Relaxed),
                    ),
                    (
                        "sbc_cluster_registration_taken_over",
                        "Bindings of this node that another node took while Redis was away from this one",
                        r.taken_over.load(Relaxed),
                    ),
                    (
                        "sbc_cluster_registration_holder_gone",
                        "Bindings looked up whose holding node was no longer live (calls go to the phone directly)",
                        r.holder_gone.load(Relaxed),
                    ),
                ]);
            }
            for (name, help, v) in counts {
                counter(e, name, help, v)?;
            }
            gauge(
                e,
                "sbc_cluster_prepaid_debits_pending",
                "cc_prepaid debits waiting for Redis",
                c.balances().pending_debits() as i64,
            )?;
            if let Some(r) = r {
                labelled(
                    e,
                    "sbc_cluster_registration_lookups",
                    "Registration lookups, by who answered (redis, or this node's own bindings while Redis did not)",
                    "answered_by",
                    [
                        ("redis".to_string(), r.lookups.load(Relaxed)),
                        ("node".to_string(), r.looked_up_locally.load(Relaxed)),
                    ],
                )?;
            }
            labelled(
                e,
                "sbc_cluster_redis_failures",
                "Redis operations of cluster mode that failed, by kind (error, timeout)",
                "kind",
                [("error".to_string(), v.errors), ("timeout".to_string(), v.timeouts)],
            )?;
        }
        let adm = rt.admission_stats();
        counter(e, "sbc_admission_refused", "New requests refused with 503 by the rate limits", adm.refused)?;
        counter(e, "sbc_admission_ignored", "New requests ignored from sources over their rate", adm.dropped)?;
        gauge(e, "sbc_admission_sources", "Source addresses admission control tracks", adm.sources as i64)?;
        counter(
            e,
            "sbc_admission_calls_refused",
            "New calls refused because their source held per_source_calls",
            adm.calls_refused,
        )?;
        counter(
            e,
            "sbc_admission_untracked",
            "New requests from sources beyond max_sources (global limit only)",
            adm.untracked,
        )?;
        gauge(
            e,
            "sbc_callcontrol_tasks",
            "Calls with a call-control chain until their end hook finished, plus route lookups in progress",
            rt.cc_tasks() as i64,
        )?;
        labelled(
            e,
            "sbc_callcontrol_refusals",
            "Calls and requests stopped by call control, by module (failed = error or timeout)",
            "module",
            rt.cc_refusals(),
        )?;
        labelled(
            e,
            "sbc_config_reloads",
            "Configuration and profile changes (SIGHUP, API), by result",
            "result",
            [
                ("ok".to_string(), self.reloads.ok.load(Relaxed)),
                ("failed".to_string(), self.reloads.failed.load(Relaxed)),
            ],
        )?;
        gauge(
            e,
            "sbc_config_last_reload_success_timestamp_seconds",
            "When the configuration last changed successfully (Unix time)",
            self.reloads.last_ok_unix.load(Relaxed) as i64,
        )?;
        let p = process_facts();
        counter(e, "process_cpu_seconds", "User and system CPU time of sbcd", p.cpu_seconds)?;
        gauge(e, "process_resident_memory_bytes", "Resident memory of sbcd", p.rss_bytes)?;
        gauge(e, "process_open_fds", "Open file descriptors (SIP and RTP sockets included)", p.open_fds)?;
        gauge(e, "process_start_time_seconds", "When sbcd started (Unix time)", self.reloads.started_unix as i64)?;
        Ok(())
    }
}

struct ProcessFacts {
    cpu_seconds: u64,
    rss_bytes: i64,
    open_fds: i64,
}

/// CPU and memory from /proc (Linux); zeros elsewhere.
fn process_facts() -> ProcessFacts {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the `(comm)`: utime and stime are 14 and 15 (1-based), in clock ticks of
    // 1/100 s on Linux; rss is field 24, in pages.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let ticks = num(11) + num(12);
    let rss_pages = num(21);
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64);
    ProcessFacts { cpu_seconds: ticks / 100, rss_bytes: (rss_pages * 4096) as i64, open_fds }
}

/// The registry behind `/metrics`.
pub(crate) struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub(crate) fn new(runtime: Arc<Runtime>, reloads: Arc<ReloadStats>) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SbcCollector { runtime, reloads }));
        Self { registry }
    }

    /// The OpenMetrics text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            let _ = writeln!(out, "# encoding failed");
        }
        out
    }
}
