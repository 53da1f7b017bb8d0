//! Sending a request again on its leg after the peer asked for something (credentials, a longer
//! session interval): the same request with a new CSeq and branch, and the call or relay moved
//! over to the new transaction.

use std::time::Instant;

use super::build::write_via;
use super::txs::{Purpose, Resendable, TxRole};
use super::{Engine, TxId};
use crate::sip::msg::{Header, HeaderName, Message, MessageWriter};

impl Engine {
    /// Resends `sent` (the request of client transaction `id`) without the rows `drop` names
    /// and with `add`; returns the new transaction.
    pub(super) fn resend(
        &mut self,
        now: Instant,
        id: TxId,
        sent: &Message,
        drop: impl Fn(&Message, &Header) -> bool,
        add: &[(&str, String)],
    ) -> Option<TxId> {
        let e = self.txs.get(&id)?;
        let (purpose, call, side, dest) = (e.purpose, e.call, e.side, e.dest.clone());
        // A call the caller gave up on (or that ended) is not set up again: the answer is
        // handled as it is.
        let live = call.is_none_or(|h| self.calls.get(&h).is_some_and(|c| !c.state.is_ending()));
        if !live {
            return None;
        }
        let method = String::from_utf8_lossy(sent.method_bytes()).into_owned();
        let old_cseq = sent.cseq().map_or(1, |c| c.num);
        let cseq = match call.and_then(|h| self.calls.get_mut(&h)) {
            Some(c) => {
                let leg = c.leg_mut(side);
                leg.local_cseq = leg.local_cseq.max(old_cseq) + 1;
                leg.local_cseq
            }
            None => old_cseq + 1,
        };
        let via = sent.top_via()?;
        let sent_by = match via.port {
            Some(p) => format!("{}:{p}", String::from_utf8_lossy(via.host)),
            None => String::from_utf8_lossy(via.host).into_owned(),
        };
        let branch = self.ids.branch();
        let mut w = MessageWriter::request(sent.method_bytes(), sent.request_uri());
        write_via(&mut w, dest.transport, &sent_by, &branch);
        for row in sent.headers() {
            match row.name {
                HeaderName::Via | HeaderName::ContentLength => {}
                HeaderName::CSeq => {
                    w.header_fmt("CSeq", format_args!("{cseq} {method}"));
                }
                _ if drop(sent, row) => {}
                _ => {
                    w.copy_row(sent, row);
                }
            }
        }
        for (n, v) in add {
            w.header(n, v.as_bytes());
        }
        let again = Message::parse(w.finish(sent.body())).ok()?;
        let new_id = self.start_client_tx(now, again.clone(), dest, TxRole::new(call, side, purpose));
        // What the first attempt carried goes on; the loop-detection Call-ID moves with it.
        let (previous, reserved) = match self.txs.get_mut(&id) {
            Some(e) => (e.resendable.take(), e.reserved_call_id.take()),
            None => (None, None),
        };
        if let Some(e) = self.txs.get_mut(&new_id) {
            let mut r = previous.unwrap_or_else(|| Resendable::new(again.clone(), None, false));
            r.sent = again.clone();
            e.resendable = Some(r);
            if reserved.is_some() {
                e.reserved_call_id = reserved;
            }
        }
        match purpose {
            Purpose::BInitialInvite => {
                if let Some(c) = call.and_then(|h| self.calls.get_mut(&h)) {
                    c.b_ict = new_id;
                    c.b_invite_cseq = cseq;
                    // CANCEL waits for a provisional of the new transaction (RFC 3261 §9.1).
                    c.b_provisional = false;
                    if c.b_invite.is_some() {
                        c.b_invite = Some(Box::new(again));
                    }
                }
            }
            Purpose::RelayClient { peer } => {
                self.set_relay_peer(peer, new_id);
                if let (Some(c), true) = (call.and_then(|h| self.calls.get_mut(&h)), method == "INVITE") {
                    for r in c
                        .invite_relays
                        .iter_mut()
                        .filter(|r| r.server_side == side.other() && r.client_cseq == old_cseq)
                    {
                        r.client_cseq = cseq;
                    }
                }
            }
            Purpose::SessionRefresh => self.refresh_resent(call, side, id, new_id),
            _ => {}
        }
        Some(new_id)
    }
}
