//! What the management plane may see of and do to the engine's calls.

use std::time::Instant;

use super::call::{Call, CallKind, Side};
use super::{CallHandle, Engine};

/// One call as the management plane lists it.
#[derive(Debug, Clone)]
pub struct CallOverview {
    pub handle: CallHandle,
    pub profile: String,
    pub state: &'static str,
    pub kind: &'static str,
    pub started: Instant,
    pub answered: Option<Instant>,
    /// A leg, then B.
    pub legs: [LegOverview; 2],
    pub media_streams: usize,
    /// The codec of each stream, as the SDP the caller was last given says (the callee's
    /// answer, for an answered call).
    pub codecs: Vec<String>,
    /// The relay's streams of a call whose media is anchored (`None`: not anchored).
    pub stream_ids: Option<Vec<rtp_relay::forwarder::StreamId>>,
    /// Relay counters per side (A = caller), summed over the call's streams: filled in by the
    /// driver, which holds them.
    pub media: Option<[rtp_relay::SideSnapshot; 2]>,
}

#[derive(Debug, Clone)]
pub struct LegOverview {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: Option<String>,
    pub remote_party: String,
    pub remote_target: String,
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Engine {
    /// Every call and subscription of this shard.
    pub fn calls_overview(&self) -> Vec<CallOverview> {
        let mut v: Vec<CallOverview> = self.calls.values().map(|c| overview(c)).collect();
        v.sort_by_key(|c| c.handle);
        v
    }

    /// Call (or subscription) `handle`, if this shard has it.
    pub fn call_overview(&self, handle: CallHandle) -> Option<CallOverview> {
        self.calls.get(&handle).map(|c| overview(c))
    }

    /// Ends call `handle` for the operator: BYE on both legs of a connected call, an error to
    /// the caller and CANCEL to the callee while it rings; call control hears of it (CDR).
    /// False if there is no such call.
    pub fn admin_teardown(&mut self, now: Instant, handle: CallHandle) -> bool {
        if !self.calls.contains_key(&handle) {
            return false;
        }
        if let Some(c) = self.calls.get(&handle) {
            let _e = c.span.enter();
            tracing::info!("torn down by the operator");
        }
        self.tear_down(now, handle, 480, "admin_teardown");
        self.reschedule_call(handle);
        true
    }
}

fn overview(c: &Call) -> CallOverview {
    let leg = |s: Side| {
        let l = c.leg(s);
        LegOverview {
            call_id: text(&l.call_id),
            local_tag: text(&l.local_tag),
            remote_tag: l.remote_tag.as_deref().map(text),
            remote_party: text(&l.remote_party),
            remote_target: text(&l.remote_target),
        }
    };
    CallOverview {
        handle: c.handle,
        profile: c.rules.profile.name.clone(),
        state: c.state.name(),
        kind: match c.kind {
            CallKind::Invite => "call",
            CallKind::Subscription => "subscription",
        },
        started: c.started,
        answered: c.state.answered(),
        legs: [leg(Side::A), leg(Side::B)],
        media_streams: c.media.as_deref().map_or(0, rtp_relay::Session::open_streams),
        codecs: c.leg(Side::A).last_sdp.as_deref().map(profiles::sdp::media::stream_codecs).unwrap_or_default(),
        stream_ids: c.media.as_ref().map(|m| m.stream_ids().into_iter().flatten().collect()),
        media: None,
    }
}
