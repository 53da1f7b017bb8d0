//! SRTP in the relay (RFC 3711), keyed by SDES (RFC 4568).
//!
//! - [`sdes`]: the `a=crypto` attribute, read and written.
//! - [`negotiation`]: per stream, the pure offer/answer of keys with each side: what a side
//!   encrypts with, what the relay encrypts towards it with, and what to write in the SDP.
//! - [`contexts`]: the data path's per-side SRTP contexts, built from the keys signalling
//!   settled ([`SideCrypto`] in the stream's spec).
//!
//! The data path only sees [`SideCrypto`]: keys, not where they came from, so DTLS-SRTP can
//! key the same contexts later.

pub mod contexts;
pub mod negotiation;
pub mod sdes;

/// The SRTP crypto suites the relay speaks (RFC 4568 §6.2, RFC 7714 §14.2), in the order it
/// offers them: the one every SDES peer has first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Suite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
    AeadAes128Gcm,
}

impl Suite {
    pub const ALL: [Self; 3] = [Self::AesCm128HmacSha1_80, Self::AesCm128HmacSha1_32, Self::AeadAes128Gcm];

    pub fn name(self) -> &'static str {
        match self {
            Self::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Self::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Self::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name().eq_ignore_ascii_case(name))
    }

    /// Master key and master salt, concatenated as SDES carries them (RFC 4568 §6.1).
    pub fn material_len(self) -> usize {
        match self {
            Self::AesCm128HmacSha1_80 | Self::AesCm128HmacSha1_32 => 16 + 14,
            // RFC 7714 §12: a 96-bit salt.
            Self::AeadAes128Gcm => 16 + 12,
        }
    }

    fn index(self) -> usize {
        match self {
            Self::AesCm128HmacSha1_80 => 0,
            Self::AesCm128HmacSha1_32 => 1,
            Self::AeadAes128Gcm => 2,
        }
    }
}

/// The longest key-and-salt of the suites.
pub const MAX_MATERIAL: usize = 30;

/// A master key and salt for one suite, and the MKI its packets carry, if any.
#[derive(Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MasterKey {
    pub suite: Suite,
    material: [u8; MAX_MATERIAL],
    /// The MKI's bytes as packets carry them (big-endian), `mki_len` of them (0: none).
    mki: [u8; 4],
    mki_len: u8,
}

impl std::fmt::Debug for MasterKey {
    // Keys never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("suite", &self.suite).finish_non_exhaustive()
    }
}

impl MasterKey {
    /// `None` unless `material` is exactly the suite's key-and-salt length.
    pub fn new(suite: Suite, material: &[u8]) -> Option<Self> {
        if material.len() != suite.material_len() {
            return None;
        }
        let mut m = [0u8; MAX_MATERIAL];
        m[..material.len()].copy_from_slice(material);
        Some(Self { suite, material: m, mki: [0; 4], mki_len: 0 })
    }

    /// The key whose packets carry MKI `value` in `len` bytes (RFC 3711 §3.1; SDES
    /// `|value:len`, RFC 4568 §6.1). `None` beyond 4 bytes or when `value` does not fit.
    pub fn with_mki(mut self, value: u32, len: u8) -> Option<Self> {
        if !(1..=4).contains(&len) || (len < 4 && value >> (8 * u32::from(len)) != 0) {
            return None;
        }
        let bytes = value.to_be_bytes();
        self.mki[..usize::from(len)].copy_from_slice(&bytes[4 - usize::from(len)..]);
        self.mki_len = len;
        Some(self)
    }

    /// The MKI packets under this key carry.
    pub fn mki(&self) -> Option<&[u8]> {
        (self.mki_len > 0).then(|| &self.mki[..usize::from(self.mki_len)])
    }

    /// Key and salt, as SDES carries them.
    pub fn material(&self) -> &[u8] {
        &self.material[..self.suite.material_len()]
    }

    pub fn key(&self) -> &[u8] {
        &self.material[..16]
    }

    pub fn salt(&self) -> &[u8] {
        &self.material[16..self.suite.material_len()]
    }
}

/// How the relay speaks to one side of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Policy {
    /// Packets and `a=crypto` lines go through untouched (both sides passthrough), or, beside
    /// a side the relay terminates, the side is spoken to in the kind it offered or was offered.
    #[default]
    Passthrough,
    /// Plain RTP (`RTP/AVP`): SRTP offered by this side is refused.
    Plain,
    /// SRTP keyed by SDES with the relay's own keys; `required`: plain RTP is refused, else it
    /// is taken when the side offers or answers it.
    Sdes { required: bool },
}

/// What the data path needs of one side: whether it speaks SRTP, the key it encrypts with and
/// the key the relay encrypts towards it with. A side that speaks SRTP without a key yet (the
/// answer has not come) gets nothing through: plain media never goes where SRTP was agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct SideCrypto {
    pub srtp: bool,
    pub recv: Option<MasterKey>,
    pub send: Option<MasterKey>,
    /// The side's SDP has `a=rtcp-mux`: RTCP packet types on the RTP port are SRTCP.
    #[serde(default)]
    pub mux: bool,
}

#[cfg(test)]
mod tests;
