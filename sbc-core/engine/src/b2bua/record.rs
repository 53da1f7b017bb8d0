//! A call as data that another engine can take over: the failover planned after cluster mode
//! replicates answered calls, and a node that takes over a dead node's address adopts them.
//! [`Engine::call_record`] writes a confirmed, quiet call (no transaction of it in flight):
//! both dialogs, the evaluated profile, its deadlines and session timers relative to `now`,
//! and its media ports; [`Engine::adopt_call`] rebuilds it, so in-dialog requests of either
//! side find it and its media flows through the same ports again.
//!
//! Not in a record: transactions (a call with one in flight is not recordable, the caller
//! asks again later), what the relay learned by latching (learned again from the first
//! packets), and the state of call-control modules (counters and balances belong to their
//! stores; the adopted call's `end` is not announced to modules that never saw it).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use profiles::evaluate::CallPlan;
use profiles::profile::SessionTimerRules;
use rtp_relay::SessionRecord;
use serde::{Deserialize, Serialize};

use super::apply::CallRules;
use super::call::{Call, CallKind, CallState, Confirmed, Leg, Side};
use super::session_timer::LegTimer;
use super::types::{Destination, Peer, Transport};
use super::{CallHandle, Engine, TxId};

/// The version of the record's layout; a record of another version is refused.
pub const RECORD_FORMAT: u32 = 1;

/// An answered call, as data (see the module's documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    pub format: u32,
    /// The shard that held the call: requests of its dialogs reach that shard (the Call-IDs
    /// say so), so only the same shard of a node with as many shards can take it over.
    pub shard: u8,
    /// A SUBSCRIBE/REFER dialog pair rather than a call.
    pub subscription: bool,
    /// The profile the call runs with, and what it evaluated to for this call.
    pub profile: String,
    pub plan: CallPlan,
    /// The caller's leg (A), then the callee's (B).
    pub legs: [LegRecord; 2],
    /// The B leg's Call-ID is one this SBC made (a loop would come back with it).
    pub b_call_id_ours: bool,
    pub caller_ip: IpAddr,
    pub started_ms_ago: u64,
    pub answered_ms_ago: u64,
    /// Until the call timer or `max_call_duration` (a subscription: its expiry) ends it.
    pub ends_in_ms: Option<u64>,
    /// Until media activity is checked next.
    pub media_check_in_ms: Option<u64>,
    pub session_timers: [Option<SessionTimerRecord>; 2],
    pub media: Option<SessionRecord>,
    /// The CSeq of our INVITE on the B leg (its ACK and CANCEL match it).
    pub b_invite_cseq: u32,
    /// The callee's dialog was set up through a configured hop (`auth.rs`).
    pub b_via_configured_hop: bool,
}

/// One dialog of a [`CallRecord`]: what identifies it and where its requests go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegRecord {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: Option<String>,
    pub local_party: String,
    pub remote_party: String,
    pub local_cseq: u32,
    pub remote_cseq: Option<u32>,
    pub remote_target: String,
    pub route_set: Vec<String>,
    pub transport: Transport,
    /// The SIP interface the leg's socket is on (the adopting node has one of that name).
    pub interface: String,
    pub peer: PeerRecord,
    pub contact: String,
    pub via_sent_by: String,
    pub target_is_source: bool,
    pub fixed_dest: Option<(Transport, PeerRecord)>,
    pub forced_route: Option<String>,
    pub last_sdp: Option<String>,
}

/// Where a leg's requests go: an address, or a host name to resolve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerRecord {
    Addr(SocketAddr),
    Host {
        name: String,
        port: u16,
    },
    /// An address found for a name (the name checks its TLS certificate).
    Named {
        name: String,
        addr: SocketAddr,
    },
}

/// One leg's session timer (RFC 4028): its rules, what was agreed and when it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTimerRecord {
    pub rules: SessionTimerRules,
    pub interval: u32,
    pub we_refresh: bool,
    pub refreshed_ms_ago: Option<u64>,
    pub due_in_ms: Option<u64>,
    pub invite_only: bool,
}

/// Why a call has no record now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotRecordable {
    #[error("no such call")]
    NoSuchCall,
    #[error("the call is not answered, or ending")]
    NotConfirmed,
    #[error("a transaction of the call is in flight; ask again when it is done")]
    Busy,
    #[error("a header of the call is not UTF-8 text")]
    NotText,
}

/// Why a record could not be adopted. Nothing of it is kept then.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("record format {0}, this engine reads {RECORD_FORMAT}")]
    Format(u32),
    #[error("no profile named '{0}' is loaded")]
    UnknownProfile(String),
    #[error("profile '{0}' does not take this call's values: {1}")]
    CallProfile(String, String),
    #[error("no {transport} socket on an interface named '{interface}'")]
    NoSocket { interface: String, transport: Transport },
    #[error("the call belongs to shard {0}")]
    WrongShard(u8),
    #[error("a dialog of the call exists here already, or its legs' tags are empty or equal")]
    DialogExists,
    #[error("the call relays media and this engine has no relay")]
    NoRelay,
    #[error("its media: {0}")]
    Media(#[from] rtp_relay::RelayError),
    #[error("a time in the record is out of range")]
    Time,
}

fn text(b: &[u8]) -> Result<String, NotRecordable> {
    std::str::from_utf8(b).map(str::to_string).map_err(|_| NotRecordable::NotText)
}

fn bytes(s: &str) -> Box<[u8]> {
    s.as_bytes().into()
}

/// Milliseconds from `then` to `now` (0 if `then` is later).
pub(super) fn ms_ago(now: Instant, then: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(then).as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds from `now` to `then` (0 if past).
pub(super) fn ms_until(now: Instant, then: Instant) -> u64 {
    ms_ago(then, now)
}

pub(super) fn back(now: Instant, ms: u64) -> Result<Instant, AdoptError> {
    now.checked_sub(Duration::from_millis(ms)).ok_or(AdoptError::Time)
}

pub(super) fn ahead(now: Instant, ms: u64) -> Result<Instant, AdoptError> {
    now.checked_add(Duration::from_millis(ms)).ok_or(AdoptError::Time)
}

fn peer_record(p: &Peer) -> PeerRecord {
    match p {
        Peer::Addr(a) => PeerRecord::Addr(*a),
        Peer::Host(name, port) => PeerRecord::Host { name: name.to_string(), port: *port },
        Peer::Named { host, addr } => PeerRecord::Named { name: host.to_string(), addr: *addr },
    }
}

fn peer(p: &PeerRecord) -> Peer {
    match p {
        PeerRecord::Addr(a) => Peer::Addr(*a),
        PeerRecord::Host { name, port } => Peer::Host(name.as_str().into(), *port),
        PeerRecord::Named { name, addr } => Peer::Named { host: name.as_str().into(), addr: *addr },
    }
}

impl Engine {
    /// The record of call `call` as of `now` (see the module's documentation).
    pub fn call_record(&self, now: Instant, call: CallHandle) -> Result<CallRecord, NotRecordable> {
        let c = self.calls.get(&call).ok_or(NotRecordable::NoSuchCall)?;
        let CallState::Confirmed(state) = &c.state else { return Err(NotRecordable::NotConfirmed) };
        let busy = self.ist_open(c.a_ist)
            || c.offer_pending.is_some()
            // An INVITE relayed and ACKed is done (its relay only re-sends our ACK to a
            // retransmitted 2xx; the adopting engine lets such a 2xx go).
            || c.invite_relays.iter().any(|r| r.ack.is_none())
            || !c.dialog_limits.idle()
            || c.sst.iter().flatten().any(LegTimer::in_flight);
        if busy {
            return Err(NotRecordable::Busy);
        }
        let legs = [self.leg_record(c.leg(Side::A))?, self.leg_record(c.leg(Side::B))?];
        Ok(CallRecord {
            format: RECORD_FORMAT,
            shard: self.cfg.shard,
            subscription: c.kind == CallKind::Subscription,
            profile: c.rules.profile.name.clone(),
            plan: c.rules.plan.clone(),
            legs,
            b_call_id_ours: self.own_call_ids.contains(&c.leg(Side::B).call_id),
            caller_ip: c.a_source,
            started_ms_ago: ms_ago(now, c.started),
            answered_ms_ago: ms_ago(now, state.answered),
            ends_in_ms: state.max_duration.map(|t| ms_until(now, t)),
            media_check_in_ms: state.media_check.map(|t| ms_until(now, t)),
            session_timers: [0, 1].map(|i| c.sst[i].as_ref().map(|t| t.record(now))),
            media: c.media.as_ref().map(|m| m.record()),
            b_invite_cseq: c.b_invite_cseq,
            b_via_configured_hop: c.b_via_configured_hop,
        })
    }

    fn leg_record(&self, l: &Leg) -> Result<LegRecord, NotRecordable> {
        let opt = |b: &Option<Box<[u8]>>| b.as_deref().map(text).transpose();
        Ok(LegRecord {
            call_id: text(&l.call_id)?,
            local_tag: text(&l.local_tag)?,
            remote_tag: opt(&l.remote_tag)?,
            local_party: text(&l.local_party)?,
            remote_party: text(&l.remote_party)?,
            local_cseq: l.local_cseq,
            remote_cseq: l.remote_cseq,
            remote_target: text(&l.remote_target)?,
            route_set: l.route_set.iter().map(|r| text(r)).collect::<Result<_, _>>()?,
            transport: l.transport,
            interface: self.cfg.interface_name(l.dest.local).unwrap_or_default().to_string(),
            peer: peer_record(&l.dest.peer),
            contact: text(&l.contact)?,
            via_sent_by: l.via_sent_by.to_string(),
            target_is_source: l.target_is_source,
            fixed_dest: l.fixed_dest.as_ref().map(|(t, p)| (*t, peer_record(p))),
            forced_route: opt(&l.forced_route)?,
            last_sdp: l.last_sdp.as_deref().map(text).transpose()?,
        })
    }

    /// Takes over the call `record` describes: its dialogs match here from now on, its
    /// deadlines run from `now`, its media is relayed on the same ports. The call gets a
    /// handle of this engine.
    pub fn adopt_call(&mut self, now: Instant, record: &CallRecord) -> Result<CallHandle, AdoptError> {
        if record.format != RECORD_FORMAT {
            return Err(AdoptError::Format(record.format));
        }
        if record.shard != self.cfg.shard {
            return Err(AdoptError::WrongShard(record.shard));
        }
        let snapshot = self.cfg.profiles.load();
        let mut profile = snapshot
            .profiles
            .get(&record.profile)
            .cloned()
            .ok_or_else(|| AdoptError::UnknownProfile(record.profile.clone()))?;
        if !record.plan.per_call.is_empty() {
            // The call's own profile (`profiles/src/per_call.rs`), as the node that set it up built it.
            let own = profile.with_values(&record.plan.per_call);
            profile = Arc::new(own.map_err(|e| AdoptError::CallProfile(record.profile.clone(), e.to_string()))?);
        }
        let legs = [self.leg_from(&record.legs[0])?, self.leg_from(&record.legs[1])?];
        let tags_unusable = legs[0].local_tag.is_empty() || legs[0].local_tag == legs[1].local_tag;
        if tags_unusable || legs.iter().any(|l| self.dialogs.contains_key(&l.local_tag)) {
            return Err(AdoptError::DialogExists);
        }
        let started = back(now, record.started_ms_ago)?;
        // The relay here has seen no packet yet: the media is checked a whole timeout after
        // the takeover at the earliest, so media still moving over is not taken for silence.
        let media_grace = self.cfg.media.as_ref().map_or(Duration::ZERO, |m| m.timeout);
        let media_check = match record.media_check_in_ms {
            Some(ms) => Some(ahead(now, ms)?.max(now.checked_add(media_grace).ok_or(AdoptError::Time)?)),
            None => None,
        };
        let state = Confirmed {
            answered: back(now, record.answered_ms_ago)?,
            max_duration: record.ends_in_ms.map(|ms| ahead(now, ms)).transpose()?,
            media_check,
        };
        let mut sst = [None, None];
        for (slot, r) in sst.iter_mut().zip(&record.session_timers) {
            *slot = r.as_ref().map(|r| LegTimer::restore(r, now)).transpose()?;
        }
        // Last: the ports are taken only when nothing else can fail.
        let media = match (&record.media, self.media.as_mut()) {
            (None, _) => None,
            (Some(_), None) => return Err(AdoptError::NoRelay),
            (Some(r), Some(book)) => Some(Box::new(rtp_relay::Session::restore(book, r)?)),
        };
        let handle = self.new_call();
        let kind = if record.subscription { CallKind::Subscription } else { CallKind::Invite };
        for (side, leg) in [Side::A, Side::B].into_iter().zip(&legs) {
            self.dialogs.insert(leg.local_tag.clone(), (handle, side));
        }
        if record.b_call_id_ours {
            self.own_call_ids.insert(legs[1].call_id.clone());
        }
        if kind == CallKind::Invite {
            self.cfg.admission.call_started(record.caller_ip);
        }
        let span = tracing::info_span!("call", id = handle.get());
        span.in_scope(|| tracing::info!(profile = %record.profile, "call adopted from a record"));
        let call = Call {
            handle,
            span,
            kind,
            rules: Arc::new(CallRules { profile, plan: record.plan.clone() }),
            cc: None,
            cause: None,
            failover: Vec::new(),
            b_invite: None,
            state: CallState::Confirmed(state),
            legs,
            a_ist: TxId::NONE,
            b_invite_cseq: record.b_invite_cseq,
            b_ict: TxId::NONE,
            b_provisional: true,
            cancel_pending: false,
            invite_relays: Vec::new(),
            subscriptions: Vec::new(),
            offer_pending: None,
            rseq_map: Vec::new(),
            next_a_rseq: 1,
            started,
            dialog_limits: Default::default(),
            b_via_configured_hop: record.b_via_configured_hop,
            a_source: record.caller_ip,
            media,
            sst,
            scheduled: None,
        };
        let [a, b] = &call.legs;
        // The pcap file stays with the node that set the call up.
        let (a_call_id, b_call_id) = (a.call_id.clone(), b.call_id.clone());
        let started = super::Event::CallStarted { call: handle, a_call_id, b_call_id, pcap: None };
        self.out.push_back(super::Output::Event(started));
        self.calls.insert(handle, Box::new(call));
        self.reschedule_call(handle);
        Ok(handle)
    }

    fn leg_from(&self, r: &LegRecord) -> Result<Leg, AdoptError> {
        let peer = peer(&r.peer);
        let v6 = peer.is_ipv6();
        let socket = self
            .cfg
            .interfaces
            .iter()
            .find(|i| i.name == r.interface)
            .and_then(|i| i.socket(r.transport, v6))
            .ok_or_else(|| AdoptError::NoSocket { interface: r.interface.clone(), transport: r.transport })?;
        Ok(Leg {
            call_id: bytes(&r.call_id),
            local_tag: bytes(&r.local_tag),
            remote_tag: r.remote_tag.as_deref().map(bytes),
            local_party: bytes(&r.local_party),
            remote_party: bytes(&r.remote_party),
            local_cseq: r.local_cseq,
            remote_cseq: r.remote_cseq,
            remote_target: bytes(&r.remote_target),
            route_set: r.route_set.iter().map(|s| bytes(s)).collect(),
            transport: r.transport,
            // A TCP connection of the node that made the record is not one of ours: a new
            // one is opened to the peer.
            dest: Destination { transport: r.transport, local: socket.id, peer, conn: None },
            contact: bytes(&r.contact),
            via_sent_by: r.via_sent_by.as_str().into(),
            target_is_source: r.target_is_source,
            fixed_dest: r.fixed_dest.as_ref().map(|(t, p)| (*t, self::peer(p))),
            forced_route: r.forced_route.as_deref().map(bytes),
            last_sdp: r.last_sdp.as_ref().map(|s| Bytes::copy_from_slice(s.as_bytes())),
        })
    }
}
