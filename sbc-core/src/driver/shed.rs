//! Shedding before the shards, so that a flood costs as little as possible and the work
//! already admitted (calls up, their in-dialog requests, responses) keeps its share:
//! - a datagram that opens new work (its first line names a method that starts a dialog or
//!   stands alone) from a source admission control ignores is dropped before it is parsed;
//! - a parsed new request (no To tag; not ACK or CANCEL) that came over UDP and is bound for a
//!   shard whose input queue is half full is dropped: the overload detector, which needs no
//!   number from the operator. The caller's transaction sends the request again (over UDP it
//!   does; a stream client would not, so TCP requests are not shed), and it is taken once the
//!   queue drains.

use crate::sip::msg::{Message, Method};

/// Methods whose requests start new work (an initial request, or one outside any dialog).
/// A re-INVITE starts with INVITE too: from a source being ignored, it is dropped as well.
const NEW_WORK: [&[u8]; 6] = [b"INVITE ", b"REGISTER ", b"OPTIONS ", b"SUBSCRIBE ", b"MESSAGE ", b"PUBLISH "];

/// Whether raw datagram bytes open new work, from the first line alone.
pub(super) fn opens_new_work(bytes: &[u8]) -> bool {
    NEW_WORK.iter().any(|m| bytes.starts_with(m))
}

/// Whether a parsed message is a new request: admission control decides on these.
pub(super) fn is_new_request(msg: &Message) -> bool {
    msg.is_request() && msg.to_tag().is_none() && !matches!(msg.method(), Some(Method::Ack | Method::Cancel))
}

/// Whether a queue of `capacity` slots with `free` of them left is loaded enough to shed new
/// requests: half of it is kept for what is already admitted.
pub(super) fn overloaded(free: usize, capacity: usize) -> bool {
    free.saturating_mul(2) < capacity
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn new_work_is_told_from_its_first_line_and_its_to_tag() {
        assert!(opens_new_work(b"INVITE sip:a@b SIP/2.0\r\n"));
        assert!(opens_new_work(b"REGISTER sip:b SIP/2.0\r\n"));
        assert!(!opens_new_work(b"BYE sip:a@b SIP/2.0\r\n"));
        assert!(!opens_new_work(b"SIP/2.0 200 OK\r\n"));
        let parse = |t: &str| Message::parse(Bytes::from(t.replace('\n', "\r\n"))).expect("parses");
        let head = "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\nFrom: <sip:a@b>;tag=1\nCall-ID: c\nMax-Forwards: 70\n";
        let initial =
            parse(&format!("INVITE sip:x@y SIP/2.0\n{head}To: <sip:x@y>\nCSeq: 1 INVITE\nContent-Length: 0\n\n"));
        assert!(is_new_request(&initial));
        let re =
            parse(&format!("INVITE sip:x@y SIP/2.0\n{head}To: <sip:x@y>;tag=2\nCSeq: 2 INVITE\nContent-Length: 0\n\n"));
        assert!(!is_new_request(&re));
        let cancel =
            parse(&format!("CANCEL sip:x@y SIP/2.0\n{head}To: <sip:x@y>\nCSeq: 1 CANCEL\nContent-Length: 0\n\n"));
        assert!(!is_new_request(&cancel));
    }

    #[test]
    fn half_a_queue_is_kept_for_admitted_work() {
        assert!(!overloaded(8192, 8192));
        assert!(!overloaded(4096, 8192));
        assert!(overloaded(4095, 8192));
        assert!(overloaded(0, 1));
    }
}
