//! A call: two independent dialogs (legs) and what links them while requests are relayed.

use std::time::Instant;

use bytes::Bytes;

use super::apply::CallRules;
use super::types::{Destination, Peer, Transport};
use super::{CallHandle, TxId};

/// Which leg: A faces the caller (we are its UAS), B faces the callee (we are its UAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }
    pub fn idx(self) -> usize {
        match self {
            Self::A => 0,
            Self::B => 1,
        }
    }
}

/// One dialog as seen from our side of it.
#[derive(Debug)]
pub(crate) struct Leg {
    pub(crate) call_id: Box<[u8]>,
    pub(crate) local_tag: Box<[u8]>,
    pub(crate) remote_tag: Option<Box<[u8]>>,
    /// From/To values without tag: ours and the peer's.
    pub(crate) local_party: Box<[u8]>,
    pub(crate) remote_party: Box<[u8]>,
    pub(crate) local_cseq: u32,
    pub(crate) remote_cseq: Option<u32>,
    /// Where requests go: the peer's Contact URI (Request-URI of our requests).
    pub(crate) remote_target: Box<[u8]>,
    /// Route set, in the order our requests must carry it.
    pub(crate) route_set: Vec<Box<[u8]>>,
    pub(crate) transport: Transport,
    /// The socket this leg uses and, on TCP, the connection the peer opened.
    pub(crate) dest: Destination,
    /// Our Contact value on this leg.
    pub(crate) contact: Box<[u8]>,
    /// Host:port of our Via on this leg.
    pub(crate) via_sent_by: Box<str>,
    /// Requests go back to where the peer sent from (`dest`), not to its Contact: it gave no
    /// Contact (RFC 2543), or it is behind a NAT (`dlg_nat_handling`).
    pub(crate) target_is_source: bool,
    /// Every request on this leg goes here, whatever the route set says (`next_hop`,
    /// `aleg_next_hop`, the configured next hop).
    pub(crate) fixed_dest: Option<(Transport, Peer)>,
    /// A Route put before the route set of every request (`force_outbound_proxy`).
    pub(crate) forced_route: Option<Box<[u8]>>,
    /// The last SDP the SBC sent on this leg (offered again by a session-refresh re-INVITE).
    pub(crate) last_sdp: Option<Bytes>,
}

impl Leg {
    /// Remembers `body` if it is SDP (multipart bodies are not offered again).
    pub(crate) fn note_sdp(&mut self, body: &[u8]) {
        if body.starts_with(b"v=") {
            self.last_sdp = Some(Bytes::copy_from_slice(body));
        }
    }
}

/// What a dialog pair was created by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallKind {
    /// An INVITE: a call with media.
    Invite,
    /// An out-of-dialog SUBSCRIBE or REFER: a subscription whose NOTIFYs use the dialog.
    Subscription,
}

/// Where a call is, with the data that belongs to that state alone (`docs/call-lifecycle.md`).
/// The transitions are [`Call::confirm`] and [`Call::end`].
#[derive(Debug)]
pub(crate) enum CallState {
    /// Initial INVITE relayed, no final response yet.
    Early(Early),
    /// 2xx relayed to the caller.
    Confirmed(Confirmed),
    /// BYE (or teardown) under way; new requests get 481.
    Ending(Ending),
}

#[derive(Debug, Default)]
pub(crate) struct Early {
    /// Timer C: no final answer by then cancels the call (reset by each provisional).
    pub(crate) timer_c: Option<Instant>,
    /// A subscription's deadline for its first answer.
    pub(crate) expires: Option<Instant>,
    /// The reliable provisional retransmitted to the caller until its PRACK.
    pub(crate) reliable_1xx: Option<Box<Reliable1xx>>,
}

#[derive(Debug)]
pub(crate) struct Confirmed {
    pub(crate) answered: Instant,
    /// The call timer or `max_call_duration`; for a subscription, its expiry.
    pub(crate) max_duration: Option<Instant>,
    /// When to look for media activity next (calls with a relay session).
    pub(crate) media_check: Option<Instant>,
}

#[derive(Debug)]
pub(crate) struct Ending {
    pub(crate) answered: Option<Instant>,
    /// After a CANCEL: forget the call even if the callee never answers (RFC 3261 §9.1).
    pub(crate) hard_end: Option<Instant>,
    /// The side whose BYE ended the call.
    pub(crate) bye_from: Option<Side>,
}

impl CallState {
    pub(crate) fn is_early(&self) -> bool {
        matches!(self, Self::Early(_))
    }
    pub(crate) fn is_confirmed(&self) -> bool {
        matches!(self, Self::Confirmed(_))
    }
    pub(crate) fn is_ending(&self) -> bool {
        matches!(self, Self::Ending(_))
    }
    /// When the call was answered, if it was.
    pub(crate) fn answered(&self) -> Option<Instant> {
        match self {
            Self::Early(_) => None,
            Self::Confirmed(c) => Some(c.answered),
            Self::Ending(e) => e.answered,
        }
    }
    /// As the management API names it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Early(_) => "early",
            Self::Confirmed(_) => "connected",
            Self::Ending(_) => "ending",
        }
    }
    fn deadlines(&self) -> [Option<Instant>; 3] {
        match self {
            Self::Early(e) => [e.timer_c, e.expires, e.reliable_1xx.as_ref().map(|r| r.next)],
            Self::Confirmed(c) => [c.max_duration, c.media_check, None],
            Self::Ending(e) => [e.hard_end, None, None],
        }
    }
}

/// An INVITE relayed from one leg to the other whose ACK must be mapped across.
#[derive(Debug)]
pub(crate) struct InviteRelay {
    pub(crate) server_side: Side,
    pub(crate) server_cseq: u32,
    pub(crate) server_tx: TxId,
    pub(crate) client_cseq: u32,
    /// The ACK we sent on the client leg, re-sent on each retransmitted 2xx.
    pub(crate) ack: Option<Bytes>,
}

/// A reliable provisional (RFC 3262) we relayed to the caller and retransmit until PRACK.
#[derive(Debug)]
pub(crate) struct Reliable1xx {
    pub(crate) bytes: Bytes,
    pub(crate) a_rseq: u32,
    pub(crate) next: Instant,
    pub(crate) interval: std::time::Duration,
    pub(crate) give_up: Instant,
}

#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) handle: CallHandle,
    pub(crate) span: tracing::Span,
    pub(crate) kind: CallKind,
    /// The profile the call started with, evaluated; pinned until the call ends.
    pub(crate) rules: std::sync::Arc<CallRules>,
    /// Call control of this call, if its profile has a chain (its `end` is owed).
    pub(crate) cc: Option<super::cc::CallCc>,
    /// Why the SBC is tearing down an unanswered call (`cancelled`, `timer_c` ...).
    pub(crate) cause: Option<&'static str>,
    /// Next hops still to try for the B leg's INVITE (`next_hop` alternatives).
    pub(crate) failover: Vec<(Transport, Peer)>,
    /// Our B-leg INVITE, kept only while there is an alternative to resend it to.
    pub(crate) b_invite: Option<Box<crate::sip::msg::Message>>,
    pub(crate) state: CallState,
    pub(crate) legs: [Leg; 2],
    /// The server transaction of the caller's INVITE.
    pub(crate) a_ist: TxId,
    /// The CSeq number of our INVITE on the B leg and its client transaction (which holds the
    /// request while a CANCEL may still need it).
    pub(crate) b_invite_cseq: u32,
    pub(crate) b_ict: TxId,
    /// A provisional has arrived on B, so CANCEL may be sent (RFC 3261 §9.1).
    pub(crate) b_provisional: bool,
    /// The caller cancelled before B sent a provisional: CANCEL as soon as one arrives.
    pub(crate) cancel_pending: bool,
    pub(crate) invite_relays: Vec<InviteRelay>,
    /// Subscriptions made inside the dialog (in-dialog SUBSCRIBE, REFER): `dialog_subs.rs`.
    pub(crate) subscriptions: Vec<super::dialog_subs::DialogSub>,
    /// An offer/answer exchange (re-INVITE/UPDATE) in flight, started by this side.
    pub(crate) offer_pending: Option<(Side, bool)>,
    /// (RSeq we gave the caller, RSeq the callee used).
    pub(crate) rseq_map: Vec<(u32, u32)>,
    pub(crate) next_a_rseq: u32,
    pub(crate) started: Instant,
    /// In-dialog requests in flight and their rate (`dialog_limits.rs`).
    pub(crate) dialog_limits: super::dialog_limits::DialogLimits,
    /// The callee's dialog was set up through a configured next hop or proxy: its challenges,
    /// in-dialog ones included (Record-Route, Contact), may be answered (`auth.rs`). Only
    /// worked out for calls with credentials on that leg.
    pub(crate) b_via_configured_hop: bool,
    /// The caller's address, counted against its source's calls until the call is gone.
    pub(crate) a_source: std::net::IpAddr,
    /// The call's relayed media (its ports go back when the call ends, `teardown.rs`).
    pub(crate) media: Option<Box<rtp_relay::Session>>,
    /// Session timers of the A and B legs (RFC 4028), where the profile runs them.
    pub(crate) sst: [Option<super::session_timer::LegTimer>; 2],
    /// The deadline currently in the engine's timer heap for this call.
    pub(crate) scheduled: Option<Instant>,
}

impl Call {
    pub(crate) fn leg(&self, side: Side) -> &Leg {
        &self.legs[side.idx()]
    }
    pub(crate) fn leg_mut(&mut self, side: Side) -> &mut Leg {
        &mut self.legs[side.idx()]
    }
    /// Either leg runs its own session timer (their headers then never cross).
    pub(crate) fn has_session_timers(&self) -> bool {
        self.sst.iter().any(Option::is_some)
    }
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let sst = self.sst.iter().flatten().filter_map(|t| t.due);
        self.state.deadlines().into_iter().flatten().chain(sst).min()
    }

    /// Early → Confirmed, at the answer; false (nothing changed) if the call was not early.
    pub(crate) fn confirm(&mut self, now: Instant) -> bool {
        if !self.state.is_early() {
            return false;
        }
        self.state = CallState::Confirmed(Confirmed { answered: now, max_duration: None, media_check: None });
        true
    }

    /// → Ending: what is left is a BYE (`bye_from`) or a cancelled INVITE (`hard_end`) to see
    /// through. The answer time is kept for the records; a call already ending keeps what it
    /// knew (a BYE after a CANCEL keeps the hard end, a CANCEL after a BYE who sent it).
    pub(crate) fn end(&mut self, bye_from: Option<Side>, hard_end: Option<Instant>) {
        if let CallState::Ending(e) = &mut self.state {
            e.bye_from = e.bye_from.or(bye_from);
            e.hard_end = e.hard_end.or(hard_end);
            return;
        }
        let answered = self.state.answered();
        self.state = CallState::Ending(Ending { answered, hard_end, bye_from });
    }

    pub(crate) fn early_mut(&mut self) -> Option<&mut Early> {
        match &mut self.state {
            CallState::Early(e) => Some(e),
            _ => None,
        }
    }

    pub(crate) fn confirmed_mut(&mut self) -> Option<&mut Confirmed> {
        match &mut self.state {
            CallState::Confirmed(c) => Some(c),
            _ => None,
        }
    }
}
