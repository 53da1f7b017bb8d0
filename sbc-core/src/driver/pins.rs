//! Calls that live on another shard than their Call-ID hashes to. An INVITE with Replaces or
//! Join (or an INVITE, REFER or SUBSCRIBE with Target-Dialog) names a dialog of one shard, and
//! only that shard can map it (`b2bua/replaces.rs`): the request is handed to the shard of the
//! Call-ID it names, and the new call's later requests
//! (its own Call-ID hashes elsewhere) are pinned to follow it. Bounded: at most [`MAX_PINS`]
//! Call-IDs, each forgotten after the longest a call may last.

use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::b2bua::{replaced_call_id, shard_of_call_id};
use crate::sip::msg::{Message, Method};

const MAX_PINS: usize = 100_000;

pub(crate) struct Pins {
    map: DashMap<Box<[u8]>, (u8, Instant)>,
    /// How long a pin is kept: the longest a call may last, and some.
    life: Duration,
}

impl Pins {
    pub(crate) fn new(max_call_duration: Duration) -> Self {
        let life = if max_call_duration.is_zero() { Duration::from_secs(86_400) } else { max_call_duration };
        Self { map: DashMap::new(), life: life + Duration::from_secs(300) }
    }

    fn pin(&self, call_id: &[u8]) -> Option<u8> {
        (!self.map.is_empty()).then(|| self.map.get(call_id).map(|p| p.0)).flatten()
    }

    /// The shard that holds a Call-ID's call: its pin, or its hash.
    pub(crate) fn shard_of_call_id(&self, call_id: &[u8], shards: u8) -> u8 {
        self.pin(call_id).unwrap_or_else(|| shard_of_call_id(call_id, shards))
    }

    /// The shard a request belongs to.
    pub(crate) fn shard_of(&self, msg: &Message, shards: u8, now: Instant) -> u8 {
        let call_id = msg.call_id().unwrap_or_default();
        if let Some(pin) = self.pin(call_id) {
            return pin;
        }
        let own = shard_of_call_id(call_id, shards);
        if !matches!(msg.method(), Some(Method::Invite | Method::Refer | Method::Subscribe)) || msg.to_tag().is_some() {
            return own;
        }
        let Some(named) = replaced_call_id(msg) else { return own };
        let there = shard_of_call_id(named, shards);
        if there != own {
            if self.map.len() >= MAX_PINS {
                tracing::warn!("too many transferred calls pinned to their shard; this one is not");
                return own;
            }
            self.map.insert(call_id.into(), (there, now));
        }
        there
    }

    /// Forgets pins older than a call may last.
    pub(crate) fn sweep(&self, now: Instant) {
        self.map.retain(|_, (_, at)| now.saturating_duration_since(*at) < self.life);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite(call_id: &str, extra: &str) -> Message {
        let text = format!(
            "INVITE sip:c@h SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:c@h>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        Message::parse(bytes::Bytes::from(text)).expect("parses")
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a start for virtual time
    fn a_replaces_invite_goes_to_the_named_dialogs_shard_and_its_call_follows() {
        let (pins, now, shards) = (Pins::new(Duration::from_secs(3600)), Instant::now(), 8);
        // A Call-ID that hashes elsewhere than the dialog it names.
        let named = "named@x";
        let there = shard_of_call_id(named.as_bytes(), shards);
        let id = (0..100)
            .map(|n| format!("new-{n}@y"))
            .find(|c| shard_of_call_id(c.as_bytes(), shards) != there)
            .expect("one hashes elsewhere");
        let with = invite(&id, &format!("Replaces: {named};to-tag=a;from-tag=b\r\n"));
        assert_eq!(pins.shard_of(&with, shards, now), there);
        // Its later requests (here a retransmission or a BYE: the same Call-ID) follow it.
        assert_eq!(pins.shard_of(&invite(&id, ""), shards, now), there);
        pins.sweep(now + Duration::from_secs(3600 + 301));
        assert_eq!(pins.shard_of(&invite(&id, ""), shards, now), shard_of_call_id(id.as_bytes(), shards), "forgotten");
        // A REFER outside a dialog with Target-Dialog goes there too.
        let refer = invite(&id, &format!("Target-Dialog: {named};local-tag=a;remote-tag=b\r\n"));
        let refer =
            Message::parse(bytes::Bytes::from(String::from_utf8_lossy(refer.bytes()).replace("INVITE", "REFER")))
                .expect("parses");
        assert_eq!(pins.shard_of(&refer, shards, now), there);
    }
}
