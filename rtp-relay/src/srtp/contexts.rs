//! The data path's SRTP: per side of a stream, a receiving context for what the side sends
//! and a sending context for what the relay sends it, keyed from its [`SideCrypto`].
//!
//! Over `libsrtp` (a pure-Rust libsrtp): a receiving context keyed for any SSRC keeps the
//! state of a new SSRC only once a packet of it authenticates, so a stranger spraying forged
//! SSRCs costs one failed check each and leaves nothing behind. What authenticates is still
//! bounded: each context holds at most [`MAX_SSRCS`] SSRCs. Receiving, the one unused longest
//! makes room (a phone that changes SSRC at every hold keeps working); sending, a new SSRC
//! beyond the bound is refused, because forgetting one and meeting it again would encrypt
//! at packet indexes already used under the same key.
//!
//! Replays are refused with a 128-packet window on receive, and on send too: the relay never
//! encrypts twice at one index (the plain side repeating or going back), which with AES-CM
//! would reveal the XOR of two plaintexts and with AES-GCM the authentication key.

use libsrtp::{ProtectionProfile, RecvSession, SendSession, SrtpError, StreamConfig};

use super::{MasterKey, SideCrypto, Suite};
use crate::flow::ssrc_of as ssrc;

/// SSRCs one context keeps state for (a call has one or two per direction; more come with
/// transfers and re-INVITEs).
pub const MAX_SSRCS: usize = 32;

/// Why a packet could not go through a side's contexts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoDrop {
    /// SRTP is agreed but its key is not known yet (the answer has not come).
    NoKey,
    /// The authentication tag does not check (forged, corrupted, or plain RTP).
    Authentication,
    /// Seen already or older than the replay window (RFC 3711 §3.3.2), or, sending, an index
    /// the relay has encrypted at already.
    Replay,
    /// A new SSRC towards a side whose context holds [`MAX_SSRCS`] already.
    SsrcLimit,
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
    let mki = key.mki().map(<[u8]>::to_vec);
    StreamConfig::new(vec![libsrtp::MasterKey::new(key.key(), key.salt(), &mki)], &rtp, &rtcp)
}

/// A libsrtp session and the SSRCs it holds state for, most recently used last.
struct Tracked<S> {
    session: S,
    ssrcs: Vec<u32>,
}

impl<S> Tracked<S> {
    fn knows(&self, ssrc: u32) -> bool {
        self.ssrcs.contains(&ssrc)
    }

    /// `ssrc` was just used; the SSRC it displaces (receiving), if any.
    fn used(&mut self, ssrc: u32) -> Option<u32> {
        if let Some(i) = self.ssrcs.iter().position(|&s| s == ssrc) {
            let s = self.ssrcs.remove(i);
            self.ssrcs.push(s);
            return None;
        }
        self.ssrcs.push(ssrc);
        (self.ssrcs.len() > MAX_SSRCS).then(|| self.ssrcs.remove(0))
    }
}

fn recv_session(key: &MasterKey) -> Option<Tracked<RecvSession>> {
    let mut s = RecvSession::new();
    s.add_stream(None, &config(key)).ok()?;
    Some(Tracked { session: s, ssrcs: Vec::new() })
}

fn send_session(key: &MasterKey) -> Option<Tracked<SendSession>> {
    let mut s = SendSession::new();
    s.add_stream(None, &config(key)).ok()?;
    Some(Tracked { session: s, ssrcs: Vec::new() })
}

/// One side's contexts.
pub struct SideContexts {
    keys: SideCrypto,
    recv: Option<Tracked<RecvSession>>,
    /// The receiving context of the side's previous key, tried when the current one fails:
    /// a side that re-offers a new key may go on with the old one until the exchange ends,
    /// or for good when its offer fails. Dropped once the new key authenticates a packet.
    previous: Option<Tracked<RecvSession>>,
    send: Option<Tracked<SendSession>>,
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
        let mut s = Self { keys: SideCrypto::default(), recv: None, previous: None, send: None, scratch: Vec::new() };
        s.rekey(keys);
        s
    }

    /// New keys from signalling: a context whose key did not change keeps its state (the
    /// rollover count and replay window of a long call).
    pub fn rekey(&mut self, keys: SideCrypto) {
        if keys.recv != self.keys.recv || self.recv.is_none() {
            let old = std::mem::replace(&mut self.recv, keys.recv.as_ref().and_then(recv_session));
            if old.is_some() {
                self.previous = old;
            }
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

    /// The side's SDP multiplexes RTCP on the RTP port.
    pub fn mux(&self) -> bool {
        self.keys.mux
    }

    /// Decrypts and authenticates `buf[..len]` in place (SRTCP when `rtcp`); the plain length.
    pub fn unprotect(&mut self, rtcp: bool, buf: &mut [u8], len: usize) -> Result<usize, CryptoDrop> {
        let first = match self.recv.as_mut() {
            Some(current) => open(current, &mut self.scratch, rtcp, buf, len),
            None => Err(CryptoDrop::NoKey),
        };
        match (first, self.previous.as_mut()) {
            (Ok(n), _) => {
                self.previous = None;
                Ok(n)
            }
            (Err(CryptoDrop::Authentication | CryptoDrop::NoKey), Some(previous)) => {
                open(previous, &mut self.scratch, rtcp, buf, len)
            }
            (Err(e), _) => Err(e),
        }
    }

    /// Encrypts `buf[..len]` in place for this side; the protected length.
    pub fn protect(&mut self, rtcp: bool, buf: &mut [u8], len: usize) -> Result<usize, CryptoDrop> {
        let Some(t) = self.send.as_mut() else { return Err(CryptoDrop::NoKey) };
        let id = buf.get(..len).and_then(|p| ssrc(rtcp, p)).ok_or(CryptoDrop::Malformed)?;
        if !t.knows(id) && t.ssrcs.len() >= MAX_SSRCS {
            return Err(CryptoDrop::SsrcLimit);
        }
        let packet = take(&mut self.scratch, buf, len)?;
        let sealed = if rtcp { t.session.rtcp_protect(packet) } else { t.session.rtp_protect(packet) }?;
        t.used(id);
        put_back(&mut self.scratch, sealed, buf)
    }
}

fn open(
    t: &mut Tracked<RecvSession>,
    scratch: &mut Vec<u8>,
    rtcp: bool,
    buf: &mut [u8],
    len: usize,
) -> Result<usize, CryptoDrop> {
    let id = buf.get(..len).and_then(|p| ssrc(rtcp, p)).ok_or(CryptoDrop::Malformed)?;
    let packet = take(scratch, buf, len)?;
    let plain = if rtcp { t.session.rtcp_unprotect(packet) } else { t.session.rtp_unprotect(packet) }?;
    if let Some(gone) = t.used(id) {
        let _ = t.session.remove_stream(gone);
    }
    put_back(scratch, plain, buf)
}

/// The packet in the scratch buffer (kept between packets).
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
