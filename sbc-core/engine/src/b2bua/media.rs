//! Media anchoring in the B2BUA: every SDP relayed from one leg to the other goes through the
//! call's relay session (when its profile has `enable_rtprelay`), whatever carries it (INVITE,
//! re-INVITE, UPDATE, PRACK, ACK, 18x, 2xx). Each body updates the sending side's addresses and
//! is rewritten to the SBC's ports on the receiving side, so no offer/answer state is needed
//! here. Ports come from the shard's pure [`MediaBook`] at once; the driver binds them
//! (`Output::Media`) and reports a failure back ([`Engine::handle_media_error`]). A call
//! without media activity for the configured time is torn down: at each check the engine asks
//! the driver when its streams last saw a packet (`Output::MediaProbe`) and decides on the
//! answer ([`Engine::handle_media_activity`]). With `aleg_srtp`/`bleg_srtp` the relay also
//! terminates SRTP: the session settles keys with each leg (`rtp-relay/src/srtp/`) and the
//! body gets the leg's transport and `a=crypto` lines.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use profiles::profile::SrtpMode;
use profiles::sdp::media::{sdp_range, MediaDesc, MediaSdp};
use profiles::sdp::security::StreamSecurity;
use profiles::sdp::NothingLeft;
use rtp_relay::forwarder::StreamId;
use rtp_relay::session::SdpKind;
use rtp_relay::srtp::negotiation::{Rewrite, Role, Security};
use rtp_relay::srtp::{sdes, Policy};
use rtp_relay::{BookConfig, MediaBook, Offered, RelayError, Session, SideOptions};

use super::apply::CallRules;
use super::call::Side;
use super::{CallHandle, Counter, Engine, Output};
use crate::sip::msg::Message;

/// Media settings of the engine: what each shard's book is made of, and the timeouts.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    pub book: BookConfig,
    /// Shards the media ports are divided between.
    pub shards: usize,
    /// No packets either way for this long ends an answered call (zero: never).
    pub timeout: Duration,
    /// The same while every stream is held.
    pub hold_timeout: Duration,
}

/// Why a body could not go on.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The profile's SDP filters left no media: 488.
    NothingLeft,
    /// No media ports (pool exhausted, interface missing): 503.
    NoMedia(RelayError),
    /// Every stream refused by the legs' SRTP policies or for unusable `a=crypto` lines: 488.
    Insecure(&'static str),
}

impl From<NothingLeft> for BodyError {
    fn from(_: NothingLeft) -> Self {
        Self::NothingLeft
    }
}

/// The profile's SDP pipeline for `towards`, then the relay's anchoring of an offer. Fails
/// when streams were offered and none got ports (a new call: 503) or none was secure enough
/// (488).
pub(crate) fn prepare_body<'b>(
    rules: &CallRules,
    media: Option<(&mut Session, &mut MediaBook)>,
    towards: Side,
    sent_by: &str,
    body: &'b [u8],
) -> Result<Cow<'b, [u8]>, BodyError> {
    let filtered = rules.filter_body(towards, sent_by, body)?;
    let Some((session, book)) = media else { return Ok(filtered) };
    let anchored = anchor(session, book, towards, Some(Role::Offer), &filtered);
    if let Some(why) = anchored.insecure {
        return Err(BodyError::Insecure(why));
    }
    match anchored.failure {
        Some(e) => Err(BodyError::NoMedia(e)),
        None => Ok(anchored.body.map_or(filtered, Cow::Owned)),
    }
}

/// Like [`prepare_body`] for a body that cannot be refused (a response, an ACK): a body the
/// filters would empty goes as it came, and streams without ports go out rejected. `role`:
/// offer or answer, when the message says.
pub(crate) fn prepare_body_anyway<'b>(
    rules: &CallRules,
    media: Option<(&mut Session, &mut MediaBook)>,
    towards: Side,
    role: Option<Role>,
    sent_by: &str,
    body: &'b [u8],
) -> Cow<'b, [u8]> {
    let filtered = rules.filter_body(towards, sent_by, body).unwrap_or(Cow::Borrowed(body));
    match media {
        Some((session, book)) => anchor_or_reject(session, book, towards, role, filtered),
        None => filtered,
    }
}

/// Anchors a body going `towards` a leg; streams without ports or refused for their security
/// are rejected (port 0). `role`: offer or answer, when the message says (an INVITE or UPDATE
/// offers, a response to one with SDP answers it, an ACK answers; a PRACK does not say).
pub(crate) fn anchor_or_reject<'b>(
    session: &mut Session,
    book: &mut MediaBook,
    towards: Side,
    role: Option<Role>,
    body: Cow<'b, [u8]>,
) -> Cow<'b, [u8]> {
    let anchored = anchor(session, book, towards, role, &body);
    if let Some(e) = anchored.failure {
        tracing::warn!(error = %e, "no media ports for a stream; it is rejected");
    }
    anchored.body.map_or(body, Cow::Owned)
}

/// What anchoring did to a body.
struct Anchored {
    /// The rewritten body (`None`: no SDP in it).
    body: Option<Vec<u8>>,
    /// Why nothing could be anchored for lack of ports.
    failure: Option<RelayError>,
    /// Why every stream was refused for its security.
    insecure: Option<&'static str>,
}

/// The SDP of a body (all of it, or its `application/sdp` part): where it is, parsed, and
/// its m-lines as the relay reads them. `None`: no SDP.
fn sdp_of(body: &[u8]) -> Option<(std::ops::Range<usize>, MediaSdp, Vec<Offered>)> {
    let range = sdp_range(body)?;
    let sdp = MediaSdp::parse(&body[range.clone()])?;
    let streams = sdp.streams().iter().map(offered).collect();
    Some((range, sdp, streams))
}

/// Anchors the SDP of `whole` going `towards` a leg. SDP in a multipart body is anchored in
/// place; the other parts stay byte for byte.
fn anchor(session: &mut Session, book: &mut MediaBook, towards: Side, role: Option<Role>, whole: &[u8]) -> Anchored {
    let none = Anchored { body: None, failure: None, insecure: None };
    let Some((range, sdp, offered)) = sdp_of(whole) else { return none };
    let kind = SdpKind { role, origin: sdp.origin() };
    let result = session.update_sdp(book, towards.other().idx(), kind, &offered);
    for (m_line, reason, dest) in &result.refused {
        tracing::warn!(m_line, reason, %dest, "SDP aims a stream where media must not go; it is rejected");
    }
    for (m_line, reason) in &result.insecure {
        tracing::warn!(m_line, reason, from = ?towards.other(), "SRTP: stream refused");
    }
    let nothing_anchored = result.nothing_anchored();
    let insecure = result.all_insecure().then(|| result.insecure.first().map_or("", |(_, why)| *why));
    let ports: Vec<Option<u16>> = result.adverts.iter().map(|a| a.as_ref().map(|a| a.port)).collect();
    // A stream not anchored keeps no key of the sender's when the relay terminates SRTP.
    let unanchored = if session.terminates_srtp() { StreamSecurity::Strip } else { StreamSecurity::Keep };
    let security: Vec<StreamSecurity> = result
        .adverts
        .iter()
        .map(|a| a.as_ref().map_or_else(|| unanchored.clone(), |a| stream_security(&a.security)))
        .collect();
    let sdp = sdp.anchor_secured(session.advertised(book, towards.idx()), &ports, &security);
    let mut rewritten = Vec::with_capacity(whole.len() + 64);
    rewritten.extend_from_slice(&whole[..range.start]);
    rewritten.extend_from_slice(&sdp);
    rewritten.extend_from_slice(&whole[range.end..]);
    let failure = if nothing_anchored { result.failure } else { None };
    Anchored { body: Some(rewritten), failure, insecure }
}

/// Why an offer in `body` going `towards` a leg would be refused whole for its security (the
/// legs' SRTP policies), checked before it changes anything: an in-dialog offer refused this
/// way gets 488 and the call's media stays as it is.
pub(crate) fn offer_refusal(session: &Session, towards: Side, body: &[u8]) -> Option<&'static str> {
    // Without SRTP terminated nothing is refused for it: the body is not parsed for nothing.
    if !session.terminates_srtp() {
        return None;
    }
    let (_, _, offered) = sdp_of(body)?;
    session.refusal(towards.other().idx(), Role::Offer, &offered)
}

/// The 2xx to a session refresh the SBC sent to `from` with its last SDP: the keys that leg
/// sends with now (its address changes are not followed; docs/limitations.md).
pub(crate) fn refresh_answered(session: &mut Session, book: &mut MediaBook, from: Side, body: &[u8]) {
    if !session.terminates_srtp() {
        return;
    }
    let Some((_, _, offered)) = sdp_of(body) else { return };
    session.refresh_answered(book, from.idx(), &offered);
}

fn stream_security(r: &Rewrite) -> StreamSecurity {
    match r {
        Rewrite::Keep => StreamSecurity::Keep,
        Rewrite::Plain => StreamSecurity::Plain,
        Rewrite::Sdes(lines) => StreamSecurity::Sdes(lines.iter().map(|(tag, key)| sdes::format(*tag, key)).collect()),
    }
}

/// The relay's policy for a leg set to `mode`.
fn policy(mode: SrtpMode, required: bool) -> Policy {
    match mode {
        SrtpMode::Passthrough => Policy::Passthrough,
        SrtpMode::Rtp => Policy::Plain,
        SrtpMode::Sdes => Policy::Sdes { required },
    }
}

fn offered(d: &MediaDesc) -> Offered {
    let rtp = d.addr.filter(|_| !d.zero_addr).map(|ip| SocketAddr::new(ip, d.port));
    let rtcp = match d.rtcp {
        Some((port, addr)) => addr.or(d.addr).filter(|a| !a.is_unspecified()).map(|ip| SocketAddr::new(ip, port)),
        None => None,
    };
    Offered {
        relayable: d.udp,
        rejected: d.rejected(),
        rtp,
        rtcp,
        held: d.held(),
        dtmf_payload_type: d.telephone_event,
        sends_first: d.sends_first,
        // A line without a readable tag cannot be answered: it is left out.
        security: Security {
            savp: d.secure,
            other_transport: !d.rtp,
            rtcp_mux: d.rtcp_mux,
            lines: d.crypto.iter().filter_map(|v| sdes::parse(v)).collect(),
        },
    }
}

/// `P-MsgFlags` with the symmetric-RTP bit (value 2). SEMS reads the hex digits least
/// significant first, so the bit lives in the first digit.
pub(super) fn msgflags_symmetric(msg: &Message) -> bool {
    msg.other_header("P-MsgFlags")
        .and_then(|v| v.iter().find(|b| !b.is_ascii_whitespace()).copied())
        .and_then(|c| (c as char).to_digit(16))
        .is_some_and(|n| n & 2 != 0)
}

impl Engine {
    /// A relay session for a new call whose profile anchors media; `None` when it does not.
    /// `ifaces` are the signalling interfaces of the legs (the default media interfaces),
    /// `peers` where each leg's signalling comes from (the caller's source, the callee's
    /// destination): media from those hosts is preferred (`rtp-relay/src/flow.rs`).
    pub(super) fn open_media(
        &self,
        rules: &CallRules,
        msg: &Message,
        ifaces: [&str; 2],
        peers: [Option<std::net::IpAddr>; 2],
    ) -> Result<Option<Session>, RelayError> {
        let r = &rules.profile.rtprelay;
        let Some(book) = self.media.as_ref().filter(|_| r.enabled) else { return Ok(None) };
        let forced = r.msgflags_symmetric && msgflags_symmetric(msg);
        let side = |iface: &Option<String>, n: usize, symmetric: bool| SideOptions {
            interface: iface.clone().unwrap_or_else(|| ifaces[n].to_string()),
            symmetric: symmetric || forced,
            dtmf_filtering: r.dtmf_filtering,
            signalling: peers[n],
            srtp: policy(r.srtp[n], r.sdes_required),
        };
        let a = side(&r.aleg_interface, 0, r.aleg_force_symmetric.unwrap_or(r.force_symmetric));
        let b = side(&r.interface, 1, r.force_symmetric);
        // `log_rtp`: the driver copies the streams' packets into the call's pcap file.
        let tap = rules.plan.pcap_rtp.as_deref().map(Into::into);
        book.session([a, b]).map(|s| Some(s.tapped(tap)))
    }

    /// A session that will not be used (the call failed before it started): its ports go back.
    pub(super) fn discard_media(&mut self, session: Option<Session>) {
        if let (Some(mut s), Some(book)) = (session, self.media.as_mut()) {
            s.close(book);
        }
    }

    /// When the next media-activity check of an answered call is due.
    pub(super) fn first_media_check(&self, now: Instant) -> Option<Instant> {
        let rt = self.cfg.media.as_ref()?;
        let shortest = [rt.timeout, rt.hold_timeout].into_iter().filter(|d| !d.is_zero()).min()?;
        now.checked_add(shortest)
    }

    /// The media check of call `h` is due: ask the driver when its streams last carried a
    /// packet. Until the answer comes, a fallback check stays armed.
    pub(super) fn media_check(&mut self, now: Instant, h: CallHandle) {
        let Some(rt) = self.cfg.media.clone() else { return };
        let Some(call) = self.calls.get_mut(&h) else { return };
        let Some(confirmed) = call.confirmed_mut() else { return };
        confirmed.media_check = now.checked_add(rt.timeout.max(rt.hold_timeout));
        let Some(session) = call.media.as_ref() else { return };
        let streams: Vec<StreamId> = session.stream_ids().into_iter().flatten().collect();
        if streams.is_empty() {
            // Nothing relayed (every stream rejected, or over TCP): nothing to time; a later
            // offer may add a stream.
            return;
        }
        self.out.push_back(Output::MediaProbe { call: h, streams });
    }

    /// The driver's answer to a probe: when the call's streams last saw a packet (`None`:
    /// never). Tears the call down if silent for too long, else looks again when it could be.
    /// Only an answered call is timed: an answer that finds the call ending is dropped.
    pub fn handle_media_activity(&mut self, now: Instant, h: CallHandle, last: Option<Instant>) {
        let Some(rt) = self.cfg.media.clone() else { return };
        let Some(call) = self.calls.get_mut(&h) else { return };
        let Some(on_hold) = call.media.as_ref().map(|s| s.on_hold()) else { return };
        let span = call.span.clone();
        let Some(confirmed) = call.confirmed_mut() else { return };
        let since = [Some(confirmed.answered), last].into_iter().flatten().max().unwrap_or(now);
        let limit = if on_hold { rt.hold_timeout } else { rt.timeout };
        if limit.is_zero() {
            // Not timed in this state; the state may change (hold ↔ active).
            confirmed.media_check = now.checked_add(rt.timeout.max(rt.hold_timeout));
        } else if now.saturating_duration_since(since) >= limit {
            let _e = span.entered();
            tracing::info!(silent_s = now.saturating_duration_since(since).as_secs(), "no media, ending the call");
            self.stats.bump(Counter::MediaTimeouts);
            self.tear_down(now, h, 200, "media_timeout");
            return;
        } else {
            confirmed.media_check = since.checked_add(limit).map(|at| at.max(now + Duration::from_secs(1)));
        }
        self.reschedule_call(h);
    }

    /// The driver could not open `stream`. A pair another process holds (`busy`) is set aside
    /// for good. The SDP naming the stream is out already: the stream is forgotten, and a call
    /// left with no stream relayed is ended (503 before the answer, BYE after), while one with
    /// others (an audio stream beside a failed video one) goes on.
    pub fn handle_media_error(&mut self, now: Instant, stream: StreamId, busy: Option<(usize, u16)>) {
        let Some(book) = self.media.as_mut() else { return };
        book.allocation_failures += 1;
        if let Some((iface, port)) = busy {
            book.set_aside(iface, port);
        }
        let owner = self.calls.iter_mut().find(|(_, c)| c.media.as_ref().is_some_and(|m| m.has_stream(stream)));
        let Some((&h, call)) = owner else { return };
        let Some(session) = call.media.as_mut() else { return };
        session.drop_stream(stream);
        let _e = call.span.clone().entered();
        if session.open_streams() > 0 {
            tracing::warn!(stream, "a media stream could not be opened; the call goes on without it");
            return;
        }
        tracing::warn!(stream, "media ports did not bind; ending the call");
        self.tear_down(now, h, 503, "media_error");
    }

    /// The driver closed the sockets of a pair (interface index, RTP port): it is free again.
    pub fn handle_media_released(&mut self, iface: usize, port: u16) {
        if let Some(book) = self.media.as_mut() {
            book.released(iface, port);
        }
    }

    /// Media ports this shard has lent out.
    pub fn media_ports_in_use(&self) -> usize {
        self.media.as_ref().map_or(0, MediaBook::ports_in_use)
    }
}
