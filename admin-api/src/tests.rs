//! The router over a fake [`Control`]: routing, JSON shapes, the token, errors.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;

#[derive(Default)]
struct Fake {
    chain: Mutex<String>,
    torn_down: Mutex<Vec<String>>,
    /// The SBC's shards do not answer: call list and teardown fail.
    busy: bool,
}

impl Control for Fake {
    fn profiles(&self) -> Vec<ProfileInfo> {
        vec![ProfileInfo {
            name: "p".into(),
            file: "p.conf".into(),
            md5: Some("x".into()),
            loaded_at: 1,
            not_applied: vec![],
        }]
    }
    fn load_profile(&self, _: &str, file: &str) -> Result<ProfileInfo, ApiError> {
        Err(ApiError::bad_request(format!("{file}: cannot read")))
    }
    fn reload_profile(&self, name: &str) -> Result<ProfileInfo, ApiError> {
        Err(ApiError::not_found(format!("no profile {name}")))
    }
    fn reload_all(&self) -> Result<Changed, ApiError> {
        Ok(Changed { generation: 2 })
    }
    fn active_profile(&self) -> ActiveProfile {
        ActiveProfile { chain: self.chain.lock().unwrap().clone() }
    }
    fn set_active_profile(&self, chain: &str) -> Result<Changed, ApiError> {
        *self.chain.lock().unwrap() = chain.into();
        Ok(Changed { generation: 3 })
    }
    fn regex_maps(&self) -> Vec<RegexMapInfo> {
        vec![]
    }
    fn set_regex_map(&self, name: &str, _: MapBody) -> Result<RegexMapInfo, ApiError> {
        Ok(RegexMapInfo { name: name.into(), rules: vec![], file: None })
    }
    async fn calls(&self, _this_node_only: bool) -> Result<Vec<CallInfo>, ApiError> {
        if self.busy {
            return Err(ApiError::unavailable("shard 1 did not answer within 5s (overloaded?)"));
        }
        Ok(vec![])
    }
    async fn call(&self, id: &str) -> Result<CallInfo, ApiError> {
        if self.busy {
            return Err(ApiError::unavailable("shard 0 did not answer within 5s (overloaded?)"));
        }
        Err(ApiError::not_found(format!("no call {id}")))
    }
    async fn trace(&self, id: &str) -> Result<CallTrace, ApiError> {
        match id {
            "0-7" => {
                Ok(CallTrace { id: id.into(), correlation_id: "a@x".into(), ended: true, omitted: 0, messages: vec![] })
            }
            _ => Err(ApiError::not_found(format!("no call {id}"))),
        }
    }
    fn registrations(&self) -> Vec<RegistrationInfo> {
        vec![]
    }
    async fn teardown(&self, id: &str) -> Result<(), ApiError> {
        if self.busy {
            return Err(ApiError::unavailable("shard 0 did not answer within 5s (overloaded?)"));
        }
        self.torn_down.lock().unwrap().push(id.into());
        Ok(())
    }
    fn call_control(&self) -> CallControlInfo {
        CallControlInfo { modules: vec!["cc_pcalls".into()], instances: vec![] }
    }
    fn load_call_control_modules(&self, _: &[String]) -> Result<CallControlInfo, ApiError> {
        Ok(self.call_control())
    }
    fn explain(&self, _: &ExplainRequest) -> Result<ExplainResult, ApiError> {
        Ok(ExplainResult { text: "ok".into() })
    }
    fn health(&self) -> Health {
        Health { status: "ready".into(), calls: 0, cluster: None, tls: Vec::new(), next_hops: Vec::new() }
    }
    fn next_hops(&self) -> Vec<NextHopInfo> {
        Vec::new()
    }
    fn reload_tls(&self) -> Result<TlsReloaded, ApiError> {
        Ok(TlsReloaded { interfaces: Vec::new() })
    }
    fn stats(&self) -> serde_json::Value {
        serde_json::json!({"calls": 0})
    }
    fn metrics(&self) -> String {
        "sbc_calls_active 0\n".into()
    }
}

async fn call(app: &Router, method: &str, uri: &str, token: Option<&str>, body: &str) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(uri).header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = app.clone().oneshot(req.body(Body::from(body.to_string())).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

use axum::Router;

fn app(fake: Arc<Fake>) -> Router {
    router(fake, ApiConfig { token: Some("s3cret".into()) })
}

#[tokio::test]
async fn token_is_required_except_for_health_and_metrics() {
    let app = app(Arc::default());
    assert_eq!(call(&app, "GET", "/profiles", None, "").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&app, "GET", "/profiles", Some("wrong"), "").await.0, StatusCode::UNAUTHORIZED);
    let (st, body) = call(&app, "GET", "/profiles", Some("s3cret"), "").await;
    assert_eq!(st, StatusCode::OK);
    assert!(body.contains("\"md5\":\"x\""), "{body}");
    assert_eq!(call(&app, "GET", "/health", None, "").await.0, StatusCode::OK);
    assert!(call(&app, "GET", "/metrics", None, "").await.1.contains("sbc_calls_active"));
}

#[tokio::test]
async fn errors_are_json_with_the_status_the_control_chose() {
    let app = app(Arc::default());
    let (st, body) = call(&app, "POST", "/profiles/x/reload", Some("s3cret"), "").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(body, r#"{"error":"no profile x"}"#);
    let (st, body) = call(&app, "POST", "/profiles/x", Some("s3cret"), r#"{"file":"/nope"}"#).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(body.contains("/nope: cannot read"));
    // A body that is not the expected JSON is refused by the extractor, not passed on.
    let (st, _) = call(&app, "PUT", "/active-profile", Some("s3cret"), "{").await;
    assert!(st.is_client_error());
    assert_eq!(call(&app, "GET", "/nowhere", Some("s3cret"), "").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_trace_needs_the_token_and_names_a_missing_call() {
    let app = app(Arc::default());
    assert_eq!(call(&app, "GET", "/calls/0-7/trace", None, "").await.0, StatusCode::UNAUTHORIZED);
    let (st, body) = call(&app, "GET", "/calls/0-7/trace", Some("s3cret"), "").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(body.contains("\"correlation_id\":\"a@x\""), "{body}");
    assert_eq!(call(&app, "GET", "/calls/0-8/trace", Some("s3cret"), "").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_host_name_other_than_localhost_is_refused() {
    let app = app(Arc::default());
    for (host, ok) in
        [("127.0.0.1:8090", true), ("localhost:8090", true), ("[::1]:8090", true), ("evil.example:8090", false)]
    {
        let req = Request::builder().uri("/health").header("host", host).body(Body::empty()).unwrap();
        let st = app.clone().oneshot(req).await.unwrap().status();
        assert_eq!(st == StatusCode::OK, ok, "{host}: {st}");
    }
}

#[tokio::test]
async fn changes_and_teardown_reach_the_control() {
    let fake = Arc::new(Fake::default());
    let app = app(fake.clone());
    let (st, body) = call(&app, "PUT", "/active-profile", Some("s3cret"), r#"{"chain":"a,b"}"#).await;
    assert_eq!((st, body.as_str()), (StatusCode::OK, r#"{"generation":3}"#));
    assert_eq!(fake.chain.lock().unwrap().as_str(), "a,b");
    assert_eq!(call(&app, "DELETE", "/calls/0-7", Some("s3cret"), "").await.0, StatusCode::NO_CONTENT);
    assert_eq!(fake.torn_down.lock().unwrap().as_slice(), ["0-7"]);
}

/// A busy SBC answers 503, never an empty list or a "no such call" that would mislead.
#[tokio::test]
async fn calls_of_an_sbc_that_cannot_answer_are_503_not_a_partial_list() {
    let busy = app(Arc::new(Fake { busy: true, ..Fake::default() }));
    for (method, uri) in [("GET", "/calls"), ("GET", "/calls/0-7"), ("DELETE", "/calls/0-7")] {
        let (st, body) = call(&busy, method, uri, Some("s3cret"), "").await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{method} {uri}: {body}");
        assert!(body.contains("did not answer"), "{body}");
    }
    let idle = app(Arc::default());
    let (st, body) = call(&idle, "GET", "/calls", Some("s3cret"), "").await;
    assert_eq!((st, body.as_str()), (StatusCode::OK, "[]"));
    assert_eq!(call(&idle, "GET", "/calls/0-7", Some("s3cret"), "").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let app = app(Arc::default());
    let (st, body) = call(&app, "GET", "/openapi.json", None, "").await;
    assert_eq!(st, StatusCode::OK);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    for p in [
        "/profiles",
        "/profiles/{name}",
        "/profiles/{name}/reload",
        "/profiles/reload",
        "/active-profile",
        "/regex-maps/{name}",
        "/calls/{id}",
        "/calls/{id}/trace",
        "/next-hops",
        "/call-control/modules",
        "/explain",
        "/health",
        "/metrics",
        "/stats",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing");
    }
}
