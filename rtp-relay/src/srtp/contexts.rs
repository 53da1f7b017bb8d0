//! The data path's SRTP: per side of a stream, a receiving context for what the side sends
//! and a sending context for what the relay sends it, keyed from its [`SideCrypto`].
//!
//! Over `libsrtp` (a pure-Rust libsrtp): a context keyed for any SSRC creates the state of a
//! new SSRC only once a packet of it authenticates, so a stranger spraying forged SSRCs costs
//! one failed check each and no memory (a context that created state first would grow without
//! bound). Replay protection on receive uses its 128-packet window.

use libsrtp::{ProtectionProfile, RecvSession, SendSession, SrtpError, StreamConfig};

use super::{MasterKey, SideCrypto, Suite};

/// Why a packet could not go through a side's contexts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoDrop {
    /// SRTP is agreed but its key is not known yet (the answer has not come).
    NoKey,
    /// The authentication tag does not check (forged, corrupted, or plain RTP).
    Authentication,
    /// Seen already, or older than the replay window (RFC 3711 §3.3.2).
    Replay,
    /// Too short or not RTP/RTCP, or too long once protected.
    Malformed,
}

impl From<SrtpError> for CryptoDrop {
    fn from(e: SrtpError) -> Self {
        match e {
            SrtpError::Authentication => Self::Authentication,
            SrtpError::InvalidPacketIndex => Self::Replay,
            _ => Self::Malformed,
        }
    }
}

fn profiles(suite: Suite) -> (ProtectionProfile, ProtectionProfile) {
    match suite {
        Suite::AesCm128HmacSha1_80 => (ProtectionProfile::Aes128CmHmacSha180, ProtectionProfile::Aes128CmHmacSha180),
        // SRTCP keeps the 80-bit tag with the 32-bit suite (RFC 4568 §6.2.2).
        Suite::AesCm128HmacSha1_32 => (ProtectionProfile::Aes128CmHmacSha132, ProtectionProfile::Aes128CmHmacSha180),
        Suite::AeadAes128Gcm => (ProtectionProfile::AeadAes128Gcm, ProtectionProfile::AeadAes128Gcm),
    }
}

fn config(key: &MasterKey) -> StreamConfig {
    let (rtp, rtcp) = profiles(key.suite);
    StreamConfig::new(vec![libsrtp::MasterKey::new(key.key(), key.salt(), &None)], &rtp, &rtcp)
}

fn recv_session(key: &MasterKey) -> Option<RecvSession> {
    let mut s = RecvSession::new();
    s.add_stream(None, &config(key)).ok()?;
    Some(s)
}

fn send_session(key: &MasterKey) -> Option<SendSession> {
    let mut cfg = config(key);
    // The relay encrypts what the other side sends; a repeated sequence number from there
    // (a retransmission, a restarted source) must still go out.
    cfg.allow_send_repeat(true);
    let mut s = SendSession::new();
    s.add_stream(None, &cfg).ok()?;
    Some(s)
}

/// One side's contexts.
pub struct SideContexts {
    keys: SideCrypto,
    recv: Option<RecvSession>,
    send: Option<SendSession>,
    /// The packet moves through here: the contexts work on owned buffers.
    scratch: Vec<u8>,
}

impl std::fmt::Debug for SideContexts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SideContexts").field("keys", &self.keys).finish_non_exhaustive()
    }
}

impl SideContexts {
    pub fn new(keys: SideCrypto) -> Self {
        let mut s = Self { keys: SideCrypto::default(), recv: None, send: None, scratch: Vec::new() };
        s.rekey(keys);
        s
    }

    /// New keys from signalling: a context whose key did not change keeps its state (the
    /// rollover count and replay window of a long call).
    pub fn rekey(&mut self, keys: SideCrypto) {
        if keys.recv != self.keys.recv || self.recv.is_none() {
            self.recv = keys.recv.as_ref().and_then(recv_session);
        }
        if keys.send != self.keys.send || self.send.is_none() {
            self.send = keys.send.as_ref().and_then(send_session);
        }
        self.keys = keys;
    }

    /// The relay speaks SRTP with this side.
    pub fn srtp(&self) -> bool {
        self.keys.srtp
    }

    /// Decrypts and authenticates `buf[..len]` in place (SRTCP when `rtcp`); the plain length.
    pub fn unprotect(&mut self, rtcp: bool, buf: &mut [u8], len: usize) -> Result<usize, CryptoDrop> {
        let Some(session) = self.recv.as_mut() else { return Err(CryptoDrop::NoKey) };
        let packet = take(&mut self.scratch, buf, len)?;
        let plain = if rtcp { session.rtcp_unprotect(packet) } else { session.rtp_unprotect(packet) }?;
        put_back(&mut self.scratch, plain, buf)
    }

    /// Encrypts `buf[..len]` in place for this side; the protected length.
    pub fn protect(&mut self, rtcp: bool, buf: &mut [u8], len: usize) -> Result<usize, CryptoDrop> {
        let Some(session) = self.send.as_mut() else { return Err(CryptoDrop::NoKey) };
        let packet = take(&mut self.scratch, buf, len)?;
        let sealed = if rtcp { session.rtcp_protect(packet) } else { session.rtp_protect(packet) }?;
        put_back(&mut self.scratch, sealed, buf)
    }
}

/// The packet in the scratch buffer (kept between packets, so no allocation per packet).
fn take(scratch: &mut Vec<u8>, buf: &[u8], len: usize) -> Result<Vec<u8>, CryptoDrop> {
    let data = buf.get(..len).ok_or(CryptoDrop::Malformed)?;
    let mut v = std::mem::take(scratch);
    v.clear();
    v.reserve(buf.len());
    v.extend_from_slice(data);
    Ok(v)
}

fn put_back(scratch: &mut Vec<u8>, out: Vec<u8>, buf: &mut [u8]) -> Result<usize, CryptoDrop> {
    let n = out.len();
    let fits = buf.get_mut(..n).map(|dst| dst.copy_from_slice(&out)).is_some();
    *scratch = out;
    if fits {
        Ok(n)
    } else {
        Err(CryptoDrop::Malformed)
    }
}
