//! The management plane: a REST API (JSON in and out) and Prometheus `/metrics`, over the
//! [`Control`] trait this crate defines and `sbc-core` implements. It knows nothing of the
//! core's internals; the core knows nothing of HTTP.
//!
//! Every route but `/health` and `/metrics` needs `Authorization: Bearer <token>` when a
//! token is configured. The OpenAPI document is generated from the handlers (`/openapi.json`).

mod changes;
mod model;
mod routes;

use std::future::Future;

pub use changes::{ConfigChange, Spread};
pub use model::*;
pub use routes::{router, ApiDoc};

/// An error for the caller: an HTTP status and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self { status: 400, message: m.into() }
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self { status: 404, message: m.into() }
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self { status: 409, message: m.into() }
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self { status: 500, message: m.into() }
    }
    /// The SBC could not answer in time (a shard behind its queue): try again.
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self { status: 503, message: m.into() }
    }
}

/// What the API can ask of the SBC. Changes are validated before anything is published: an
/// error leaves the running configuration as it was.
pub trait Control: Send + Sync + 'static {
    fn profiles(&self) -> Vec<ProfileInfo>;
    /// Loads (or replaces) profile `name` from a SEMS profile file.
    fn load_profile(&self, name: &str, file: &str) -> Result<ProfileInfo, ApiError>;
    /// Reads profile `name` again from its file.
    fn reload_profile(&self, name: &str) -> Result<ProfileInfo, ApiError>;
    /// Reloads profiles, maps and the chain from the configuration file (as SIGHUP does).
    fn reload_all(&self) -> Result<Changed, ApiError>;
    fn active_profile(&self) -> ActiveProfile;
    fn set_active_profile(&self, chain: &str) -> Result<Changed, ApiError>;
    fn regex_maps(&self) -> Vec<RegexMapInfo>;
    fn set_regex_map(&self, name: &str, body: MapBody) -> Result<RegexMapInfo, ApiError>;
    /// Every call (in cluster mode every node's, unless `this_node_only`), or an error when
    /// part of the SBC did not answer (never a partial list).
    fn calls(&self, this_node_only: bool) -> impl Future<Output = Result<Vec<CallInfo>, ApiError>> + Send;
    /// One call, asked of the shard its id names only.
    fn call(&self, id: &str) -> impl Future<Output = Result<CallInfo, ApiError>> + Send;
    /// The SIP messages of call `id` of this node (while it runs, and for a while after).
    fn trace(&self, id: &str) -> impl Future<Output = Result<CallTrace, ApiError>> + Send;
    /// Registered contacts, by AoR.
    fn registrations(&self) -> Vec<RegistrationInfo>;
    /// Ends a call: BYE on both legs (CANCEL/error while it rings), call control told.
    fn teardown(&self, id: &str) -> impl Future<Output = Result<(), ApiError>> + Send;
    fn call_control(&self) -> CallControlInfo;
    fn load_call_control_modules(&self, modules: &[String]) -> Result<CallControlInfo, ApiError>;
    fn explain(&self, req: &ExplainRequest) -> Result<ExplainResult, ApiError>;
    /// Reads every interface's TLS certificate, key and CAs again; on an error the interfaces
    /// that did not load keep their running certificate.
    fn reload_tls(&self) -> Result<TlsReloaded, ApiError>;
    fn health(&self) -> Health;
    /// Next hops probed or blacklisted.
    fn next_hops(&self) -> Vec<NextHopInfo>;
    /// cc_prepaid's balances: the node's database, or the cluster's (one balance per account
    /// for `Get`, `Set`, `Add` and `Subtract`). Not found without cc_prepaid balances.
    fn prepaid(&self, _op: PrepaidOp) -> impl Future<Output = Result<Vec<Balance>, ApiError>> + Send {
        async { Err(ApiError::not_found("cc_prepaid keeps no balances here (call_control.cc_prepaid.db)")) }
    }
    /// Counters as JSON (the same numbers as `/metrics`).
    fn stats(&self) -> serde_json::Value;
    /// The Prometheus text exposition.
    fn metrics(&self) -> String;
    /// In cluster mode, applies `change`, made on this node, on every other live node;
    /// `None` outside a cluster.
    fn spread(&self, _change: &ConfigChange) -> impl Future<Output = Option<Spread>> + Send {
        async { None }
    }
    /// In cluster mode, this node's id: what the API lists (but calls, which span the cluster)
    /// is this node's alone, and every such answer says so (`X-Sbc-Scope`); changes are
    /// spread to the other nodes ([`Control::spread`]).
    fn cluster_node(&self) -> Option<String> {
        None
    }
}

/// What the API can be served on (a TCP listener, or one whose connections are HTTPS).
pub use axum::serve::Listener;

/// How the API is served.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// `Authorization: Bearer` value required on every route but `/health` and `/metrics`.
    pub token: Option<String>,
}

/// Serves the API on `listener` (plain TCP, or a listener whose connections are HTTPS) until
/// the process ends.
pub async fn serve<C, L>(listener: L, control: std::sync::Arc<C>, cfg: ApiConfig)
where
    C: Control,
    L: Listener,
    L::Addr: std::fmt::Debug,
{
    let app = router(control, cfg);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "admin API stopped");
    }
}

#[cfg(test)]
mod tests;
