//! A new request's registrations, asked for before its profile is chosen
//! (`src/registrations.rs`), and again when call control lets it go on (the hooks took time):
//! the query names every binding the request's handling may read (its Request-URI's alias
//! and AoR, its caller's AoR, its Contact from its source, a REGISTER's AoR, the binding a
//! cluster peer names). A store that answers at once lets the request go on in the same call;
//! one that answers later parks it here until `handle_registrations` or the deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use profiles::{LocalReply, Snapshot};
use regcache::{canonical_aor, RegQuery, RegView};

use super::call::Side;
use super::cc::{Routed, Started};
use super::register::uri_user;
use super::setup::NewRequest;
use super::txs::{Purpose, TxRole};
use super::{CallHandle, Counter, Engine, Output, TimerRef};
use crate::sip::msg::{HeaderName, Message, Method, NameAddr, Uri};
use crate::sip::transaction::TxKey;

/// How long a request waits for a store's answer before it is refused with 503. The store
/// applies its own, shorter deadline and policy; this one only bounds what a store that never
/// answers can hold.
pub(super) const LOOKUP_DEADLINE: Duration = Duration::from_secs(2);

/// Names a lookup the driver answers later ([`Engine::handle_registrations`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegTicket(u64);

/// What waits for its registrations, and goes on when they come.
// Every new request passes through here by value: boxing `New` would cost an allocation per
// request, while only the rare parked ones take the map's room.
#[allow(clippy::large_enum_variant)]
pub(super) enum Waiting {
    /// A new request, before its profile is chosen. An INVITE gets its server transaction
    /// (and 100) when it begins to wait; other requests have none until they go on.
    New(NewRequest),
    /// A call whose `start` hooks said go on: looked up again, since the hooks took time.
    Started(Box<Started>),
    /// An out-of-dialog request whose `route` hooks said go on.
    Routed(Box<Routed>),
}

impl Waiting {
    fn req(&self) -> &NewRequest {
        match self {
            Self::New(r) => r,
            Self::Started(s) => &s.p.req,
            Self::Routed(r) => &r.p.req,
        }
    }

    fn req_mut(&mut self) -> &mut NewRequest {
        match self {
            Self::New(r) => r,
            Self::Started(s) => &mut s.p.req,
            Self::Routed(r) => &mut r.p.req,
        }
    }

    /// The call it is, if it is one.
    fn call(&self) -> Option<CallHandle> {
        match self {
            Self::New(r) => r.server.map(|(call, _)| call),
            Self::Started(s) => Some(s.call),
            Self::Routed(_) => None,
        }
    }
}

/// The bindings handling `msg` may read.
fn query_of(msg: &Message, source: std::net::SocketAddr) -> RegQuery {
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    let ruri = msg.request_uri();
    let mut q = RegQuery::default();
    // The Request-URI's user as calls to an alias read it, and as `$uc $us $ui` do (they
    // differ for schemes other than sip, sips and tel).
    let users = [Uri::parse(ruri).and_then(|u| u.user).map(text), uri_user(&text(ruri)).map(str::to_string)];
    // A peer's request names the binding it is for (`peer_relay.rs`).
    let relayed = super::peer_relay::named_alias(msg);
    for user in users.into_iter().flatten().chain(relayed) {
        if !q.aliases.contains(&user) {
            q.aliases.push(user);
        }
    }
    let mut aor = |value: Option<&[u8]>| {
        if let Some(a) = value.and_then(|v| canonical_aor(&String::from_utf8_lossy(v))) {
            if !q.aors.contains(&a) {
                q.aors.push(a);
            }
        }
    };
    aor(Some(ruri));
    aor(msg.header_value(HeaderName::From));
    if msg.method() == Some(Method::Register) {
        aor(msg.header_value(HeaderName::To));
    }
    let contact = msg.header_value(HeaderName::Contact).and_then(NameAddr::parse);
    q.contact = contact.map(|na| (text(na.uri), source));
    q
}

impl Engine {
    /// Looks up what a request may read of the registrations (nothing when no profile or rule
    /// reads them), then goes on with it: now, or when the store answers.
    pub(super) fn look_up_registrations(&mut self, now: Instant, mut waiting: Waiting) {
        // (A relay header from anyone but a peer costs no lookup.)
        let req = waiting.req();
        let relayed = super::peer_relay::named_alias(&req.msg).is_some() && self.cfg.reg_cache.is_peer(req.src.remote);
        if relayed || self.snapshot_uses_registrations(&waiting.req().snapshot) {
            let req = waiting.req();
            let query = query_of(&req.msg, req.src.remote);
            match self.cfg.reg_cache.lookup(&query) {
                Some(view) => waiting.req_mut().regs = view,
                None => return self.await_registrations(now, waiting, query),
            }
        }
        self.go_on(now, waiting);
    }

    /// Whether `snapshot` reads registrations: worked out once per snapshot (it walks every
    /// profile's patterns), not per request.
    fn snapshot_uses_registrations(&mut self, snapshot: &Arc<Snapshot>) -> bool {
        match &self.reg_use {
            Some((seen, uses)) if Arc::ptr_eq(seen, snapshot) => *uses,
            _ => {
                let uses = snapshot.uses_registrations();
                self.reg_use = Some((snapshot.clone(), uses));
                uses
            }
        }
    }

    fn await_registrations(&mut self, now: Instant, mut waiting: Waiting, query: RegQuery) {
        if self.awaiting_regs.len() >= self.cfg.max_calls {
            let reply = LocalReply::new(503, "Service Unavailable").with("Retry-After", "5");
            return self.wait_failed(now, waiting, reply);
        }
        if let Waiting::New(req) = &mut waiting {
            if req.msg.method() == Some(Method::Invite) {
                // A transaction from now on: it resends our answers and absorbs the INVITE's
                // retransmissions, and its 100 stops them (RFC 3261 §17.2.1).
                let call = self.new_call();
                let role = TxRole::new(Some(call), Side::A, Purpose::AInitialInvite);
                let tag = self.ids.tag();
                let a_tx = self.new_server_tx(std::mem::take(&mut req.key), &req.msg, &req.src, role, Some(tag));
                self.respond_local(now, a_tx, &LocalReply::new(100, "Trying"));
                req.server = Some((call, a_tx));
            } else {
                self.awaiting_reg_keys.insert(req.key.clone());
            }
        }
        // (Numbered like calls and transactions, so a ticket is never reused: its one timer
        // is its deadline.)
        let ticket = RegTicket(self.new_id());
        self.stats.bump(Counter::RegistrationLookupsDeferred);
        if waiting.call().is_some() {
            self.awaiting_calls += 1;
        }
        self.awaiting_regs.insert(ticket, waiting);
        self.schedule(now + LOOKUP_DEADLINE, TimerRef::Registrations(ticket));
        self.out.push_back(Output::RegistrationLookup { ticket, query });
    }

    /// Takes what waits under `ticket` out of the tables.
    fn stop_waiting(&mut self, ticket: RegTicket) -> Option<Waiting> {
        let waiting = self.awaiting_regs.remove(&ticket)?;
        if let Waiting::New(req) = &waiting {
            self.awaiting_reg_keys.remove(&req.key);
        }
        if waiting.call().is_some() {
            self.awaiting_calls -= 1;
        }
        Some(waiting)
    }

    /// The store's answer to a lookup the engine emitted as `Output::RegistrationLookup`. An
    /// answer for something no longer waiting (refused at the deadline, cancelled) is ignored.
    pub fn handle_registrations(&mut self, now: Instant, ticket: RegTicket, view: RegView) {
        let Some(mut waiting) = self.stop_waiting(ticket) else { return };
        waiting.req_mut().regs = view;
        self.go_on(now, waiting);
    }

    /// A retransmission of a request (other than INVITE) waiting for its registrations.
    pub(super) fn awaits_registrations(&self, key: &TxKey) -> bool {
        self.awaiting_reg_keys.contains(key)
    }

    /// The deadline of a lookup: what waits is refused, the store's late answer ignored.
    pub(super) fn registrations_late(&mut self, now: Instant, ticket: RegTicket) {
        let Some(waiting) = self.stop_waiting(ticket) else { return };
        self.stats.bump(Counter::RegistrationLookupsLate);
        tracing::warn!(ticket = ticket.0, "registration store did not answer in time");
        let reply = LocalReply::new(503, "Service Unavailable").with("Retry-After", "5");
        self.wait_failed(now, waiting, reply);
    }

    /// The caller cancelled call `call` while it waited for its registrations: it is
    /// forgotten (the caller's transaction has its 487 from `on_cancel`). Whether call control
    /// had seen it; `None` if it was not waiting.
    pub(super) fn cancel_awaiting_call(&mut self, call: CallHandle) -> Option<bool> {
        let ticket = self.awaiting_regs.iter().find(|(_, w)| w.call() == Some(call)).map(|(t, _)| *t)?;
        let waiting = self.stop_waiting(ticket)?;
        Some(matches!(waiting, Waiting::Started(_)))
    }

    /// Answers what waited with `reply`.
    fn wait_failed(&mut self, now: Instant, waiting: Waiting, reply: LocalReply) {
        match waiting {
            Waiting::New(req) if req.msg.method() == Some(Method::Invite) => self.refuse_invite(now, &req, &reply),
            Waiting::New(req) => self.refuse(&req.msg, &req.src, &reply),
            Waiting::Started(s) => self.refuse_started(now, s.call, s.p.a_tx, reply, "registrations_late"),
            Waiting::Routed(r) => self.respond_local(now, r.p.server, &reply),
        }
    }

    /// Goes on with what has its registrations now.
    fn go_on(&mut self, now: Instant, waiting: Waiting) {
        match waiting {
            Waiting::New(req) => match (req.msg.method(), req.server) {
                // Its transaction ended while it waited (a transport error): nothing to do.
                (_, Some((_, a_tx))) if !self.ist_open(a_tx) => {}
                (Some(Method::Invite), _) => self.invite_with_registrations(now, req),
                _ => self.ood_with_registrations(now, req),
            },
            Waiting::Started(s) => self.start_with_registrations(now, *s),
            Waiting::Routed(r) => self.route_with_registrations(now, *r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_names_what_the_handling_reads() {
        let raw = b"REGISTER sip:alice@example.com SIP/2.0\r\n\
            Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
            From: <sip:alice@example.com>;tag=1\r\n\
            To: <sip:alice@Example.COM>\r\n\
            Call-ID: c\r\nCSeq: 1 REGISTER\r\n\
            Contact: \"A\" <sip:alice@10.0.0.1:5062>;expires=60\r\n\r\n";
        let msg = Message::parse(bytes::Bytes::from_static(raw)).expect("parses");
        let src = "192.0.2.1:5062".parse().expect("addr");
        let q = query_of(&msg, src);
        assert_eq!(q.aliases, vec!["alice".to_string()]);
        assert_eq!(q.aors, vec![canonical_aor("sip:alice@example.com").expect("aor")], "one AoR, named thrice");
        assert_eq!(q.contact, Some(("sip:alice@10.0.0.1:5062".to_string(), src)));
    }
}
