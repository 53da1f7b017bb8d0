//! The engine's transaction table: creates the RFC 3261 machines, routes their outputs to the
//! network or to the call that owns them, and keeps their timers in the engine's heap.

use std::time::Instant;

use bytes::Bytes;
use profiles::LocalReply;

use super::call::Side;
use super::linger::Linger;
use super::types::{Destination, Source};
use super::{CallHandle, Counter, Engine, Output, TimerRef, TxId};
use crate::sip::msg::{Message, Method};
use crate::sip::transaction::{
    client_key, ClientInvite, ClientInviteState, ClientNonInvite, ServerInvite, ServerNonInvite, TxKey, TxOutput,
};

pub(super) enum Fsm {
    Ict(ClientInvite),
    Nict(ClientNonInvite),
    Ist(ServerInvite),
    Nist(ServerNonInvite),
}

/// What the transaction is for, i.e. where its results go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// Answered by the SBC itself.
    Local,
    /// The caller's initial INVITE.
    AInitialInvite,
    /// Our initial INVITE on the B leg.
    BInitialInvite,
    /// Server side of a relayed request; `peer` is the client transaction on the other leg.
    RelayServer { peer: TxId },
    /// Client side of a relayed request; responses are relayed to `peer`.
    RelayClient { peer: TxId },
    /// Requests we originate whose answers change nothing (CANCEL, teardown BYE, ACK+BYE).
    Detached,
    /// A session refresh the SBC sends on its own (RFC 4028).
    SessionRefresh,
    /// An OPTIONS probe to a next hop (`probe.rs`).
    Probe,
}

pub(super) struct TxEntry {
    pub key: TxKey,
    pub fsm: Fsm,
    pub dest: Destination,
    pub call: Option<CallHandle>,
    pub side: Side,
    pub purpose: Purpose,
    /// Server transactions: the request, to build responses from.
    pub request: Option<Message>,
    pub source: Option<Source>,
    /// Server transactions: the To tag our responses carry when the request had none.
    pub to_tag: Option<Box<[u8]>>,
    /// The last failure was the transport's, not a timer's (503 rather than 408).
    transport_failed: bool,
    /// The request's method (the request itself is released once answered).
    method: Method,
    /// A Call-ID this relay reserved for loop detection, released with the transaction.
    pub(super) reserved_call_id: Option<Box<[u8]>>,
    scheduled: Option<Instant>,
    /// Out-of-dialog relays: the profile applied to the request, for its responses.
    pub rules: Option<std::sync::Arc<super::apply::CallRules>>,
    /// A REGISTER sent with aliases: how to map its 2xx back (registration caching).
    pub registration: Option<Box<super::register::PendingRegistration>>,
    /// Client transactions that may have to be sent again (credentials, a 422).
    pub resendable: Option<Box<Resendable>>,
    /// An in-dialog request counted by its call's `DialogLimits` until its final response.
    pub dialog_counted: bool,
    /// Where the driver sent a request addressed to a host name (`handle_resolved`).
    pub resolved: Option<std::net::SocketAddr>,
}

/// What sending a request again needs, carried from one attempt to the next.
#[derive(Debug)]
pub(super) struct Resendable {
    pub(super) sent: Message,
    /// The leg's credentials when the request was sent (the call may be gone by the answer:
    /// a teardown BYE).
    pub(super) credentials: Option<profiles::evaluate::Credentials>,
    /// Realms this request already carries answers for: a new challenge for one of them is
    /// relayed, not answered again.
    pub(super) answered_realms: Vec<String>,
    /// A 422 was answered already: the next one is relayed.
    pub(super) retried_422: bool,
    /// The request went to a destination the configuration names: its challenges may be
    /// answered without an `auth_realm` list (see `Engine::may_answer`).
    pub(super) to_configured_hop: bool,
}

impl Resendable {
    pub(super) fn new(
        sent: Message,
        credentials: Option<profiles::evaluate::Credentials>,
        to_configured_hop: bool,
    ) -> Box<Self> {
        Box::new(Self { sent, credentials, answered_realms: Vec::new(), retried_422: false, to_configured_hop })
    }
}

impl TxEntry {
    /// A transaction of `role` with nothing attached yet; its constructor fills in the rest.
    fn new(key: TxKey, fsm: Fsm, dest: Destination, role: TxRole, method: Method) -> Box<Self> {
        Box::new(Self {
            key,
            fsm,
            dest,
            call: role.call,
            side: role.side,
            purpose: role.purpose,
            request: None,
            source: None,
            to_tag: None,
            transport_failed: false,
            method,
            reserved_call_id: None,
            scheduled: None,
            rules: None,
            registration: None,
            resendable: None,
            dialog_counted: false,
            resolved: None,
        })
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match &self.fsm {
            Fsm::Ict(t) => t.poll_timeout(),
            Fsm::Nict(t) => t.poll_timeout(),
            Fsm::Ist(t) => t.poll_timeout(),
            Fsm::Nist(t) => t.poll_timeout(),
        }
    }
    /// Only absorbing retransmissions (Completed, Confirmed, acknowledged): nothing a shutdown
    /// would cut.
    pub(super) fn is_lingering(&self) -> bool {
        use crate::sip::transaction::{client_non_invite as nict, server_invite as ist, server_non_invite as nist};
        match &self.fsm {
            Fsm::Ict(t) => matches!(t.state(), ClientInviteState::Completed | ClientInviteState::Accepted),
            Fsm::Nict(t) => t.state() == nict::State::Completed,
            Fsm::Ist(t) => matches!(t.state(), ist::State::Completed | ist::State::Confirmed) || t.is_acked(),
            Fsm::Nist(t) => t.state() == nist::State::Completed,
        }
    }

    /// The method of the request this transaction carries.
    pub(super) fn method(&self) -> Method {
        self.method
    }

    pub(super) fn scheduled(&self) -> Option<Instant> {
        self.scheduled
    }
}

/// A result for the transaction user, collected before it is acted on.
enum TuEvent {
    Response(Message),
    Timeout,
}

/// What a transaction is for: the call it belongs to (if any), the leg, and its role.
#[derive(Debug, Clone, Copy)]
pub(super) struct TxRole {
    pub(super) call: Option<CallHandle>,
    pub(super) side: Side,
    pub(super) purpose: Purpose,
}

impl TxRole {
    pub(super) fn new(call: Option<CallHandle>, side: Side, purpose: Purpose) -> Self {
        Self { call, side, purpose }
    }
}

impl Engine {
    /// Creates a server transaction for `msg` (already known to have no match).
    pub(super) fn new_server_tx(
        &mut self,
        key: TxKey,
        msg: &Message,
        src: &Source,
        role: TxRole,
        to_tag: Option<Box<[u8]>>,
    ) -> TxId {
        let reliable = src.transport.is_reliable();
        let fsm = if msg.method() == Some(Method::Invite) {
            Fsm::Ist(ServerInvite::new(reliable, self.cfg.timers))
        } else {
            Fsm::Nist(ServerNonInvite::new(reliable, self.cfg.timers))
        };
        let id = TxId(self.new_id());
        let dest = super::routing::response_dest(msg, src);
        self.tx_keys.insert(key.clone(), id);
        let mut entry = TxEntry::new(key, fsm, dest, role, msg.method().unwrap_or(Method::Other));
        entry.request = Some(msg.clone());
        entry.source = Some(*src);
        entry.to_tag = to_tag;
        self.txs.insert(id, entry);
        id
    }

    /// Sends a response through a server transaction.
    pub(super) fn respond(&mut self, now: Instant, id: TxId, code: u16, bytes: Bytes) {
        let Some(e) = self.txs.get_mut(&id) else {
            return;
        };
        let mut out = std::mem::take(&mut self.scratch);
        match &mut e.fsm {
            Fsm::Ist(t) => t.send_response(code, bytes, now, &mut out),
            Fsm::Nist(t) => t.send_response(code, bytes, now, &mut out),
            _ => {}
        }
        if code >= 200 {
            // Answered: only the response bytes are needed for retransmissions from now on.
            e.request = None;
            if std::mem::take(&mut e.dialog_counted) {
                if let Some(call) = e.call.and_then(|h| self.calls.get_mut(&h)) {
                    call.dialog_limits.answered();
                }
            }
            let ends_offer =
                matches!(e.purpose, Purpose::RelayServer { .. }) && matches!(e.method, Method::Invite | Method::Update);
            if let (true, Some(call)) = (ends_offer, e.call.and_then(|h| self.calls.get_mut(&h))) {
                call.offer_pending = None;
            }
        }
        self.after_fsm(now, id, out);
    }

    /// Answers a server transaction with a response generated here.
    pub(super) fn respond_local(&mut self, now: Instant, id: TxId, reply: &LocalReply) {
        let Some(e) = self.txs.get(&id) else { return };
        let (Some(req), Some(src)) = (&e.request, &e.source) else {
            return;
        };
        let bytes = super::build::local_response(req, src, reply, e.to_tag.as_deref());
        if reply.code >= 200 {
            self.stats.bump(Counter::LocalReplies);
        }
        self.respond(now, id, reply.code, bytes);
    }

    /// Starts a client transaction for a request we built.
    pub(super) fn start_client_tx(&mut self, now: Instant, request: Message, dest: Destination, role: TxRole) -> TxId {
        let TxRole { call, side, purpose } = role;
        let branch = request.top_via().and_then(|v| v.branch()).unwrap_or_default().to_vec();
        let method = request.method().unwrap_or(Method::Other);
        let key = client_key(&branch, request.method_bytes());
        let reserved_call_id = (call.is_none() && matches!(purpose, Purpose::RelayClient { .. }))
            .then(|| request.call_id().unwrap_or_default().into());
        let reliable = dest.transport.is_reliable();
        // ACK and CANCEL cannot be challenged (RFC 3261 §22.1); the rest may need resending.
        let challengeable = !matches!(method, Method::Ack | Method::Cancel);
        let timed = matches!(method, Method::Invite | Method::Update)
            && call.and_then(|h| self.calls.get(&h)).is_some_and(|c| c.sst[side.idx()].is_some());
        let credentials = challengeable.then(|| self.credentials_for(call, side, purpose).cloned()).flatten();
        // Only credentials need it (a proxy URI is parsed): not every request sent pays for it.
        let configured = credentials.is_some()
            && self.to_configured_hop(call, side, &dest.peer, self.rules_for(call, purpose).map(|r| &**r));
        let resendable = (challengeable && (timed || credentials.is_some()))
            .then(|| Resendable::new(request.clone(), credentials, configured));
        let id = TxId(self.new_id());
        let mut out = std::mem::take(&mut self.scratch);
        let fsm = if request.method() == Some(Method::Invite) {
            let ict = ClientInvite::start(request, reliable, self.cfg.timers, now, &mut out);
            // The initial INVITE has the call's own Timer C; relayed re-INVITEs carry theirs.
            Fsm::Ict(if matches!(purpose, Purpose::RelayClient { .. }) {
                ict.with_timer_c(self.cfg.timer_c)
            } else {
                ict
            })
        } else {
            Fsm::Nict(ClientNonInvite::start(request, reliable, self.cfg.timers, now, &mut out))
        };
        self.tx_keys.insert(key.clone(), id);
        let mut entry = TxEntry::new(key, fsm, dest, role, method);
        entry.resendable = resendable;
        entry.reserved_call_id = reserved_call_id;
        self.txs.insert(id, entry);
        self.after_fsm(now, id, out);
        id
    }

    pub(super) fn feed_response(&mut self, now: Instant, id: TxId, msg: Message) {
        if let Some(l) = self.lingering.get(&id) {
            // A retransmitted non-2xx final to our INVITE gets the ACK again (Timer D).
            if let (Some(ack), true) = (&l.resend, msg.status().is_some_and(|c| c >= 300)) {
                self.out.push_back(Output::Transmit { dest: l.dest.clone(), bytes: ack.clone(), tx: None });
            }
            return;
        }
        let Some(e) = self.txs.get_mut(&id) else {
            return;
        };
        let mut out = std::mem::take(&mut self.scratch);
        match &mut e.fsm {
            Fsm::Ict(t) => t.handle_response(msg, now, &mut out),
            Fsm::Nict(t) => t.handle_response(msg, now, &mut out),
            _ => {}
        }
        self.after_fsm(now, id, out);
    }

    /// Whether a response to client transaction `id` may come from `src`: from the address
    /// the request went to (or on its connection), unless the profile that sent it says its
    /// next hop answers from elsewhere (`next_hop_replies_from_any`). Off-path forgers must
    /// then also send from the peer's address, besides guessing our 64-bit branch. A request
    /// sent to a host name is checked against where the driver says it went
    /// (`handle_resolved`). A finished transaction only resends its ACK, to where it went.
    pub(super) fn response_source_ok(&self, id: TxId, src: &Source) -> bool {
        let Some(e) = self.txs.get(&id) else { return true };
        // A relayed out-of-dialog request (REGISTER, MESSAGE ...) finds its profile through
        // its server side.
        let relaxed = e
            .rules
            .as_ref()
            .or_else(|| self.rules_for(e.call, e.purpose))
            .is_some_and(|r| r.profile.next_hop_replies_from_any);
        if relaxed || (e.dest.conn.is_some() && e.dest.conn == src.conn) {
            return true;
        }
        // A name not resolved yet as far as this shard knows: nothing to check against.
        let Some(went_to) = e.dest.peer.addr().or(e.resolved) else { return true };
        went_to.ip().to_canonical() == src.remote.ip().to_canonical()
    }

    /// The driver resolved the host name a client transaction's request went to.
    pub fn handle_resolved(&mut self, id: TxId, addr: std::net::SocketAddr) {
        if let Some(e) = self.txs.get_mut(&id) {
            e.resolved = Some(addr);
        }
    }

    pub(super) fn on_server_retransmission(&mut self, now: Instant, id: TxId, method: Method, msg: &Message) {
        if let Some(l) = self.lingering.get(&id) {
            self.stats.bump_method(Counter::RetransmissionsAbsorbed, method);
            if let (Some(bytes), false) = (&l.resend, method == Method::Ack) {
                self.out.push_back(Output::Transmit { dest: l.dest.clone(), bytes: bytes.clone(), tx: None });
            }
            return;
        }
        let Some(e) = self.txs.get_mut(&id) else {
            return;
        };
        if method == Method::Ack {
            if let Fsm::Ist(t) = &e.fsm {
                if t.final_code().is_some_and(|c| c < 300) {
                    // An ACK for our 2xx that carries the INVITE's key (RFC 2543 peers): it
                    // belongs to the dialog, not to the transaction (RFC 6026 §8.7).
                    return self.on_ack(now, msg.clone());
                }
            }
        }
        // The first ACK of a non-2xx final completes the INVITE transaction: not a repeat.
        let first_ack = method == Method::Ack && matches!(&e.fsm, Fsm::Ist(t) if !t.is_acked());
        if !first_ack {
            self.stats.bump_method(Counter::RetransmissionsAbsorbed, method);
        }
        let mut out = std::mem::take(&mut self.scratch);
        match (&mut e.fsm, method) {
            (Fsm::Ist(t), Method::Ack) => t.handle_ack(now, &mut out),
            (Fsm::Ist(t), _) => t.handle_retransmission(&mut out),
            (Fsm::Nist(t), _) => t.handle_retransmission(&mut out),
            _ => {}
        }
        self.after_fsm(now, id, out);
    }

    /// The driver could not deliver a transaction's message.
    pub fn handle_transport_error(&mut self, now: Instant, id: TxId) {
        let Some(e) = self.txs.get_mut(&id) else {
            return;
        };
        e.transport_failed = true;
        let mut out = std::mem::take(&mut self.scratch);
        match &mut e.fsm {
            Fsm::Ict(t) => t.handle_transport_error(&mut out),
            Fsm::Nict(t) => t.handle_transport_error(&mut out),
            Fsm::Ist(t) => t.handle_transport_error(&mut out),
            Fsm::Nist(t) => t.handle_transport_error(&mut out),
        }
        self.after_fsm(now, id, out);
    }

    pub(super) fn tx_timeout(&mut self, now: Instant, id: TxId, at: Instant) {
        if let Some(l) = self.lingering.get(&id) {
            if l.until == at {
                if let Some(l) = self.lingering.remove(&id) {
                    self.remove_key(&l.key, id);
                }
            }
            return;
        }
        let Some(e) = self.txs.get_mut(&id) else {
            return;
        };
        if e.scheduled != Some(at) {
            return; // superseded deadline
        }
        e.scheduled = None;
        let mut out = std::mem::take(&mut self.scratch);
        match &mut e.fsm {
            Fsm::Ict(t) => t.handle_timeout(now, &mut out),
            Fsm::Nict(t) => t.handle_timeout(now, &mut out),
            Fsm::Ist(t) => t.handle_timeout(now, &mut out),
            Fsm::Nist(t) => t.handle_timeout(now, &mut out),
        }
        self.after_fsm(now, id, out);
    }

    /// Marks the 2xx of an INVITE server transaction as acknowledged.
    pub(super) fn ist_acked(&mut self, now: Instant, id: TxId) {
        if let Some(Fsm::Ist(t)) = self.txs.get_mut(&id).map(|e| &mut e.fsm) {
            t.handle_2xx_ack();
        }
        self.reschedule_tx(now, id);
        self.maybe_linger(id);
    }

    /// Routes a machine's outputs: transmits to the network, results to the owner, and
    /// removes the transaction once it terminated.
    fn after_fsm(&mut self, now: Instant, id: TxId, mut out: Vec<TxOutput>) {
        let mut tu: Vec<TuEvent> = Vec::new();
        let mut terminated = false;
        if let Some(e) = self.txs.get(&id) {
            for o in out.drain(..) {
                match o {
                    TxOutput::Transmit(bytes) => {
                        self.out.push_back(Output::Transmit { dest: e.dest.clone(), bytes, tx: Some(id) })
                    }
                    TxOutput::Response(m) => tu.push(TuEvent::Response(m)),
                    TxOutput::Timeout => tu.push(TuEvent::Timeout),
                    TxOutput::Terminated => terminated = true,
                }
            }
        }
        out.clear();
        self.scratch = out;
        for ev in tu {
            match ev {
                TuEvent::Response(m) => self.on_client_response(now, id, m),
                TuEvent::Timeout => self.on_tx_timeout(now, id),
            }
        }
        if terminated {
            self.forget_tx(id);
        } else {
            self.reschedule_tx(now, id);
            self.maybe_linger(id);
        }
    }

    /// Unindexes a key if it still belongs to `id` (a newer transaction may have reused it).
    fn remove_key(&mut self, key: &TxKey, id: TxId) {
        if self.tx_keys.get(key) == Some(&id) {
            self.tx_keys.remove(key);
        }
    }

    /// The final status an INVITE server transaction sent, if it still exists.
    pub(super) fn ist_final_code(&self, id: TxId) -> Option<u16> {
        match &self.txs.get(&id)?.fsm {
            Fsm::Ist(t) => t.final_code(),
            _ => None,
        }
    }

    /// Shrinks a transaction that only absorbs retransmissions now into a [`Linger`].
    fn maybe_linger(&mut self, id: TxId) {
        let Some(e) = self.txs.get(&id) else { return };
        let linger = match &e.fsm {
            Fsm::Nist(t) => t.linger(),
            Fsm::Ict(t) => t.linger(),
            Fsm::Nict(t) => t.linger().map(|at| (None, at)),
            Fsm::Ist(t) => t.linger().map(|at| (None, at)),
        };
        let Some((resend, until)) = linger else { return };
        let Some(e) = self.txs.remove(&id) else { return };
        if let Some(cid) = &e.reserved_call_id {
            self.own_call_ids.remove(cid);
        }
        let rescheduled = e.scheduled != Some(until);
        let TxEntry { key, dest, .. } = *e;
        self.lingering.insert(id, Linger { key, resend, dest, until });
        self.stats.set(Counter::RetransmissionCacheEvictions, self.lingering.evictions());
        if rescheduled {
            self.schedule(until, TimerRef::Tx(id));
        }
    }

    /// Removes a transaction. A relay's client side also releases the Call-ID it reserved.
    pub(super) fn forget_tx(&mut self, id: TxId) {
        if let Some(l) = self.lingering.remove(&id) {
            self.remove_key(&l.key, id);
        }
        let Some(e) = self.txs.remove(&id) else {
            return;
        };
        // Gone without a final response (a transport error): its dialog's place is free again.
        if let Some(call) = e.call.filter(|_| e.dialog_counted).and_then(|h| self.calls.get_mut(&h)) {
            call.dialog_limits.answered();
        }
        self.remove_key(&e.key, id);
        if let Some(cid) = e.reserved_call_id {
            self.own_call_ids.remove(&cid);
        }
    }

    /// Links the server side of a relay to its client side once both exist.
    pub(super) fn set_relay_peer(&mut self, server: TxId, client: TxId) {
        if let Some(e) = self.txs.get_mut(&server) {
            e.purpose = Purpose::RelayServer { peer: client };
        }
    }

    fn reschedule_tx(&mut self, _now: Instant, id: TxId) {
        let Some(e) = self.txs.get_mut(&id) else {
            return;
        };
        let next = e.poll_timeout();
        if next.is_some() && next != e.scheduled {
            e.scheduled = next;
            if let Some(at) = next {
                self.schedule(at, TimerRef::Tx(id));
            }
        }
    }

    /// A response reached the transaction user.
    fn on_client_response(&mut self, now: Instant, id: TxId, msg: Message) {
        if self.answer_challenge(now, id, &msg) || self.retry_after_422(now, id, &msg) {
            return;
        }
        let Some(e) = self.txs.get(&id) else { return };
        let (purpose, call, side) = (e.purpose, e.call, e.side);
        match purpose {
            Purpose::BInitialInvite => {
                if let Some(h) = call.filter(|h| self.calls.contains_key(h)) {
                    self.on_b_invite_response(now, h, msg);
                } else if msg.status().is_some_and(|c| (200..300).contains(&c)) {
                    self.kill_orphan_2xx(now, id, &msg);
                }
            }
            Purpose::RelayClient { peer } => self.relay_response(now, id, peer, call, side.other(), msg),
            Purpose::SessionRefresh => {
                if let Some(h) = call {
                    self.on_refresh_response(now, id, h, side, &msg);
                }
            }
            Purpose::Probe => {
                if let Some(code) = msg.status().filter(|c| *c >= 200) {
                    let dest = self.txs.get(&id).map(|e| e.dest.clone());
                    if let Some(dest) = dest {
                        self.probe_outcome(now, &dest, Some(code));
                    }
                }
            }
            Purpose::Detached
                if msg.status().is_some_and(|c| (200..300).contains(&c))
                    && msg.cseq().is_some_and(|c| c.method == Method::Invite) =>
            {
                self.kill_orphan_2xx(now, id, &msg);
            }
            _ => {}
        }
    }

    /// A transaction timed out (or its transport failed).
    fn on_tx_timeout(&mut self, now: Instant, id: TxId) {
        let Some(e) = self.txs.get(&id) else { return };
        let (purpose, call, method, transport_failed, e_side) =
            (e.purpose, e.call, e.method(), e.transport_failed, e.side);
        let is_server = matches!(e.fsm, Fsm::Ist(_) | Fsm::Nist(_));
        let unacked_2xx = matches!(&e.fsm, Fsm::Ist(t) if t.final_code().is_some_and(|c| c < 300) && !t.is_acked());
        match purpose {
            Purpose::BInitialInvite => {
                if let Some(h) = call {
                    self.on_b_invite_timeout(now, h, transport_failed);
                }
            }
            Purpose::Probe => {
                let dest = e.dest.clone();
                self.probe_outcome(now, &dest, None);
            }
            Purpose::RelayClient { peer } => {
                let reply = if transport_failed {
                    LocalReply::new(503, "Service Unavailable")
                } else {
                    LocalReply::new(408, "Request Timeout")
                };
                if method == Method::Invite && !transport_failed {
                    // Timer C of a relayed re-INVITE: stop it at the far end as well.
                    let cancel = self.client_request(id).map(super::build::cancel_for);
                    let dest = self.txs.get(&id).map(|e| e.dest.clone());
                    if let (Some(Ok(m)), Some(dest)) = (cancel.map(Message::parse), dest) {
                        self.start_client_tx(now, m, dest, TxRole::new(call, Side::B, Purpose::Detached));
                    }
                }
                self.respond_local(now, peer, &reply);
                let subscription = call
                    .and_then(|h| self.calls.get(&h))
                    .is_some_and(|c| c.kind == super::call::CallKind::Subscription);
                if subscription && matches!(method, Method::Notify | Method::Subscribe | Method::Refer) {
                    if let Some(h) = call {
                        self.end_call(now, h, reply.code, "subscription_lost");
                    }
                }
                if method == Method::Bye {
                    if let Some(h) = call {
                        self.end_call(now, h, 408, "bye_timeout");
                    }
                }
            }
            _ if is_server && unacked_2xx => {
                if let Some(h) = call {
                    tracing::info!(call = h.get(), "no ACK for 2xx, ending call");
                    self.tear_down(now, h, 408, "no_ack");
                }
            }
            Purpose::SessionRefresh => {
                if let Some(h) = call {
                    self.on_refresh_timeout(now, h, e_side);
                }
            }
            // The caller cannot be reached with our answer: give up on the callee too.
            Purpose::AInitialInvite => {
                if let Some(h) = call {
                    tracing::info!(call = h.get(), "caller unreachable, ending call");
                    self.tear_down(now, h, 503, "caller_unreachable");
                }
            }
            _ => {}
        }
    }

    /// The request of a client transaction (e.g. to build CANCEL).
    pub(super) fn client_request(&self, id: TxId) -> Option<&Message> {
        match &self.txs.get(&id)?.fsm {
            Fsm::Ict(t) => t.request(),
            Fsm::Nict(t) => t.request(),
            _ => None,
        }
    }

    /// Whether an INVITE server transaction can still take a final response.
    pub(super) fn ist_open(&self, id: TxId) -> bool {
        matches!(self.txs.get(&id).map(|e| &e.fsm), Some(Fsm::Ist(t)) if t.final_code().is_none())
    }

    /// Whether a client INVITE is still waiting for its final response.
    pub(super) fn ict_pending(&self, id: TxId) -> bool {
        matches!(self.txs.get(&id).map(|e| &e.fsm), Some(Fsm::Ict(t))
            if matches!(t.state(), ClientInviteState::Calling | ClientInviteState::Proceeding))
    }

    /// Sends a message outside any transaction (ACK for 2xx, stateless replies).
    pub(super) fn send_raw(&mut self, dest: Destination, bytes: Bytes) {
        self.out.push_back(Output::Transmit { dest, bytes, tx: None });
    }
}
