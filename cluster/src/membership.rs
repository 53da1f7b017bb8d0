//! Who is in the cluster, as this node last read it (docs/manual/cluster.md, Registrations):
//! every node publishes its SIP addresses beside its lease (`<prefix>:node:<id>:sip`), and
//! reads the live nodes' every renewal. Its peers' addresses are where calls for their phones
//! go, and the requests whose relay header it trusts, signed with the cluster's relay key
//! (`<prefix>:relay-key`, 32 random bytes the first node makes). Nodes coming and going are
//! logged; with
//! `cluster.nodes` set, a live node not listed (another cluster given the same key prefix) is
//! reported and not taken as a peer.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use regcache::Relay;

use crate::connection::{Connection, StoreError};

/// KEYS: the nodes' set. ARGV: the node keys' prefix. Redis's time (ms), then each live
/// node's id and published SIP addresses (Redis's clock decides who is live, as for the lease).
const PEERS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {tostring(now)}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  table.insert(out, id)
  table.insert(out, redis.call('GET', ARGV[1] .. id .. ':sip') or '')
end
return out
";

/// A SIP address of a node, as it publishes it for its peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipAddress {
    pub interface: String,
    /// `udp` or `tcp`.
    pub transport: String,
    pub addr: SocketAddr,
}

impl SipAddress {
    fn line(&self) -> String {
        format!("{}\t{}\t{}", self.interface, self.transport, self.addr)
    }

    fn parse(line: &str) -> Option<Self> {
        let mut f = line.split('\t');
        let (interface, transport, addr) = (f.next()?, f.next()?, f.next()?.parse().ok()?);
        matches!(transport, "udp" | "tcp").then(|| Self {
            interface: interface.into(),
            transport: transport.into(),
            addr,
        })
    }
}

/// The other live nodes, as last read.
#[derive(Debug, Default)]
struct Peers {
    by_node: HashMap<String, Vec<SipAddress>>,
    /// Their UDP addresses (a peer's requests come from its listening socket), and the IPs of
    /// their TCP ones (a connection comes from any port).
    udp: HashSet<SocketAddr>,
    tcp_ips: HashSet<IpAddr>,
}

impl Peers {
    fn new(by_node: HashMap<String, Vec<SipAddress>>) -> Self {
        let all = || by_node.values().flatten();
        let udp = all().filter(|a| a.transport == "udp").map(|a| a.addr).collect();
        let tcp_ips = all().filter(|a| a.transport == "tcp").map(|a| a.addr.ip()).collect();
        Self { by_node, udp, tcp_ips }
    }

    /// Where calls for `node`'s phone registered on `interface` go: that node's address on the
    /// same interface, UDP first; else any of its addresses.
    fn relay(&self, node: &str, interface: &str) -> Option<Relay> {
        let addrs = self.by_node.get(node)?;
        let rank = |a: &&SipAddress| (a.interface != interface, a.transport != "udp");
        let a = addrs.iter().min_by_key(rank)?;
        Some(Relay { node: node.to_string(), addr: a.addr, transport: a.transport.clone() })
    }
}

#[allow(clippy::disallowed_methods)] // the driver's clock, to count on from Redis's time
fn monotonic_now() -> Instant {
    Instant::now()
}

/// 32 random bytes as hex: a relay key candidate. (Without randomness from the OS, an empty
/// candidate: then another node's key is used, or none.)
fn random_hex() -> String {
    let mut b = [0u8; 32];
    match getrandom::fill(&mut b) {
        Ok(()) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Err(_) => String::new(),
    }
}

fn decode_key(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *o = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// The cluster as this node sees it: its own published addresses and its live peers'.
pub struct Membership {
    node_id: String,
    prefix: String,
    lease: Duration,
    /// `cluster.nodes`, if set.
    expected: Option<HashSet<String>>,
    /// Live nodes under this key prefix that `cluster.nodes` does not list.
    strangers: ArcSwap<Vec<String>>,
    /// This node's SIP addresses, as published (empty until the driver has its sockets).
    published: ArcSwap<String>,
    peers: ArcSwap<Peers>,
    /// The key the nodes sign their relay headers with, once read from Redis.
    relay_key: arc_swap::ArcSwapOption<[u8; 32]>,
    /// This node's candidate, if it is the first to need one.
    key_candidate: String,
    /// Redis's time (ms) at the last renewal, and this process's clock then.
    clock: arc_swap::ArcSwapOption<(u64, Instant)>,
    script: redis::Script,
}

impl Membership {
    pub(crate) fn new(prefix: &str, node_id: &str, lease: Duration, expected: Option<&[String]>) -> Self {
        Self {
            node_id: node_id.to_string(),
            prefix: prefix.to_string(),
            lease,
            expected: expected.map(|e| e.iter().cloned().collect()),
            strangers: ArcSwap::default(),
            published: ArcSwap::default(),
            peers: ArcSwap::default(),
            relay_key: arc_swap::ArcSwapOption::empty(),
            key_candidate: random_hex(),
            clock: arc_swap::ArcSwapOption::empty(),
            script: redis::Script::new(PEERS),
        }
    }

    /// Redis's time now (ms), as read at the last renewal and counted on since by this
    /// process's clock; `None` before Redis first answered.
    pub fn redis_now(&self) -> Option<u64> {
        let clock = self.clock.load();
        let (ms, at) = clock.as_deref()?;
        Some(ms + u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// The cluster's relay key, once read.
    pub fn relay_key(&self) -> Option<[u8; 32]> {
        self.relay_key.load().as_deref().copied()
    }

    /// The SIP addresses this node publishes from now on.
    pub(crate) fn publish(&self, own: &[SipAddress]) {
        self.published.store(Arc::new(own.iter().map(SipAddress::line).collect::<Vec<_>>().join("\n")));
    }

    /// Publishes this node's addresses and reads the live peers' (the renewer, every third of
    /// the lease).
    pub(crate) async fn refresh(&self, conn: &Connection) -> Result<(), StoreError> {
        let node_prefix = format!("{}:node:", self.prefix);
        let sip_key = format!("{node_prefix}{}:sip", self.node_id);
        let published = self.published.load_full();
        let keep = u64::try_from((self.lease * 3).as_millis()).unwrap_or(u64::MAX);
        let key_key = format!("{}:relay-key", self.prefix);
        let (key, read): (String, Vec<String>) = conn
            .run(|mut c| async move {
                let mut pipe = redis::pipe();
                pipe.set_options(
                    &sip_key,
                    published.as_str(),
                    redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(keep)),
                )
                .ignore();
                // The first node's candidate becomes the cluster's key (also after Redis lost
                // its data: the nodes read the new one at their next renewal).
                pipe.set_options(
                    &key_key,
                    &self.key_candidate,
                    redis::SetOptions::default().conditional_set(redis::ExistenceCheck::NX),
                )
                .ignore()
                .get(&key_key);
                let mut inv = self.script.prepare_invoke();
                inv.key(format!("{}:nodes", self.prefix)).arg(&node_prefix);
                pipe.load_script(&self.script).ignore().invoke_script(&inv);
                pipe.query_async(&mut c).await
            })
            .await?;
        match decode_key(&key) {
            Some(k) => self.relay_key.store(Some(Arc::new(k))),
            None => tracing::warn!(
                "cluster: the relay key in Redis is not 64 hex digits; calls to peers' phones go directly"
            ),
        }
        if let Some(ms) = read.first().and_then(|t| t.parse::<u64>().ok()) {
            self.clock.store(Some(Arc::new((ms, monotonic_now()))));
        }
        let mut by_node = HashMap::new();
        let mut strangers = Vec::new();
        for pair in read.get(1..).unwrap_or_default().chunks_exact(2) {
            let id = &pair[0];
            if id == &self.node_id {
                continue;
            }
            if self.expected.as_ref().is_some_and(|e| !e.contains(id)) {
                strangers.push(id.clone());
            } else {
                by_node.insert(id.clone(), pair[1].lines().filter_map(SipAddress::parse).collect());
            }
        }
        strangers.sort();
        self.note_changes(&by_node, &strangers);
        self.peers.store(Arc::new(Peers::new(by_node)));
        self.strangers.store(Arc::new(strangers));
        Ok(())
    }

    /// Logs the nodes that came and went since the last reading, and the strangers newly seen.
    fn note_changes(&self, now: &HashMap<String, Vec<SipAddress>>, strangers: &[String]) {
        let before = self.peers.load();
        for (id, addrs) in now {
            if !before.by_node.contains_key(id) {
                let shown: Vec<String> = addrs.iter().map(|a| format!("{}:{}", a.transport, a.addr)).collect();
                tracing::info!(node = %id, sip = %shown.join(" "), "cluster: node live");
            }
        }
        for id in before.by_node.keys().filter(|id| !now.contains_key(*id)) {
            tracing::warn!(node = %id, "cluster: node gone (its lease ran out or it left)");
        }
        let seen = self.strangers.load();
        for id in strangers.iter().filter(|id| !seen.contains(id)) {
            tracing::error!(
                node = %id,
                key_prefix = %self.prefix,
                "cluster: a live node not in cluster.nodes uses this cluster's key prefix (another \
                 cluster configured with the same key_prefix?): its calls, counts and registrations \
                 mix with this cluster's. It is not taken as a peer; give each cluster its own \
                 key_prefix, or add the node to cluster.nodes"
            );
        }
    }

    /// Whether `node` belongs to the cluster: any node when `cluster.nodes` is not set.
    pub fn is_member(&self, node: &str) -> bool {
        self.expected.as_ref().is_none_or(|e| e.contains(node))
    }

    /// Live nodes under this key prefix that `cluster.nodes` does not list.
    pub fn strangers(&self) -> Vec<String> {
        self.strangers.load().as_ref().clone()
    }

    /// The other live nodes, as last read, with their published addresses
    /// (`interface transport:ip:port`).
    pub fn peer_list(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        let p = self.peers.load();
        let show = |a: &SipAddress| format!("{} {}:{}", a.interface, a.transport, a.addr);
        p.by_node.iter().map(|(id, addrs)| (id.clone(), addrs.iter().map(show).collect())).collect()
    }

    /// Whether `source` is another live node's SIP address.
    pub fn is_peer(&self, source: SocketAddr) -> bool {
        let p = self.peers.load();
        p.udp.contains(&source) || p.tcp_ips.contains(&source.ip())
    }

    /// Where calls for `node`'s phone registered on `interface` go, if `node` is a live peer.
    pub fn relay(&self, node: &str, interface: &str) -> Option<Relay> {
        self.peers.load().relay(node, interface)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_and_peers_pick_the_bindings_interface() {
        let a =
            SipAddress { interface: "ext".into(), transport: "udp".into(), addr: "192.0.2.1:5060".parse().unwrap() };
        assert_eq!(SipAddress::parse(&a.line()), Some(a.clone()));
        assert_eq!(SipAddress::parse("ext\tsctp\t192.0.2.1:5060"), None);
        assert_eq!(SipAddress::parse("garbage"), None);
        let int_tcp =
            SipAddress { interface: "int".into(), transport: "tcp".into(), addr: "10.0.0.1:5060".parse().unwrap() };
        let int_udp =
            SipAddress { interface: "int".into(), transport: "udp".into(), addr: "10.0.0.1:5062".parse().unwrap() };
        let peers = Peers::new(HashMap::from([("a".to_string(), vec![a.clone(), int_tcp, int_udp.clone()])]));
        assert_eq!(peers.relay("a", "int").map(|r| r.addr), Some(int_udp.addr), "UDP first on the same interface");
        assert_eq!(peers.relay("a", "ext").map(|r| r.addr), Some(a.addr));
        assert_eq!(peers.relay("a", "other").map(|r| r.transport), Some("udp".to_string()));
        assert_eq!(peers.relay("b", "ext"), None, "not a live node");
        assert!(peers.udp.contains(&a.addr) && !peers.udp.contains(&"192.0.2.1:5070".parse().unwrap()));
        assert!(peers.tcp_ips.contains(&"10.0.0.1".parse().unwrap()));
    }
}
