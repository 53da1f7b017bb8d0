//! Nodes of a test cluster: their configuration, their `/health` view of the cluster, and two
//! nodes started together.

use std::time::Duration;

use crate::redis::RedisServer;
use crate::{eventually, http, Sbcd};

/// The `cluster:` section of node `node_id` (a 3 s lease, so dead nodes go quickly).
pub fn cluster_yaml(node_id: &str, redis_url: &str, prefix: &str) -> String {
    format!("cluster:\n  node_id: {node_id}\n  redis_url: {redis_url}\n  key_prefix: {prefix}\n  lease_s: 3\n")
}

/// The `cluster` object of the node's `/health`.
pub fn cluster_health(sbcd: &Sbcd) -> serde_json::Value {
    let (status, body) = http(sbcd, "GET", "/health", None, None);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("/health is JSON");
    v["cluster"].clone()
}

/// Waits (10 s at most) until the node's cluster view satisfies `want`.
pub fn wait_for(sbcd: &Sbcd, what: &str, want: impl Fn(&serde_json::Value) -> bool) {
    let ok = eventually(Duration::from_secs(10), || want(&cluster_health(sbcd)));
    assert!(ok, "{what}: /health says {}\nsbcd log:\n{}", cluster_health(sbcd), sbcd.log_text());
}

/// Nodes `a` and `b` of one cluster (key prefix `prefix`) with the profiles of `profiles`,
/// both holding their lease.
pub fn two_nodes(redis: &RedisServer, profiles: &str, prefix: &str) -> (Sbcd, Sbcd) {
    let yaml = |id: &str| format!("{profiles}{}", cluster_yaml(id, &redis.url(), prefix));
    let (a, b) = (Sbcd::with_config(&yaml("a"), &[]), Sbcd::with_config(&yaml("b"), &[]));
    for n in [&a, &b] {
        wait_for(n, "joined", |c| c["lease"] == "held");
    }
    (a, b)
}
