//! What the API speaks: JSON bodies in and out, described for the OpenAPI document.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A loaded profile.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ProfileInfo {
    pub name: String,
    /// The file it was read from (or the configuration file, for inline profiles).
    pub file: String,
    /// MD5 of the file, for profiles read from a file of their own.
    pub md5: Option<String>,
    /// When this version of it was loaded (seconds since the Unix epoch).
    pub loaded_at: u64,
    /// Options it sets that this version does not apply, with why.
    pub not_applied: Vec<String>,
}

/// `POST /profiles/{name}`: where to read it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoadProfile {
    /// A SEMS `*.sbcprofile.conf` file, readable by sbcd.
    pub file: String,
}

/// The `active_profile` chain.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ActiveProfile {
    /// Comma-separated rules, as in the configuration (`$(ruri.user),transparent`).
    pub chain: String,
}

/// A regex map and its rules.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct RegexMapInfo {
    pub name: String,
    pub rules: Vec<MapRule>,
    /// The file it was read from, if any.
    pub file: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct MapRule {
    pub regex: String,
    pub value: String,
}

/// `GET /calls` options.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallsQuery {
    /// `cluster` (default: every node's calls) or `node` (this node's alone; answers while
    /// Redis or another node does not).
    pub scope: Option<String>,
}

/// `PUT /regex-maps/{name}`: the map as SEMS file text, or as rules.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MapBody {
    /// SEMS map file format: one `regex=>value` per line, `#` comments.
    pub text: Option<String>,
    pub rules: Option<Vec<MapRule>>,
}

/// A registered contact (registration caching or the local registrar).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct RegistrationInfo {
    /// Canonical address of record.
    pub aor: String,
    /// The user part the SBC registered upstream in place of the contact.
    pub alias: String,
    /// The contact as the UA sent it.
    pub contact: String,
    /// `ip:port` the REGISTER came from, and its transport and interface.
    pub source: String,
    pub transport: String,
    pub interface: String,
    pub user_agent: String,
    /// Seconds left of the registration the UA was given, and of the registrar's binding.
    pub expires_in: u64,
    pub registrar_expires_in: u64,
    /// `upstream` (registration caching) or `local` (cc_registrar).
    pub origin: String,
}

/// A call (or a subscription dialog pair).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct CallInfo {
    /// Stable for the call's life: `<shard>-<number>`; in cluster mode, another node's calls
    /// are `<node_id>:<shard>-<number>`.
    pub id: String,
    /// Cluster mode only: the node that holds the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub profile: String,
    /// `early`, `connected` or `ending`.
    pub state: String,
    /// `call` or `subscription`.
    pub kind: String,
    /// Seconds since the Unix epoch.
    pub started_at: u64,
    pub connected_at: Option<u64>,
    /// A leg first, then B.
    pub legs: Vec<LegInfo>,
    /// Relayed media streams (0 when the profile does not relay).
    pub media_streams: usize,
    /// What the relay saw of this call, per side (absent when it does not relay).
    pub media: Option<MediaInfo>,
    /// The codec of each stream (`PCMA/8000`), as the SDP the caller was last given says.
    #[serde(default)]
    pub codecs: Vec<String>,
}

/// A call's SIP messages as this node sent and received them (`GET /calls/{id}/trace`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct CallTrace {
    pub id: String,
    /// The A leg's Call-ID: the correlation id the HEP copies of every message carry.
    pub correlation_id: String,
    /// The call is over (its trace is kept among the last ended calls').
    pub ended: bool,
    /// Messages past `capture.trace_messages`, counted and not kept.
    pub omitted: usize,
    /// In the order the SBC handled them.
    pub messages: Vec<TracedMessage>,
}

/// One message of a trace.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct TracedMessage {
    /// When the SBC received or sent it: RFC 3339, UTC, microseconds.
    pub time: String,
    /// `in` (received) or `out` (sent).
    pub direction: String,
    /// `a` (the caller's leg) or `b`; absent when both legs share one Call-ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leg: Option<String>,
    pub interface: String,
    pub transport: String,
    /// The SBC's socket.
    pub local: String,
    /// The peer's address (or the host name a request was sent to).
    pub remote: String,
    /// The message as on the wire (bytes that are not UTF-8 shown as U+FFFD).
    pub message: String,
}

/// Relay counters of one call, summed over its streams.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct MediaInfo {
    /// Packets and bytes the caller sent (RTP and RTCP).
    pub packets_from_caller: u64,
    pub bytes_from_caller: u64,
    pub packets_from_callee: u64,
    pub bytes_from_callee: u64,
    /// Packets relayed to the other side.
    pub forwarded: u64,
    /// Packets not relayed (no destination, foreign source, DTMF filtered, send error, runt).
    pub dropped: u64,
    pub latches: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct LegInfo {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: Option<String>,
    /// The peer's identity (From for the A leg, To for the B leg).
    pub remote_party: String,
    pub remote_target: String,
}

/// Call-control modules built in and the instances profiles use.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct CallControlInfo {
    pub modules: Vec<String>,
    pub instances: Vec<CcInstanceInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct CcInstanceInfo {
    pub profile: String,
    pub name: String,
    pub module: String,
}

/// `POST /call-control/modules`: modules to make available.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoadModules {
    pub modules: Vec<String>,
}

/// `POST /explain`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExplainRequest {
    /// The SIP request, as text (LF or CRLF line ends).
    pub request: String,
    /// Where it comes from (`ip:port`; default 127.0.0.1:5060).
    pub source: Option<String>,
    /// `udp` (default) or `tcp`.
    pub transport: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExplainResult {
    pub text: String,
}

/// `GET /health`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Health {
    /// `ready` or `draining`.
    pub status: String,
    pub calls: usize,
    /// Cluster mode only: this node's view of its cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterHealth>,
    /// The certificate of each interface with TLS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsHealth>,
    /// Next hops probed or blacklisted (`routing.health`); as `GET /next-hops`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub next_hops: Vec<NextHopInfo>,
}

/// A next hop's health (`GET /next-hops`, `GET /health`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct NextHopInfo {
    /// `udp`, `tcp` or `tls`.
    pub transport: String,
    /// `ip:port`.
    pub address: String,
    /// The next hop's name, for an address found through DNS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `up`, `down` (its probes went unanswered), or `unknown` (not probed).
    pub state: String,
    /// Seconds it stays blacklisted (0: not blacklisted).
    pub blacklisted_for_s: u64,
    pub probes_answered: u64,
    pub probes_unanswered: u64,
    /// Seconds since its last probe's outcome, and since its state last changed.
    pub last_probe_s: Option<u64>,
    pub since_s: Option<u64>,
}

/// An interface's TLS certificate (`GET /health`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct TlsHealth {
    pub interface: String,
    /// When the certificate runs out (unix seconds), and in how many seconds (negative: gone).
    pub not_after: i64,
    pub expires_in_s: i64,
}

/// `POST /tls/reload`: the interfaces whose certificates were read again.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct TlsReloaded {
    pub interfaces: Vec<String>,
}

/// A node's view of its cluster (`GET /health`). A node whose Redis is down stays `ready`:
/// it serves with its own state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ClusterHealth {
    pub node_id: String,
    /// `up` or `down`: how the last Redis operation went.
    pub redis: String,
    /// `held`; `clash` when another live process holds this node id; `none` before the
    /// first renewal succeeded.
    pub lease: String,
    /// Nodes whose lease had not run out at this node's last renewal (itself included).
    pub live_nodes: usize,
    /// The other live nodes and the SIP addresses they published (`interface
    /// transport:ip:port`): where calls to their phones go, and whose requests this node
    /// takes as theirs.
    #[serde(default)]
    pub peers: std::collections::BTreeMap<String, Vec<String>>,
    /// Live nodes under this cluster's key prefix that `cluster.nodes` does not list (another
    /// cluster given the same prefix): reported, not taken as peers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unexpected_nodes: Vec<String>,
    /// Redis operations that failed or ran past the deadline.
    pub errors: u64,
    pub timeouts: u64,
    /// The last failure, if any.
    pub last_error: String,
}

/// The result of a change: what is published now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Changed {
    /// The configuration generation now running (counts publications).
    pub generation: u64,
}

/// Every error: an HTTP status and a message saying what is wrong.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: String,
}

/// A cc_prepaid account's balance, in seconds.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Balance {
    pub account: String,
    pub seconds: i64,
}

/// Seconds to set a balance to, or to add or subtract.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Credit {
    pub seconds: i64,
}

/// What is asked of cc_prepaid's balances (SEMS's DI functions `getCredit`, `setCredit`,
/// `addCredit`, `subtractCredit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrepaidOp {
    List,
    Get(String),
    Set(String, i64),
    /// Creates the account at 0 first.
    Add(String, i64),
    /// An existing account only.
    Subtract(String, i64),
}

/// The codecs of this node's calls (SEMS's `printCallStats`, which counted its transcoder's).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct CallStats {
    /// Calls and subscriptions.
    pub calls: usize,
    /// Streams per codec, the most used first.
    pub codecs: Vec<CodecUse>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct CodecUse {
    pub codec: String,
    pub streams: usize,
}

impl CallStats {
    /// Counts the streams of `calls` by codec.
    pub fn of(calls: &[CallInfo]) -> Self {
        let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for codec in calls.iter().flat_map(|c| &c.codecs) {
            *counts.entry(codec.as_str()).or_default() += 1;
        }
        let mut codecs: Vec<CodecUse> =
            counts.into_iter().map(|(codec, streams)| CodecUse { codec: codec.to_string(), streams }).collect();
        codecs.sort_by(|a, b| b.streams.cmp(&a.streams).then_with(|| a.codec.cmp(&b.codec)));
        Self { calls: calls.len(), codecs }
    }
}

/// A command for one call (SEMS's `postControlCmd`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ControlCmd {
    /// `teardown` (the only one SEMS understood).
    pub cmd: String,
}
