//! Profiles applied by the engine: the chain picks a profile for each new request, its
//! options are expanded once against that request, and the result is pinned to the call (or
//! the relayed transaction) for its whole life, so a reload never changes a running call.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use profiles::evaluate::CallPlan;
use profiles::filters::NameFilter;
use profiles::pattern::{CcVars, Env, InterfaceFacts, NoCcVars, RequestView};
use profiles::profile::NextHop;
use profiles::sdp::{self, NothingLeft, SdpRules};
use profiles::LocalReply;
use profiles::{Profile, Snapshot};

use super::build::ip_of_host;
use super::call::Side;
use super::peer_relay::RelayRequest;
use super::register::retarget_registered;
use super::setup::NewRequest;
use super::types::{Peer, Transport};
use super::Engine;
use crate::sip::msg::{HeaderName, Message, MessageWriter};

/// A profile as evaluated for one call or relayed request.
#[derive(Debug)]
pub(crate) struct CallRules {
    pub(crate) profile: Arc<Profile>,
    pub(crate) plan: CallPlan,
}

/// Profiles whose last rules are kept for sharing (more only after many reloads).
const LAST_RULES_MAX: usize = 256;

impl CallRules {
    pub(crate) fn header_filter(&self) -> Option<&NameFilter> {
        self.profile.header_filter.as_ref()
    }

    /// Headers appended to requests the SBC sends on `side` after the first one.
    pub(crate) fn appended_on(&self, side: Side) -> &[(String, String)] {
        match side {
            Side::A => &self.plan.aleg_append_headers_req,
            Side::B => &self.plan.append_headers_req,
        }
    }

    /// The SDP rules for bodies travelling towards `side`; `host` is the SBC's address there.
    pub(crate) fn sdp_towards<'a>(&'a self, side: Side, host: &'a str) -> SdpRules<'a> {
        let p = &self.profile;
        let (codecs, preference) = match side {
            Side::B => (p.sdp_filter.as_ref(), &p.codec_preference[..]),
            Side::A => (p.aleg_sdp_filter.as_ref().or(p.sdp_filter.as_ref()), &p.codec_preference_aleg[..]),
        };
        SdpRules {
            codecs,
            preference,
            media: p.media_filter.as_ref(),
            attributes: p.sdp_alines_filter.as_ref(),
            anonymize_as: p.sdp_anonymize.then_some(host),
        }
    }

    /// `body` filtered for `side`; the original when nothing applies or it is not SDP.
    pub(crate) fn filter_body<'b>(
        &self,
        side: Side,
        sent_by: &str,
        body: &'b [u8],
    ) -> Result<Cow<'b, [u8]>, NothingLeft> {
        let host = host_of(sent_by);
        Ok(match sdp::apply(body, &self.sdp_towards(side, host))? {
            Some(b) => Cow::Owned(b),
            None => Cow::Borrowed(body),
        })
    }
}

/// `host` of `host:port` (IPv6 without brackets).
pub(crate) fn host_of(sent_by: &str) -> &str {
    let (h, _) = profiles::uri::split_hostport(sent_by);
    h.trim_start_matches('[').trim_end_matches(']')
}

/// What the chain decided for a new request.
pub(super) enum Chosen {
    Go(Arc<CallRules>),
    Refuse(LocalReply),
    /// No profile, or one whose options do not expand: 500 (logged).
    Fail,
    /// The profile has call control: its `start` hooks run before the profile is evaluated.
    CallControl(CcChoice),
}

/// A profile with call control, chosen for a new request (from the snapshot the request
/// pinned): the profile, and the chain its hooks run.
pub(super) struct CcChoice {
    pub(super) profile: Arc<Profile>,
    pub(super) chain: Vec<profiles::evaluate::CcInstance>,
}

/// A SIP message as the pattern engine reads it.
pub struct MsgView<'a>(pub &'a Message);

impl RequestView for MsgView<'_> {
    fn method(&self) -> &[u8] {
        self.0.method_bytes()
    }
    fn request_uri(&self) -> &[u8] {
        self.0.request_uri()
    }
    fn caller(&self) -> &[u8] {
        self.0.header_value(HeaderName::From).unwrap_or_default()
    }
    fn callee(&self) -> &[u8] {
        self.0.header_value(HeaderName::To).unwrap_or_default()
    }
    fn call_id(&self) -> &[u8] {
        self.0.call_id().unwrap_or_default()
    }
    fn for_each_header(&self, name: &str, each: &mut dyn FnMut(&[u8])) {
        // Compact and long forms of the headers the stack knows are the same header.
        let known = HeaderName::classify(name.as_bytes());
        for h in self.0.headers() {
            let same = if known == HeaderName::Other {
                h.name == HeaderName::Other && self.0.slice(h.name_span).eq_ignore_ascii_case(name.as_bytes())
            } else {
                h.name == known
            };
            if same {
                each(self.0.value(h));
            }
        }
    }
}

/// Headers that steer the SBC and never leave it.
pub(crate) fn is_control_header(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"P-App-Param")
        || name.eq_ignore_ascii_case(b"P-App-Name")
        || name.eq_ignore_ascii_case(crate::registrations::RELAY_HEADER.as_bytes())
}

/// Appends `headers` to `w`.
pub(crate) fn append(w: &mut MessageWriter, headers: &[(String, String)]) {
    for (n, v) in headers {
        w.header(n, v.as_bytes());
    }
}

/// Transport and peer of a `next_hop` entry.
pub(crate) fn hop_target(h: &NextHop) -> (Transport, Peer) {
    let transport = h.transport.as_deref().and_then(|t| Transport::from_name(t.as_bytes())).unwrap_or(Transport::Udp);
    let port = h.port.unwrap_or(super::routing::default_port(transport));
    let peer = match ip_of_host(h.host.as_bytes()) {
        Some(ip) => Peer::Addr(SocketAddr::new(ip, port)),
        None => Peer::Host(h.host.clone().into_boxed_str(), port),
    };
    (transport, peer)
}

impl Engine {
    /// Runs `f` with the pattern environment of `req`.
    fn with_env<T>(
        &mut self,
        req: &NewRequest,
        profile: Option<&Profile>,
        cc_vars: &dyn CcVars,
        f: impl FnOnce(&Env<'_>) -> T,
    ) -> Option<T> {
        let (msg, src, snap) = (&req.msg, &req.src, &req.snapshot);
        let socket = self.cfg.socket(src.local)?;
        let iface_index = self.cfg.interface_of(src.local).unwrap_or(0);
        let iface_name = self.cfg.interfaces.get(iface_index).map_or("", |i| i.name.as_str());
        let rng = Cell::new(self.ids.next_u64());
        let view = MsgView(msg);
        let reg_view = super::register::CacheView(&req.regs);
        let peer = src.conn.and_then(|c| self.cfg.connections.peer_identity(c));
        let env = Env {
            req: &view,
            source: src.remote,
            local: socket.addr,
            interface: InterfaceFacts {
                index: iface_index,
                name: iface_name,
                public_ip: socket.advertised.as_deref().unwrap_or(""),
            },
            peer: peer.as_deref(),
            next_hop: profile.and_then(Snapshot::literal_next_hop),
            maps: &snap.maps,
            cc_vars,
            reg_cache: &reg_view,
            rng: &rng,
        };
        Some(f(&env))
    }

    /// Runs the selection chain for `msg`, answers `refuse_with`, and evaluates the profile —
    /// unless it has a call-control chain and `with_cc` is set: then the chain is expanded and
    /// evaluation waits for the modules' verdict.
    pub(super) fn choose_profile(&mut self, req: &NewRequest, with_cc: bool) -> Chosen {
        match self.relay_request(req) {
            RelayRequest::Relay(alias) => return self.relay_for_peer(req, &alias),
            RelayRequest::Unchecked => {
                return Chosen::Refuse(LocalReply::new(503, "Service Unavailable").with("Retry-After", "5"))
            }
            RelayRequest::No => {}
        }
        let snap = req.snapshot.clone();
        let selected = self.with_env(req, None, &NoCcVars, |env| snap.select(env));
        let profile = match selected {
            Some(Ok((p, _))) => p,
            Some(Err(e)) => {
                tracing::warn!(source = %req.src.remote, "{e}");
                return Chosen::Fail;
            }
            None => return Chosen::Fail,
        };
        let refusal = self.with_env(req, Some(&profile), &NoCcVars, |env| profile.refusal(env)).flatten();
        if let Some(r) = refusal {
            return match r {
                Ok(r) => Chosen::Refuse(r),
                Err(e) => {
                    tracing::warn!(profile = %profile.name, "{e}");
                    Chosen::Fail
                }
            };
        }
        if with_cc && !profile.call_control.is_empty() {
            let trusted = self.cfg.admission.trusts(req.src.remote.ip());
            let chain = self.with_env(req, Some(&profile), &NoCcVars, |env| profile.call_control_chain(env, trusted));
            return match chain {
                Some(Ok(chain)) => Chosen::CallControl(CcChoice { profile, chain }),
                Some(Err(e)) => {
                    tracing::warn!(profile = %profile.name, "{e}");
                    Chosen::Fail
                }
                None => Chosen::Fail,
            };
        }
        self.evaluate_profile(req, profile, &NoCcVars, &BTreeMap::new())
    }

    /// Calls whose profile evaluates as the previous evaluation of that profile did (a
    /// transparent or a fixed trunk profile takes nothing from the request) share one set of
    /// rules: a held call then costs a kilobyte less.
    pub(super) fn shared_rules(&mut self, profile: Arc<Profile>, plan: CallPlan) -> Arc<CallRules> {
        // Keyed by the profile's address: the entry holds the profile, so the address stays
        // its own. Reloads bring new profiles; the map is emptied before it grows large.
        let key = Arc::as_ptr(&profile) as usize;
        if let Some(last) = self.last_rules.get(&key) {
            if last.plan == plan {
                return last.clone();
            }
        }
        if self.last_rules.len() >= LAST_RULES_MAX {
            self.last_rules.clear();
        }
        let rules = Arc::new(CallRules { profile, plan });
        self.last_rules.insert(key, rules.clone());
        rules
    }

    /// Evaluates `profile` for `msg` (with call-control variables and overrides, if any).
    pub(super) fn evaluate_profile(
        &mut self,
        req: &NewRequest,
        profile: Arc<Profile>,
        cc_vars: &dyn CcVars,
        overrides: &BTreeMap<String, String>,
    ) -> Chosen {
        let can_sign = self.cfg.reg_cache.relay_key().is_some();
        // Options SEMS expands per call, and fixed options call control set: the call gets a
        // profile of its own (`profiles/src/per_call.rs`), never shared.
        let Some(per_call) = self.with_env(req, Some(&profile), cc_vars, |env| profile.per_call_values(env, overrides))
        else {
            return Chosen::Fail;
        };
        let own = !per_call.is_empty();
        let profile = match own.then(|| profile.with_values(&per_call)) {
            None => profile,
            Some(Ok(p)) => Arc::new(p),
            Some(Err(e)) => {
                tracing::warn!(profile = %profile.name, "{e}");
                return Chosen::Fail;
            }
        };
        match self.with_env(req, Some(&profile), cc_vars, |env| profile.evaluate_with(env, overrides)) {
            Some(Ok(mut plan)) => match retarget_registered(req, &profile, &mut plan, can_sign) {
                Ok(via_peer) => {
                    if via_peer {
                        self.stats.bump(super::Counter::RelayedToPeer);
                    }
                    if own {
                        plan.per_call = per_call;
                        return Chosen::Go(Arc::new(CallRules { profile, plan }));
                    }
                    Chosen::Go(self.shared_rules(profile, plan))
                }
                Err(refusal) => Chosen::Refuse(refusal),
            },
            Some(Err(e)) => {
                tracing::warn!(profile = %profile.name, "{e}");
                Chosen::Fail
            }
            None => Chosen::Fail,
        }
    }
}
