//! Next-hop failover: a B-leg INVITE refused with 503, timed out or unreachable is sent again
//! to the profile's next alternative, while the caller waits.

use std::time::Instant;

use super::build::{self, leg_contact};
use super::call::Side;
use super::txs::{Purpose, TxRole};
use super::types::{Destination, LocalSocket, Peer, Transport};
use super::{CallHandle, Engine};
use crate::sip::msg::{HeaderName, Message, MessageWriter};

impl Engine {
    /// Sends the B leg's INVITE to the next `next_hop` alternative, if the call is still
    /// waiting for its first answer and one is left. Same dialog (Call-ID, tags), a new
    /// transaction with the next CSeq.
    pub(super) fn fail_over(&mut self, now: Instant, h: CallHandle) -> bool {
        let Some(call) = self.calls.get_mut(&h) else {
            return false;
        };
        if !call.state.is_early() || call.b_provisional || call.failover.is_empty() {
            return false;
        }
        let Some(old) = call.b_invite.take() else {
            return false;
        };
        let current = call.leg(Side::B).dest.local;
        let alternatives = std::mem::take(&mut call.failover);
        // The first alternative this interface has a socket for; the rest stay for later.
        let mut rest = alternatives.into_iter();
        let Some((transport, peer, local)) = rest.by_ref().find_map(|(t, p)| {
            // (A hop that went down or was blacklisted since the call began is passed over.)
            let usable = self.hop_usable(now, t, &p);
            self.socket_for(current, t, &p).filter(|_| usable).map(|local| (t, p, local))
        }) else {
            return false;
        };
        let rest: Vec<(Transport, Peer)> = rest.collect();
        if let Some(call) = self.calls.get_mut(&h) {
            call.failover = rest;
        }
        let Some(sent_by) = self.cfg.socket(local).map(LocalSocket::sent_by) else {
            return false;
        };
        let branch = self.ids.branch();
        let Some(call) = self.calls.get_mut(&h) else {
            return false;
        };
        let sips = super::routing::is_sips(&call.leg(Side::B).remote_target);
        let contact = leg_contact(&call.rules.plan.bleg_contact, &sent_by, transport, sips);
        let leg = call.leg_mut(Side::B);
        leg.local_cseq += 1;
        let cseq = leg.local_cseq;
        let dest = Destination { transport, local, peer: peer.clone(), conn: None };
        leg.transport = transport;
        leg.dest = dest.clone();
        if leg.fixed_dest.is_some() {
            leg.fixed_dest = Some((transport, peer));
        }
        leg.contact = contact.clone();
        leg.via_sent_by = sent_by.clone().into_boxed_str();
        // The callee's media is now expected from the new next hop's host.
        if let (Some(media), Some(book)) = (call.media.as_mut(), self.media.as_mut()) {
            media.set_signalling(book, Side::B.idx(), dest.peer.ip());
        }
        let mut w = MessageWriter::request(b"INVITE", old.request_uri());
        build::write_via(&mut w, transport, &sent_by, &branch);
        for row in old.headers() {
            match row.name {
                // The writer adds its own Content-Length.
                HeaderName::Via | HeaderName::ContentLength => {}
                HeaderName::CSeq => {
                    w.header_fmt("CSeq", format_args!("{cseq} INVITE"));
                }
                HeaderName::Contact => {
                    w.header("Contact", &contact);
                }
                // Answers to the previous hop's challenges are not the next hop's business.
                _ if super::auth::is_credentials_row(&old, row) => {}
                _ => {
                    w.copy_row(&old, row);
                }
            }
        }
        let Ok(next) = Message::parse(w.finish(old.body())) else {
            return false;
        };
        {
            let _e = call.span.enter();
            tracing::info!(to = %dest.peer, transport = %transport, "B leg failing over to the next hop");
        }
        call.b_invite_cseq = cseq;
        if !call.failover.is_empty() {
            call.b_invite = Some(Box::new(next.clone()));
        }
        let id = self.start_client_tx(now, next, dest, TxRole::new(Some(h), Side::B, Purpose::BInitialInvite));
        if let Some(call) = self.calls.get_mut(&h) {
            call.b_ict = id;
        }
        true
    }
}
