//! cc_prepaid's balances for the API: the node's SQLite file (opened per request, beside the
//! module's own connection, as `sbcd prepaid` does), or a cluster's Redis.

use std::path::PathBuf;
use std::sync::Arc;

use admin_api::{ApiError, Balance, PrepaidOp};
use callcontrol::modules::prepaid;

/// The answer naming one account: not found without a balance.
fn one(account: String, seconds: Option<i64>) -> Result<Vec<Balance>, ApiError> {
    match seconds {
        Some(seconds) => Ok(vec![Balance { account, seconds }]),
        None => Err(ApiError::not_found(format!("no account '{account}'"))),
    }
}

fn in_file(db: PathBuf, op: PrepaidOp) -> Result<Vec<Balance>, ApiError> {
    let failed = |e: &dyn std::fmt::Display| ApiError::internal(format!("{}: {e}", db.display()));
    let c = prepaid::open_db(&db).map_err(|e| failed(&e))?;
    let failed = |e| failed(&e);
    match op {
        PrepaidOp::List => {
            let all = prepaid::balances(&c).map_err(failed)?;
            Ok(all.into_iter().map(|(account, seconds)| Balance { account, seconds }).collect())
        }
        PrepaidOp::Get(a) => {
            let s = prepaid::balance(&c, &a).map_err(failed)?;
            one(a, s)
        }
        PrepaidOp::Set(a, s) => {
            prepaid::set_balance(&c, &a, s).map_err(failed)?;
            one(a, Some(s))
        }
        PrepaidOp::Add(a, s) => {
            let now = prepaid::add_credit(&c, &a, s).map_err(failed)?;
            one(a, Some(now))
        }
        PrepaidOp::Subtract(a, s) => {
            let now = prepaid::subtract_credit(&c, &a, s).map_err(failed)?;
            one(a, now)
        }
    }
}

async fn in_cluster(c: &cluster::Cluster, op: PrepaidOp) -> Result<Vec<Balance>, ApiError> {
    use cluster::balances;
    let (conn, prefix) = (c.connection(), c.settings().key_prefix.as_str());
    let failed = |e: cluster::StoreError| ApiError::unavailable(format!("Redis: {e}"));
    match op {
        PrepaidOp::List => {
            let all = balances::balances(conn, prefix).await.map_err(failed)?;
            Ok(all.into_iter().map(|(account, seconds)| Balance { account, seconds }).collect())
        }
        PrepaidOp::Get(a) => {
            let s = balances::balance(conn, prefix, &a).await.map_err(failed)?;
            one(a, s)
        }
        PrepaidOp::Set(a, s) => {
            balances::set_balance(conn, prefix, &a, s).await.map_err(failed)?;
            one(a, Some(s))
        }
        PrepaidOp::Add(a, s) => {
            let now = balances::add_credit(conn, prefix, &a, s).await.map_err(failed)?;
            one(a, Some(now))
        }
        PrepaidOp::Subtract(a, s) => {
            let now = balances::subtract_credit(conn, prefix, &a, s).await.map_err(failed)?;
            one(a, now)
        }
    }
}

/// Runs `op` where this sbcd keeps its balances.
pub(super) async fn run(
    cluster: Option<&Arc<cluster::Cluster>>,
    db: Option<PathBuf>,
    op: PrepaidOp,
) -> Result<Vec<Balance>, ApiError> {
    match (cluster, db) {
        (Some(c), _) => in_cluster(c, op).await,
        (None, Some(db)) => tokio::task::spawn_blocking(move || in_file(db, op))
            .await
            .map_err(|e| ApiError::internal(format!("balance lookup: {e}")))?,
        (None, None) => Err(ApiError::not_found("cc_prepaid keeps no balances here (call_control.cc_prepaid.db)")),
    }
}
