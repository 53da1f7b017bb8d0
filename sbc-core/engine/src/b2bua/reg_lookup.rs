//! A new request's registrations, asked for before its profile is chosen
//! (`src/registrations.rs`): the query names every binding the request's handling may read
//! (its Request-URI's alias and AoR, its caller's AoR, its Contact from its source, a
//! REGISTER's AoR). A store that answers at once lets the request go on in the same call; one
//! that answers later parks it here until `handle_registrations` or the deadline.

use std::time::{Duration, Instant};

use profiles::LocalReply;
use regcache::{canonical_aor, RegQuery, RegView};

use super::setup::NewRequest;
use super::{Counter, Engine, Output, TimerRef};
use crate::sip::msg::{HeaderName, Message, Method, NameAddr, Uri};
use crate::sip::transaction::TxKey;

/// How long a request waits for a store's answer before it is refused with 503. The store
/// applies its own, shorter deadline and policy; this one only bounds what a store that never
/// answers can hold.
pub(super) const LOOKUP_DEADLINE: Duration = Duration::from_secs(2);

/// Names a lookup the driver answers later ([`Engine::handle_registrations`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegTicket(u64);

/// The bindings handling `msg` may read.
fn query_of(msg: &Message, source: std::net::SocketAddr) -> RegQuery {
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    let ruri = msg.request_uri();
    let mut q = RegQuery::default();
    if let Some(user) = Uri::parse(ruri).and_then(|u| u.user) {
        q.aliases.push(text(user));
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
    /// Looks up what `req` may read of the registrations (nothing when no profile or rule
    /// reads them), then goes on with it — now, or when the store answers.
    pub(super) fn look_up_registrations(&mut self, now: Instant, mut req: NewRequest) {
        if req.snapshot.uses_registrations() {
            let query = query_of(&req.msg, req.src.remote);
            match self.cfg.reg_cache.lookup(&query) {
                Some(view) => req.regs = view,
                None => return self.await_registrations(now, req, query),
            }
        }
        self.with_registrations(now, req);
    }

    fn await_registrations(&mut self, now: Instant, req: NewRequest, query: RegQuery) {
        if self.awaiting_regs.len() >= self.cfg.max_calls {
            let reply = LocalReply::new(503, "Service Unavailable").with("Retry-After", "5");
            return self.refuse(&req.msg, &req.src, &reply);
        }
        if req.msg.method() == Some(Method::Invite) {
            // RFC 3261 §16.2: an INVITE hears 100 before its retransmissions start.
            self.reply_stateless(&req.msg, &req.src, &LocalReply::new(100, "Trying"));
        }
        // (Numbered like calls and transactions, so a ticket is never reused: its one timer
        // is its deadline.)
        let ticket = RegTicket(self.new_id());
        self.stats.bump(Counter::RegistrationLookupsDeferred);
        self.awaiting_reg_keys.insert(req.key.clone(), ticket);
        self.awaiting_regs.insert(ticket, req);
        self.schedule(now + LOOKUP_DEADLINE, TimerRef::Registrations(ticket));
        self.out.push_back(Output::RegistrationLookup { ticket, query });
    }

    /// The store's answer to a lookup the engine emitted as `Output::RegistrationLookup`. An
    /// answer after the deadline (the request was refused) is ignored.
    pub fn handle_registrations(&mut self, now: Instant, ticket: RegTicket, view: RegView) {
        let Some(mut req) = self.awaiting_regs.remove(&ticket) else { return };
        self.awaiting_reg_keys.remove(&req.key);
        req.regs = view;
        self.with_registrations(now, req);
    }

    /// A retransmission of a request waiting for its registrations: true if it is one.
    pub(super) fn awaits_registrations(&self, key: &TxKey) -> bool {
        self.awaiting_reg_keys.contains_key(key)
    }

    /// The deadline of a parked lookup: the request is refused, the store's late answer ignored.
    pub(super) fn registrations_late(&mut self, ticket: RegTicket) {
        let Some(req) = self.awaiting_regs.remove(&ticket) else { return };
        self.awaiting_reg_keys.remove(&req.key);
        self.stats.bump(Counter::RegistrationLookupsLate);
        tracing::warn!(ticket = ticket.0, "registration store did not answer in time");
        let reply = LocalReply::new(503, "Service Unavailable").with("Retry-After", "5");
        self.refuse(&req.msg, &req.src, &reply);
    }

    /// The caller cancelled a request that waits for its registrations: it is answered 487
    /// and forgotten (the store's answer is then ignored).
    pub(super) fn cancel_awaiting(&mut self, invite: &TxKey) {
        let Some(ticket) = self.awaiting_reg_keys.remove(invite) else { return };
        if let Some(req) = self.awaiting_regs.remove(&ticket) {
            self.refuse(&req.msg, &req.src, &LocalReply::new(487, "Request Terminated"));
        }
    }

    /// Goes on with a new request whose registrations are in `req.regs`.
    fn with_registrations(&mut self, now: Instant, req: NewRequest) {
        if req.msg.method() == Some(Method::Invite) {
            self.invite_with_registrations(now, req);
        } else {
            self.ood_with_registrations(now, req);
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
