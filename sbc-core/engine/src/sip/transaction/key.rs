//! Transaction matching keys (RFC 3261 §17.1.3 and §17.2.3).

use crate::sip::msg::{HeaderName, Message, Method};

/// RFC 3261 branches start with this magic cookie; older ones need the RFC 2543 fallback.
const MAGIC_COOKIE: &[u8] = b"z9hG4bK";

/// A transaction key: one flat byte string, so a lookup costs one hash of one slice.
pub type TxKey = Box<[u8]>;

/// Key of the server transaction a request belongs to. ACK maps to its INVITE transaction;
/// CANCEL has its own (§17.2.3). `None` when the request has no usable top Via.
pub fn server_key(msg: &Message) -> Option<TxKey> {
    let method_part: &[u8] = match msg.method()? {
        Method::Ack | Method::Invite => b"INVITE",
        _ => msg.method_bytes(),
    };
    key_with_method(msg, method_part)
}

/// Key of the INVITE server transaction that a CANCEL refers to (§9.2).
pub fn cancelled_invite_key(cancel: &Message) -> Option<TxKey> {
    key_with_method(cancel, b"INVITE")
}

fn key_with_method(msg: &Message, method_part: &[u8]) -> Option<TxKey> {
    let via = msg.top_via()?;
    let mut key = Vec::with_capacity(96);
    match via.branch().filter(|b| b.starts_with(MAGIC_COOKIE)) {
        Some(branch) => {
            key.extend_from_slice(b"s|");
            key.extend_from_slice(branch);
            key.push(b'|');
            key.extend_from_slice(via.host);
            key.push(b':');
            key.extend_from_slice(via.port.unwrap_or(0).to_string().as_bytes());
        }
        None => {
            // RFC 2543 peer (§17.2.3): From tag, Call-ID, CSeq number and top Via. The To tag is
            // left out because the ACK to a non-2xx carries ours.
            key.extend_from_slice(b"o|");
            key.extend_from_slice(msg.from_tag().unwrap_or_default());
            key.push(b'|');
            key.extend_from_slice(msg.call_id().unwrap_or_default());
            key.push(b'|');
            key.extend_from_slice(msg.cseq().map_or(0, |c| c.num).to_string().as_bytes());
            key.push(b'|');
            key.extend_from_slice(msg.values(HeaderName::Via).next().unwrap_or_default());
        }
    }
    key.push(b'|');
    key.extend_from_slice(method_part);
    Some(key.into_boxed_slice())
}

/// Key of the client transaction a response belongs to: our branch plus the CSeq method.
pub fn client_key(branch: &[u8], cseq_method: &[u8]) -> TxKey {
    let mut key = Vec::with_capacity(branch.len() + cseq_method.len() + 3);
    key.extend_from_slice(b"c|");
    key.extend_from_slice(branch);
    key.push(b'|');
    key.extend_from_slice(cseq_method);
    key.into_boxed_slice()
}
