//! One call's media, pure: what each side's SDP says, which streams are relayed on which
//! ports, and what to advertise to the other side. Each change goes through the shard's
//! [`MediaBook`], which lends the ports and queues the relay's commands; [`Session::close`]
//! gives everything back when the call ends.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::book::MediaBook;
use crate::flow::{RemoteSpec, StreamSpec};
use crate::forwarder::StreamId;
use crate::srtp::negotiation::{Rewrite, Role, Roles, Security, StreamSdes};
use crate::srtp::Policy;
use crate::RelayError;

/// How the relay treats one side of a call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SideOptions {
    /// Media interface whose ports this side is given.
    pub interface: String,
    /// Latch: send to where this side's packets come from (NAT).
    pub symmetric: bool,
    /// Drop RFC 4733 event packets this side sends.
    pub dtmf_filtering: bool,
    /// The host this side's signalling comes from (a preferred media source, see `flow.rs`).
    pub signalling: Option<IpAddr>,
    /// SRTP with this side (`srtp/`).
    #[serde(default)]
    pub srtp: Policy,
}

/// One m-line of an SDP, as far as the relay cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offered {
    /// UDP-based (RTP, RTCP, UDPTL): something the relay can carry.
    pub relayable: bool,
    /// Port 0: the stream is rejected or removed.
    pub rejected: bool,
    /// Where the side wants RTP and RTCP; `None` with a zero address (hold, RFC 2543).
    pub rtp: Option<SocketAddr>,
    pub rtcp: Option<SocketAddr>,
    /// sendonly/recvonly/inactive or a zero address.
    pub held: bool,
    /// The telephone-event payload type, if any.
    pub dtmf_payload_type: Option<u8>,
    /// The side says it sends first from behind NAT (`a=direction:active`): latch on it even
    /// without forced symmetric RTP.
    pub sends_first: bool,
    /// Its secure transport and `a=crypto` lines (SDES).
    pub security: Security,
}

/// What to write in the SDP going to the other side for one m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub addr: IpAddr,
    /// RTP port; RTCP is the next one.
    pub port: u16,
    /// Its transport and `a=crypto` lines.
    pub security: Rewrite,
}

/// What kind of SDP an update carries: `role` when the message says (an INVITE or UPDATE
/// offers, a response to one answers it, an ACK answers), else it is told from the session's
/// state (`srtp/negotiation.rs`, [`Roles`]); `origin` is its `o=` line.
#[derive(Debug, Clone, Copy, Default)]
pub struct SdpKind<'a> {
    pub role: Option<Role>,
    pub origin: Option<&'a str>,
}

/// Streams (m-lines) relayed per call by default; further ones are rejected, so one SDP
/// cannot take a pool's ports (an audio and a video stream with room to spare).
pub const DEFAULT_MAX_STREAMS: usize = 4;

#[derive(Debug)]
struct Stream {
    id: StreamId,
    ports: [u16; 2],
    spec: StreamSpec,
    held: [bool; 2],
    /// The telephone-event payload type each side's SDP names.
    dtmf_pt: [Option<u8>; 2],
    sdes: StreamSdes,
}

/// A session as data, for a call another engine takes over: the sides' options and, per
/// m-line, the ports both SDPs name and what signalling said. Stream ids and what latching
/// learned are not in it: the adopting relay opens the streams anew and latches again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionRecord {
    pub sides: [SideOptions; 2],
    pub streams: Vec<Option<StreamRecord>>,
    /// Which side's offer awaits its answer (SDES).
    #[serde(default)]
    pub roles: Roles,
}

/// One relayed m-line of a [`SessionRecord`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamRecord {
    /// The RTP port of side A's pair and of side B's (RTCP is the next one).
    pub ports: [u16; 2],
    pub spec: StreamSpec,
    pub held: [bool; 2],
    pub dtmf_payload_types: [Option<u8>; 2],
    /// The SDES state (keys both ways): the adopting relay goes on with the same keys.
    #[serde(default)]
    pub sdes: StreamSdes,
}

/// What [`Session::update`] did with an SDP.
#[derive(Debug, Default)]
pub struct Anchoring {
    /// Per m-line: what to advertise to the other side; `None`: write port 0 (rejected, not
    /// relayable, or no ports).
    pub adverts: Vec<Option<Advert>>,
    /// Why some stream got no ports (the others are anchored).
    pub failure: Option<RelayError>,
    /// Streams refused for where their SDP aimed them: (m-line index, reason, address).
    pub refused: Vec<(usize, &'static str, SocketAddr)>,
    /// Streams refused for their security (SRTP policy, unusable `a=crypto`): (m-line, reason).
    pub insecure: Vec<(usize, &'static str)>,
}

impl Anchoring {
    /// Streams were offered but none could be anchored for lack of ports.
    pub fn nothing_anchored(&self) -> bool {
        self.failure.is_some() && self.adverts.iter().all(Option::is_none)
    }

    /// Every stream was refused for its security: the SDP cannot be taken (488).
    pub fn all_insecure(&self) -> bool {
        !self.insecure.is_empty() && self.adverts.iter().all(Option::is_none)
    }
}

/// The media of one call; side index 0 = A (caller), 1 = B (callee).
#[derive(Debug)]
pub struct Session {
    sides: [SideOptions; 2],
    /// Index of each side's media interface in the book.
    ifaces: [usize; 2],
    streams: Vec<Option<Stream>>,
    /// Offer or answer, for SDES.
    roles: Roles,
    /// Where copies of the streams' packets go (see [`MediaCommand::Open`](crate::MediaCommand)).
    tap: Option<Arc<str>>,
}

impl Session {
    pub(crate) fn new(sides: [SideOptions; 2], ifaces: [usize; 2]) -> Self {
        Self { sides, ifaces, streams: Vec::new(), roles: Roles::default(), tap: None }
    }

    /// Streams opened from now on have their packets copied to the tap named `tap`.
    pub fn tapped(mut self, tap: Option<Arc<str>>) -> Self {
        self.tap = tap;
        self
    }

    /// [`update_sdp`](Self::update_sdp) of an SDP whose kind is told from the session's state.
    pub fn update(&mut self, book: &mut MediaBook, from: usize, media: &[Offered]) -> Anchoring {
        self.update_sdp(book, from, SdpKind::default(), media)
    }

    /// An SDP from side `from` (0 = A, 1 = B) with these m-lines, in order. A stream that gets
    /// no ports, or that the sides' SRTP policies refuse, is rejected; the others go on.
    pub fn update_sdp(&mut self, book: &mut MediaBook, from: usize, kind: SdpKind<'_>, media: &[Offered]) -> Anchoring {
        let from = from.min(1);
        let to = 1 - from;
        let policies = [self.sides[0].srtp, self.sides[1].srtp];
        let role = if policies == [Policy::Passthrough; 2] {
            Role::Offer
        } else {
            self.roles.role(from, kind.role, kind.origin)
        };
        let max_streams = book.max_streams();
        if self.streams.len() < media.len().min(max_streams) {
            self.streams.resize_with(media.len().min(max_streams), || None);
        }
        let mut out = Vec::with_capacity(media.len());
        let mut failure = None;
        let mut refused = Vec::new();
        let mut insecure = Vec::new();
        for (i, m) in media.iter().enumerate() {
            if i >= max_streams {
                out.push(None);
                continue;
            }
            // RTCP goes to its own address, or to the RTP port + 1: both are checked.
            let rtcp = m.rtcp.or_else(|| m.rtp.map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1))));
            let aimed_badly = [m.rtp, rtcp]
                .into_iter()
                .flatten()
                .find_map(|dest| book.refuse_destination(self.ifaces[from], dest).map(|r| (r, dest)));
            if let Some((reason, dest)) = aimed_badly.filter(|_| !m.rejected && m.relayable) {
                book.destinations_refused += 1;
                refused.push((i, reason, dest));
            }
            let mut sdes = self.streams[i].as_ref().map(|s| s.sdes.clone()).unwrap_or_default();
            let security = if m.rejected || !m.relayable || aimed_badly.is_some() {
                Err(None)
            } else {
                sdes.step(policies, from, role, &m.security, &mut || book.key_material()).map_err(Some)
            };
            let security = match security {
                Ok(rewrite) => rewrite,
                Err(why) => {
                    if let Some(why) = why {
                        book.insecure_refused += 1;
                        insecure.push((i, why));
                    }
                    if let Some(s) = self.streams[i].take() {
                        book.close(s.id);
                    }
                    out.push(None);
                    continue;
                }
            };
            let remote = RemoteSpec {
                addr: [m.rtp, rtcp],
                symmetric: self.sides[from].symmetric || m.sends_first,
                drop_payload_type: None,
                signalling: self.sides[from].signalling,
                crypto: sdes.side_crypto(from),
            };
            let filtering = [self.sides[0].dtmf_filtering, self.sides[1].dtmf_filtering];
            match self.streams[i].as_mut() {
                Some(s) => {
                    s.held[from] = m.held;
                    s.dtmf_pt[from] = m.dtmf_payload_type;
                    let mut spec = s.spec;
                    spec.remotes[from] = remote;
                    spec.remotes[to].crypto = sdes.side_crypto(to);
                    s.sdes = sdes;
                    set_dtmf_drops(&mut spec, s.dtmf_pt, filtering);
                    if spec != s.spec {
                        s.spec = spec;
                        book.update(s.id, s.spec);
                    }
                }
                None => {
                    let mut spec = StreamSpec::default();
                    spec.remotes[from] = remote;
                    spec.remotes[to].crypto = sdes.side_crypto(to);
                    let mut dtmf_pt = [None; 2];
                    dtmf_pt[from] = m.dtmf_payload_type;
                    set_dtmf_drops(&mut spec, dtmf_pt, filtering);
                    let (id, ports) = match book.open(self.ifaces, spec, self.tap.clone()) {
                        Ok(opened) => opened,
                        Err(e) => {
                            failure = Some(e);
                            out.push(None);
                            continue;
                        }
                    };
                    let mut held = [false; 2];
                    held[from] = m.held;
                    self.streams[i] = Some(Stream { id, ports, spec, held, dtmf_pt, sdes });
                }
            }
            let addr = self.advertised(book, to);
            out.push(self.streams[i].as_ref().map(|s| Advert { addr, port: s.ports[to], security }));
        }
        Anchoring { adverts: out, failure, refused, insecure }
    }

    /// Why this SDP from `from` would be refused whole for its security (every relayable
    /// stream refused), without changing anything: an in-dialog offer refused before it
    /// disturbs the call's media.
    pub fn refusal(&self, from: usize, role: Role, media: &[Offered]) -> Option<&'static str> {
        let policies = [self.sides[0].srtp, self.sides[1].srtp];
        let mut why = None;
        for (i, m) in media.iter().enumerate().filter(|(_, m)| m.relayable && !m.rejected) {
            let sdes = self.streams.get(i).and_then(Option::as_ref).map(|s| s.sdes.clone()).unwrap_or_default();
            match sdes.check(policies, from, role, &m.security) {
                Ok(()) => return None,
                Err(e) => why = Some(e),
            }
        }
        why
    }

    /// The answer to an offer the relay made on its own (a session refresh re-sending the
    /// last SDP): only the keys `from` now sends with are taken; nothing goes anywhere.
    pub fn refresh_answered(&mut self, book: &mut MediaBook, from: usize, media: &[Offered]) {
        let from = from.min(1);
        let policy = self.sides[from].srtp;
        for (i, m) in media.iter().enumerate() {
            let Some(s) = self.streams.get_mut(i).and_then(Option::as_mut) else { continue };
            let mut sdes = s.sdes.clone();
            if m.security.other_transport || sdes.learn(policy, from, Role::Answer, &m.security).is_err() {
                continue;
            }
            let crypto = sdes.side_crypto(from);
            s.sdes = sdes;
            if s.spec.remotes[from].crypto != crypto {
                s.spec.remotes[from].crypto = crypto;
                book.update(s.id, s.spec);
            }
        }
    }

    /// The relay terminates SRTP on either side of some stream: SDP it cannot anchor must
    /// not carry keys across.
    pub fn terminates_srtp(&self) -> bool {
        self.sides.iter().any(|s| s.srtp != Policy::Passthrough)
    }

    /// Side `side`'s signalling now comes from `host` (a failover to another next hop): its
    /// streams prefer that host's media from now on.
    pub fn set_signalling(&mut self, book: &mut MediaBook, side: usize, host: Option<IpAddr>) {
        let side = side.min(1);
        self.sides[side].signalling = host;
        for s in self.streams.iter_mut().flatten() {
            if s.spec.remotes[side].signalling != host {
                s.spec.remotes[side].signalling = host;
                book.update(s.id, s.spec);
            }
        }
    }

    /// The address SDP going to `side` names (its media interface's advertised address).
    pub fn advertised(&self, book: &MediaBook, side: usize) -> IpAddr {
        book.interfaces()[self.ifaces[side.min(1)]].advertised()
    }

    /// Every open stream is held by one side or the other.
    pub fn on_hold(&self) -> bool {
        let mut open = self.streams.iter().flatten().peekable();
        open.peek().is_some() && open.all(|s| s.held[0] || s.held[1])
    }

    /// The relay's stream of each m-line (`None` for rejected ones).
    pub fn stream_ids(&self) -> Vec<Option<StreamId>> {
        self.streams.iter().map(|s| s.as_ref().map(|s| s.id)).collect()
    }

    pub fn open_streams(&self) -> usize {
        self.streams.iter().flatten().count()
    }

    /// Whether `stream` is one of this call's.
    pub fn has_stream(&self, stream: StreamId) -> bool {
        self.streams.iter().flatten().any(|s| s.id == stream)
    }

    /// The relay could not open `stream`: it is forgotten (its pairs came back with their
    /// leases); a later offer for the m-line opens a new one.
    pub fn drop_stream(&mut self, stream: StreamId) {
        for s in &mut self.streams {
            if s.as_ref().is_some_and(|s| s.id == stream) {
                *s = None;
            }
        }
    }

    /// The session as data (see [`SessionRecord`]).
    pub fn record(&self) -> SessionRecord {
        let stream = |s: &Stream| StreamRecord {
            ports: s.ports,
            spec: s.spec,
            held: s.held,
            dtmf_payload_types: s.dtmf_pt,
            sdes: s.sdes.clone(),
        };
        SessionRecord {
            sides: self.sides.clone(),
            streams: self.streams.iter().map(|s| s.as_ref().map(stream)).collect(),
            roles: self.roles.clone(),
        }
    }

    /// A session taken over from `record`: the same ports, taken from `book` (this shard's
    /// share must hold them free, so both SDPs stay true), every stream opened anew. Nothing
    /// is taken when one port is not free.
    pub fn restore(book: &mut MediaBook, record: &SessionRecord) -> Result<Self, RelayError> {
        // New contexts on the same keys would restart their packet indexes: the peers would
        // see replays, and the relay would encrypt at indexes it used already.
        if record.streams.iter().flatten().any(|r| r.sdes.terminated()) {
            return Err(RelayError::SrtpNotAdoptable);
        }
        let mut session = book.session(record.sides.clone())?;
        let ifaces = session.ifaces;
        let mut opened: Vec<Option<Stream>> = Vec::with_capacity(record.streams.len());
        for r in &record.streams {
            let Some(r) = r else {
                opened.push(None);
                continue;
            };
            match book.open_exact(ifaces, r.ports, r.spec) {
                Ok(id) => opened.push(Some(Stream {
                    id,
                    ports: r.ports,
                    spec: r.spec,
                    held: r.held,
                    dtmf_pt: r.dtmf_payload_types,
                    sdes: r.sdes.clone(),
                })),
                Err(e) => {
                    session.streams = opened;
                    session.close(book);
                    return Err(e);
                }
            }
        }
        session.streams = opened;
        session.roles = record.roles.clone();
        Ok(session)
    }

    /// The call is over: every stream is closed (its pairs come back when the relay has closed
    /// the sockets).
    pub fn close(&mut self, book: &mut MediaBook) {
        for s in std::mem::take(&mut self.streams).into_iter().flatten() {
            book.close(s.id);
        }
    }
}

/// A sender uses the payload numbers of the SDP it received (RFC 3264 §5.1), so events from a
/// side carry the other side's telephone-event number (its own until that is known).
fn set_dtmf_drops(spec: &mut StreamSpec, dtmf_pt: [Option<u8>; 2], filtering: [bool; 2]) {
    for side in 0..2 {
        spec.remotes[side].drop_payload_type = dtmf_pt[1 - side].or(dtmf_pt[side]).filter(|_| filtering[side]);
    }
}

#[cfg(test)]
mod tests;
