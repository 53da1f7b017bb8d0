//! Call control seen from the engine: a call whose profile has a `call_control` chain is
//! parked after its `100 Trying` while the driver runs the modules' `start` hooks
//! (off the signalling path, under a deadline); the verdict comes back through
//! [`Engine::handle_cc_verdict`]. The engine then evaluates the profile (with the `$V()`
//! variables the modules set) and builds the B leg, or answers with the refusal. `connect`
//! and `end` are announced as the call is answered and ends — `end` exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callcontrol::{CallEnd, CallFacts, CcInstance, EndedBy, LegEvent, Party};
use profiles::pattern::CcVars;
use profiles::LocalReply;
use profiles::Profile;

use super::apply::{CcChoice, Chosen};
use super::call::{CallKind, Side};
use super::reg_lookup::Waiting;
use super::register::local_registrar;
use super::setup::{NewRequest, Parked};
use super::txs::{Purpose, TxRole};
use super::types::Source;
use super::{CallHandle, Engine, Output, TxId};
use crate::sip::msg::{HeaderName, Message};

/// What the engine asks the call-control driver to run.
#[derive(Debug, Clone)]
pub enum CcRequest {
    /// Run `start` along `chain`, then answer with [`Engine::handle_cc_verdict`].
    Start { call: CallHandle, chain: Arc<[CcInstance]>, facts: CallFacts },
    /// Run `route` along `chain` for an out-of-dialog request, then answer with
    /// [`Engine::handle_cc_verdict`] (nothing else follows for it).
    Route { call: CallHandle, chain: Arc<[CcInstance]>, facts: CallFacts },
    /// The call was answered.
    Connect { call: CallHandle },
    /// Something crossed the call (for modules that follow it).
    Event { call: CallHandle, event: LegEvent },
    /// The call is over; no other request follows for it.
    End { call: CallHandle, end: CallEnd },
}

/// The outcome of the `start` hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CcVerdict {
    Continue {
        call_timer: Option<Duration>,
        vars: BTreeMap<String, String>,
        /// Profile options replaced for this call (by `cc_ctl`).
        overrides: BTreeMap<String, String>,
    },
    Refuse(LocalReply),
    Drop,
    /// A hook failed or was late: the configured reply.
    Failed(LocalReply),
}

/// A call waiting for its `start` verdict.
pub(super) struct PendingStart {
    pub(super) req: NewRequest,
    profile: Arc<Profile>,
    pub(super) a_tx: TxId,
}

/// An out-of-dialog request waiting for its `route` verdict; its server transaction
/// absorbs retransmissions meanwhile.
pub(super) struct PendingRoute {
    pub(super) server: TxId,
    pub(super) req: NewRequest,
    profile: Arc<Profile>,
}

/// A call whose `start` hooks said go on: it is evaluated once its registrations are looked
/// up again (the hooks took time; `reg_lookup.rs`).
pub(super) struct Started {
    pub(super) call: CallHandle,
    pub(super) p: PendingStart,
    call_timer: Option<Duration>,
    vars: BTreeMap<String, String>,
    overrides: BTreeMap<String, String>,
}

/// An out-of-dialog request whose `route` hooks said go on, like [`Started`].
pub(super) struct Routed {
    pub(super) p: PendingRoute,
    vars: BTreeMap<String, String>,
    overrides: BTreeMap<String, String>,
}

/// What call control left on a running call.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CallCc {
    /// Armed when the call is answered.
    pub(crate) call_timer: Option<Duration>,
    /// The call timer is what ends the call when `max_duration` runs out.
    pub(crate) timer_armed: bool,
}

/// `$V()` over the variables modules set.
pub(crate) struct VarMap<'a>(pub(crate) &'a BTreeMap<String, String>);

impl CcVars for VarMap<'_> {
    fn get(&self, name: &str, member: Option<&str>) -> Option<String> {
        match member {
            Some(m) => self.0.get(&format!("{name}.{m}")).cloned(),
            None => self.0.get(name).cloned(),
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Who ended a call, from the engine's reason and the side that sent BYE.
pub(super) fn ended_by(reason: &str, bye_from: Option<Side>) -> EndedBy {
    match (reason, bye_from) {
        ("bye", Some(Side::A)) | ("cancelled", _) => EndedBy::Caller,
        ("bye", Some(Side::B)) | ("rejected", _) => EndedBy::Callee,
        _ => EndedBy::Sbc,
    }
}

/// Call facts; `call` is made unique across the shards (the shard in the top byte), since
/// modules are shared by all of them.
fn facts_of(shard: u8, call: CallHandle, profile: &Profile, msg: &Message, src: &Source) -> CallFacts {
    CallFacts {
        call: (u64::from(shard) << 56) | (call.get() & ((1 << 56) - 1)),
        profile: profile.name.clone(),
        source: src.remote,
        from: text(msg.header_value(HeaderName::From).unwrap_or_default()),
        to: text(msg.header_value(HeaderName::To).unwrap_or_default()),
        ruri: text(msg.request_uri()),
        call_id: text(msg.call_id().unwrap_or_default()),
    }
}

/// The party on `side` of a call.
pub(super) fn party(side: Side) -> Party {
    match side {
        Side::A => Party::Caller,
        Side::B => Party::Callee,
    }
}

impl Engine {
    /// Parks an out-of-dialog request for its `route` hooks.
    pub(super) fn park_route(&mut self, mut req: NewRequest, cc: CcChoice) {
        let CcChoice { profile, chain } = cc;
        let id = self.new_call();
        let tag = self.ids.tag();
        let role = TxRole::new(None, Side::A, Purpose::RelayServer { peer: TxId::NONE });
        let server = self.new_server_tx(std::mem::take(&mut req.key), &req.msg, &req.src, role, Some(tag));
        let facts = facts_of(self.cfg.shard, id, &profile, &req.msg, &req.src);
        self.pending_route.insert(id, PendingRoute { server, req, profile });
        self.out.push_back(Output::CallControl(CcRequest::Route { call: id, chain: chain.into(), facts }));
    }

    /// The `route` verdict for a parked out-of-dialog request.
    fn handle_route_verdict(&mut self, now: Instant, p: PendingRoute, verdict: CcVerdict) {
        let (vars, overrides) = match verdict {
            CcVerdict::Continue { vars, overrides, .. } => (vars, overrides),
            CcVerdict::Refuse(reply) | CcVerdict::Failed(reply) => return self.respond_local(now, p.server, &reply),
            CcVerdict::Drop => return self.forget_tx(p.server),
        };
        self.look_up_registrations(now, Waiting::Routed(Box::new(Routed { p, vars, overrides })));
    }

    /// A routed request with its registrations at hand: evaluated and relayed.
    pub(super) fn route_with_registrations(&mut self, now: Instant, routed: Routed) {
        let Routed { p, vars, overrides } = routed;
        let rules = match self.evaluate_profile(&p.req, p.profile.clone(), &VarMap(&vars), &overrides) {
            Chosen::Go(r) => r,
            Chosen::Refuse(reply) => return self.respond_local(now, p.server, &reply),
            _ => return self.respond_local(now, p.server, &LocalReply::new(500, "Server Internal Error")),
        };
        if p.req.msg.method() == Some(crate::sip::msg::Method::Register) && local_registrar(&rules.profile).is_some() {
            return self.local_register(now, p.server, &p.req, &rules);
        }
        let ruri = rules.plan.ruri.as_ref().map_or(p.req.msg.request_uri(), |r| r.as_bytes());
        match self.route_new_request(p.req.msg.request_uri(), ruri, &rules) {
            Ok(route) => self.relay_out_of_dialog(now, p.server, p.req, rules, route),
            Err(reply) => self.respond_local(now, p.server, &reply),
        }
    }

    /// Tells call control what crossed a call, if the call has a chain (the event is only
    /// built then: calls without call control pay nothing per message).
    pub(super) fn announce_event(&mut self, call: CallHandle, event: impl FnOnce() -> LegEvent) {
        if self.calls.get(&call).is_some_and(|c| c.cc.is_some()) {
            self.out.push_back(Output::CallControl(CcRequest::Event { call, event: event() }));
        }
    }

    /// Parks a new call for its call-control `start` and asks the driver to run it.
    pub(super) fn start_call_control(&mut self, now: Instant, mut req: NewRequest, cc: CcChoice) {
        let CcChoice { profile, chain } = cc;
        // An INVITE that waited for its registrations has its transaction and its 100.
        let (handle, a_tx) = match req.server {
            Some(server) => server,
            None => {
                let handle = self.new_call();
                let role = TxRole::new(Some(handle), Side::A, Purpose::AInitialInvite);
                let tag = self.ids.tag();
                let a_tx = self.new_server_tx(std::mem::take(&mut req.key), &req.msg, &req.src, role, Some(tag));
                self.respond_local(now, a_tx, &LocalReply::new(100, "Trying"));
                (handle, a_tx)
            }
        };
        let facts = facts_of(self.cfg.shard, handle, &profile, &req.msg, &req.src);
        self.pending_cc.insert(handle, PendingStart { req, profile, a_tx });
        self.out.push_back(Output::CallControl(CcRequest::Start { call: handle, chain: chain.into(), facts }));
    }

    /// The driver's answer to a `start`: go on with the call or answer the caller.
    pub fn handle_cc_verdict(&mut self, now: Instant, call: CallHandle, verdict: CcVerdict) {
        if let Some(p) = self.pending_route.remove(&call) {
            return self.handle_route_verdict(now, p, verdict);
        }
        // Gone already: cancelled by the caller while the hooks ran (its end was announced).
        let Some(p) = self.pending_cc.remove(&call) else { return };
        let a_tx = p.a_tx;
        let refuse = |me: &mut Self, reply: LocalReply, why: &str| me.refuse_started(now, call, a_tx, reply, why);
        let (call_timer, vars, overrides) = match verdict {
            CcVerdict::Continue { call_timer, vars, overrides } => (call_timer, vars, overrides),
            CcVerdict::Refuse(reply) => return refuse(self, reply, "refused"),
            CcVerdict::Failed(reply) => return refuse(self, reply, "call_control_error"),
            CcVerdict::Drop => {
                self.forget_tx(p.a_tx);
                return self.announce_end(
                    call,
                    CallEnd {
                        by: EndedBy::Sbc,
                        code: 0,
                        phrase: String::new(),
                        reason: "dropped".into(),
                        answered: false,
                        destination_ip: None,
                    },
                );
            }
        };
        if !self.ist_open(p.a_tx) {
            return self.call_gone(call);
        }
        let started = Started { call, p, call_timer, vars, overrides };
        self.look_up_registrations(now, Waiting::Started(Box::new(started)));
    }

    /// The caller's transaction ended while the call waited (a transport error).
    pub(super) fn call_gone(&mut self, call: CallHandle) {
        let end = CallEnd {
            by: EndedBy::Sbc,
            code: 0,
            phrase: String::new(),
            reason: "gone".into(),
            answered: false,
            destination_ip: None,
        };
        self.announce_end(call, end);
    }

    /// A call that call control let go on, with its registrations at hand: evaluated and set up.
    pub(super) fn start_with_registrations(&mut self, now: Instant, started: Started) {
        let Started { call, p, call_timer, vars, overrides } = started;
        if !self.ist_open(p.a_tx) {
            return self.call_gone(call);
        }
        let a_tx = p.a_tx;
        let refuse = |me: &mut Self, reply: LocalReply, why: &str| me.refuse_started(now, call, a_tx, reply, why);
        let rules = match self.evaluate_profile(&p.req, p.profile.clone(), &VarMap(&vars), &overrides) {
            Chosen::Go(r) => r,
            Chosen::Refuse(reply) => return refuse(self, reply, "not_registered"),
            _ => return refuse(self, LocalReply::new(500, "Server Internal Error"), "profile_error"),
        };
        let ruri = rules.plan.ruri.as_ref().map_or(p.req.msg.request_uri(), |r| r.as_bytes());
        let route = match self.route_new_request(p.req.msg.request_uri(), ruri, &rules) {
            Ok(r) => r,
            Err(reply) => return refuse(self, reply, "no_route"),
        };
        let cc = CallCc { call_timer, timer_armed: false };
        let parked = Parked { call, a_tx: p.a_tx, cc: Some(cc) };
        self.start_dialog_pair(now, p.req, route, CallKind::Invite, rules, Some(parked));
    }

    /// Answers a call that call control has seen with `reply`, and tells call control why it
    /// ended.
    pub(super) fn refuse_started(&mut self, now: Instant, call: CallHandle, a_tx: TxId, reply: LocalReply, why: &str) {
        if self.ist_open(a_tx) {
            self.respond_local(now, a_tx, &reply);
        }
        let (code, phrase) = (reply.code, reply.reason.into_owned());
        self.announce_end(
            call,
            CallEnd { by: EndedBy::Sbc, code, phrase, reason: why.to_string(), answered: false, destination_ip: None },
        );
    }

    /// Tells the driver a call with call control is over.
    pub(super) fn announce_end(&mut self, call: CallHandle, end: CallEnd) {
        self.out.push_back(Output::CallControl(CcRequest::End { call, end }));
    }

    /// A parked call the caller cancelled: true if `h` was one (waiting for its hooks, or for
    /// its registrations).
    pub(super) fn cancel_pending(&mut self, h: CallHandle) -> bool {
        let seen_by_cc = match self.pending_cc.remove(&h) {
            Some(_) => true,
            None => match self.cancel_awaiting_call(h).or_else(|| self.cancel_resolving_call(h)) {
                Some(seen_by_cc) => seen_by_cc,
                None => return false,
            },
        };
        if !seen_by_cc {
            return true;
        }
        let end = CallEnd {
            by: EndedBy::Caller,
            code: 487,
            phrase: "Request Terminated".into(),
            reason: "cancelled".into(),
            answered: false,
            destination_ip: None,
        };
        self.announce_end(h, end);
        true
    }
}
