//! The call registry of the cluster: any node lists the calls of every node, and ends a call
//! of another, over Redis; a configuration change made through one node's API is applied by
//! every other node the same way. Each node listens on `<prefix>:calls:<node_id>`; a question names a
//! reply list, where the asked node pushes its answer (kept 10 s). The asking node waits for
//! every live node's answer, at most [`ASK_DEADLINE`]; a node that does not answer is named,
//! never left out of a list in silence.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::connection::{Connection, StoreError};
use crate::membership::Membership;

/// How long a node waits for the others' answers.
pub const ASK_DEADLINE: Duration = Duration::from_secs(2);

/// The nodes whose lease has not run out (by Redis's clock).
const LIVE_NODES: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
";

/// What a node answers about its own calls.
pub trait NodeCalls: Send + Sync + 'static {
    /// This node's calls, as the API lists them (JSON).
    fn list(&self) -> Pin<Box<dyn Future<Output = Result<serde_json::Value, String>> + Send + '_>>;
    /// Ends call `id` (`<shard>-<handle>`) of this node; whether it was there.
    fn teardown<'a>(&'a self, id: &'a str) -> Pin<Box<dyn Future<Output = Result<bool, String>> + Send + 'a>>;
    /// Applies a configuration change another node's API took (`admin_api::ConfigChange`,
    /// as JSON) on this node only.
    fn apply(&self, change: serde_json::Value) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

#[derive(Debug, Serialize, Deserialize)]
struct Question {
    reply: String,
    /// `list`, `teardown` or `apply`.
    op: String,
    #[serde(default)]
    call: Option<String>,
    #[serde(default)]
    change: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    node: String,
    #[serde(default)]
    calls: Option<serde_json::Value>,
    #[serde(default)]
    found: Option<bool>,
    #[serde(default)]
    error: Option<String>,
}

/// Why a question to the other nodes has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cluster node(s) {} did not answer", .0.join(", "))]
    NoAnswer(Vec<String>),
    #[error("cluster node {0}: {1}")]
    Failed(String, String),
}

/// Asking the other nodes, and answering them.
pub struct CallRegistry {
    conn: Arc<Connection>,
    /// Who is asked: live nodes of this cluster (`cluster.nodes`, if set).
    membership: Arc<Membership>,
    prefix: String,
    node_id: String,
    instance: String,
    asked: AtomicU64,
    live_nodes: redis::Script,
}

impl CallRegistry {
    pub fn new(
        conn: Arc<Connection>,
        membership: Arc<Membership>,
        prefix: &str,
        node_id: &str,
        instance: &str,
    ) -> Self {
        Self {
            conn,
            membership,
            prefix: prefix.to_string(),
            node_id: node_id.to_string(),
            instance: instance.to_string(),
            asked: AtomicU64::new(0),
            live_nodes: redis::Script::new(LIVE_NODES),
        }
    }

    fn channel(&self, node: &str) -> String {
        format!("{}:calls:{node}", self.prefix)
    }

    /// Answers the other nodes' questions from `local`, from now until the process ends
    /// (listening again after Redis comes back).
    pub fn serve(self: &Arc<Self>, local: Arc<dyn NodeCalls>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(mut ps) = me.conn.client().get_async_pubsub().await {
                    if ps.subscribe(me.channel(&me.node_id)).await.is_ok() {
                        let mut questions = ps.on_message();
                        while let Some(msg) = questions.next().await {
                            let Ok(text) = msg.get_payload::<String>() else { continue };
                            let Ok(q) = serde_json::from_str::<Question>(&text) else {
                                tracing::warn!("cluster: a call-registry question that does not parse");
                                continue;
                            };
                            let answer = me.answer(&q, local.as_ref()).await;
                            me.reply(&q.reply, &answer).await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }

    async fn answer(&self, q: &Question, local: &dyn NodeCalls) -> Answer {
        let mut a = Answer { node: self.node_id.clone(), calls: None, found: None, error: None };
        match (q.op.as_str(), &q.call) {
            ("list", _) => match local.list().await {
                Ok(calls) => a.calls = Some(calls),
                Err(e) => a.error = Some(e),
            },
            ("teardown", Some(id)) => match local.teardown(id).await {
                Ok(found) => a.found = Some(found),
                Err(e) => a.error = Some(e),
            },
            ("apply", _) => match local.apply(q.change.clone().unwrap_or_default()).await {
                Ok(()) => a.found = Some(true),
                Err(e) => a.error = Some(e),
            },
            (op, _) => a.error = Some(format!("unknown question '{op}'")),
        }
        a
    }

    async fn reply(&self, list: &str, answer: &Answer) {
        let Ok(text) = serde_json::to_string(answer) else { return };
        let list = list.to_string();
        let _: Result<(), _> = self
            .conn
            .run(|mut c| async move {
                redis::pipe().rpush(&list, text).ignore().pexpire(&list, 10_000).ignore().query_async(&mut c).await
            })
            .await;
    }

    /// Sends `q` to `nodes` and collects their answers; a node that does not answer is an
    /// error, and so is the first answer that reports one.
    async fn ask(&self, nodes: &[String], op: &str, call: Option<&str>) -> Result<Vec<Answer>, AskError> {
        let q = Question { reply: String::new(), op: op.into(), call: call.map(str::to_string), change: None };
        let (answers, missing) = self.ask_all(nodes, q).await?;
        if !missing.is_empty() {
            return Err(AskError::NoAnswer(missing));
        }
        if let Some(a) = answers.iter().find(|a| a.error.is_some()) {
            return Err(AskError::Failed(a.node.clone(), a.error.clone().unwrap_or_default()));
        }
        Ok(answers)
    }

    /// Sends `q` (its reply list set here) to `nodes`: their answers, and the nodes that did
    /// not answer in time.
    async fn ask_all(&self, nodes: &[String], mut q: Question) -> Result<(Vec<Answer>, Vec<String>), StoreError> {
        let n = self.asked.fetch_add(1, Ordering::Relaxed);
        let reply = format!("{}:reply:{}:{}:{n}", self.prefix, self.node_id, self.instance);
        q.reply = reply.clone();
        let text = serde_json::to_string(&q).map_err(|e| StoreError::Redis(e.to_string()))?;
        let mut waiting = Vec::new();
        let mut missing = Vec::new();
        for node in nodes {
            let (channel, text) = (self.channel(node), text.clone());
            let heard: i64 = self
                .conn
                .run(|mut c| async move { redis::cmd("PUBLISH").arg(channel).arg(text).query_async(&mut c).await })
                .await?;
            if heard > 0 {
                waiting.push(node.clone())
            } else {
                missing.push(node.clone())
            }
        }
        let mut answers = Vec::new();
        let deadline = tokio::time::Instant::now() + ASK_DEADLINE;
        while answers.len() < waiting.len() && tokio::time::Instant::now() < deadline {
            let list = reply.clone();
            let got: Option<Vec<String>> = self
                .conn
                .run(|mut c| async move { redis::cmd("LPOP").arg(list).arg(64).query_async(&mut c).await })
                .await?;
            let got = got.unwrap_or_default();
            if got.is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            answers.extend(got.iter().filter_map(|a| serde_json::from_str::<Answer>(a).ok()));
        }
        let list = reply.clone();
        let _: Result<i64, _> =
            self.conn.run(|mut c| async move { redis::cmd("DEL").arg(list).query_async(&mut c).await }).await;
        missing.extend(waiting.into_iter().filter(|n| !answers.iter().any(|a| &a.node == n)));
        Ok((answers, missing))
    }

    /// The other live nodes of this cluster.
    async fn others(&self) -> Result<Vec<String>, StoreError> {
        let key = format!("{}:nodes", self.prefix);
        let live: Vec<String> =
            self.conn.run(|mut c| async move { self.live_nodes.key(&key).invoke_async(&mut c).await }).await?;
        Ok(live.into_iter().filter(|n| n != &self.node_id && self.membership.is_member(n)).collect())
    }

    /// Every other live node's calls: (node, its list as JSON). An error names the nodes that
    /// did not answer.
    pub async fn calls_of_others(&self) -> Result<Vec<(String, serde_json::Value)>, AskError> {
        let nodes = self.others().await?;
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let answers = self.ask(&nodes, "list", None).await?;
        Ok(answers.into_iter().map(|a| (a.node, a.calls.unwrap_or(serde_json::Value::Array(Vec::new())))).collect())
    }

    /// Asks every other live node to apply `change` (made through this node's API): the nodes
    /// that did not, with why.
    pub async fn apply_on_others(&self, change: serde_json::Value) -> Result<Vec<(String, String)>, StoreError> {
        let nodes = self.others().await?;
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let q = Question { reply: String::new(), op: "apply".into(), call: None, change: Some(change) };
        let (answers, missing) = self.ask_all(&nodes, q).await?;
        let failed = answers.into_iter().filter_map(|a| Some((a.node, a.error?)));
        let mut failed: Vec<_> = failed.chain(missing.into_iter().map(|n| (n, "did not answer".to_string()))).collect();
        // (By node, whatever order the answers came in.)
        failed.sort();
        Ok(failed)
    }

    /// Ends call `id` of node `node`; whether it had that call.
    pub async fn teardown_on(&self, node: &str, id: &str) -> Result<bool, AskError> {
        let answers = self.ask(&[node.to_string()], "teardown", Some(id)).await?;
        Ok(answers.first().and_then(|a| a.found).unwrap_or(false))
    }
}
