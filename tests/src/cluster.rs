//! Nodes of a test cluster: their configuration, their `/health` view of the cluster, two
//! nodes started together, and what the tests ask of a node (a call, its metrics).

use std::time::Duration;

use crate::redis::RedisServer;
use crate::ua::{sdp, TestUa};
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

/// A call from a test UA (From user `ua`) through `node` to the SIPp callee on `uas_port`:
/// the UA (to hang up) and the final status.
pub fn call(node: &Sbcd, uas_port: u16) -> (TestUa, Option<u16>) {
    let mut ua = TestUa::new(node.addr());
    let resp = ua.invite(&format!("sip:callee@127.0.0.1:{uas_port}"), &sdp("127.0.0.1", 40000, ""));
    (ua, resp.status())
}

/// Waits until the node's call-control tasks are done (its `end` hooks ran).
pub fn hooks_done(node: &Sbcd) {
    let done = || http(node, "GET", "/stats", None, None).1.contains("\"callcontrol_tasks\":0");
    assert!(eventually(Duration::from_secs(10), done), "end hooks still running: {}", node.log_text());
}

/// The value of the metric line `name` (with its labels, if any), if the node shows it.
pub fn metric(node: &Sbcd, name: &str) -> Option<i64> {
    let (_, text) = http(node, "GET", "/metrics", None, None);
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
