//! The B2BUA engine: sans-IO. One engine owns a shard of the calls; the driver feeds it parsed
//! messages, transport errors and the time, and drains transmits and events.
//!
//! Driving contract (as in quinn/str0m): after every `handle_*` call, drain `poll_output` until
//! it returns `None`, then sleep until `poll_timeout` (or the next input) and call
//! `handle_timeout` with the current time. The engine never reads a clock, never blocks and
//! never panics on network input. See `docs/call-lifecycle.md` for the call states.

mod answers;
pub(crate) mod apply;
mod auth;
mod build;
mod call;
mod call_timers;
mod cc;
mod counters;
mod dialog;
mod dialog_limits;
mod dialog_subs;
mod failover;
mod hop_health;
mod ids;
mod invite;
mod linger;
mod media;
mod ood;
mod overview;
mod peer_relay;
mod probe;
mod record;
mod reg_lookup;
mod register;
mod replaces;
mod resend;
mod resolve;
mod routing;
mod session_timer;
mod setup;
mod teardown;
mod txs;
mod types;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use profiles::LocalReply;

use crate::sip::msg::{
    check_request, check_response, reason_phrase, salvage_request_rows, HeaderName, Message, Method, ParseError,
};
use crate::sip::transaction::{client_key, server_key, TxKey};

pub use apply::MsgView;
pub use call::Side;
pub use cc::{CcRequest, CcVerdict};
pub use counters::{Counter, CounterDef, EngineStats, Labels, BY_METHOD};
pub use ids::{fnv1a, shard_of_branch, shard_of_call_id, BRANCH_PREFIX};
pub use media::MediaSettings;
pub use overview::{CallOverview, LegOverview};
pub use record::{AdoptError, CallRecord, LegRecord, NotRecordable, PeerRecord, SessionTimerRecord, RECORD_FORMAT};
pub use reg_lookup::RegTicket;
pub use replaces::{refer_to_replaced_call_id, replaced_call_id};
pub use resolve::{ResolveTicket, Target, TargetQuery};
pub use types::{ConnId, Destination, EngineConfig, Interface, LocalSocket, Peer, SocketId, Source, Transport};

use call::Call;
use ids::IdGen;
use txs::TxEntry;

/// The refusal of a request over a rate (admission's, or a dialog's in `dialog_limits.rs`): a
/// constant, so a flood of them allocates nothing for it.
pub(super) const OVER_RATE: LocalReply =
    LocalReply::with_rows(503, "Service Unavailable", &[(Cow::Borrowed("Retry-After"), Cow::Borrowed("1"))]);

/// The timer heap is compacted when it holds this many more entries than twice the live
/// transactions and calls.
const TIMER_COMPACT_FLOOR: usize = 4096;

/// Handle of a transaction in the engine's table (its own type: never mixed up with a call's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TxId(u64);

impl TxId {
    /// Not a transaction (the engine numbers them from 1): a relay's peer not yet known.
    pub(crate) const NONE: Self = Self(0);
}

/// Handle of a call (or subscription, or a request waiting for its call-control route) in
/// the engine's tables. Numbered from 1 per shard; the API shows it as `<shard>-<handle>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallHandle(u64);

impl CallHandle {
    /// The handle a caller names (the API's `<shard>-<handle>`).
    pub fn from_raw(n: u64) -> Self {
        Self(n)
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for CallHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Something the driver must do.
#[derive(Debug)]
pub enum Output {
    /// Send `bytes`; on failure report `tx` back through [`Engine::handle_transport_error`].
    Transmit { dest: Destination, bytes: Bytes, tx: Option<TxId> },
    /// Something worth counting or logging.
    Event(Event),
    /// Work for the call-control driver (run hooks; answer `Start` with `handle_cc_verdict`).
    CallControl(CcRequest),
    /// Work for the relay: bind and open, update or close a stream. Media outputs come before
    /// the transmits queued with them, so a stream is open before its SDP leaves. A failed
    /// open is reported with [`Engine::handle_media_error`], each pair whose sockets are closed
    /// with [`Engine::handle_media_released`].
    Media(rtp_relay::MediaCommand),
    /// When did these streams of `call` last see a packet? Answer with
    /// [`Engine::handle_media_activity`].
    MediaProbe { call: CallHandle, streams: Vec<rtp_relay::forwarder::StreamId> },
    /// Look up these bindings (the registrations port answered that it must ask elsewhere);
    /// answer with [`Engine::handle_registrations`]. The request waits for the answer.
    RegistrationLookup { ticket: RegTicket, query: regcache::RegQuery },
    /// Resolve these next-hop names (RFC 3263); answer with [`Engine::handle_targets`]. The
    /// request waits for the answer.
    Resolve { ticket: ResolveTicket, queries: Vec<TargetQuery> },
}

/// Call and message events, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A call began (or was adopted from a record), with the Call-IDs of its A and B legs
    /// (one and the same when the profile keeps the caller's).
    CallStarted {
        call: CallHandle,
        a_call_id: Box<[u8]>,
        b_call_id: Box<[u8]>,
        /// The pcap file its SIP messages go to (`msg_logger_path`).
        pcap: Option<std::sync::Arc<str>>,
    },
    CallAnswered {
        call: CallHandle,
    },
    CallEnded {
        call: CallHandle,
        code: u16,
        reason: &'static str,
        /// The profile the call ran with, and whether it was answered (for metrics).
        profile: String,
        answered: bool,
    },
    /// A message was dropped without reply.
    Dropped {
        reason: &'static str,
    },
    /// A request was refused by the SBC itself with this status.
    Refused {
        code: u16,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerRef {
    Tx(TxId),
    Call(CallHandle),
    Registrations(RegTicket),
    Targets(ResolveTicket),
    /// The next round of OPTIONS probes (`probe.rs`).
    Probe,
}

pub struct Engine {
    cfg: EngineConfig,
    ids: IdGen,
    draining: bool,
    txs: HashMap<TxId, Box<TxEntry>>,
    /// Finished transactions that only absorb retransmissions until their wait timer.
    lingering: linger::LingerTable,
    /// The Refer-To of the REFER being handled, mapped by the shard that holds the dialog its
    /// Replaces names (`replaces.rs`).
    refer_to_from_elsewhere: Option<String>,
    tx_keys: HashMap<TxKey, TxId>,
    next_id: u64,
    /// Boxed: a table slot is then a pointer, not a kilobyte of call (held calls are most of
    /// the memory, and a table is up to half empty after it grows).
    calls: HashMap<CallHandle, Box<Call>>,
    /// Calls waiting for their call-control `start` verdict.
    pending_cc: HashMap<CallHandle, cc::PendingStart>,
    /// Out-of-dialog requests waiting for their `route` verdict.
    pending_route: HashMap<CallHandle, cc::PendingRoute>,
    /// New requests waiting for the registrations store's answer (`reg_lookup.rs`), and the
    /// transaction keys of their retransmissions.
    awaiting_regs: HashMap<RegTicket, reg_lookup::Waiting>,
    /// How many of those are calls (an INVITE, or a call call control let go on).
    awaiting_calls: usize,
    /// The last snapshot a request came with, and whether it reads registrations.
    reg_use: Option<(std::sync::Arc<profiles::Snapshot>, bool)>,
    awaiting_reg_keys: HashSet<TxKey>,
    /// New requests waiting for their next hops' targets (`resolve.rs`).
    awaiting_targets: HashMap<ResolveTicket, resolve::AwaitingTargets>,
    /// Calls' named alternatives being resolved (`resolve.rs`).
    backfills: HashMap<ResolveTicket, resolve::Backfill>,
    /// The names of this probe round being resolved (`probe.rs`).
    probing: HashMap<ResolveTicket, (usize, Vec<TargetQuery>)>,
    /// Our local tag of each leg → (call, side): in-dialog requests carry it as To tag.
    dialogs: HashMap<Box<[u8]>, (CallHandle, Side)>,
    /// Call-IDs we generated for live B legs and relays: seeing one arrive as a new request
    /// means the request looped back to us.
    own_call_ids: HashSet<Box<[u8]>>,
    timers: BinaryHeap<Reverse<(Instant, TimerRef)>>,
    out: VecDeque<Output>,
    scratch: Vec<crate::sip::transaction::TxOutput>,
    /// The time digest nonces of ours count from (set at the first one).
    nonce_epoch: Option<Instant>,
    /// Answers to our challenges already accepted (nonce/nc/cnonce), for replay detection,
    /// with when, oldest first.
    nonce_uses: HashSet<String>,
    nonce_use_order: VecDeque<(Instant, String)>,
    /// Per profile, the rules its last evaluation gave: the next call for which it evaluates
    /// alike shares them.
    last_rules: HashMap<usize, std::sync::Arc<apply::CallRules>>,
    /// The profile of requests a cluster peer relays to this node's phones (`peer_relay.rs`).
    relay_profile: std::sync::Arc<profiles::Profile>,
    pub stats: EngineStats,
    /// The media ports this shard lends and the relay commands it queues (`media.rs`).
    media: Option<rtp_relay::MediaBook>,
}

impl Engine {
    /// An engine whose identifiers come from `seed`: 32 bytes from the OS in the driver, a
    /// constant in tests (see `ids.rs`).
    pub fn new(cfg: EngineConfig, seed: [u8; 32]) -> Self {
        let mut ids = IdGen::new(seed, cfg.shard);
        let lingering = linger::LingerTable::new(cfg.retransmission_cache);
        let media =
            cfg.media.as_ref().map(|m| rtp_relay::MediaBook::new(m.book.clone(), cfg.shard, m.shards, ids.seed()));
        Self {
            cfg,
            ids,
            draining: false,
            txs: HashMap::new(),
            lingering,
            refer_to_from_elsewhere: None,
            tx_keys: HashMap::new(),
            next_id: 1,
            calls: HashMap::new(),
            pending_cc: HashMap::new(),
            pending_route: HashMap::new(),
            awaiting_regs: HashMap::new(),
            awaiting_calls: 0,
            reg_use: None,
            awaiting_reg_keys: HashSet::new(),
            awaiting_targets: HashMap::new(),
            probing: HashMap::new(),
            backfills: HashMap::new(),
            dialogs: HashMap::new(),
            own_call_ids: HashSet::new(),
            timers: BinaryHeap::new(),
            out: VecDeque::new(),
            scratch: Vec::new(),
            nonce_epoch: None,
            nonce_uses: Default::default(),
            nonce_use_order: VecDeque::new(),
            last_rules: HashMap::new(),
            relay_profile: peer_relay::relay_profile(),
            stats: EngineStats::default(),
            media,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Stop accepting new calls and out-of-dialog requests (503); existing ones continue.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }
    pub fn is_draining(&self) -> bool {
        self.draining
    }
    pub fn active_calls(&self) -> usize {
        self.calls.len() + self.pending_cc.len() + self.awaiting_calls
    }
    pub fn active_transactions(&self) -> usize {
        self.txs.len() + self.lingering.len()
    }
    /// Transactions still doing work (not only absorbing retransmissions in a wait state).
    pub fn busy_transactions(&self) -> usize {
        // A probe (`probe.rs`) is nobody's request: a shutdown does not wait for its answer.
        self.txs.values().filter(|t| !t.is_lingering() && t.purpose != txs::Purpose::Probe).count()
    }
    /// True when nothing is left that a shutdown would cut.
    pub fn is_idle(&self) -> bool {
        self.calls.is_empty()
            && self.pending_cc.is_empty()
            && self.pending_route.is_empty()
            && self.awaiting_regs.is_empty()
            && self.awaiting_targets.is_empty()
            && self.busy_transactions() == 0
    }

    /// A counter's value: the table's, and for media the shard's book's.
    pub fn counter(&self, c: Counter) -> u64 {
        match (c, self.media.as_ref()) {
            (Counter::MediaAllocationFailures, Some(book)) => book.allocation_failures,
            (Counter::MediaDestinationsRefused, Some(book)) => book.destinations_refused,
            (Counter::MediaInsecureRefused, Some(book)) => book.insecure_refused,
            _ => self.stats.get(c),
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(c) = self.media.as_mut().and_then(rtp_relay::MediaBook::pop_command) {
            return Some(Output::Media(c));
        }
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Bytes that did not parse as a SIP message. Requests get 400/505 when a reply can be
    /// framed from what was received; everything else is a counted drop.
    pub fn handle_unparseable(&mut self, _now: Instant, buf: &[u8], err: ParseError, src: Source) {
        let Some(rows) = salvage_request_rows(buf) else {
            self.drop_msg(err.label());
            return;
        };
        let code = err.status();
        let mut w = crate::sip::msg::MessageWriter::response(code, reason_phrase(code).as_bytes());
        for (name, value) in rows {
            let n = match name {
                HeaderName::Via => "Via",
                HeaderName::From => "From",
                HeaderName::To => "To",
                HeaderName::CallId => "Call-ID",
                _ => "CSeq",
            };
            w.header(n, value);
        }
        w.header("Warning", format!("399 sbc \"{}\"", err).as_bytes());
        self.stats.bump(Counter::LocalReplies);
        self.out.push_back(Output::Event(Event::Refused { code }));
        let dest =
            Destination { transport: src.transport, local: src.local, peer: Peer::Addr(src.remote), conn: src.conn };
        self.out.push_back(Output::Transmit { dest, bytes: w.finish(b""), tx: None });
    }

    /// A parsed message from the network.
    pub fn handle_message(&mut self, now: Instant, msg: Message, src: Source) {
        if msg.is_request() {
            self.stats.bump_method(Counter::Requests, msg.method().unwrap_or(Method::Other));
            self.on_request(now, msg, src);
        } else {
            self.stats.bump(Counter::Responses);
            self.on_response(now, msg, src);
        }
    }

    /// Time has passed: fire every due transaction and call timer.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, r))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            match r {
                TimerRef::Tx(id) => self.tx_timeout(now, id, at),
                TimerRef::Call(h) => self.call_timeout(now, h, at),
                TimerRef::Registrations(t) => self.registrations_late(now, t),
                TimerRef::Targets(t) => self.targets_late(now, t),
                TimerRef::Probe => self.probe_round(now),
            }
        }
    }

    fn on_request(&mut self, now: Instant, msg: Message, src: Source) {
        let method = msg.method().unwrap_or(Method::Other);
        if let Err(reply) = check_request(&msg) {
            if method == Method::Ack {
                self.drop_msg("bad_ack");
                return;
            }
            return self.refuse(&msg, &src, &reply);
        }
        let Some(key) = server_key(&msg) else {
            self.drop_msg("no_transaction_key");
            return;
        };
        if let Some(&id) = self.tx_keys.get(&key) {
            self.on_server_retransmission(now, id, method, &msg);
            return;
        }
        if self.awaits_registrations(&key) {
            self.stats.bump_method(Counter::RetransmissionsAbsorbed, method);
            return;
        }
        match method {
            Method::Ack => self.on_ack(now, msg),
            Method::Cancel => self.on_cancel(now, msg, src, key),
            _ if msg.to_tag().is_some() => self.on_in_dialog(now, msg, src, key),
            _ if !self.admitted(now, &msg, &src) => {}
            Method::Invite => self.on_initial_invite(now, msg, src, key),
            _ => self.on_out_of_dialog(now, msg, src, key),
        }
    }

    /// Admission control for a new request, before any work is done for it: over its
    /// source's or the SBC's rate it gets a stateless 503 (a retransmission is decided again),
    /// from an ignored source nothing.
    fn admitted(&mut self, now: Instant, msg: &Message, src: &Source) -> bool {
        match self.cfg.admission.admit(now, src.remote.ip()) {
            crate::admission::Admit::Yes => true,
            crate::admission::Admit::Refuse => {
                self.refuse(msg, src, &OVER_RATE);
                false
            }
            crate::admission::Admit::Drop => {
                self.drop_msg("source_ignored");
                false
            }
        }
    }

    fn on_response(&mut self, now: Instant, msg: Message, src: Source) {
        if let Err(reason) = check_response(&msg) {
            self.drop_msg(reason);
            return;
        }
        let (Some(via), Some(cseq_raw)) = (msg.top_via(), msg.header_value(HeaderName::CSeq)) else {
            self.drop_msg("response_unmatched");
            return;
        };
        let key = client_key(via.branch().unwrap_or_default(), crate::sip::msg::CSeq::method_bytes(cseq_raw));
        match self.tx_keys.get(&key) {
            Some(&id) if self.response_source_ok(id, &src) => self.feed_response(now, id, msg),
            Some(_) => self.drop_msg("response_wrong_source"),
            None => self.drop_msg("stray_response"),
        }
    }

    /// Refuses a request without keeping a transaction (RFC 3261 §8.2.6.2, a stateless UAS):
    /// one reply per request received, nothing resent on a timer, a retransmission decided
    /// again and answered with the same To tag. A forged request whose source is a victim's
    /// address thus brings the victim one reply, not a transaction's eleven, and costs no
    /// memory. Every local final reply to a request that creates no dialog goes here.
    pub(super) fn refuse(&mut self, msg: &Message, src: &Source, reply: &LocalReply) {
        self.out.push_back(Output::Event(Event::Refused { code: reply.code }));
        self.reply_stateless(msg, src, reply);
    }

    /// A local reply sent without a transaction; see [`Self::refuse`].
    pub(super) fn reply_stateless(&mut self, msg: &Message, src: &Source, reply: &LocalReply) {
        let tag = self.stateless_to_tag(msg);
        let bytes = build::local_response(msg, src, reply, Some(tag.as_bytes()));
        self.stats.bump(Counter::LocalReplies);
        let dest = routing::response_dest(msg, src);
        self.out.push_back(Output::Transmit { dest, bytes, tx: None });
    }

    /// The To tag of a stateless reply: keyed by what a retransmission repeats (Call-ID, From
    /// tag, top Via branch, CSeq), so every answer to one request carries the same tag and no
    /// one can choose the request that gives a wanted tag.
    fn stateless_to_tag(&self, msg: &Message) -> String {
        let branch = msg.top_via().and_then(|v| v.branch()).unwrap_or_default();
        let parts: [&[u8]; 5] = [
            b"to-tag",
            msg.call_id().unwrap_or_default(),
            msg.from_tag().unwrap_or_default(),
            branch,
            msg.header_value(HeaderName::CSeq).unwrap_or_default(),
        ];
        self.ids.derived(&parts)
    }

    /// A request for a dialog or transaction that does not exist (a forged To tag, a stray
    /// CANCEL): charged to its source like a new request, then 481 without a transaction.
    pub(super) fn no_such_dialog(&mut self, now: Instant, msg: &Message, src: &Source) {
        if self.admitted(now, msg, src) {
            self.refuse(msg, src, &LocalReply::new(481, "Call/Transaction Does Not Exist"));
        }
    }

    fn drop_msg(&mut self, reason: &'static str) {
        self.stats.bump(Counter::Drops);
        tracing::debug!(reason, "dropped message");
        self.out.push_back(Output::Event(Event::Dropped { reason }));
    }

    /// Calls and transactions share one sequence, so a number in a log names one thing.
    fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn new_call(&mut self) -> CallHandle {
        CallHandle(self.new_id())
    }

    fn schedule(&mut self, at: Instant, r: TimerRef) {
        self.timers.push(Reverse((at, r)));
        // Deadlines of ended calls and finished transactions stay in the heap until they come
        // due (a max-call-duration one after hours). Drop them once they outnumber live ones.
        let live = self.txs.len() + self.lingering.len() + self.calls.len();
        if self.timers.len() > TIMER_COMPACT_FLOOR + 2 * live {
            let (txs, lingering, calls, regs) = (&self.txs, &self.lingering, &self.calls, &self.awaiting_regs);
            let (targets, backfills) = (&self.awaiting_targets, &self.backfills);
            self.timers.retain(|Reverse((at, r))| match r {
                TimerRef::Tx(id) => {
                    txs.get(id).is_some_and(|e| e.scheduled() == Some(*at))
                        || lingering.get(id).is_some_and(|l| l.until() == *at)
                }
                TimerRef::Call(h) => calls.get(h).is_some_and(|c| c.scheduled == Some(*at)),
                TimerRef::Registrations(t) => regs.contains_key(t),
                TimerRef::Targets(t) => targets.contains_key(t) || backfills.contains_key(t),
                TimerRef::Probe => true,
            });
        }
    }
}
