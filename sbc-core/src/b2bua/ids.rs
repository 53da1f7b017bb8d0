//! Identifiers the SBC generates: tags, Call-IDs and Via branches. They carry the shard number
//! so the driver can hand every later message of a leg to the shard that owns it, and they come
//! from a seeded generator (no randomness source inside the sans-IO core).

/// Branches we generate start with this, followed by two hex digits of shard.
pub const BRANCH_PREFIX: &[u8] = b"z9hG4bKsbc";
/// Call-IDs we generate start with this, followed by two hex digits of shard.
pub(crate) const CALL_ID_PREFIX: &[u8] = b"sbc";

/// xorshift64*: fast, seedable, good enough for unguessable-in-practice identifiers.
#[derive(Debug, Clone)]
pub(crate) struct IdGen {
    state: u64,
    shard: u8,
}

impl IdGen {
    pub(crate) fn new(seed: u64, shard: u8) -> Self {
        Self { state: seed | 1, shard }
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(crate) fn tag(&mut self) -> Box<[u8]> {
        format!("{:016x}", self.next_u64()).into_bytes().into_boxed_slice()
    }
    pub(crate) fn branch(&mut self) -> Box<[u8]> {
        let r = self.next_u64();
        format!("z9hG4bKsbc{:02x}{:016x}", self.shard, r).into_bytes().into_boxed_slice()
    }
    pub(crate) fn call_id(&mut self) -> Box<[u8]> {
        let (a, b) = (self.next_u64(), self.next_u64());
        format!("sbc{:02x}{a:016x}{b:08x}", self.shard, b = b as u32).into_bytes().into_boxed_slice()
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
    // FNV-1a: stable across processes and cheap.
    let h = call_id.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    (h % u64::from(shards)) as u8
}

/// A stable Call-ID for the B side of a registration, so refreshes keep one Call-ID upstream.
pub(crate) fn stable_call_id(shard: u8, a_call_id: &[u8], salt: u64) -> Box<[u8]> {
    let h = a_call_id
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64 ^ salt, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("sbc{shard:02x}r{h:016x}").into_bytes().into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_round_trip() {
        let mut g = IdGen::new(42, 7);
        assert_eq!(shard_of_branch(&g.branch()), Some(7));
        assert_eq!(shard_of_call_id(&g.call_id(), 8), 7);
        assert_eq!(shard_of_branch(b"z9hG4bKother"), None);
        let s = shard_of_call_id(b"abc@host", 4);
        assert_eq!(s, shard_of_call_id(b"abc@host", 4));
        assert!(s < 4);
    }
}
