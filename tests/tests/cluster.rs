//! Cluster mode with a real Redis (a private `redis-server` per test): a node joins with a
//! lease and leaves in order, keeps serving while Redis is gone and joins again when it is
//! back, and a second process claiming the same node id is told.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use sbc_e2e::cluster::{call, cluster_health, cluster_yaml, hooks_done, two_nodes, wait_for};
use sbc_e2e::redis::RedisServer;
use sbc_e2e::{
    call_through, config_file, eventually, free_port, http, http_with_head, sbcd_bin, sipp_uas, Sbcd, Transport,
};

#[test]
fn a_node_joins_with_a_lease_and_leaves_in_order() {
    let redis = RedisServer::start();
    let mut node = Sbcd::with_config(&cluster_yaml("a", &redis.url(), "t1"), &[]);
    wait_for(&node, "joined", |c| c["redis"] == "up" && c["lease"] == "held" && c["live_nodes"] == 1);
    assert!(node.log_text().contains("cluster: joined"), "{}", node.log_text());
    assert_eq!(cluster_health(&node)["node_id"], "a");
    assert!(!redis.cli(&["GET", "t1:node:a"]).is_empty(), "the lease names this process");
    let ttl: i64 = redis.cli(&["PTTL", "t1:node:a"]).parse().unwrap();
    assert!((1..=3000).contains(&ttl), "the lease runs out by itself: {ttl} ms");
    let (_, metrics) = http(&node, "GET", "/metrics", None, None);
    assert!(metrics.contains("sbc_cluster_redis_up 1") && metrics.contains("sbc_cluster_lease_held 1"), "{metrics}");
    // What the API lists is this node's, what it changes every node's: every answer says so.
    for (method, path, scope) in [("GET", "/registrations", "node a"), ("POST", "/profiles/reload", "cluster")] {
        let (_, head, _) = http_with_head(&node, method, path, None, None);
        assert!(head.to_ascii_lowercase().contains(&format!("x-sbc-scope: {scope}")), "{method} {path}: {head}");
    }
    node.terminate(Duration::from_secs(10)).expect("sbcd stops");
    assert_eq!(redis.cli(&["EXISTS", "t1:node:a"]), "0", "given up at exit");
    assert_eq!(redis.cli(&["ZCARD", "t1:nodes"]), "0");
}

#[test]
fn without_redis_a_node_serves_and_joins_once_redis_is_there() {
    let port = free_port();
    let node = Sbcd::with_config(&cluster_yaml("b", &format!("redis://127.0.0.1:{port}"), "t2"), &[]);
    let health = cluster_health(&node);
    assert_eq!((health["redis"].as_str(), health["lease"].as_str()), (Some("down"), Some("none")), "{health}");
    assert!(node.log_text().contains("Redis unreachable at start"), "{}", node.log_text());
    // Calls go on with the node's own state.
    call_through(&node, "basic", Transport::Udp, 2);
    let mut redis = RedisServer::start_on(port);
    wait_for(&node, "joined late", |c| c["redis"] == "up" && c["lease"] == "held");
    // Redis goes away under the node, and comes back empty: the lease is taken again.
    redis.stop();
    wait_for(&node, "Redis gone", |c| c["redis"] == "down" && c["lease"] == "none");
    let (_, metrics) = http(&node, "GET", "/metrics", None, None);
    assert!(metrics.contains("sbc_cluster_redis_up 0"), "{metrics}");
    // The cluster's call list needs Redis; this node's does not.
    let (status, body) = http(&node, "GET", "/calls", None, None);
    assert_eq!(status, 503, "never a partial list: {body}");
    assert!(body.contains("scope=node"), "{body}");
    let (status, head, body) = http_with_head(&node, "GET", "/calls?scope=node", None, None);
    assert_eq!((status, body.as_str()), (200, "[]"));
    assert!(head.to_ascii_lowercase().contains("x-sbc-scope: node b"), "{head}");
    assert_eq!(http(&node, "GET", "/calls?scope=all", None, None).0, 400);
    call_through(&node, "basic", Transport::Udp, 1);
    redis.restart();
    wait_for(&node, "back", |c| c["redis"] == "up" && c["lease"] == "held");
    assert!(!redis.cli(&["GET", "t2:node:b"]).is_empty());
}

#[test]
fn a_second_process_with_the_same_node_id_is_told() {
    let redis = RedisServer::start();
    let yaml = cluster_yaml("c", &redis.url(), "t3");
    let first = Sbcd::with_config(&yaml, &[]);
    wait_for(&first, "first joined", |c| c["lease"] == "held");
    let second = Sbcd::with_config(&yaml, &[]);
    wait_for(&second, "clash seen", |c| c["lease"] == "clash" && c["redis"] == "up");
    assert!(second.log_text().contains("another process holds this node_id's lease"), "{}", second.log_text());
    assert_eq!(cluster_health(&first)["lease"], "held", "the first keeps its lease");
}

#[test]
fn check_config_names_a_bad_cluster_key() {
    for (yaml, key) in [
        (cluster_yaml("has space", "redis://127.0.0.1:1", "p"), "cluster.node_id"),
        (cluster_yaml("d", "rediss://127.0.0.1:1", "p"), "cluster.redis_url"),
        (format!("{}  timeout_ms: 1\n", cluster_yaml("d", "redis://127.0.0.1:1", "p")), "cluster.timeout_ms"),
        ("cluster:\n  node_id: d\n".to_string(), "redis_url"),
        (format!("{}  nodes: [e, f]\n", cluster_yaml("d", "redis://127.0.0.1:1", "p")), "cluster.nodes"),
    ] {
        let cfg = config_file("cluster-check", &yaml);
        let out =
            Command::new(sbcd_bin()).args(["--check-config", "--config", cfg.to_str().unwrap()]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{yaml}");
        assert!(err.contains("sbc.yaml:") && err.contains(key), "{key}: {err}");
    }
    let good = config_file("cluster-check", &cluster_yaml("d", "redis://127.0.0.1:1", "p"));
    let out = Command::new(sbcd_bin()).args(["--check-config", "--config", good.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "--check-config does not need Redis: {}", String::from_utf8_lossy(&out.stderr));
}

/// One parallel call per From user (`$fU`), counted by the cluster.
const ONE_CALL_EACH: &str = "active_profile: limited\nprofiles:\n  limited:\n    call_control: limit\n    limit_module: cc_pcalls\n    limit_uuid: \"$fU\"\n    limit_max_calls: \"1\"\n";

/// The calls `node`'s process counts in the hash `hash` (its field is `<node>:<instance>`).
fn node_calls(redis: &RedisServer, hash: &str, node: &str) -> Option<String> {
    let all = redis.cli(&["HGETALL", hash]);
    let lines: Vec<&str> = all.lines().collect();
    lines.chunks(2).find(|kv| kv[0].starts_with(&format!("{node}:"))).and_then(|kv| kv.get(1)).map(|v| v.to_string())
}

/// `cc_pcalls` with a limit of one call per user, on two nodes of one cluster: a call held
/// through node A makes node B refuse the user's second call; once it ends, B takes one. A
/// node killed with -9 holds its count until its lease runs out, then the count is released.
#[test]
fn a_parallel_call_limit_holds_across_nodes_and_a_dead_node_lets_go() {
    let redis = RedisServer::start();
    let (mut a, b) = two_nodes(&redis, ONE_CALL_EACH, "t4");
    let uas_port = free_port();
    let uas = sipp_uas("uas_basic.xml", uas_port, Transport::Udp, 2);
    let (mut first, status) = call(&a, uas_port);
    assert_eq!(status, Some(200), "{}", a.log_text());
    assert_eq!(node_calls(&redis, "t4:pcalls:ua", "a").as_deref(), Some("1"), "counted for a: {}", a.log_text());
    let (_, refused) = call(&b, uas_port);
    assert_eq!(refused, Some(402), "the other node sees the call: {}", b.log_text());
    assert_eq!(first.bye().status(), Some(200));
    hooks_done(&a);
    assert_eq!(redis.cli(&["EXISTS", "t4:pcalls:ua"]), "0", "released");
    let (mut second, status) = call(&b, uas_port);
    assert_eq!(status, Some(200), "{}", b.log_text());
    assert_eq!(second.bye().status(), Some(200));
    hooks_done(&b);
    let _ = uas.wait(Duration::from_secs(10));

    // Node a dies holding a call: its count stays until its lease (3 s) runs out.
    let uas = sipp_uas("uas_basic.xml", uas_port, Transport::Udp, 2);
    let (_held, status) = call(&a, uas_port);
    assert_eq!(status, Some(200));
    let _ = Command::new("kill").args(["-9", &a.pid().to_string()]).status();
    assert!(eventually(Duration::from_secs(2), || !a.is_running()));
    assert_eq!(call(&b, uas_port).1, Some(402), "a's lease is still running");
    std::thread::sleep(Duration::from_secs(3));
    let (mut after, status) = call(&b, uas_port);
    assert_eq!(status, Some(200), "a dead node's count is released: {}", b.log_text());
    assert_eq!(after.bye().status(), Some(200));
    assert_eq!(node_calls(&redis, "t4:pcalls:ua", "a"), None, "the dead process's field is gone");
    drop(uas);
}

/// Redis gone: a node counts calls itself under the same limit (fail open per node), and
/// when Redis is back (empty, after a restart) the node's calls are counted there again, so
/// the other node sees them; their releases reach Redis too.
#[test]
fn without_redis_counts_stay_on_the_node_and_reach_redis_when_it_is_back() {
    let mut redis = RedisServer::start();
    let (a, b) = two_nodes(&redis, ONE_CALL_EACH, "t5");
    redis.stop();
    wait_for(&a, "Redis gone", |c| c["redis"] == "down");
    let uas_port = free_port();
    let uas = sipp_uas("uas_basic.xml", uas_port, Transport::Udp, 2);
    let (mut held, status) = call(&a, uas_port);
    assert_eq!(status, Some(200), "fail open: {}", a.log_text());
    assert_eq!(call(&a, uas_port).1, Some(402), "the node's own limit holds");
    redis.restart();
    wait_for(&a, "back", |c| c["redis"] == "up" && c["lease"] == "held");
    wait_for(&b, "back", |c| c["redis"] == "up" && c["lease"] == "held");
    let reconciled = || node_calls(&redis, "t5:pcalls:ua", "a").as_deref() == Some("1");
    assert!(eventually(Duration::from_secs(5), reconciled), "the held call is counted in Redis again");
    assert_eq!(call(&b, uas_port).1, Some(402), "the other node sees it");
    assert_eq!(held.bye().status(), Some(200));
    hooks_done(&a);
    assert_eq!(redis.cli(&["EXISTS", "t5:pcalls:ua"]), "0", "its release reached Redis");
    let (mut next, status) = call(&b, uas_port);
    assert_eq!(status, Some(200));
    assert_eq!(next.bye().status(), Some(200));
    let _ = uas.wait(Duration::from_secs(10));
}

/// `cc_cps` with two calls a second for a trunk, on two nodes of one cluster: in one second of
/// Redis's clock, a call through A and one through B are taken, the third (through A) gets 503.
#[test]
fn a_call_rate_is_shared_by_the_nodes() {
    let redis = RedisServer::start();
    let rate = "active_profile: rated\nprofiles:\n  rated:\n    call_control: rate\n    rate_module: cc_cps\n    rate_uuid: trunk\n    rate_max_cps: \"2\"\n";
    let (a, b) = two_nodes(&redis, rate, "t6");
    let uas_port = free_port();
    let uas = sipp_uas("uas_basic.xml", uas_port, Transport::Udp, 2);
    // Start just after a second of Redis's clock begins: the three calls take milliseconds.
    let time = redis.cli(&["TIME"]);
    let micros: u64 = time.lines().nth(1).and_then(|m| m.trim().parse().ok()).unwrap();
    std::thread::sleep(Duration::from_micros(1_000_000 - micros) + Duration::from_millis(20));
    let (mut first, s1) = call(&a, uas_port);
    let (mut second, s2) = call(&b, uas_port);
    let (_, s3) = call(&a, uas_port);
    assert_eq!((s1, s2, s3), (Some(200), Some(200), Some(503)), "a: {}\nb: {}", a.log_text(), b.log_text());
    assert_eq!(first.bye().status(), Some(200));
    assert_eq!(second.bye().status(), Some(200));
    let _ = uas.wait(Duration::from_secs(10));
}

/// A node restarted (after `kill -9`) with its node id: its previous process's calls are
/// released once the new process holds the lease, not kept under the node's name for good.
#[test]
fn a_restarted_node_does_not_inherit_its_previous_processs_calls() {
    let redis = RedisServer::start();
    let (mut a, b) = two_nodes(&redis, ONE_CALL_EACH, "t7");
    let uas_port = free_port();
    let uas = sipp_uas("uas_basic.xml", uas_port, Transport::Udp, 2);
    assert_eq!(call(&a, uas_port).1, Some(200));
    let old = node_calls(&redis, "t7:pcalls:ua", "a");
    assert_eq!(old.as_deref(), Some("1"));
    let _ = Command::new("kill").args(["-9", &a.pid().to_string()]).status();
    assert!(eventually(Duration::from_secs(2), || !a.is_running()));
    let again = Sbcd::with_config(&format!("{ONE_CALL_EACH}{}", cluster_yaml("a", &redis.url(), "t7")), &[]);
    wait_for(&again, "the old lease ran out", |c| c["lease"] == "held");
    let (mut next, status) = call(&b, uas_port);
    assert_eq!(status, Some(200), "the old process's call is released: {}", b.log_text());
    assert_eq!(next.bye().status(), Some(200));
    drop(uas);
}

/// Redis paused past the deadline: the call is decided on the node's own count while the
/// script still runs when Redis resumes; the count the renewer writes then is absolute, so the
/// call is counted once, not twice, and its release leaves nothing behind.
#[test]
fn a_late_redis_answer_counts_a_call_once() {
    let redis = RedisServer::start();
    let a = Sbcd::with_config(&format!("{ONE_CALL_EACH}{}", cluster_yaml("a", &redis.url(), "t8")), &[]);
    wait_for(&a, "joined", |c| c["lease"] == "held");
    let uas_port = free_port();
    let uas = sipp_uas("uas_basic.xml", uas_port, Transport::Udp, 1);
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "700", "WRITE"]), "OK");
    let (mut held, status) = call(&a, uas_port);
    assert_eq!(status, Some(200), "decided on the node's own count: {}", a.log_text());
    std::thread::sleep(Duration::from_secs(3));
    wait_for(&a, "Redis back", |c| c["redis"] == "up");
    assert_eq!(node_calls(&redis, "t8:pcalls:ua", "a").as_deref(), Some("1"), "once, not twice");
    let (_, metrics) = http(&a, "GET", "/metrics", None, None);
    assert!(!metrics.contains("sbc_cluster_pcalls_counted_locally_total 0"), "{metrics}");
    assert_eq!(held.bye().status(), Some(200));
    let released = || node_calls(&redis, "t8:pcalls:ua", "a").is_none();
    assert!(eventually(Duration::from_secs(5), released), "released: {}", redis.cli(&["HGETALL", "t8:pcalls:ua"]));
    let _ = uas.wait(Duration::from_secs(10));
}

/// The call list and teardown across nodes: a call held through A is listed by B (as
/// `a:<id>`, node `a`), shown and ended through B's API (the caller gets A's BYE); a node
/// that no longer answers makes the list 503 with its name, never a shorter list.
#[test]
fn any_node_lists_and_ends_the_calls_of_every_node() {
    let redis = RedisServer::start();
    let (mut a, b) = two_nodes(&redis, "", "t9");
    let uas_port = free_port();
    let _uas = sipp_uas("uas_basic.xml", uas_port, Transport::Udp, 1);
    let (caller, status) = call(&a, uas_port);
    assert_eq!(status, Some(200));
    let list = |n: &Sbcd| -> serde_json::Value {
        let (status, body) = http(n, "GET", "/calls", None, None);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    let on_a = list(&a);
    assert_eq!(on_a.as_array().map(Vec::len), Some(1), "{on_a}");
    let local_id = on_a[0]["id"].as_str().unwrap().to_string();
    assert_eq!(on_a[0]["node"], "a");
    let on_b = list(&b);
    assert_eq!(on_b.as_array().map(Vec::len), Some(1), "{on_b}");
    let id = format!("a:{local_id}");
    assert_eq!((on_b[0]["id"].as_str(), on_b[0]["node"].as_str()), (Some(id.as_str()), Some("a")));
    let (_, head, _) = http_with_head(&b, "GET", "/calls", None, None);
    assert!(!head.to_ascii_lowercase().contains("x-sbc-scope"), "the call list spans the cluster: {head}");
    let (status, one) = http(&b, "GET", &format!("/calls/{id}"), None, None);
    assert_eq!(status, 200, "{one}");
    let (status, _) = http(&b, "DELETE", &format!("/calls/{id}"), None, None);
    assert_eq!(status, 204, "ended through b: {}", b.log_text());
    let bye = caller.recv_request(Duration::from_secs(5)).expect("the caller gets a BYE from a");
    assert_eq!(bye.method(), Some("BYE"));
    caller.ok(&bye);
    assert!(eventually(Duration::from_secs(5), || list(&b).as_array().is_some_and(Vec::is_empty)));
    assert_eq!(http(&b, "DELETE", &format!("/calls/{id}"), None, None).0, 404);
    assert_eq!(http(&b, "DELETE", "/calls/a:x", None, None).0, 400, "{}", b.log_text());

    // a stops answering while its lease still runs: b's list says so.
    let _ = Command::new("kill").args(["-STOP", &a.pid().to_string()]).status();
    let (status, body) = http(&b, "GET", "/calls", None, None);
    let _ = Command::new("kill").args(["-CONT", &a.pid().to_string()]).status();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("cluster node(s) a did not answer"), "{body}");
    a.terminate(Duration::from_secs(10));
}

/// A change through one node's API is applied by every node; a node that cannot apply it is
/// named in the answer, and keeps what it ran.
#[test]
fn a_change_through_one_nodes_api_applies_on_every_node() {
    let redis = RedisServer::start();
    let profiles =
        "active_profile: one\nprofiles:\n  one:\n    next_hop: 127.0.0.1:5070\n  two:\n    next_hop: 127.0.0.1:5071\n";
    let (a, b) = two_nodes(&redis, profiles, "t9");
    let rules = r#"{"rules":[{"regex":"^sip:","value":"two"}]}"#;
    let (status, head, body) = http_with_head(&a, "PUT", "/regex-maps/route", None, Some(rules));
    assert_eq!(status, 200, "{body}");
    assert!(head.to_ascii_lowercase().contains("x-sbc-scope: cluster"), "{head}");
    assert!(http(&b, "GET", "/regex-maps", None, None).1.contains("\"route\""), "the map runs on b too");
    let (status, head, _) = http_with_head(&a, "PUT", "/active-profile", None, Some(r#"{"chain":"two"}"#));
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("x-sbc-scope: cluster"), "{head}");
    assert!(http(&b, "GET", "/active-profile", None, None).1.contains("\"two\""));
    // A third node whose configuration lacks profile `three`: it refuses the change, keeps
    // its chain, and the answer names it.
    let c = Sbcd::with_config(&format!("{profiles}{}", cluster_yaml("c", &redis.url(), "t9")), &[]);
    wait_for(&c, "joined", |v| v["lease"] == "held");
    let three = format!("{profiles}  three:\n    next_hop: 127.0.0.1:5072\n");
    drop(a);
    let a = Sbcd::with_config(&format!("{three}{}", cluster_yaml("a", &redis.url(), "t9")), &[]);
    wait_for(&a, "a back", |v| v["lease"] == "held");
    let (status, head, _) = http_with_head(&a, "PUT", "/active-profile", None, Some(r#"{"chain":"three"}"#));
    assert_eq!(status, 200, "applied on a");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("x-sbc-scope: node a"), "{head}");
    assert!(head.contains("x-sbc-cluster-failures:") && head.contains("b: ") && head.contains("c: "), "{head}");
    // SEMS's tool says so too, and fails.
    let out = Command::new(sbc_e2e::repo_root().join("packaging/bin/sems-sbc-set-activeprofile"))
        .arg("three")
        .env("SBC_ADMIN_URL", a.admin_url())
        .env("SBC_TOOLS_LIB", sbc_e2e::repo_root().join("packaging/lib"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("not on other cluster nodes: b: "), "{err}");
    // (c started after the earlier change: it runs its own files' chain.)
    assert!(http(&c, "GET", "/active-profile", None, None).1.contains("\"one\""), "c keeps its chain");
}

/// Two clusters given the same key prefix by mistake: a node that lists its cluster's nodes
/// reports the other cluster's node, does not take it as a peer, and does not ask it about
/// calls or send it its changes.
#[test]
fn a_node_of_another_cluster_under_the_same_prefix_is_reported() {
    let redis = RedisServer::start();
    let listed = format!("{}  nodes: [a, b]\n", cluster_yaml("a", &redis.url(), "t10"));
    let a = Sbcd::with_config(&listed, &[]);
    let other = Sbcd::with_config(&cluster_yaml("x", &redis.url(), "t10"), &[]);
    for n in [&a, &other] {
        wait_for(n, "joined", |c| c["lease"] == "held");
    }
    wait_for(&a, "x reported", |c| c["unexpected_nodes"] == serde_json::json!(["x"]));
    assert!(cluster_health(&a)["peers"].as_object().is_some_and(|p| p.is_empty()), "not a peer");
    assert!(a.log_text().contains("not in cluster.nodes uses this cluster's key prefix"), "{}", a.log_text());
    let (_, metrics) = http(&a, "GET", "/metrics", None, None);
    assert!(metrics.contains("sbc_cluster_nodes_unexpected 1"), "{metrics}");
    let (status, head, _) = http_with_head(&a, "POST", "/profiles/reload", None, None);
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("x-sbc-scope: cluster"), "x is not asked: {head}");
    // x, which lists no nodes, sees a as one of its own: only a listed cluster is told.
    wait_for(&other, "a a peer of x", |c| c["peers"]["a"].is_array());
}
