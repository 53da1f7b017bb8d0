//! Identifiers the SBC generates: tags, Call-IDs, Via branches and digest cnonces. They carry
//! the shard number so the driver can hand every later message of a leg to the shard that owns
//! it. Everything after that prefix comes from ChaCha20 seeded from the OS by the driver (a
//! seed is an input: the sans-IO core reads no randomness source of its own), so an attacker
//! who sees any number of our identifiers cannot compute the next one: a forged BYE or 200
//! needs a tag or branch guessed among 2^64.

use hmac::{Hmac, KeyInit, Mac};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::Sha256;

/// Branches we generate start with this, followed by two hex digits of shard.
pub const BRANCH_PREFIX: &[u8] = b"z9hG4bKsbc";
/// Call-IDs we generate start with this, followed by two hex digits of shard.
pub(crate) const CALL_ID_PREFIX: &[u8] = b"sbc";

/// The engine's generator of identifiers, and the secret key of identifiers it must derive
/// again from a request (stateless To tags, stable registration Call-IDs).
#[derive(Debug, Clone)]
pub(crate) struct IdGen {
    rng: ChaCha20Rng,
    key: [u8; 32],
    shard: u8,
}

impl IdGen {
    pub(crate) fn new(seed: [u8; 32], shard: u8) -> Self {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        Self { rng, key, shard }
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }
    /// 256 random bits, to seed another generator (the media book's SRTP keys).
    pub(crate) fn seed(&mut self) -> [u8; 32] {
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        seed
    }
    /// 64 random bits.
    pub(crate) fn tag(&mut self) -> Box<[u8]> {
        format!("{:016x}", self.next_u64()).into_bytes().into_boxed_slice()
    }
    /// The shard, then 64 random bits.
    pub(crate) fn branch(&mut self) -> Box<[u8]> {
        let r = self.next_u64();
        format!("z9hG4bKsbc{:02x}{:016x}", self.shard, r).into_bytes().into_boxed_slice()
    }
    /// The shard, then 128 random bits.
    pub(crate) fn call_id(&mut self) -> Box<[u8]> {
        let (a, b) = (self.next_u64(), self.next_u64());
        format!("sbc{:02x}{a:016x}{b:016x}", self.shard).into_bytes().into_boxed_slice()
    }
    /// 128 random bits, for the cnonce of a digest answer (RFC 7616 §3.4).
    pub(crate) fn cnonce(&mut self) -> String {
        format!("{:016x}{:016x}", self.next_u64(), self.next_u64())
    }

    /// 64 bits of HMAC-SHA256 of `parts` under the engine's key, in hex: the same input gives
    /// the same identifier, and nobody without the key can compute one for another input.
    pub(crate) fn derived(&self, parts: &[&[u8]]) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        for p in parts {
            // Lengths first, so ("ab", "c") and ("a", "bc") differ.
            mac.update(&(p.len() as u32).to_le_bytes());
            mac.update(p);
        }
        let bytes = mac.finalize().into_bytes();
        bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// A stable Call-ID for the B side of a registration, so refreshes keep one Call-ID
    /// upstream; keyed, so the registrar side cannot tell the phone's Call-ID from it.
    pub(crate) fn stable_call_id(&self, a_call_id: &[u8]) -> Box<[u8]> {
        format!("sbc{:02x}r{}", self.shard, self.derived(&[b"register", a_call_id])).into_bytes().into_boxed_slice()
    }
}

fn hex2(b: &[u8]) -> Option<u8> {
    let s = std::str::from_utf8(b.get(..2)?).ok()?;
    u8::from_str_radix(s, 16).ok()
}

/// The shard that owns a response, from its top Via branch; `None` if the branch is not ours.
pub fn shard_of_branch(branch: &[u8]) -> Option<u8> {
    hex2(branch.strip_prefix(BRANCH_PREFIX)?)
}

/// The shard that owns a request: encoded in Call-IDs we generated, else a hash of the Call-ID.
pub fn shard_of_call_id(call_id: &[u8], shards: u8) -> u8 {
    if shards <= 1 {
        return 0;
    }
    if let Some(s) = call_id.strip_prefix(CALL_ID_PREFIX).and_then(hex2) {
        if s < shards {
            return s;
        }
    }
    (fnv1a(call_id) % u64::from(shards)) as u8
}

/// FNV-1a: a hash stable across processes and nodes, and cheap (shards by Call-ID, capture
/// samples by correlation id).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_round_trip() {
        let mut g = IdGen::new([42; 32], 7);
        assert_eq!(shard_of_branch(&g.branch()), Some(7));
        assert_eq!(shard_of_call_id(&g.call_id(), 8), 7);
        assert_eq!(shard_of_branch(b"z9hG4bKother"), None);
        let s = shard_of_call_id(b"abc@host", 4);
        assert_eq!(s, shard_of_call_id(b"abc@host", 4));
        assert!(s < 4);
    }

    #[test]
    fn identifiers_carry_the_random_bits_they_promise() {
        let mut g = IdGen::new([1; 32], 3);
        let tag = g.tag();
        assert_eq!(tag.len(), 16);
        let branch = g.branch();
        assert_eq!(branch.len(), BRANCH_PREFIX.len() + 2 + 16);
        let call_id = g.call_id();
        assert_eq!(call_id.len(), CALL_ID_PREFIX.len() + 2 + 32);
        assert_eq!(g.cnonce().len(), 32);
        // Two generators from different seeds share nothing.
        let mut h = IdGen::new([2; 32], 3);
        assert_ne!(h.tag(), tag);
    }

    #[test]
    fn derived_identifiers_are_stable_and_keyed() {
        let g = IdGen::new([1; 32], 0);
        assert_eq!(g.derived(&[b"a", b"bc"]), g.derived(&[b"a", b"bc"]));
        assert_ne!(g.derived(&[b"a", b"bc"]), g.derived(&[b"ab", b"c"]));
        assert_ne!(g.derived(&[b"a"]), IdGen::new([2; 32], 0).derived(&[b"a"]));
        assert_eq!(g.stable_call_id(b"x@y"), g.stable_call_id(b"x@y"));
        assert_ne!(g.stable_call_id(b"x@y"), g.stable_call_id(b"z@y"));
    }
}
