//! This node's calls as the API shows them: the engines' overviews turned into `CallInfo`,
//! with wall-clock times, and the ids `<shard>-<handle>` read back.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use admin_api::{ApiError, CallInfo, CallTrace, LegInfo, MediaInfo, TracedMessage};

use crate::b2bua::{CallHandle, CallOverview};
use crate::driver::Runtime;

pub struct CallViews {
    runtime: Arc<Runtime>,
    /// One reading of both clocks: engine times (monotonic) are shown against the wall's.
    epoch: (SystemTime, Instant),
}

impl CallViews {
    #[allow(clippy::disallowed_methods)] // the one reading of both clocks that maps call times
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Self { runtime, epoch: (SystemTime::now(), Instant::now()) }
    }

    fn unix_of(&self, t: Instant) -> u64 {
        let (wall, mono) = self.epoch;
        let at = if t >= mono { wall + (t - mono) } else { wall - (mono - t) };
        at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    fn call_info(&self, shard: usize, c: CallOverview) -> CallInfo {
        let leg = |l: &crate::b2bua::LegOverview| LegInfo {
            call_id: l.call_id.clone(),
            local_tag: l.local_tag.clone(),
            remote_tag: l.remote_tag.clone(),
            remote_party: l.remote_party.clone(),
            remote_target: l.remote_target.clone(),
        };
        CallInfo {
            id: format!("{shard}-{}", c.handle),
            node: None,
            profile: c.profile,
            state: c.state.into(),
            kind: c.kind.into(),
            started_at: self.unix_of(c.started),
            connected_at: c.answered.map(|a| self.unix_of(a)),
            legs: c.legs.iter().map(leg).collect(),
            media_streams: c.media_streams,
            codecs: c.codecs,
            media: c.media.map(|[a, b]| MediaInfo {
                packets_from_caller: a.packets,
                bytes_from_caller: a.bytes,
                packets_from_callee: b.packets,
                bytes_from_callee: b.bytes,
                forwarded: a.forwarded + b.forwarded,
                dropped: a.drops.iter().chain(&b.drops).sum(),
                latches: a.latches + b.latches,
            }),
        }
    }

    /// Every call of this node's shards.
    pub async fn list(&self) -> Result<Vec<CallInfo>, ApiError> {
        let calls = self.runtime.calls().await.map_err(|e| ApiError::unavailable(e.to_string()))?;
        Ok(calls.into_iter().map(|(s, c)| self.call_info(s, c)).collect())
    }

    /// Call `id` of this node, asked of the shard its id names only.
    pub async fn get(&self, id: &str) -> Result<CallInfo, ApiError> {
        let (shard, handle) = parse_call_id(id)?;
        match self.runtime.call(shard, handle).await {
            Ok(Some(c)) => Ok(self.call_info(shard, c)),
            Ok(None) => Err(ApiError::not_found(format!("no call {id}"))),
            Err(e) => Err(ApiError::unavailable(e.to_string())),
        }
    }

    /// The messages of call `id` of this node.
    pub async fn trace(&self, id: &str) -> Result<CallTrace, ApiError> {
        let (shard, handle) = parse_call_id(id)?;
        match self.runtime.trace(shard, handle).await {
            Ok(Some(t)) => Ok(trace_view(id, t)),
            Ok(None) => Err(ApiError::not_found(format!("no call {id} (nor a trace of it: it ended long ago)"))),
            Err(e) => Err(ApiError::unavailable(e.to_string())),
        }
    }

    /// Ends call `id` of this node.
    pub async fn teardown(&self, id: &str) -> Result<(), ApiError> {
        let (shard, handle) = parse_call_id(id)?;
        match self.runtime.teardown(shard, handle).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(ApiError::not_found(format!("no call {id}"))),
            Err(e) => Err(ApiError::unavailable(e.to_string())),
        }
    }
}

fn trace_view(id: &str, t: crate::driver::capture::CallTrace) -> CallTrace {
    use crate::driver::capture::Direction;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let two_legs = *t.correlation != *t.b_call_id;
    let messages = t
        .messages
        .iter()
        .map(|m| TracedMessage {
            // (humantime refuses times before 1970: a clock set back that far shows as 1970.)
            time: humantime::format_rfc3339_micros(m.at.max(UNIX_EPOCH)).to_string(),
            direction: match m.direction {
                Direction::In => "in",
                Direction::Out => "out",
            }
            .into(),
            leg: two_legs.then(|| {
                let a = crate::driver::capture::call_id_of(&m.message) == Some(&*t.correlation);
                if a { "a" } else { "b" }.to_string()
            }),
            interface: m.interface.to_string(),
            transport: m.transport.to_string(),
            local: m.local.to_string(),
            remote: m.remote.to_string(),
            message: text(&m.message),
        })
        .collect();
    CallTrace { id: id.into(), correlation_id: text(&t.correlation), ended: t.ended, omitted: t.omitted, messages }
}

/// A call id as the API shows it, `<shard>-<handle>`.
pub(super) fn parse_call_id(id: &str) -> Result<(usize, CallHandle), ApiError> {
    id.split_once('-')
        .and_then(|(s, h)| Some((s.parse::<usize>().ok()?, CallHandle::from_raw(h.parse::<u64>().ok()?))))
        .ok_or_else(|| ApiError::bad_request(format!("'{id}' is not a call id (shard-number)")))
}
