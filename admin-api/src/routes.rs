//! The routes, their documentation and the bearer-token check.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use utoipa::OpenApi;

use crate::model::*;
use crate::{ApiConfig, ApiError, ConfigChange, Control};
use serde::Serialize;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(ErrorBody { error: self.message })).into_response()
    }
}

struct AppState<C> {
    control: Arc<C>,
    token: Option<Arc<str>>,
}

impl<C> Clone for AppState<C> {
    fn clone(&self) -> Self {
        Self { control: self.control.clone(), token: self.token.clone() }
    }
}

type Res<T> = Result<Json<T>, ApiError>;

#[derive(OpenApi)]
#[openapi(
    info(title = "sbcd admin API", description = "Profiles, regex maps, calls, call control and health of a running sbcd."),
    paths(
        list_profiles, load_profile, reload_profile, reload_profiles, get_active_profile, set_active_profile,
        list_regex_maps, set_regex_map, list_calls, get_call, get_call_trace, teardown_call, list_registrations, list_next_hops, get_call_control,
        load_call_control_modules, explain, reload_tls, call_stats, control_call, list_balances, get_balance, set_balance, add_credit,
        subtract_credit, health, stats, metrics
    ),
    components(schemas(
        ProfileInfo, LoadProfile, ActiveProfile, RegexMapInfo, MapRule, MapBody, CallInfo, LegInfo, MediaInfo, CallTrace, TracedMessage, RegistrationInfo,
        CallControlInfo, CcInstanceInfo, NextHopInfo, LoadModules, ExplainRequest, ExplainResult, Health, ClusterHealth, TlsHealth, TlsReloaded, Changed, ErrorBody,
        Balance, Credit, CallStats, CodecUse, ControlCmd
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// All routes. `/health`, `/metrics` and `/openapi.json` are open; the rest need the token.
pub fn router<C: Control>(control: Arc<C>, cfg: ApiConfig) -> Router {
    let state = AppState { control, token: cfg.token.map(Arc::from) };
    let protected = Router::new()
        .route("/profiles", get(list_profiles::<C>))
        .route("/profiles/reload", post(reload_profiles::<C>))
        .route("/profiles/{name}", post(load_profile::<C>))
        .route("/profiles/{name}/reload", post(reload_profile::<C>))
        .route("/active-profile", get(get_active_profile::<C>).put(set_active_profile::<C>))
        .route("/regex-maps", get(list_regex_maps::<C>))
        .route("/regex-maps/{name}", axum::routing::put(set_regex_map::<C>))
        .route("/registrations", get(list_registrations::<C>))
        .route("/next-hops", get(list_next_hops::<C>))
        .route("/call-control", get(get_call_control::<C>))
        .route("/call-control/modules", post(load_call_control_modules::<C>))
        .route("/explain", post(explain::<C>))
        .route("/tls/reload", post(reload_tls::<C>))
        .route("/stats", get(stats::<C>))
        .route("/call-stats", get(call_stats::<C>))
        .route_layer(middleware::from_fn_with_state(state.clone(), node_scope::<C>))
        // The calls of every node (cluster mode): no node scope.
        .route("/calls", get(list_calls::<C>))
        .route("/calls/{id}", get(get_call::<C>))
        .route("/calls/{id}", delete(teardown_call::<C>))
        .route("/calls/{id}/trace", get(get_call_trace::<C>))
        .route("/calls/{id}/control", post(control_call::<C>))
        // A cluster's balances are the cluster's: no node scope either.
        .route("/prepaid", get(list_balances::<C>))
        .route("/prepaid/{account}", get(get_balance::<C>).put(set_balance::<C>))
        .route("/prepaid/{account}/add", post(add_credit::<C>))
        .route("/prepaid/{account}/subtract", post(subtract_credit::<C>))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token::<C>));
    Router::new()
        .route("/health", get(health::<C>))
        .route("/metrics", get(metrics::<C>))
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .merge(protected)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(middleware::from_fn(require_ip_host))
        .with_state(state)
}

/// Browsers only reach the API through a name (DNS rebinding turns a web page into a local
/// client): requests must name the host by address or as `localhost`.
async fn require_ip_host(req: Request, next: Next) -> Response {
    let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    if host.is_empty() || name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok() {
        next.run(req).await
    } else {
        ApiError { status: 403, message: format!("Host '{host}' is not an address: use the API by IP or localhost") }
            .into_response()
    }
}

/// Runs a synchronous `Control` method (file reads, parsing, /proc) off the async workers
/// that also carry signalling.
async fn blocking<C: Control, T: Send + 'static>(
    s: &AppState<C>,
    f: impl FnOnce(&C) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let c = s.control.clone();
    tokio::task::spawn_blocking(move || f(&c)).await.map_err(|_| ApiError::internal("the request's worker failed"))?
}

/// In cluster mode, registrations, modules and counters are each node's own: every answer of
/// these routes names the node it is about, unless it says otherwise (a change spread to every
/// node is `cluster`). (The call routes span the cluster.)
async fn node_scope<C: Control>(State(s): State<AppState<C>>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    if let Some(node) = s.control.cluster_node() {
        if let Ok(v) = header::HeaderValue::from_str(&format!("node {node}")) {
            resp.headers_mut().entry("x-sbc-scope").or_insert(v);
        }
    }
    resp
}

/// A change made on this node: spread to the other nodes (cluster mode), and answered with
/// where it holds.
async fn spread<C: Control, T: Serialize>(
    s: &AppState<C>,
    change: ConfigChange,
    done: Result<T, ApiError>,
) -> Response {
    match done {
        Ok(v) => {
            let spread = s.control.spread(&change).await;
            crate::changes::answer(Json(v), spread)
        }
        Err(e) => e.into_response(),
    }
}

async fn require_token<C: Control>(State(s): State<AppState<C>>, req: Request, next: Next) -> Response {
    let Some(token) = s.token.as_deref() else { return next.run(req).await };
    let given =
        req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| constant_time_eq(g.trim().as_bytes(), token.as_bytes())) {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(ErrorBody { error: "missing or wrong bearer token".into() }),
        )
            .into_response()
    }
}

/// Compares without an early exit, so the time taken says nothing about the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[utoipa::path(get, path = "/profiles", responses((status = 200, body = [ProfileInfo])), security(("bearer" = [])))]
async fn list_profiles<C: Control>(State(s): State<AppState<C>>) -> Json<Vec<ProfileInfo>> {
    Json(s.control.profiles())
}

#[utoipa::path(post, path = "/profiles/{name}", request_body = LoadProfile,
    responses((status = 200, body = ProfileInfo), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
async fn load_profile<C: Control>(
    State(s): State<AppState<C>>,
    Path(name): Path<String>,
    Json(b): Json<LoadProfile>,
) -> Response {
    let change = ConfigChange::LoadProfile { name: name.clone(), file: b.file.clone() };
    let done = blocking(&s, move |c| c.load_profile(&name, &b.file)).await;
    spread(&s, change, done).await
}

#[utoipa::path(post, path = "/profiles/{name}/reload",
    responses((status = 200, body = ProfileInfo), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
async fn reload_profile<C: Control>(State(s): State<AppState<C>>, Path(name): Path<String>) -> Response {
    let change = ConfigChange::ReloadProfile { name: name.clone() };
    let done = blocking(&s, move |c| c.reload_profile(&name)).await;
    spread(&s, change, done).await
}

#[utoipa::path(post, path = "/profiles/reload", responses((status = 200, body = Changed), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
async fn reload_profiles<C: Control>(State(s): State<AppState<C>>) -> Response {
    let done = blocking(&s, |c| c.reload_all()).await;
    spread(&s, ConfigChange::ReloadAll, done).await
}

#[utoipa::path(get, path = "/active-profile", responses((status = 200, body = ActiveProfile)), security(("bearer" = [])))]
async fn get_active_profile<C: Control>(State(s): State<AppState<C>>) -> Json<ActiveProfile> {
    Json(s.control.active_profile())
}

#[utoipa::path(put, path = "/active-profile", request_body = ActiveProfile,
    responses((status = 200, body = Changed), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
async fn set_active_profile<C: Control>(State(s): State<AppState<C>>, Json(b): Json<ActiveProfile>) -> Response {
    let change = ConfigChange::SetActiveProfile { chain: b.chain.clone() };
    let done = blocking(&s, move |c| c.set_active_profile(&b.chain)).await;
    spread(&s, change, done).await
}

#[utoipa::path(get, path = "/regex-maps", responses((status = 200, body = [RegexMapInfo])), security(("bearer" = [])))]
async fn list_regex_maps<C: Control>(State(s): State<AppState<C>>) -> Json<Vec<RegexMapInfo>> {
    Json(s.control.regex_maps())
}

#[utoipa::path(put, path = "/regex-maps/{name}", request_body = MapBody,
    responses((status = 200, body = RegexMapInfo), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
async fn set_regex_map<C: Control>(
    State(s): State<AppState<C>>,
    Path(name): Path<String>,
    Json(b): Json<MapBody>,
) -> Response {
    let change = ConfigChange::SetRegexMap { name: name.clone(), body: b.clone() };
    let done = blocking(&s, move |c| c.set_regex_map(&name, b)).await;
    spread(&s, change, done).await
}

#[utoipa::path(get, path = "/calls", params(CallsQuery),
    responses((status = 200, body = [CallInfo]), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)), security(("bearer" = [])))]
async fn list_calls<C: Control>(State(s): State<AppState<C>>, Query(q): Query<CallsQuery>) -> Response {
    let this_node_only = match q.scope.as_deref() {
        None | Some("cluster") => false,
        Some("node") => true,
        Some(other) => return ApiError::bad_request(format!("scope '{other}' is not node or cluster")).into_response(),
    };
    match s.control.calls(this_node_only).await {
        Ok(calls) => {
            let mut resp = Json(calls).into_response();
            let node = s.control.cluster_node().filter(|_| this_node_only);
            if let Some(v) = node.and_then(|n| header::HeaderValue::from_str(&format!("node {n}")).ok()) {
                resp.headers_mut().insert("x-sbc-scope", v);
            }
            resp
        }
        Err(e) => e.into_response(),
    }
}

#[utoipa::path(get, path = "/registrations", responses((status = 200, body = [RegistrationInfo])), security(("bearer" = [])))]
async fn list_registrations<C: Control>(State(s): State<AppState<C>>) -> Json<Vec<RegistrationInfo>> {
    Json(s.control.registrations())
}

#[utoipa::path(get, path = "/next-hops", responses((status = 200, body = [NextHopInfo])), security(("bearer" = [])))]
async fn list_next_hops<C: Control>(State(s): State<AppState<C>>) -> Json<Vec<NextHopInfo>> {
    Json(s.control.next_hops())
}

#[utoipa::path(get, path = "/calls/{id}", responses((status = 200, body = CallInfo), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)), security(("bearer" = [])))]
async fn get_call<C: Control>(State(s): State<AppState<C>>, Path(id): Path<String>) -> Res<CallInfo> {
    s.control.call(&id).await.map(Json)
}

#[utoipa::path(get, path = "/calls/{id}/trace", responses((status = 200, body = CallTrace), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)), security(("bearer" = [])))]
async fn get_call_trace<C: Control>(State(s): State<AppState<C>>, Path(id): Path<String>) -> Res<CallTrace> {
    s.control.trace(&id).await.map(Json)
}

#[utoipa::path(delete, path = "/calls/{id}", responses((status = 204), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)), security(("bearer" = [])))]
async fn teardown_call<C: Control>(
    State(s): State<AppState<C>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.control.teardown(&id).await.map(|()| StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/call-stats", responses((status = 200, body = CallStats), (status = 503, body = ErrorBody)), security(("bearer" = [])))]
async fn call_stats<C: Control>(State(s): State<AppState<C>>) -> Res<CallStats> {
    s.control.calls(true).await.map(|calls| Json(CallStats::of(&calls)))
}

/// SEMS's `postControlCmd`: `teardown` ends the call (as `DELETE /calls/{id}`); SEMS accepted
/// any other command and did nothing, this says it is unknown.
#[utoipa::path(post, path = "/calls/{id}/control", request_body = ControlCmd,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn control_call<C: Control>(
    State(s): State<AppState<C>>,
    Path(id): Path<String>,
    Json(c): Json<ControlCmd>,
) -> Result<StatusCode, ApiError> {
    match c.cmd.trim() {
        "teardown" => s.control.teardown(&id).await.map(|()| StatusCode::NO_CONTENT),
        other => Err(ApiError::bad_request(format!("unknown command '{other}' (teardown)"))),
    }
}

#[utoipa::path(get, path = "/prepaid", responses((status = 200, body = [Balance]), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)), security(("bearer" = [])))]
async fn list_balances<C: Control>(State(s): State<AppState<C>>) -> Res<Vec<Balance>> {
    s.control.prepaid(PrepaidOp::List).await.map(Json)
}

/// The one balance an operation on an account answers with.
async fn one<C: Control>(s: &AppState<C>, op: PrepaidOp) -> Res<Balance> {
    let mut found = s.control.prepaid(op).await?;
    found.pop().map(Json).ok_or_else(|| ApiError::internal("no balance came back"))
}

/// Seconds added or subtracted: 0 to 4294967295, as `sbcd prepaid add` takes them.
fn amount(c: &Credit) -> Result<i64, ApiError> {
    (0..=i64::from(u32::MAX))
        .contains(&c.seconds)
        .then_some(c.seconds)
        .ok_or_else(|| ApiError::bad_request("seconds must be 0 to 4294967295"))
}

#[utoipa::path(get, path = "/prepaid/{account}", responses((status = 200, body = Balance), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn get_balance<C: Control>(State(s): State<AppState<C>>, Path(account): Path<String>) -> Res<Balance> {
    one(&s, PrepaidOp::Get(account)).await
}

#[utoipa::path(put, path = "/prepaid/{account}", request_body = Credit, responses((status = 200, body = Balance), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn set_balance<C: Control>(
    State(s): State<AppState<C>>,
    Path(account): Path<String>,
    Json(c): Json<Credit>,
) -> Res<Balance> {
    one(&s, PrepaidOp::Set(account, c.seconds)).await
}

#[utoipa::path(post, path = "/prepaid/{account}/add", request_body = Credit, responses((status = 200, body = Balance), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn add_credit<C: Control>(
    State(s): State<AppState<C>>,
    Path(account): Path<String>,
    Json(c): Json<Credit>,
) -> Res<Balance> {
    one(&s, PrepaidOp::Add(account, amount(&c)?)).await
}

#[utoipa::path(post, path = "/prepaid/{account}/subtract", request_body = Credit, responses((status = 200, body = Balance), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn subtract_credit<C: Control>(
    State(s): State<AppState<C>>,
    Path(account): Path<String>,
    Json(c): Json<Credit>,
) -> Res<Balance> {
    one(&s, PrepaidOp::Subtract(account, amount(&c)?)).await
}

#[utoipa::path(get, path = "/call-control", responses((status = 200, body = CallControlInfo)), security(("bearer" = [])))]
async fn get_call_control<C: Control>(State(s): State<AppState<C>>) -> Json<CallControlInfo> {
    Json(s.control.call_control())
}

#[utoipa::path(post, path = "/call-control/modules", request_body = LoadModules,
    responses((status = 200, body = CallControlInfo), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn load_call_control_modules<C: Control>(
    State(s): State<AppState<C>>,
    Json(b): Json<LoadModules>,
) -> Res<CallControlInfo> {
    s.control.load_call_control_modules(&b.modules).map(Json)
}

#[utoipa::path(post, path = "/tls/reload",
    responses((status = 200, body = TlsReloaded), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
async fn reload_tls<C: Control>(State(s): State<AppState<C>>) -> Res<TlsReloaded> {
    blocking(&s, |c| c.reload_tls()).await.map(Json)
}

#[utoipa::path(post, path = "/explain", request_body = ExplainRequest,
    responses((status = 200, body = ExplainResult), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
async fn explain<C: Control>(State(s): State<AppState<C>>, Json(b): Json<ExplainRequest>) -> Res<ExplainResult> {
    blocking(&s, move |c| c.explain(&b)).await.map(Json)
}

#[utoipa::path(get, path = "/health", responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn health<C: Control>(State(s): State<AppState<C>>) -> (StatusCode, Json<Health>) {
    let h = s.control.health();
    let code = if h.status == "ready" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(h))
}

#[utoipa::path(get, path = "/stats", responses((status = 200, body = Object)), security(("bearer" = [])))]
async fn stats<C: Control>(State(s): State<AppState<C>>) -> Json<serde_json::Value> {
    Json(s.control.stats())
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "OpenMetrics text exposition (Prometheus reads it)", content_type = "application/openmetrics-text")))]
async fn metrics<C: Control>(State(s): State<AppState<C>>) -> Response {
    match blocking(&s, |c| Ok(c.metrics())).await {
        Ok(text) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
            .into_response(),
        Err(e) => e.into_response(),
    }
}
