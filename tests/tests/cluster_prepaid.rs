//! `cc_prepaid` balances shared by cluster nodes, with a real Redis: a balance reserved by a
//! call through one node cannot be spent through another; a node killed with -9 has its call
//! settled up to its last lease renewal; without Redis, prepaid calls are refused and the
//! debits of ended calls wait until Redis answers.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use sbc_e2e::cluster::{call, cluster_yaml, hooks_done, metric, two_nodes, wait_for};
use sbc_e2e::redis::RedisServer;
use sbc_e2e::{eventually, free_port, sbcd_bin, sipp_uas, Sbcd, Transport};

/// Every call is charged to its From user's account (the test UA's is `ua`).
const PREPAID: &str =
    "active_profile: paid\nprofiles:\n  paid:\n    call_control: credit\n    credit_module: cc_prepaid\n    credit_uuid: \"$fU\"\n";

/// `sbcd prepaid --redis` with `args`: its output; the command must succeed.
fn prepaid_cli(redis: &RedisServer, prefix: &str, args: &[&str]) -> String {
    let out = Command::new(sbcd_bin())
        .args(["prepaid", "--redis", &redis.url(), "--key-prefix", prefix])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn balance(redis: &RedisServer, prefix: &str) -> i64 {
    prepaid_cli(redis, prefix, &["get", "ua"]).split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_balance_is_shared_by_the_nodes_and_never_spent_twice() {
    let redis = RedisServer::start();
    let (a, b) = two_nodes(&redis, PREPAID, "p1");
    assert_eq!(prepaid_cli(&redis, "p1", &["set", "ua", "60"]), "ua 60");
    let uas_port = free_port();
    let uas = sipp_uas("uas_basic.xml", uas_port, Transport::Udp, 3);
    let (mut first, status) = call(&a, uas_port);
    assert_eq!(status, Some(200), "{}", a.log_text());
    // The running call holds the whole balance: nothing is left to spend through B.
    let (_, refused) = call(&b, uas_port);
    assert_eq!(refused, Some(402), "{}", b.log_text());
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(first.bye().status(), Some(200));
    hooks_done(&a);
    let left = balance(&redis, "p1");
    assert!((58..=59).contains(&left), "about a second debited once: {left}");
    assert_eq!(redis.cli(&["EXISTS", "p1:prepaid:calls:ua"]), "0", "the call's reservation is gone");
    // What is left can be spent through B.
    let (mut second, status) = call(&b, uas_port);
    assert_eq!(status, Some(200), "{}", b.log_text());
    assert_eq!(second.bye().status(), Some(200));
    hooks_done(&b);
    assert!(prepaid_cli(&redis, "p1", &["list"]).starts_with("ua "), "listed");
    prepaid_cli(&redis, "p1", &["set", "ua", "0"]);
    assert_eq!(call(&a, uas_port).1, Some(402), "no credit");
    drop(uas);
}

#[test]
fn a_dead_nodes_call_is_settled_up_to_its_last_renewal() {
    let redis = RedisServer::start();
    let (mut a, b) = two_nodes(&redis, PREPAID, "p2");
    prepaid_cli(&redis, "p2", &["set", "ua", "600"]);
    let uas_port = free_port();
    let uas = sipp_uas("uas_basic.xml", uas_port, Transport::Udp, 2);
    let (_held, status) = call(&a, uas_port);
    assert_eq!(status, Some(200), "{}", a.log_text());
    std::thread::sleep(Duration::from_secs(2));
    let _ = Command::new("kill").args(["-9", &a.pid().to_string()]).status();
    assert!(eventually(Duration::from_secs(2), || !a.is_running()));
    // Until a's lease (3 s) runs out its call stands; then b's sweep settles it.
    assert_eq!(redis.cli(&["EXISTS", "p2:prepaid:calls:ua"]), "1", "still a's");
    let settled = || redis.cli(&["EXISTS", "p2:prepaid:calls:ua"]) == "0";
    assert!(eventually(Duration::from_secs(10), settled), "settled by the survivor: {}", b.log_text());
    let billed = 600 - balance(&redis, "p2");
    assert!((1..=3).contains(&billed), "debited up to a's last renewal (every second): {billed} s");
    drop(uas);
}

#[test]
fn without_redis_prepaid_calls_are_refused_and_debits_wait() {
    let redis = RedisServer::start();
    let a = Sbcd::with_config(&format!("{PREPAID}{}", cluster_yaml("a", &redis.url(), "p3")), &[]);
    wait_for(&a, "joined", |c| c["lease"] == "held");
    prepaid_cli(&redis, "p3", &["set", "ua", "600"]);
    let uas_port = free_port();
    let uas = sipp_uas("uas_basic.xml", uas_port, Transport::Udp, 2);
    let (mut held, status) = call(&a, uas_port);
    assert_eq!(status, Some(200), "{}", a.log_text());
    std::thread::sleep(Duration::from_millis(1200));
    redis.pause();
    wait_for(&a, "Redis away", |c| c["redis"] == "down");
    // The call ends while Redis is away: its debit waits.
    assert_eq!(held.bye().status(), Some(200));
    hooks_done(&a);
    assert_eq!(metric(&a, "sbc_cluster_prepaid_debits_pending"), Some(1));
    // A new call is not let through unbilled.
    assert_eq!(call(&a, uas_port).1, Some(503), "fail closed");
    assert_eq!(metric(&a, "sbc_cluster_prepaid_refused_unavailable_total"), Some(1));
    redis.resume();
    wait_for(&a, "back", |c| c["redis"] == "up" && c["lease"] == "held");
    assert!(eventually(Duration::from_secs(5), || metric(&a, "sbc_cluster_prepaid_debits_pending") == Some(0)));
    let left = balance(&redis, "p3");
    assert!((598..=599).contains(&left), "debited once, when Redis answered: {left}");
    assert_eq!(redis.cli(&["EXISTS", "p3:prepaid:calls:ua"]), "0");
    drop(uas);
}

#[test]
fn a_late_reservation_is_released_and_a_process_without_its_lease_is_refused() {
    let redis = RedisServer::start();
    let yaml = format!("{PREPAID}{}", cluster_yaml("a", &redis.url(), "p4"));
    let a = Sbcd::with_config(&yaml, &[]);
    wait_for(&a, "joined", |c| c["lease"] == "held");
    prepaid_cli(&redis, "p4", &["set", "ua", "600"]);
    let uas_port = free_port();
    let uas = sipp_uas("uas_basic.xml", uas_port, Transport::Udp, 1);
    // Redis runs the reservation after its deadline: the call is refused, and the
    // reservation, which landed all the same, is released once Redis answers again.
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "700", "WRITE"]), "OK");
    assert_eq!(call(&a, uas_port).1, Some(503), "{}", a.log_text());
    let released = || redis.cli(&["EXISTS", "p4:prepaid:calls:ua"]) == "0";
    assert!(eventually(Duration::from_secs(10), released), "{}", redis.cli(&["HGETALL", "p4:prepaid:calls:ua"]));
    assert_eq!(balance(&redis, "p4"), 600, "nothing billed");
    // A second process claiming node a holds no lease: its calls would count as a dead
    // process's (settled unbilled), so it refuses them.
    let second = Sbcd::with_config(&yaml, &[]);
    wait_for(&second, "clash", |c| c["lease"] == "clash" && c["redis"] == "up");
    assert_eq!(call(&second, uas_port).1, Some(503));
    assert_eq!(redis.cli(&["EXISTS", "p4:prepaid:calls:ua"]), "0");
    drop(uas);
}

/// SEMS's `addCredit` and `subtractCredit` on a cluster's balances: through one node's API and
/// `sbcd prepaid --redis`; every node sees the result.
#[test]
fn credit_is_added_and_subtracted_on_the_clusters_balances() {
    let redis = RedisServer::start();
    let (a, b) = two_nodes(&redis, PREPAID, "p4");
    let (status, body) = sbc_e2e::http(&a, "POST", "/prepaid/ua/add", None, Some(r#"{"seconds":30}"#));
    assert_eq!((status, body.as_str()), (200, r#"{"account":"ua","seconds":30}"#));
    assert_eq!(prepaid_cli(&redis, "p4", &["subtract", "ua", "10"]), "ua 20");
    assert_eq!(prepaid_cli(&redis, "p4", &["add", "ua", "5"]), "ua 25");
    let (_, body) = sbc_e2e::http(&b, "GET", "/prepaid/ua", None, None);
    assert_eq!(body, r#"{"account":"ua","seconds":25}"#, "the other node sees it");
    let (status, _) = sbc_e2e::http(&b, "POST", "/prepaid/nobody/subtract", None, Some(r#"{"seconds":1}"#));
    assert_eq!(status, 404, "subtract needs the account");
    assert_eq!(redis.cli(&["EXISTS", "p4:prepaid:bal:nobody"]), "0", "and creates none");
}
