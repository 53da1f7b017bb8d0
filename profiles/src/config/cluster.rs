//! `cluster:`: several sbcd nodes sharing state on one Redis (docs/manual/cluster.md). Absent,
//! the node keeps everything to itself and needs no server.

use std::time::Duration;

use serde::Deserialize;

/// Key prefix when none is given.
const DEFAULT_PREFIX: &str = "sbc";
/// How long one Redis operation may take before the node goes on without it.
const DEFAULT_TIMEOUT_MS: u64 = 250;
/// How long a node's lease lasts without a renewal: its calls and counters are released then.
const DEFAULT_LEASE_S: u64 = 15;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileCluster {
    node_id: String,
    redis_url: String,
    #[serde(default)]
    key_prefix: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    lease_s: Option<u64>,
    #[serde(default)]
    nodes: Option<Vec<String>>,
}

/// Where a node's Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisAddr {
    Tcp { host: String, port: u16 },
    Unix(String),
}

/// The cluster a node belongs to. (`Debug` leaves the URL's password out.)
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// This node's name in the cluster: unique, `[A-Za-z0-9._-]`, at most 64 characters.
    pub node_id: String,
    /// The URL as written (`redis://[user:password@]host[:port][/db]` or `unix:///path`).
    pub redis_url: String,
    pub redis_addr: RedisAddr,
    /// Every key this cluster writes starts with `<key_prefix>:`.
    pub key_prefix: String,
    /// Deadline of one Redis operation.
    pub timeout: Duration,
    /// A node's lease: renewed every third of it; a node silent for this long is dead.
    pub lease: Duration,
    /// The cluster's nodes, when listed: another node under the same key prefix is reported
    /// (another cluster configured with the same prefix) and not trusted as a peer.
    pub nodes: Option<Vec<String>>,
}

impl std::fmt::Debug for ClusterSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("node_id", &self.node_id)
            .field("redis_url", &redacted(&self.redis_url))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("lease", &self.lease)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

/// `url` with the password of its user part replaced by `***` (for logs and errors).
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    match rest.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

fn name_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
}

/// The address in a Redis URL, or why it is not one this node can use.
fn redis_addr(url: &str) -> Result<RedisAddr, String> {
    let shown = redacted(url);
    let url = url.trim();
    if let Some(path) = url.strip_prefix("unix://") {
        let path = path.split('?').next().unwrap_or_default();
        return match path {
            "" => Err(format!("'{shown}' names no socket path")),
            p => Ok(RedisAddr::Unix(p.to_string())),
        };
    }
    if url.starts_with("rediss://") {
        return Err("TLS to Redis (rediss://) is not built in; reach it over loopback or a private network".into());
    }
    let rest = url
        .strip_prefix("redis://")
        .ok_or_else(|| format!("'{shown}' is not redis://host[:port][/db] or unix:///path"))?;
    // The user part ends at the last '@' (a password may hold '/' or '@'); then host, path.
    let after_user = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let (hostport, db) = after_user.split_once('/').unwrap_or((after_user, ""));
    let (host, port) = match hostport.strip_prefix('[') {
        // [v6]:port
        Some(v6) => {
            let (h, p) = v6.split_once(']').ok_or_else(|| format!("'{shown}': unclosed '['"))?;
            (h, p.strip_prefix(':'))
        }
        None => match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        },
    };
    if host.is_empty() {
        return Err(format!("'{shown}' names no host"));
    }
    let port = match port {
        None => 6379,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("'{shown}': '{p}' is not a port"))?,
    };
    if !db.is_empty() {
        db.parse::<u32>().map_err(|_| format!("'{shown}': '{db}' is not a database number"))?;
    }
    Ok(RedisAddr::Tcp { host: host.to_string(), port })
}

impl ClusterSettings {
    /// The settings of a `cluster:` section; `Err` names the key and says what is wrong.
    pub(super) fn from_file(f: &FileCluster) -> Result<Self, (String, String)> {
        let bad = |key: &str, m: String| (format!("cluster.{key}"), m);
        let node_id = f.node_id.trim().to_string();
        if !name_ok(&node_id) {
            return Err(bad("node_id", format!("'{node_id}' is not 1-64 characters of A-Z a-z 0-9 . _ -")));
        }
        let redis_url = f.redis_url.trim().to_string();
        let redis_addr = redis_addr(&redis_url).map_err(|m| bad("redis_url", m))?;
        let key_prefix = f.key_prefix.as_deref().map_or(DEFAULT_PREFIX, str::trim).to_string();
        if !name_ok(&key_prefix) {
            return Err(bad("key_prefix", format!("'{key_prefix}' is not 1-64 characters of A-Z a-z 0-9 . _ -")));
        }
        let timeout_ms = f.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if !(10..=5000).contains(&timeout_ms) {
            return Err(bad("timeout_ms", format!("{timeout_ms} is not 10-5000 ms")));
        }
        let lease_s = f.lease_s.unwrap_or(DEFAULT_LEASE_S);
        if !(3..=300).contains(&lease_s) {
            return Err(bad("lease_s", format!("{lease_s} is not 3-300 s")));
        }
        // A renewal (every third of the lease) must end well before the next one is due.
        if timeout_ms * 3 >= lease_s * 1000 {
            return Err(bad("timeout_ms", format!("{timeout_ms} ms: must be under a third of lease_s ({lease_s} s)")));
        }
        let nodes = match &f.nodes {
            None => None,
            Some(list) => {
                let list: Vec<String> = list.iter().map(|n| n.trim().to_string()).collect();
                if let Some(n) = list.iter().find(|n| !name_ok(n)) {
                    return Err(bad("nodes", format!("'{n}' is not 1-64 characters of A-Z a-z 0-9 . _ -")));
                }
                if !list.contains(&node_id) {
                    return Err(bad("nodes", format!("does not list this node ('{node_id}', cluster.node_id)")));
                }
                Some(list)
            }
        };
        Ok(Self {
            node_id,
            redis_url,
            redis_addr,
            key_prefix,
            timeout: Duration::from_millis(timeout_ms),
            lease: Duration::from_secs(lease_s),
            nodes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(node_id: &str, url: &str) -> FileCluster {
        FileCluster {
            node_id: node_id.into(),
            redis_url: url.into(),
            key_prefix: None,
            timeout_ms: None,
            lease_s: None,
            nodes: None,
        }
    }

    #[test]
    fn urls_and_names_are_checked() {
        let ok = ClusterSettings::from_file(&file("a-1", "redis://127.0.0.1:6390/2")).expect("valid");
        assert_eq!(ok.redis_addr, RedisAddr::Tcp { host: "127.0.0.1".into(), port: 6390 });
        assert_eq!(
            (ok.key_prefix.as_str(), ok.timeout, ok.lease),
            ("sbc", Duration::from_millis(250), Duration::from_secs(15))
        );
        let v6 = ClusterSettings::from_file(&file("b", "redis://:pw@[::1]")).expect("valid");
        assert_eq!(v6.redis_addr, RedisAddr::Tcp { host: "::1".into(), port: 6379 });
        let odd = ClusterSettings::from_file(&file("b", "redis://u:p/w@d@h:7000/1")).expect("valid");
        assert_eq!(odd.redis_addr, RedisAddr::Tcp { host: "h".into(), port: 7000 });
        assert!(!format!("{odd:?}").contains("p/w@d"), "the password stays out of Debug");
        assert_eq!(redacted("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        let e = ClusterSettings::from_file(&file("b", "redis://u:secret@h:x")).expect_err("port");
        assert!(!e.1.contains("secret"), "{}", e.1);
        let unix = ClusterSettings::from_file(&file("c", "unix:///run/redis.sock?db=2")).expect("valid");
        assert_eq!(unix.redis_addr, RedisAddr::Unix("/run/redis.sock".into()));
        for (node, url, key) in [
            ("a b", "redis://h", "cluster.node_id"),
            ("", "redis://h", "cluster.node_id"),
            ("a", "rediss://h", "cluster.redis_url"),
            ("a", "http://h", "cluster.redis_url"),
            ("a", "redis://h:0", "cluster.redis_url"),
            ("a", "redis://h:x", "cluster.redis_url"),
            ("a", "redis://:6379", "cluster.redis_url"),
            ("a", "redis://h/x", "cluster.redis_url"),
        ] {
            let e = ClusterSettings::from_file(&file(node, url)).expect_err(url);
            assert_eq!(e.0, key, "{node} {url}: {}", e.1);
        }
        let mut f = file("a", "redis://h");
        f.lease_s = Some(1);
        assert_eq!(ClusterSettings::from_file(&f).expect_err("lease").0, "cluster.lease_s");
        f.lease_s = Some(3);
        f.timeout_ms = Some(1000);
        assert_eq!(ClusterSettings::from_file(&f).expect_err("timeout").0, "cluster.timeout_ms");
        f.timeout_ms = None;
        f.lease_s = None;
        f.key_prefix = Some("has space".into());
        assert_eq!(ClusterSettings::from_file(&f).expect_err("prefix").0, "cluster.key_prefix");
        f.key_prefix = None;
        f.nodes = Some(vec!["b".into(), "c".into()]);
        let e = ClusterSettings::from_file(&f).expect_err("itself unlisted");
        assert!(e.0 == "cluster.nodes" && e.1.contains("'a'"), "{e:?}");
        f.nodes = Some(vec!["a".into(), "b c".into()]);
        assert_eq!(ClusterSettings::from_file(&f).expect_err("bad name").0, "cluster.nodes");
        f.nodes = Some(vec![" a ".into(), "b".into()]);
        assert_eq!(ClusterSettings::from_file(&f).expect("listed").nodes, Some(vec!["a".into(), "b".into()]));
    }
}
