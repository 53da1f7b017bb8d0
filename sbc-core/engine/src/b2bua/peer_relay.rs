//! Requests for phones held by another node of a cluster (docs/manual/cluster.md,
//! Registrations). A phone behind NAT lets in only the address it registered through, so the
//! node that takes a call to it hands the call to the node that holds the binding, naming the
//! binding in [`RELAY_HEADER`] with an HMAC of it and the request's Call-ID under the
//! cluster's key; that node relays it on to the phone as it came. Only a peer's request with
//! a good MAC is taken as such ([`Registrations::is_peer`], [`Registrations::relay_key`]): a
//! forged source address alone reaches nothing (a peer's request with a bad MAC gets 503).
//! From anyone else the header is an ordinary one (and never relayed,
//! `apply::is_control_header`).

use std::net::IpAddr;
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use profiles::evaluate::CallPlan;
use profiles::profile::NextHop;
use profiles::{LocalReply, Profile};
use regcache::Binding;
use sha2::Sha256;

use super::apply::Chosen;
use super::setup::NewRequest;
use super::{Counter, Engine};
use crate::registrations::RELAY_HEADER;
use crate::sip::msg::{Message, Method};

/// What [`Engine::relay_request`] found.
pub(super) enum RelayRequest {
    No,
    Relay(String),
    /// From a peer's address, with a MAC this node cannot check: refused with 503 (never taken
    /// through the profiles as an ordinary request, which could send it anywhere).
    Unchecked,
}

/// Bytes of HMAC in the header (128 bits).
const MAC_BYTES: usize = 16;

/// The name of the profile of calls relayed for a peer (in logs, `/calls` and CDR-less
/// counts): a transparent one, since the peer that took the call applied the operator's.
pub(crate) const RELAY_PROFILE: &str = "cluster-relay";

/// The binding alias a request names in [`RELAY_HEADER`] and the MAC it gives, if any
/// (REGISTERs never go through a peer).
fn named(msg: &Message) -> Option<(&str, &str)> {
    if msg.method() == Some(Method::Register) {
        return None;
    }
    let v = std::str::from_utf8(msg.other_header(RELAY_HEADER)?).ok()?;
    let (alias, mac) = v.split_once(';')?;
    let (alias, mac) = (alias.trim(), mac.trim().strip_prefix("mac=")?);
    (!alias.is_empty() && alias.len() <= 64).then_some((alias, mac))
}

/// The binding alias a request names in [`RELAY_HEADER`] (not yet checked).
pub(super) fn named_alias(msg: &Message) -> Option<String> {
    named(msg).map(|(alias, _)| alias.to_string())
}

fn relay_mac(key: &[u8; 32], alias: &str, call_id: &[u8]) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
    mac.update(b"sbc-relay\0");
    mac.update(alias.as_bytes());
    mac.update(b"\0");
    mac.update(call_id);
    Some(mac)
}

/// The value of [`RELAY_HEADER`] for a request with `call_id` to `alias`'s phone.
pub(super) fn relay_value(key: &[u8; 32], alias: &str, call_id: &[u8]) -> Option<String> {
    let mac = relay_mac(key, alias, call_id)?.finalize().into_bytes();
    let hex: String = mac.iter().take(MAC_BYTES).map(|b| format!("{b:02x}")).collect();
    Some(format!("{alias};mac={hex}"))
}

/// Whether `mac_hex` is the MAC of (`alias`, `call_id`), compared in constant time.
fn mac_matches(key: &[u8; 32], alias: &str, call_id: &[u8], mac_hex: &str) -> bool {
    let Some(given) = super::auth::decode_hex::<MAC_BYTES>(mac_hex) else { return false };
    relay_mac(key, alias, call_id).is_some_and(|m| m.verify_truncated_left(&given).is_ok())
}

/// A next hop at `addr` over `transport`.
fn hop(addr: std::net::SocketAddr, transport: &str) -> NextHop {
    let host = match addr.ip() {
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    };
    NextHop { host, port: Some(addr.port()), transport: Some(transport.to_string()), priority: None, weight: None }
}

/// Where a request to `binding`'s phone goes from the node that holds it: the address and
/// transport the REGISTER came from.
pub(super) fn hop_to_phone(binding: &Binding) -> NextHop {
    hop(binding.source, &binding.transport)
}

/// Points `plan` at the peer that holds `binding`, if another node does (and this node has
/// the key to name the binding to it): the request goes there with the binding named, instead
/// of to the phone's address. Whether it did.
pub(super) fn through_peer(binding: &Binding, plan: &mut CallPlan, can_sign: bool) -> bool {
    let Some(relay) = binding.relay.as_ref().filter(|_| can_sign) else { return false };
    plan.next_hops = vec![hop(relay.addr, &relay.transport)];
    plan.peer_relay = Some(binding.alias.clone());
    true
}

impl Engine {
    /// What a request that names a binding in [`RELAY_HEADER`] is: one this node relays to a
    /// phone it holds (a peer's, with a good MAC), one a peer sent with a MAC this node cannot
    /// check (the nodes' keys differ a moment after Redis lost its data; a forged source), or
    /// none of these (no header, or not from a peer: an ordinary request).
    pub(super) fn relay_request(&self, req: &NewRequest) -> RelayRequest {
        let Some((alias, mac)) = named(&req.msg) else { return RelayRequest::No };
        let port = &self.cfg.reg_cache;
        if !port.is_peer(req.src.remote) {
            return RelayRequest::No;
        }
        let call_id = req.msg.call_id().unwrap_or_default();
        match port.relay_key() {
            Some(key) if mac_matches(&key, alias, call_id, mac) => RelayRequest::Relay(alias.to_string()),
            _ => {
                tracing::warn!(source = %req.src.remote, %alias, "a peer's relay header with a MAC this node cannot check: 503");
                RelayRequest::Unchecked
            }
        }
    }

    /// The [`RELAY_HEADER`] row of a request with `call_id` the plan sends through a peer.
    pub(super) fn relay_row(&self, plan: &CallPlan, call_id: &[u8]) -> Option<String> {
        let alias = plan.peer_relay.as_deref()?;
        relay_value(&self.cfg.reg_cache.relay_key()?, alias, call_id)
    }

    /// The rules of a request a peer relays to `alias`'s phone: as it came (the peer applied
    /// the operator's profile), to the phone's address, from the interface it registered on.
    /// A binding this node does not hold is refused: the request never goes round again.
    pub(super) fn relay_for_peer(&mut self, req: &NewRequest, alias: &str) -> Chosen {
        let Some(binding) = req.regs.get(alias).filter(|b| b.relay.is_none()) else {
            tracing::info!(%alias, source = %req.src.remote, "a peer relayed a request to a phone this node does not hold");
            return Chosen::Refuse(LocalReply::new(404, "User not found"));
        };
        self.stats.bump(Counter::RelayedForPeer);
        let plan = CallPlan {
            next_hops: vec![hop_to_phone(binding)],
            outbound_interface: (!binding.interface.is_empty()).then(|| binding.interface.clone()),
            ..CallPlan::default()
        };
        let profile = self.relay_profile.clone();
        Chosen::Go(self.shared_rules(profile, plan))
    }
}

/// The transparent profile of relayed requests, one per engine.
pub(super) fn relay_profile() -> Arc<Profile> {
    Arc::new(Profile { name: RELAY_PROFILE.into(), file: "(cluster)".into(), ..Profile::default() })
}
