//! REGISTER through a profile with `enable_reg_caching` and the local registrar
//! `cc_registrar`, and calls to the users they registered (docs/manual/access.md, Registration caching).
//!
//! With caching, every contact is sent upstream as an alias at the SBC's address; the answer
//! tells how long the registrar keeps it, the UA is told a shorter time (`max_ua_expires`) and
//! its re-registrations inside the registrar's binding are answered here. Calls to an alias go to
//! the contact, at the address, transport and interface the REGISTER came from.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use profiles::evaluate::CallPlan;
use profiles::profile::Profile;
use profiles::LocalReply;
use regcache::{canonical_aor, Binding, Origin, RegView};

use super::apply::CallRules;
use super::peer_relay::{hop_to_phone, through_peer};
use super::setup::NewRequest;
use super::types::Transport;
use super::{Counter, Engine, TxId};
use crate::sip::msg::{parse_u32, split_values, trim, HeaderName, Message, NameAddr, Uri};

/// Expiry asked for when the REGISTER names none (RFC 3261 §10.2.1.1 leaves it to us).
const DEFAULT_EXPIRES: u32 = 3600;
/// Contacts one REGISTER may carry (more: 403), and the longest registration kept (s).
const MAX_CONTACTS: usize = 16;
const MAX_EXPIRES: u32 = 86_400;

/// A re-registration is answered here only if the registrar's binding outlives the time given
/// to the UA by this much.
const ABSORB_GUARD: Duration = Duration::from_secs(4);

/// One contact of a REGISTER, as the UA sent it.
#[derive(Debug, Clone)]
struct UaContact {
    display: String,
    uri: String,
    /// Header parameters other than `expires`, with their `;`.
    params: String,
    expires: u32,
}

impl UaContact {
    fn render(&self, expires: u32) -> String {
        let display = if self.display.is_empty() { String::new() } else { format!("{} ", self.display) };
        format!("{display}<{}>{};expires={expires}", self.uri, self.params)
    }
}

/// A parsed REGISTER.
#[derive(Debug)]
struct Register {
    aor: String,
    star: bool,
    contacts: Vec<UaContact>,
}

/// A refused REGISTER: 400/403 with a Warning saying why.
fn bad(code: u16, reason: &'static str, why: &str) -> LocalReply {
    LocalReply::new(code, reason).with("Warning", format!("399 sbc \"{why}\""))
}

fn header_params_without_expires(params: &[u8]) -> String {
    let mut out = String::new();
    for p in params.split(|&c| c == b';').map(trim).filter(|p| !p.is_empty()) {
        let name = p.split(|&c| c == b'=').next().unwrap_or_default();
        if !trim(name).eq_ignore_ascii_case(b"expires") {
            out.push(';');
            out.push_str(&String::from_utf8_lossy(p));
        }
    }
    out
}

/// Reads a REGISTER (docs/manual/access.md, Registration caching); `aor_from` is the header the AoR is read from.
fn parse_register(msg: &Message, aor_from: HeaderName, min_expires: u32) -> Result<Register, LocalReply> {
    let aor = msg
        .header_value(aor_from)
        .and_then(|v| canonical_aor(&String::from_utf8_lossy(v)))
        .ok_or_else(|| bad(400, "Bad Request - bad From HF", "Malformed From"))?;
    let expires_hdr = match msg.header_value(HeaderName::Expires) {
        Some(v) => Some(parse_u32(trim(v)).ok_or_else(|| bad(400, "Bad Request", "Malformed expires"))?),
        None => None,
    };
    let raise = |e: u32| if e != 0 && e < min_expires { min_expires.min(MAX_EXPIRES) } else { e.min(MAX_EXPIRES) };
    let requested = match expires_hdr {
        Some(e) => raise(e),
        None if min_expires > 0 => min_expires,
        None => DEFAULT_EXPIRES,
    };
    let values: Vec<&[u8]> = msg.values(HeaderName::Contact).flat_map(split_values).collect();
    if values.iter().any(|v| *v == b"*") {
        if values.len() != 1 {
            return Err(bad(400, "Bad Request", "Malformed contact"));
        }
        if expires_hdr != Some(0) {
            return Err(bad(400, "Bad Request", "Expires not equal 0"));
        }
        return Ok(Register { aor, star: true, contacts: Vec::new() });
    }
    if values.len() > MAX_CONTACTS {
        return Err(bad(403, "Forbidden", "too many contacts"));
    }
    let mut contacts = Vec::with_capacity(values.len());
    for v in values {
        let na = NameAddr::parse(v).ok_or_else(|| bad(400, "Bad Request", "Malformed contact"))?;
        if Uri::parse(na.uri).is_none() {
            return Err(bad(400, "Bad Request", "Malformed contact"));
        }
        let expires = match na.param(b"expires") {
            Some(e) => raise(parse_u32(trim(e)).ok_or_else(|| bad(400, "Bad Request", "Malformed expires"))?),
            None => requested,
        };
        contacts.push(UaContact {
            display: String::from_utf8_lossy(na.display).into_owned(),
            uri: String::from_utf8_lossy(na.uri).into_owned(),
            params: header_params_without_expires(na.params),
            expires,
        });
    }
    Ok(Register { aor, star: false, contacts })
}

/// A REGISTER sent upstream: what its 2xx is mapped back with.
#[derive(Debug)]
pub(super) struct PendingRegistration {
    aor: String,
    /// (alias, the UA's contact) of each contact sent.
    sent: Vec<(String, UaContact)>,
    /// Aliases the answer must list to stay cached (all of the AoR for star and query).
    expected: Vec<String>,
    source: SocketAddr,
    transport: Transport,
    interface: String,
    user_agent: String,
    max_ua_expires: u32,
    /// The AoR's bindings when the REGISTER arrived (its other devices).
    known: Vec<Binding>,
    /// The Call-ID this registration already has upstream (from the cache, which survives
    /// restarts), and the phone's.
    pub(super) upstream_call_id: Option<String>,
    ua_call_id: String,
}

/// The local registrar's values, if the profile runs `cc_registrar`.
#[derive(Debug, Clone, Copy)]
pub(super) struct LocalRegistrar {
    nat_handling: bool,
    sticky_iface: bool,
}

pub(super) fn local_registrar(profile: &Profile) -> Option<LocalRegistrar> {
    let inst = profile.call_control.iter().find(|c| c.module.literal().as_deref() == Some("cc_registrar"))?;
    let flag = |key: &str| {
        inst.params
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, p)| p.literal())
            .and_then(|v| profiles::profile::parse_bool(&v).ok())
            .unwrap_or(true)
    };
    Some(LocalRegistrar { nat_handling: flag("nat_handling"), sticky_iface: flag("sticky_iface") })
}

/// What to do with a REGISTER of a caching profile.
pub(super) enum CacheStep {
    /// Answered here (re-registration absorbed, or refused).
    Answered,
    /// Forward with these Contact values; keep the pending state for the answer.
    Forward { contacts: Vec<String>, star: bool, pending: Box<PendingRegistration> },
}

pub(super) fn uri_user(uri: &str) -> Option<&str> {
    let rest = uri.split_once(':')?.1;
    Some(rest.split_once('@')?.0)
}

impl Engine {
    /// A REGISTER of a caching profile: refused, absorbed, or to be forwarded with aliases
    /// (`sent_by`/`transport`: the SBC's address on the registrar side).
    pub(super) fn cache_register(
        &mut self,
        now: Instant,
        server: TxId,
        req: &NewRequest,
        rules: &CallRules,
        sent_by: &str,
        transport: Transport,
    ) -> CacheStep {
        let (msg, view) = (&req.msg, &req.regs);
        let Some(src) = self.txs.get(&server).and_then(|e| e.source) else {
            return CacheStep::Answered;
        };
        let limits = rules.profile.reg_caching;
        let reg = match parse_register(msg, HeaderName::From, limits.min_reg_expires) {
            Ok(r) => r,
            Err(bad) => {
                self.respond_local(now, server, &bad);
                return CacheStep::Answered;
            }
        };
        let cache = self.cfg.reg_cache.clone();
        let ua_cap = |e: u32| if limits.max_ua_expires > 0 { e.min(limits.max_ua_expires) } else { e };
        let aliases: Vec<String> =
            reg.contacts.iter().map(|c| view.alias_for(&reg.aor, &c.uri, src.remote.ip())).collect();
        // Absorb a re-registration the registrar's binding still covers (docs/manual/access.md,
        // Registration caching: re-registrations are absorbed).
        let absorb = !reg.star
            && !reg.contacts.is_empty()
            && reg.contacts.iter().zip(&aliases).all(|(c, alias)| {
                c.expires > 0
                    && view.get(alias).is_some_and(|b| {
                        b.source == src.remote
                            && b.transport == src.transport.to_string()
                            && now + Duration::from_secs(u64::from(ua_cap(c.expires))) + ABSORB_GUARD
                                < b.registrar_expires
                    })
            });
        if absorb {
            let mut rows = Vec::with_capacity(reg.contacts.len());
            for (c, alias) in reg.contacts.iter().zip(&aliases) {
                let given = ua_cap(c.expires);
                if let Some(b) = view.get(alias) {
                    cache.set_ua_expires(b, now + Duration::from_secs(u64::from(given)));
                }
                rows.push(c.render(given));
            }
            let ok = rows.into_iter().fold(LocalReply::new(200, "OK"), |r, row| r.with("Contact", row));
            self.stats.bump(Counter::RegistrationsAbsorbed);
            self.respond_local(now, server, &ok);
            return CacheStep::Answered;
        }
        let new_bindings = aliases.iter().filter(|a| view.get(a).is_none()).count();
        if new_bindings > 0 && cache.len() + new_bindings > self.cfg.max_registrations {
            tracing::warn!(bindings = cache.len(), "registration cache full (registrations.max_bindings)");
            self.respond_local(now, server, &LocalReply::new(503, "Service Unavailable").with("Retry-After", "60"));
            return CacheStep::Answered;
        }
        let tail = super::build::transport_param(transport);
        let contacts: Vec<String> = reg
            .contacts
            .iter()
            .zip(&aliases)
            .map(|(c, alias)| format!("<sip:{alias}@{sent_by}{tail}>;expires={}", c.expires))
            .collect();
        // Star and query: every alias of the AoR must come back to stay.
        let expected = if reg.star || reg.contacts.is_empty() {
            view.of_aor(&reg.aor).filter(|b| b.origin == Origin::Upstream).map(|b| b.alias.clone()).collect()
        } else {
            aliases.clone()
        };
        let user_agent =
            msg.other_header("User-Agent").map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
        // The upstream Call-ID goes on while the phone keeps its own (its CSeq keeps growing).
        let ua_call_id = msg.call_id().map(|c| String::from_utf8_lossy(c).into_owned()).unwrap_or_default();
        let upstream_call_id = aliases
            .iter()
            .filter_map(|a| view.get(a))
            .find(|b| !b.call_id.is_empty() && b.ua_call_id == ua_call_id)
            .map(|b| b.call_id.clone());
        let known = view.of_aor(&reg.aor).cloned().collect();
        let pending = Box::new(PendingRegistration {
            upstream_call_id,
            ua_call_id,
            aor: reg.aor,
            sent: aliases.into_iter().zip(reg.contacts).collect(),
            expected,
            source: src.remote,
            transport: src.transport,
            interface: self.cfg.interface_name(src.local).unwrap_or_default().to_string(),
            user_agent,
            max_ua_expires: limits.max_ua_expires,
            known,
        });
        CacheStep::Forward { contacts, star: reg.star, pending }
    }

    /// The registrar's 2xx to a cached REGISTER: the cache is updated and the Contact values the
    /// UA gets are returned (its own contacts, with the time it was given).
    pub(super) fn cached_register_ok(&mut self, now: Instant, p: &PendingRegistration, ok: &Message) -> Vec<String> {
        let cache = self.cfg.reg_cache.clone();
        let default_expires = ok.header_value(HeaderName::Expires).and_then(|v| parse_u32(trim(v)));
        let ua_cap = |e: u32| if p.max_ua_expires > 0 { e.min(p.max_ua_expires) } else { e };
        let mut rows = Vec::new();
        let mut listed: Vec<String> = Vec::new();
        for v in ok.values(HeaderName::Contact).flat_map(split_values) {
            let Some(na) = NameAddr::parse(v) else { continue };
            let uri = String::from_utf8_lossy(na.uri);
            let registrar_expires = na.param(b"expires").and_then(|e| parse_u32(trim(e))).or(default_expires);
            let user = uri_user(&uri).unwrap_or_default();
            if let Some((alias, c)) = p.sent.iter().find(|(a, _)| a == user) {
                let reg_s = registrar_expires.unwrap_or(c.expires).min(MAX_EXPIRES);
                if reg_s == 0 {
                    continue; // removed upstream: removed below as not listed
                }
                let given = ua_cap(reg_s.min(c.expires));
                cache.put(Binding {
                    alias: alias.clone(),
                    aor: p.aor.clone(),
                    contact: c.uri.clone(),
                    source: p.source,
                    transport: p.transport.to_string(),
                    interface: p.interface.clone(),
                    user_agent: p.user_agent.clone(),
                    call_id: ok.call_id().map(|c| String::from_utf8_lossy(c).into_owned()).unwrap_or_default(),
                    ua_call_id: p.ua_call_id.clone(),
                    ua_expires: now + Duration::from_secs(u64::from(given)),
                    registrar_expires: now + Duration::from_secs(u64::from(reg_s)),
                    origin: Origin::Upstream,
                    relay: None,
                });
                listed.push(alias.clone());
                rows.push(c.render(given));
            } else if let Some(b) = p.known.iter().find(|b| b.alias == user) {
                // Another device of this AoR registered through us: shown as itself.
                listed.push(b.alias.clone());
                let left = b.ua_expires.saturating_duration_since(now).as_secs();
                rows.push(format!("<{}>;expires={left}", b.contact));
            } else {
                rows.push(String::from_utf8_lossy(v).into_owned());
            }
        }
        for alias in p.expected.iter().chain(p.sent.iter().map(|(a, _)| a)) {
            if !listed.contains(alias) {
                cache.remove(alias);
            }
        }
        rows
    }

    /// A REGISTER for the local registrar (docs/manual/access.md, Registration caching): answered here, never relayed.
    pub(super) fn local_register(&mut self, now: Instant, server: TxId, req: &NewRequest, rules: &CallRules) {
        let (msg, view) = (&req.msg, &req.regs);
        let Some(src) = self.txs.get(&server).and_then(|e| e.source) else { return };
        // The AoR of a registration is its To (RFC 3261 §10.3 step 5).
        let reg = match parse_register(msg, HeaderName::To, rules.profile.reg_caching.min_reg_expires) {
            Ok(r) => r,
            Err(bad) => return self.respond_local(now, server, &bad),
        };
        let cache = self.cfg.reg_cache.clone();
        let mine = |aor: &str| view.of_aor(aor).filter(|b| b.origin == Origin::Local).cloned().collect::<Vec<_>>();
        if reg.star {
            for b in mine(&reg.aor) {
                cache.remove(&b.alias);
            }
            return self.respond_local(now, server, &LocalReply::new(200, "OK"));
        }
        if msg.header(HeaderName::Contact).is_none() {
            // A query: the current binding, with the time it has left.
            let current = mine(&reg.aor).into_iter().max_by_key(|b| b.ua_expires);
            let row = current
                .map(|b| format!("<{}>;expires={}", b.contact, b.ua_expires.saturating_duration_since(now).as_secs()));
            let ok = row.into_iter().fold(LocalReply::new(200, "OK"), |r, row| r.with("Contact", row));
            return self.respond_local(now, server, &ok);
        }
        if reg.contacts.len() > 1 {
            return self.respond_local(now, server, &bad(403, "Forbidden", "only one contact allowed"));
        }
        let Some(c) = reg.contacts.into_iter().next() else {
            return self.respond_local(now, server, &LocalReply::new(400, "Bad Request"));
        };
        if c.expires == 0 {
            for b in mine(&reg.aor) {
                cache.remove(&b.alias);
            }
            return self.respond_local(now, server, &LocalReply::new(200, "OK"));
        }
        let alias = view.alias_for(&reg.aor, &c.uri, src.remote.ip());
        if view.get(&alias).is_none() && mine(&reg.aor).is_empty() && cache.len() >= self.cfg.max_registrations {
            tracing::warn!(bindings = cache.len(), "registration cache full (registrations.max_bindings)");
            return self.respond_local(
                now,
                server,
                &LocalReply::new(503, "Service Unavailable").with("Retry-After", "60"),
            );
        }
        // One device per AoR: a new contact replaces the others.
        for b in mine(&reg.aor).into_iter().filter(|b| b.alias != alias) {
            cache.remove(&b.alias);
        }
        let expires = Duration::from_secs(u64::from(c.expires));
        cache.put(Binding {
            alias,
            aor: reg.aor,
            contact: c.uri.clone(),
            source: src.remote,
            transport: src.transport.to_string(),
            interface: self.cfg.interface_name(src.local).unwrap_or_default().to_string(),
            user_agent: msg
                .other_header("User-Agent")
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default(),
            call_id: String::new(),
            ua_call_id: String::new(),
            ua_expires: now + expires,
            registrar_expires: now + expires,
            origin: Origin::Local,
            relay: None,
        });
        let row = c.render(c.expires);
        self.respond_local(now, server, &LocalReply::new(200, "OK").with("Contact", row));
    }

    /// Removes bindings whose registrar-side expiry passed (the driver calls this periodically;
    /// the cache is shared, so one shard doing it is enough).
    pub fn collect_expired_registrations(&self, now: Instant) -> usize {
        self.cfg.reg_cache.collect_expired(now)
    }
}

/// Calls and other requests to a registered user (docs/manual/access.md, Registration
/// caching): the plan is retargeted to the registered contact, where the REGISTER came from.
/// `Err` = nobody registered; `Ok(true)`: the phone is another cluster node's, and the request
/// goes through it (`can_sign`: this node has the cluster's key to name the binding to it).
pub(super) fn retarget_registered(
    req: &NewRequest,
    profile: &Profile,
    plan: &mut CallPlan,
    can_sign: bool,
) -> Result<bool, LocalReply> {
    let (msg, view) = (&req.msg, &req.regs);
    if msg.method() == Some(crate::sip::msg::Method::Register) {
        return Ok(false);
    }
    let (binding, nat, sticky) = if profile.reg_caching.enabled {
        let alias = Uri::parse(msg.request_uri()).and_then(|u| u.user).map(String::from_utf8_lossy);
        let b = alias.and_then(|a| view.get(&a)).filter(|b| b.origin == Origin::Upstream).cloned();
        (b.ok_or(LocalReply::new(404, "User not found"))?, true, true)
    } else if let Some(reg) = local_registrar(profile) {
        let aor = canonical_aor(&String::from_utf8_lossy(msg.request_uri()));
        let b = aor.and_then(|aor| {
            let newest = view.of_aor(&aor).filter(|b| b.origin == Origin::Local).max_by_key(|b| b.ua_expires);
            newest.cloned()
        });
        (b.ok_or(LocalReply::new(404, "Not Found"))?, reg.nat_handling, reg.sticky_iface)
    } else {
        return Ok(false);
    };
    // `RURI` of the profile, if set, wins over the registered contact.
    if profile.ruri.is_none() {
        plan.ruri = Some(binding.contact.clone());
    }
    // Only the address the phone registered through gets through its NAT: another node's
    // phone is reached through that node (`peer_relay.rs`).
    let via_peer = nat && through_peer(&binding, plan, can_sign);
    if nat && !via_peer {
        plan.next_hops = vec![hop_to_phone(&binding)];
    }
    if sticky && !binding.interface.is_empty() {
        plan.outbound_interface = Some(binding.interface.clone());
    }
    Ok(via_peer)
}

/// The contacts of a REGISTER relayed without caching, with the parts `contact_*` names
/// replaced (docs/manual/profiles.md, Profile options: Contact rewriting); `*` and unparseable values go as they are.
pub(super) fn rewritten_contacts(msg: &Message, parts: &profiles::evaluate::ContactValues) -> Vec<String> {
    msg.values(HeaderName::Contact)
        .map(|v| {
            let keep = || String::from_utf8_lossy(v).into_owned();
            let Some(na) = NameAddr::parse(v).filter(|n| n.uri != b"*") else { return keep() };
            let Some(u) = Uri::parse(na.uri) else { return keep() };
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            let scheme = na.uri.split(|&c| c == b':').next().map(text).unwrap_or_default();
            let user = if parts.user.is_empty() { u.user.map(text) } else { Some(parts.user.clone()) };
            let host = if parts.host.is_empty() { text(u.host) } else { parts.host.clone() };
            let port = if parts.port.is_empty() { u.port.map(|p| p.to_string()) } else { Some(parts.port.clone()) };
            let mut out = if parts.displayname.is_empty() {
                let d = text(na.display);
                if d.is_empty() {
                    String::new()
                } else {
                    format!("{d} ")
                }
            } else {
                format!("\"{}\" ", parts.displayname.replace('\\', "\\\\").replace('"', "\\\""))
            };
            out.push('<');
            out.push_str(&scheme);
            out.push(':');
            if let Some(user) = user.filter(|u| !u.is_empty()) {
                out.push_str(&user);
                out.push('@');
            }
            out.push_str(&host);
            if let Some(p) = port {
                out.push(':');
                out.push_str(&p);
            }
            // (The URI's parameters keep their leading `;`.)
            out.push_str(&text(u.params));
            out.push('>');
            out.push_str(&text(na.params));
            out
        })
        .collect()
}

/// Rows of a REGISTER's 2xx that go back to the UA unchanged (the expiry is in the Contacts).
pub(super) fn keeps_in_register_ok(msg: &Message, h: &crate::sip::msg::Header) -> bool {
    h.name != HeaderName::Expires
        && !(h.name == HeaderName::Other && msg.slice(h.name_span).eq_ignore_ascii_case(b"Min-Expires"))
}

/// `$uc $us $ui $Ua $UA` over the cache.
pub(super) struct CacheView<'a>(pub &'a RegView);

impl profiles::pattern::RegCacheView for CacheView<'_> {
    fn lookup(
        &self,
        var: profiles::pattern::RegVar,
        req: &dyn profiles::pattern::RequestView,
        source: SocketAddr,
    ) -> Option<String> {
        use profiles::pattern::RegVar;
        let ruri_alias = || {
            let ruri = String::from_utf8_lossy(req.request_uri()).into_owned();
            let user = uri_user(&ruri)?.to_string();
            self.0.get(&user)
        };
        match var {
            RegVar::Contact => ruri_alias().map(|b| b.contact.clone()),
            RegVar::Source => ruri_alias().map(Binding::source_text),
            RegVar::Interface => ruri_alias().map(|b| b.interface.clone()),
            RegVar::AorOfContact => {
                let mut contact = None;
                req.for_each_header("Contact", &mut |v| {
                    if contact.is_none() {
                        contact = NameAddr::parse(v).map(|n| String::from_utf8_lossy(n.uri).into_owned());
                    }
                });
                self.0.by_contact(&contact?, source).map(|b| b.aor.clone())
            }
            RegVar::CallerAlias => {
                let aor = canonical_aor(&String::from_utf8_lossy(req.caller()))?;
                let alias = self.0.of_aor(&aor).find(|b| b.source == source).map(|b| b.alias.clone());
                alias
            }
        }
    }
}
