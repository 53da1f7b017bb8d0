//! The far ends of SRTP calls: SDES lines read and written, and packets sealed and opened by
//! webrtc-rs's SRTP (not the implementation sbcd uses, so a test checks the two agree).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rtc_srtp::context::Context;
use rtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc_srtp::protection_profile::ProtectionProfile;

/// One `a=crypto` line: tag, suite name, key and salt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crypto {
    pub tag: u32,
    pub suite: String,
    pub material: Vec<u8>,
}

impl Crypto {
    /// A key of `suite` from `seed` (deterministic: tests say which bytes they sent).
    pub fn new(tag: u32, suite: &str, seed: u8) -> Self {
        let len = if suite == "AEAD_AES_128_GCM" { 28 } else { 30 };
        Self { tag, suite: suite.into(), material: (0..len).map(|i| seed.wrapping_add(i)).collect() }
    }

    /// `a=crypto:...` with its line end.
    pub fn line(&self) -> String {
        format!("a=crypto:{} {} inline:{}\r\n", self.tag, self.suite, STANDARD.encode(&self.material))
    }

    /// Every `a=crypto` line of an SDP body.
    pub fn all_in(sdp: &str) -> Vec<Self> {
        sdp.lines()
            .filter_map(|l| l.strip_prefix("a=crypto:"))
            .filter_map(|v| {
                let mut f = v.split_whitespace();
                let tag = f.next()?.parse().ok()?;
                let suite = f.next()?.to_string();
                let key = f.next()?.strip_prefix("inline:")?.split('|').next()?;
                Some(Self { tag, suite, material: STANDARD.decode(key).ok()? })
            })
            .collect()
    }

    fn context(&self) -> Context {
        let profile = match self.suite.as_str() {
            "AES_CM_128_HMAC_SHA1_80" => ProtectionProfile::Aes128CmHmacSha1_80,
            "AES_CM_128_HMAC_SHA1_32" => ProtectionProfile::Aes128CmHmacSha1_32,
            "AEAD_AES_128_GCM" => ProtectionProfile::AeadAes128Gcm,
            other => panic!("a suite the tests do not speak: {other}"),
        };
        let provider = rtc_srtp::crypto::default_provider().expect("ring provider");
        let (key, salt) = self.material.split_at(16);
        Context::new(
            key,
            salt,
            profile,
            Some(srtp_replay_protection(64)),
            Some(srtcp_replay_protection(64)),
            provider.crypto(),
        )
        .expect("SRTP context")
    }

    /// A context that seals packets with this key.
    pub fn sealer(&self) -> Sealer {
        Sealer(self.context())
    }

    /// A context that opens packets sealed with this key.
    pub fn opener(&self) -> Opener {
        Opener(self.context())
    }
}

pub struct Sealer(Context);

impl Sealer {
    pub fn rtp(&mut self, plain: &[u8]) -> Vec<u8> {
        self.0.encrypt_rtp(plain).expect("seal RTP").to_vec()
    }
    pub fn rtcp(&mut self, plain: &[u8]) -> Vec<u8> {
        self.0.encrypt_rtcp(plain).expect("seal RTCP").to_vec()
    }
}

pub struct Opener(Context);

impl Opener {
    /// `None`: it does not authenticate (or is a replay).
    pub fn rtp(&mut self, sealed: &[u8]) -> Option<Vec<u8>> {
        self.0.decrypt_rtp(sealed).ok().map(|b| b.to_vec())
    }
    pub fn rtcp(&mut self, sealed: &[u8]) -> Option<Vec<u8>> {
        self.0.decrypt_rtcp(sealed).ok().map(|b| b.to_vec())
    }
}

/// An RTP packet: PCMU, `seq`, SSRC `ssrc`, and `payload`.
pub fn rtp(ssrc: u32, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0, (seq >> 8) as u8, seq as u8, 0, 0, 0x01, 0x40];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}
