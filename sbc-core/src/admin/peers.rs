//! What this node answers the other nodes of its cluster (through `cluster::CallRegistry`):
//! its calls, the teardown of one of them, and configuration changes made through another
//! node's API, applied here as they would be through this node's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use admin_api::ConfigChange;

use super::AdminControl;

pub struct PeerAnswers(pub Arc<AdminControl>);

impl cluster::NodeCalls for PeerAnswers {
    fn list(&self) -> Pin<Box<dyn Future<Output = Result<serde_json::Value, String>> + Send + '_>> {
        Box::pin(async move {
            let calls = self.0.calls.list().await.map_err(|e| e.message)?;
            serde_json::to_value(calls).map_err(|e| e.to_string())
        })
    }

    fn teardown<'a>(&'a self, id: &'a str) -> Pin<Box<dyn Future<Output = Result<bool, String>> + Send + 'a>> {
        Box::pin(async move {
            match self.0.calls.teardown(id).await {
                Ok(()) => Ok(true),
                Err(e) if e.status == 404 => Ok(false),
                Err(e) => Err(e.message),
            }
        })
    }

    fn apply(&self, change: serde_json::Value) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        let control = self.0.clone();
        Box::pin(async move {
            let change: ConfigChange = serde_json::from_value(change).map_err(|e| format!("unreadable change: {e}"))?;
            // (Files are read and profiles checked: off the async workers.)
            let applied = tokio::task::spawn_blocking(move || {
                let done = change.apply(&*control);
                if done.is_ok() {
                    tracing::info!(?change, "cluster: configuration change from another node applied");
                }
                done
            })
            .await
            .map_err(|e| e.to_string())?;
            applied.map_err(|e| e.message)
        })
    }
}
