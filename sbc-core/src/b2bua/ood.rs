//! Out-of-dialog requests other than INVITE: OPTIONS to the SBC itself are answered here;
//! everything else (OPTIONS, MESSAGE, NOTIFY, SUBSCRIBE, PUBLISH, REGISTER, extensions) goes
//! through a relay pair: a server transaction on the A side, a client transaction with a fresh
//! Call-ID and From tag on the B side, the responses mapped back.

use std::time::Instant;

use super::build::{copy_unowned, without_tag, write_party, write_via};
use super::call::{CallKind, Side};
use super::ids::stable_call_id;
use super::routing;
use super::txs::Purpose;
use super::types::Source;
use super::Engine;
use crate::sip::msg::{HeaderName, Message, MessageWriter, Method};
use crate::sip::transaction::TxKey;

/// What the SBC says it can do in answer to OPTIONS.
const ALLOW: &[u8] =
    b"INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE, INFO, MESSAGE, NOTIFY, REFER, SUBSCRIBE, PUBLISH, REGISTER";

impl Engine {
    pub(super) fn on_out_of_dialog(&mut self, now: Instant, msg: Message, src: Source, key: TxKey) {
        let method = msg.method().unwrap_or(Method::Other);
        if method == Method::Options && routing::is_local_uri(&self.cfg, msg.request_uri()) {
            // Health checks: answer, and say "draining" with 503 so balancers move away.
            let (code, reason) = if self.draining { (503, "Service Unavailable") } else { (200, "OK") };
            let tag = self.ids.tag();
            let id = self.new_server_tx(key, &msg, &src, None, Side::A, Purpose::Local, Some(tag));
            self.respond_local(
                now,
                id,
                code,
                reason,
                &[("Allow", ALLOW), ("Accept", b"application/sdp"), ("Supported", b"100rel")],
            );
            return;
        }
        let max_forwards = match self.admit_new_request(&msg) {
            Ok(mf) => mf,
            Err(r) => return self.refuse(now, key, &msg, &src, r.code, r.reason, r.extra),
        };
        let dest = match self.route_new_request(msg.request_uri()) {
            Ok(d) => d,
            Err(e) => return self.refuse(now, key, &msg, &src, e.code, e.reason, &[]),
        };
        if matches!(method, Method::Subscribe | Method::Refer) {
            if self.calls.len() >= self.cfg.max_calls {
                return self.refuse(now, key, &msg, &src, 503, "Service Unavailable", &[("Retry-After", b"5")]);
            }
            // These create a dialog for the NOTIFYs that follow (RFC 6665, RFC 3515): a pair.
            return self.start_dialog_pair(now, key, msg, src, dest, max_forwards, CallKind::Subscription);
        }
        let Some(out_socket) = self.cfg.socket(dest.local).cloned() else {
            return self.refuse(now, key, &msg, &src, 500, "Server Internal Error", &[]);
        };
        let a_tag = self.ids.tag();
        let server = self.new_server_tx(key, &msg, &src, None, Side::A, Purpose::RelayServer { peer: 0 }, Some(a_tag));

        // A registration keeps one Call-ID and its CSeq upstream, so refreshes replace bindings.
        let is_register = method == Method::Register;
        let a_call_id = msg.call_id().unwrap_or_default();
        let b_call_id =
            if is_register { stable_call_id(self.cfg.shard, a_call_id, self.salt) } else { self.ids.call_id() };
        let cseq = if is_register { msg.cseq().map_or(1, |c| c.num) } else { 1 };
        let (branch, b_tag) = (self.ids.branch(), self.ids.tag());

        let mut w = MessageWriter::request(msg.method_bytes(), msg.request_uri());
        write_via(&mut w, dest.transport, &out_socket.sent_by(), &branch);
        w.header_fmt("Max-Forwards", format_args!("{}", max_forwards - 1));
        write_party(&mut w, "From", &without_tag(msg.header_value(HeaderName::From).unwrap_or_default()), Some(&b_tag));
        if let Some(h) = msg.header(HeaderName::To) {
            w.copy_row(&msg, h);
        }
        w.header("Call-ID", &b_call_id);
        w.header_fmt("CSeq", format_args!("{cseq} {}", String::from_utf8_lossy(msg.method_bytes())));
        if is_register {
            // Bindings are the registration's content; caching/aliasing them is a profile option.
            for h in msg.headers_named(HeaderName::Contact) {
                w.copy_row(&msg, h);
            }
        } else if msg.header(HeaderName::Contact).is_some() {
            w.header("Contact", &super::build::contact_value(&out_socket.sent_by(), dest.transport));
        }
        copy_unowned(&mut w, &msg);
        let Ok(out_msg) = Message::parse(w.finish(msg.body())) else {
            self.respond_local(now, server, 500, "Server Internal Error", &[]);
            return;
        };
        self.own_call_ids.insert(b_call_id, 0);
        let client = self.start_client_tx(now, out_msg, dest, None, Side::B, Purpose::RelayClient { peer: server });
        self.set_relay_peer(server, client);
    }
}
