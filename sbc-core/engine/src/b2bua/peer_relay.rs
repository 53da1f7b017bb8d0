//! Requests for phones held by another node of a cluster (docs/manual/cluster.md,
//! Registrations). A phone behind NAT lets in only the address it registered through, so the
//! node that takes a call to it hands the call to the node that holds the binding, naming the
//! binding in [`RELAY_HEADER`]; that node relays it on to the phone as it is. Only a peer's
//! request is taken as such ([`Registrations::is_peer`]): from anyone else the header is an
//! ordinary one (and never relayed, `apply::is_control_header`).

use std::net::IpAddr;
use std::sync::Arc;

use profiles::evaluate::CallPlan;
use profiles::profile::NextHop;
use profiles::{LocalReply, Profile};
use regcache::Binding;

use super::apply::Chosen;
use super::setup::NewRequest;
use super::{Counter, Engine};
use crate::registrations::RELAY_HEADER;
use crate::sip::msg::{Message, Method};

/// The name of the profile of calls relayed for a peer (in logs, `/calls` and CDR-less
/// counts): a transparent one, since the peer that took the call applied the operator's.
pub(crate) const RELAY_PROFILE: &str = "cluster-relay";

/// The binding alias a request names in [`RELAY_HEADER`], if any (REGISTERs never go through
/// a peer).
pub(super) fn named_alias(msg: &Message) -> Option<String> {
    if msg.method() == Some(Method::Register) {
        return None;
    }
    let v = msg.other_header(RELAY_HEADER)?;
    let alias = std::str::from_utf8(v).ok()?.trim();
    (!alias.is_empty() && alias.len() <= 64).then(|| alias.to_string())
}

/// Where a request to `binding`'s phone goes from the node that holds it: the address and
/// transport the REGISTER came from.
pub(super) fn hop_to_phone(binding: &Binding) -> NextHop {
    let host = match binding.source.ip() {
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    };
    NextHop { host, port: Some(binding.source.port()), transport: Some(binding.transport.clone()) }
}

/// Points `plan` at the peer that holds `binding`, if another node does: the request goes
/// there with the binding named, instead of to the phone's address. Whether it did.
pub(super) fn through_peer(binding: &Binding, plan: &mut CallPlan) -> bool {
    let Some(relay) = &binding.relay else { return false };
    let host = match relay.addr.ip() {
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    };
    plan.next_hops = vec![NextHop { host, port: Some(relay.addr.port()), transport: Some(relay.transport.clone()) }];
    plan.append_headers.push((RELAY_HEADER.to_string(), binding.alias.clone()));
    true
}

impl Engine {
    /// The alias a request from a peer names: the request is one this node relays to a phone
    /// it holds.
    pub(super) fn relayed_for_peer(&self, req: &NewRequest) -> Option<String> {
        let alias = named_alias(&req.msg)?;
        self.cfg.reg_cache.is_peer(req.src.remote).then_some(alias)
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
