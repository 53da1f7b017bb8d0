//! OPTIONS probes to the configured next hops: every `probe_interval`, one shard sends an
//! OPTIONS to each next hop the profiles name as fixed text (and the global `routing.next_hop`)
//! from the default outbound interface; a name is resolved first (RFC 3263, each target
//! probed). Any final answer but 503 means the hop is up; 503, no answer or a transport error
//! that it is not. The health port counts the outcomes into up and down (`health.rs`).

use std::time::Instant;

use profiles::profile::NextHop;

use super::apply::hop_target;
use super::build;
use super::call::Side;
use super::resolve::{hop_query, Target, TargetQuery};
use super::txs::{Purpose, TxRole};
use super::types::{Destination, Peer, Transport};
use super::{Engine, Output, ResolveTicket, TimerRef};
use crate::health::HopKey;
use crate::sip::msg::{Message, MessageWriter};

/// Next hops probed at most per round.
const MAX_PROBED: usize = 256;

impl Engine {
    /// Starts the probe rounds (from `now`) if this engine probes.
    pub fn start_probes(&mut self, now: Instant) {
        if self.cfg.probe_interval.is_some() {
            self.schedule(now, TimerRef::Probe);
        }
    }

    /// A probe round: the configured next hops now, names once resolved.
    pub(super) fn probe_round(&mut self, now: Instant) {
        let Some(interval) = self.cfg.probe_interval else { return };
        self.schedule(now + interval, TimerRef::Probe);
        if self.draining {
            return; // a node shutting down sends no probes (rounds go on for an undrain)
        }
        // A resolution still unanswered from the last round is given up.
        self.probing.clear();
        let (addresses, names) = self.probe_targets();
        for (iface, transport, peer) in addresses {
            self.send_probe(now, iface, transport, peer);
        }
        for (iface, queries) in names {
            let ticket = ResolveTicket::new(self.new_id());
            self.probing.insert(ticket, (iface, queries.clone()));
            self.out.push_back(Output::Resolve { ticket, queries });
        }
    }

    /// The targets of a round's names: each probed.
    pub(super) fn probe_resolved(
        &mut self,
        now: Instant,
        (iface, queries): (usize, Vec<TargetQuery>),
        answers: Vec<Vec<Target>>,
    ) {
        for (q, targets) in queries.iter().zip(answers) {
            for t in targets {
                self.send_probe(now, iface, t.transport, Peer::Named { host: q.host.clone(), addr: t.addr });
            }
        }
    }

    /// The fixed next hops of every profile, with the interface the profile sends from (its
    /// `outbound_interface` when fixed, else the default one), and the global next hop:
    /// addresses, and names to resolve by interface.
    #[allow(clippy::type_complexity)]
    fn probe_targets(&self) -> (Vec<(usize, Transport, Peer)>, Vec<(usize, Vec<TargetQuery>)>) {
        let snapshot = self.cfg.profiles.load();
        let mut addresses: Vec<(usize, Transport, Peer)> = Vec::new();
        let mut names: Vec<(usize, Vec<TargetQuery>)> = Vec::new();
        let default = self.cfg.outbound_interface;
        if let Some((t, p @ Peer::Addr(_))) = &self.cfg.next_hop {
            addresses.push((default, *t, p.clone()));
        }
        for p in snapshot.profiles.values() {
            let Some(text) = p.next_hop.as_ref().filter(|n| n.is_literal()).map(|n| n.source()) else {
                continue;
            };
            let iface = p
                .outbound_interface
                .as_ref()
                .filter(|i| i.is_literal())
                .and_then(|i| self.cfg.interfaces.iter().position(|x| x.name == i.source()))
                .unwrap_or(default);
            for h in NextHop::parse_list(text).unwrap_or_default() {
                match (hop_query(&h), hop_target(&h)) {
                    (Some(q), _) => match names.iter_mut().find(|(i, _)| *i == iface) {
                        Some((_, qs)) if !qs.contains(&q) => qs.push(q),
                        Some(_) => {}
                        None => names.push((iface, vec![q])),
                    },
                    (None, (t, p @ Peer::Addr(_))) if !addresses.contains(&(iface, t, p.clone())) => {
                        addresses.push((iface, t, p))
                    }
                    _ => {}
                }
            }
        }
        addresses.truncate(MAX_PROBED);
        for (_, qs) in &mut names {
            qs.truncate(MAX_PROBED);
        }
        (addresses, names)
    }

    /// An OPTIONS to `peer` from interface `iface`, if it has a socket for it.
    fn send_probe(&mut self, now: Instant, iface: usize, transport: Transport, peer: Peer) {
        let Some(addr) = peer.addr() else { return };
        let iface = self.cfg.interfaces.get(iface);
        let Some(socket) = iface.and_then(|i| i.socket(transport, addr.is_ipv6())).cloned() else { return };
        let host = match &peer {
            Peer::Named { host, .. } => host.to_string(),
            _ if addr.is_ipv6() => format!("[{}]", addr.ip()),
            _ => addr.ip().to_string(),
        };
        let uri = match transport {
            Transport::Udp => format!("sip:{host}:{}", addr.port()),
            t => format!("sip:{host}:{};transport={}", addr.port(), t.via_name().to_ascii_lowercase()),
        };
        let sent_by = socket.sent_by();
        let mut w = MessageWriter::request(b"OPTIONS", uri.as_bytes());
        build::write_via(&mut w, transport, &sent_by, &self.ids.branch());
        w.header("Max-Forwards", b"70");
        w.header_fmt("From", format_args!("<sip:sbc@{sent_by}>;tag={}", String::from_utf8_lossy(&self.ids.tag())));
        w.header_fmt("To", format_args!("<{uri}>"));
        w.header("Call-ID", &self.ids.call_id());
        w.header("CSeq", b"1 OPTIONS");
        let Ok(msg) = Message::parse(w.finish(b"")) else { return };
        let dest = Destination { transport, local: socket.id, peer, conn: None };
        self.start_client_tx(now, msg, dest, TxRole::new(None, Side::B, Purpose::Probe));
    }

    /// A probe's outcome: a final answer (`code`), or none (a timeout, a transport error).
    pub(super) fn probe_outcome(&mut self, now: Instant, dest: &Destination, code: Option<u16>) {
        let Some(addr) = dest.peer.addr() else { return };
        let name = match &dest.peer {
            Peer::Named { host, .. } => Some(&**host),
            _ => None,
        };
        let answered = code.is_some_and(|c| c != 503);
        self.cfg.health.probed(HopKey { transport: dest.transport, addr }, name, answered, now);
    }
}
