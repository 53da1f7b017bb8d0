//! Out-of-dialog requests other than INVITE: OPTIONS to the SBC itself are answered here;
//! everything else (OPTIONS, MESSAGE, NOTIFY, SUBSCRIBE, PUBLISH, REGISTER, extensions) goes
//! through a relay pair: a server transaction on the A side, a client transaction with a fresh
//! Call-ID and From tag on the B side, the responses mapped back.

use std::sync::Arc;
use std::time::Instant;

use profiles::LocalReply;

use super::apply::{append, Chosen};
use super::build::{
    copy_unowned, copy_unowned_if, leg_contact, proxy_route, without_tag, write_request, RequestHead, ToRow,
};
use super::call::{CallKind, Side};
use super::reg_lookup::Waiting;
use super::register::{local_registrar, rewritten_contacts, CacheStep};
use super::resolve::Resolving;
use super::routing;
use super::setup::NewRequest;
use super::txs::{Purpose, TxRole};
use super::types::Source;
use super::Engine;
use super::{apply::CallRules, invite::BRoute, TxId};
use crate::sip::msg::{HeaderName, Message, Method};
use crate::sip::transaction::TxKey;

/// What the SBC says it can do in answer to OPTIONS.
const ALLOW: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE, INFO, MESSAGE, NOTIFY, REFER, SUBSCRIBE, PUBLISH, REGISTER";

impl Engine {
    pub(super) fn on_out_of_dialog(&mut self, now: Instant, msg: Message, src: Source, key: TxKey) {
        let method = msg.method().unwrap_or(Method::Other);
        if method == Method::Options && routing::is_local_uri(&self.cfg, msg.request_uri()) {
            // Health checks: answer, and say "draining" with 503 so balancers move away.
            let reply =
                if self.draining { LocalReply::new(503, "Service Unavailable") } else { LocalReply::new(200, "OK") };
            // Stateless like a refusal: a flood of pings keeps no transaction for 32 s.
            let reply = reply.with("Allow", ALLOW).with("Accept", "application/sdp").with("Supported", "100rel");
            return self.reply_stateless(&msg, &src, &reply);
        }
        let max_forwards = match self.admit_new_request(&msg, &src) {
            Ok(mf) => mf,
            Err(reply) => return self.refuse(&msg, &src, &reply),
        };
        let snapshot = self.cfg.profiles.load();
        let req = NewRequest::new(key, msg, src, max_forwards, snapshot);
        self.look_up_registrations(now, Waiting::New(req));
    }

    /// A new out-of-dialog request with its registrations at hand (`reg_lookup.rs`).
    pub(super) fn ood_with_registrations(&mut self, now: Instant, mut req: NewRequest) {
        let method = req.msg.method().unwrap_or(Method::Other);
        // A relayed request runs its profile's `route` hooks first; SUBSCRIBE and REFER start
        // a dialog pair and go without.
        let relayed = !matches!(method, Method::Subscribe | Method::Refer);
        let rules = match self.choose_profile(&req, relayed) {
            Chosen::Go(r) => r,
            Chosen::Refuse(reply) => return self.refuse(&req.msg, &req.src, &reply),
            // Unlike SEMS (which drops it), a request that cannot be handled is answered.
            Chosen::Fail => return self.refuse(&req.msg, &req.src, &LocalReply::new(500, "Server Internal Error")),
            Chosen::CallControl(cc) => return self.park_route(req, cc),
        };
        if method == Method::Register && local_registrar(&rules.profile).is_some() {
            let a_tag = self.ids.tag();
            let role = TxRole::new(None, Side::A, Purpose::Local);
            let server = self.new_server_tx(std::mem::take(&mut req.key), &req.msg, &req.src, role, Some(a_tag));
            return self.local_register(now, server, &req, &rules);
        }
        let plan = &rules.plan;
        let ruri = plan.ruri.as_ref().map_or(req.msg.request_uri(), |r| r.as_bytes());
        let route = match self.route_new_request(req.msg.request_uri(), ruri, &rules) {
            Ok(d) => d,
            Err(reply) => return self.refuse(&req.msg, &req.src, &reply),
        };
        if matches!(method, Method::Subscribe | Method::Refer) {
            if self.calls.len() >= self.cfg.max_calls {
                let reply = LocalReply::new(503, "Service Unavailable").with("Retry-After", "5");
                return self.refuse(&req.msg, &req.src, &reply);
            }
            // These create a dialog for the NOTIFYs that follow (RFC 6665, RFC 3515): a pair.
            return self.start_dialog_pair(now, req, route, CallKind::Subscription, rules, None);
        }
        let a_tag = self.ids.tag();
        let role = TxRole::new(None, Side::A, Purpose::RelayServer { peer: TxId::NONE });
        let server = self.new_server_tx(std::mem::take(&mut req.key), &req.msg, &req.src, role, Some(a_tag));
        self.relay_out_of_dialog(now, server, req, rules, route);
    }

    /// Relays an out-of-dialog request whose server transaction `server` exists, with its
    /// profile applied.
    pub(super) fn relay_out_of_dialog(
        &mut self,
        now: Instant,
        server: TxId,
        req: NewRequest,
        rules: Arc<CallRules>,
        route: BRoute,
    ) {
        if route.named.is_some() {
            return self.await_targets(now, Resolving::Relay { server, req, rules }, route);
        }
        let route = match self.healthy_route(now, route) {
            Ok(r) => r,
            Err(reply) => return self.respond_local(now, server, &reply),
        };
        let req = &req;
        let (msg, max_forwards) = (&req.msg, req.max_forwards);
        let method = msg.method().unwrap_or(Method::Other);
        let plan = &rules.plan;
        let ruri =
            route.ruri.as_deref().unwrap_or_else(|| plan.ruri.as_ref().map_or(msg.request_uri(), |r| r.as_bytes()));
        let dest = route.dest.clone();
        let Some(out_socket) = self.cfg.socket(dest.local).cloned() else {
            return self.respond_local(now, server, &LocalReply::new(500, "Server Internal Error"));
        };
        if let Some(e) = self.txs.get_mut(&server) {
            e.rules = Some(rules.clone());
        }

        // A registration keeps one Call-ID and its CSeq upstream, so refreshes replace bindings.
        let is_register = method == Method::Register;
        // Registration caching: contacts go upstream as aliases at our address.
        let mut cached = None;
        if is_register && rules.profile.reg_caching.enabled {
            match self.cache_register(now, server, req, &rules, &out_socket.sent_by(), dest.transport) {
                CacheStep::Answered => return,
                CacheStep::Forward { contacts, star, pending } => cached = Some((contacts, star, pending)),
            }
        }
        let a_call_id = msg.call_id().unwrap_or_default();
        let transparent = rules.profile.transparent_dlg_id;
        let known_call_id = cached.as_ref().and_then(|(_, _, p)| p.upstream_call_id.as_deref());
        let b_call_id: Box<[u8]> = match &plan.call_id {
            _ if transparent => a_call_id.into(),
            None if known_call_id.is_some() => known_call_id.unwrap_or_default().as_bytes().into(),
            Some(c) => c.as_bytes().into(),
            None if is_register => self.ids.stable_call_id(a_call_id),
            None => self.ids.call_id(),
        };
        let a_cseq = msg.cseq().map_or(1, |c| c.num);
        let cseq = match (is_register || transparent, rules.plan.auth.is_some()) {
            // A registrar that challenges: our answer takes the next CSeq, so the UA's next
            // refresh must land above it (CSeq only orders requests).
            (true, true) if a_cseq < 1 << 30 => a_cseq * 2,
            (true, _) => a_cseq,
            _ => 1,
        };
        let branch = self.ids.branch();
        let b_tag: Box<[u8]> = match msg.from_tag() {
            Some(t) if transparent => t.into(),
            _ => self.ids.tag(),
        };

        let from = match &plan.from {
            Some(f) => f.as_bytes().into(),
            None => without_tag(msg.header_value(HeaderName::From).unwrap_or_default()),
        };
        let to = match (&plan.to, msg.header(HeaderName::To)) {
            (Some(t), _) => Some(ToRow::Party(t.as_bytes(), None)),
            (None, Some(h)) => Some(ToRow::Copied(msg, h)),
            (None, None) => None,
        };
        let Some(to) = to else {
            // check_request refuses a request without To before it gets here.
            return self.respond_local(now, server, &LocalReply::new(400, "Missing To"));
        };
        let proxy_route = proxy_route(&plan.outbound_proxy);
        let sent_by = out_socket.sent_by();
        let mut w = write_request(RequestHead {
            method: msg.method_bytes(),
            target: ruri,
            transport: dest.transport,
            sent_by: &sent_by,
            branch: &branch,
            routes: proxy_route.as_deref(),
            max_forwards: max_forwards - 1,
            from: &from,
            from_tag: &b_tag,
            to,
            call_id: &b_call_id,
            cseq,
        });
        if let Some((contacts, star, _)) = &cached {
            if *star {
                w.header("Contact", b"*");
            }
            for c in contacts {
                w.header("Contact", c.as_bytes());
            }
        } else if is_register && !plan.register_contact.is_default() {
            // `contact_*`: the parts of each binding the profile rewrites.
            for c in rewritten_contacts(msg, &plan.register_contact) {
                w.header("Contact", c.as_bytes());
            }
        } else if is_register {
            // Without caching, bindings are the registration's content and cross unchanged.
            for h in msg.headers_named(HeaderName::Contact) {
                w.copy_row(msg, h);
            }
        } else if msg.header(HeaderName::Contact).is_some() {
            let contact =
                leg_contact(&plan.bleg_contact, &out_socket.sent_by(), dest.transport, routing::is_sips(ruri));
            w.header("Contact", &contact);
        }
        match &cached {
            // The expiry of each alias is in its Contact (a star keeps its `Expires: 0`).
            Some((_, false, _)) => {
                copy_unowned_if(&mut w, msg, rules.header_filter(), |_, h| h.name != HeaderName::Expires)
            }
            _ => copy_unowned(&mut w, msg, rules.header_filter()),
        }
        append(&mut w, &plan.append_headers);
        append(&mut w, &plan.append_headers_req);
        if let Some(v) = self.relay_row(plan, &b_call_id) {
            w.header(crate::registrations::RELAY_HEADER, v.as_bytes());
        }
        if let (Some((_, _, pending)), Some(e)) = (cached, self.txs.get_mut(&server)) {
            e.registration = Some(pending);
        }
        let Ok(out_msg) = Message::parse(w.finish(msg.body())) else {
            self.respond_local(now, server, &LocalReply::new(500, "Server Internal Error"));
            return;
        };
        if !transparent {
            self.own_call_ids.insert(b_call_id);
        }
        let client =
            self.start_client_tx(now, out_msg, dest, TxRole::new(None, Side::B, Purpose::RelayClient { peer: server }));
        self.set_relay_peer(server, client);
    }
}
