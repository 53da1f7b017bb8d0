//! The pure half of the control plane, one per engine shard: the [`PortBook`], the limits and
//! destination rules every stream is checked against, and the commands for the relay that
//! the sessions' changes produce. Nothing here binds a socket, reads a clock or takes a lock:
//! the engine asks, gets ports at once (so SDP is rewritten in the same step), and hands the
//! queued [`MediaCommand`]s to its driver, which binds and reports failures back.

use std::collections::VecDeque;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::flow::StreamSpec;
use crate::forwarder::StreamId;
use crate::policy::{built_in, DestinationPolicy};
use crate::ports::{MediaInterface, PortBook};
use crate::session::{Session, SideOptions};
use crate::RelayError;

/// What every shard's book is made from.
#[derive(Clone)]
pub struct BookConfig {
    pub interfaces: Vec<MediaInterface>,
    /// m-lines relayed per call; further ones are rejected (port 0).
    pub max_streams: usize,
    /// The configuration's rules for media destinations, beyond the relay's own.
    pub policy: Option<Arc<dyn DestinationPolicy>>,
}

impl std::fmt::Debug for BookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BookConfig")
            .field("interfaces", &self.interfaces)
            .field("max_streams", &self.max_streams)
            .finish_non_exhaustive()
    }
}

/// What the relay must do for a shard's streams, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaCommand {
    /// Bind the pairs (interface index, RTP port) of side A and side B and start relaying;
    /// `tap` names where copies of the packets go (the driver's pcap file, SEMS's `log_rtp`).
    Open { stream: StreamId, ports: [(usize, u16); 2], spec: StreamSpec, tap: Option<Arc<str>> },
    /// New addresses or options for a stream.
    Update { stream: StreamId, spec: StreamSpec },
    /// Stop relaying and close the sockets; the pairs come back when their leases drop.
    Close { stream: StreamId },
}

#[derive(Debug)]
pub struct MediaBook {
    cfg: BookConfig,
    ports: PortBook,
    /// Stream ids carry the shard in their top byte, so they are unique in the process.
    next_stream: StreamId,
    commands: VecDeque<MediaCommand>,
    /// Streams that got no ports.
    pub allocation_failures: u64,
    /// Streams refused for where their SDP aimed them.
    pub destinations_refused: u64,
    /// Streams refused for their security (SRTP policy, unusable `a=crypto` lines).
    pub insecure_refused: u64,
    /// SRTP master keys the relay hands out (SDES): ChaCha20 from a seed the driver draws
    /// from the OS, so this stays free of I/O.
    keys: ChaCha20Rng,
}

impl MediaBook {
    /// `seed`: 32 bytes from the OS (a constant in tests), for SRTP keys.
    pub fn new(cfg: BookConfig, shard: u8, shards: usize, seed: [u8; 32]) -> Self {
        let ports = PortBook::new(&cfg.interfaces, usize::from(shard), shards);
        Self {
            cfg,
            ports,
            next_stream: (u64::from(shard) << 56) + 1,
            commands: VecDeque::new(),
            allocation_failures: 0,
            destinations_refused: 0,
            insecure_refused: 0,
            keys: ChaCha20Rng::from_seed(seed),
        }
    }

    /// Fresh material for an SRTP master key and salt.
    pub(crate) fn key_material(&mut self) -> [u8; crate::srtp::MAX_MATERIAL] {
        let mut m = [0u8; crate::srtp::MAX_MATERIAL];
        self.keys.fill_bytes(&mut m);
        m
    }

    /// Media of a new call. Fails when an interface is not configured.
    pub fn session(&self, sides: [SideOptions; 2]) -> Result<Session, RelayError> {
        let index = |s: &SideOptions| self.interface(&s.interface);
        let ifaces = [index(&sides[0])?, index(&sides[1])?];
        Ok(Session::new(sides, ifaces))
    }

    fn interface(&self, name: &str) -> Result<usize, RelayError> {
        self.cfg.interfaces.iter().position(|i| i.name == name).ok_or_else(|| RelayError::UnknownInterface(name.into()))
    }

    pub fn interfaces(&self) -> &[MediaInterface] {
        &self.cfg.interfaces
    }

    pub fn max_streams(&self) -> usize {
        self.cfg.max_streams
    }

    /// The next command for the relay.
    pub fn pop_command(&mut self) -> Option<MediaCommand> {
        self.commands.pop_front()
    }

    /// The relay closed a pair's sockets (its lease dropped): the pair is free again.
    pub fn released(&mut self, iface: usize, port: u16) {
        self.ports.give_back(iface, port);
    }

    /// The relay could not bind this pair: it is not lent again.
    pub fn set_aside(&mut self, iface: usize, port: u16) {
        self.ports.set_aside(iface, port);
    }

    pub fn ports_in_use(&self) -> usize {
        self.ports.in_use()
    }

    /// Why a side on interface `iface` must not send to `dest` (see `policy.rs`).
    pub(crate) fn refuse_destination(&self, iface: usize, dest: SocketAddr) -> Option<&'static str> {
        let side = self.cfg.interfaces.get(iface)?;
        built_in(self.cfg.interfaces.iter(), side, dest)
            .or_else(|| self.cfg.policy.as_ref().and_then(|p| p.refuse(dest)))
    }

    /// A pair on each side's interface and the command to open the stream; an error (counted)
    /// naming the interface that has none left.
    pub(crate) fn open(
        &mut self,
        ifaces: [usize; 2],
        spec: StreamSpec,
        tap: Option<Arc<str>>,
    ) -> Result<(StreamId, [u16; 2]), RelayError> {
        let mut taken = [0; 2];
        for (n, &iface) in ifaces.iter().enumerate() {
            match self.ports.take(iface) {
                Some(port) => taken[n] = port,
                None => {
                    if n == 1 {
                        self.ports.give_back(ifaces[0], taken[0]);
                    }
                    self.allocation_failures += 1;
                    let interface = self.cfg.interfaces.get(iface).map(|i| i.name.clone()).unwrap_or_default();
                    return Err(RelayError::NoPorts { interface });
                }
            }
        }
        let stream = self.next_stream;
        self.next_stream += 1;
        let ports = [(ifaces[0], taken[0]), (ifaces[1], taken[1])];
        self.commands.push_back(MediaCommand::Open { stream, ports, spec, tap });
        Ok((stream, taken))
    }

    /// Pairs `ports` on each side's interface, exactly, and the command to open the stream.
    pub(crate) fn open_exact(
        &mut self,
        ifaces: [usize; 2],
        ports: [u16; 2],
        spec: StreamSpec,
    ) -> Result<StreamId, RelayError> {
        for n in 0..2 {
            if !self.ports.take_exact(ifaces[n], ports[n]) {
                if n == 1 {
                    self.ports.give_back(ifaces[0], ports[0]);
                }
                let interface = self.cfg.interfaces.get(ifaces[n]).map(|i| i.name.clone()).unwrap_or_default();
                return Err(RelayError::PortTaken { interface, port: ports[n] });
            }
        }
        let stream = self.next_stream;
        self.next_stream += 1;
        let ports = [(ifaces[0], ports[0]), (ifaces[1], ports[1])];
        // A call taken over from another node: its pcap file stayed there.
        self.commands.push_back(MediaCommand::Open { stream, ports, spec, tap: None });
        Ok(stream)
    }

    pub(crate) fn update(&mut self, stream: StreamId, spec: StreamSpec) {
        self.commands.push_back(MediaCommand::Update { stream, spec });
    }

    pub(crate) fn close(&mut self, stream: StreamId) {
        self.commands.push_back(MediaCommand::Close { stream });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Offered, DEFAULT_MAX_STREAMS};

    fn book() -> MediaBook {
        let iface = MediaInterface {
            name: "m".into(),
            bind: "192.0.2.1".parse().expect("ip"),
            advertise: None,
            port_min: 40000,
            port_max: 40015,
        };
        MediaBook::new(
            BookConfig { interfaces: vec![iface], max_streams: DEFAULT_MAX_STREAMS, policy: None },
            3,
            4,
            [7; 32],
        )
    }

    fn side() -> SideOptions {
        SideOptions {
            interface: "m".into(),
            symmetric: false,
            dtmf_filtering: false,
            signalling: None,
            srtp: Default::default(),
        }
    }

    fn offer(port: u16) -> Offered {
        Offered {
            relayable: true,
            rejected: false,
            rtp: Some(SocketAddr::from(([198, 51, 100, 7], port))),
            rtcp: None,
            held: false,
            dtmf_payload_type: None,
            sends_first: false,
            security: Default::default(),
        }
    }

    /// No socket anywhere: the ports are lent and named at once, the relay is told in order,
    /// and a closed stream's pairs stay lent until the relay says its sockets are closed.
    #[test]
    fn ports_are_lent_at_once_and_come_back_only_when_released() {
        let mut b = book();
        let mut s = b.session([side(), side()]).expect("session");
        let adverts = s.update(&mut b, 0, &[offer(6000)]).adverts;
        let advert = adverts[0].clone().expect("anchored");
        assert_eq!((advert.addr, b.ports_in_use()), ("192.0.2.1".parse().expect("ip"), 2));
        let Some(MediaCommand::Open { stream, ports, .. }) = b.pop_command() else {
            panic!("an open first")
        };
        assert_eq!(stream >> 56, 3, "the shard is in the stream id");
        assert_eq!(ports[1].1, advert.port, "the B side's pair is what A's SDP goes to");
        s.update(&mut b, 1, &[offer(7000)]);
        assert!(matches!(b.pop_command(), Some(MediaCommand::Update { stream: u, .. }) if u == stream));
        s.close(&mut b);
        assert_eq!((b.pop_command(), b.pop_command()), (Some(MediaCommand::Close { stream }), None));
        assert_eq!(b.ports_in_use(), 2, "still lent: the sockets may be open");
        for (iface, port) in ports {
            b.released(iface, port);
        }
        assert_eq!(b.ports_in_use(), 0);
        // Shard 3 of 4 owns two of the range's eight pairs (40006, 40014): one stream's worth.
        let mut held = b.session([side(), side()]).expect("session");
        assert!(held.update(&mut b, 0, &[offer(6000)]).failure.is_none());
        let mut s = b.session([side(), side()]).expect("session");
        assert!(s.update(&mut b, 0, &[offer(6000)]).nothing_anchored());
        assert_eq!(b.allocation_failures, 1);
        // An SDP aimed at the relay's own ports is refused and counted.
        let own = Offered { rtp: Some(SocketAddr::from(([192, 0, 2, 1], 40002))), ..offer(0) };
        assert_eq!(s.update(&mut b, 0, &[own]).refused.len(), 1);
        assert_eq!(b.destinations_refused, 1);
    }

    /// A session taken over by another book keeps its ports and opens its streams anew; one
    /// whose ports are not free there takes nothing.
    #[test]
    fn a_recorded_session_is_restored_on_the_same_ports() {
        let mut b = book();
        let mut s = b.session([side(), side()]).expect("session");
        s.update(&mut b, 0, &[offer(6000), Offered { rejected: true, ..offer(6002) }]);
        s.update(&mut b, 1, &[offer(7000), Offered { rejected: true, ..offer(7002) }]);
        let record = s.record();
        assert_eq!(record.streams.len(), 2);
        assert!(record.streams[1].is_none(), "the rejected m-line has no stream");
        let ports = record.streams[0].clone().expect("the first m-line is relayed").ports;

        let mut other = book();
        let restored = Session::restore(&mut other, &record).expect("restored");
        assert_eq!(restored.record(), record, "the same ports, sides and state");
        let Some(MediaCommand::Open { ports: opened, spec, .. }) = other.pop_command() else {
            panic!("the stream opens anew")
        };
        assert_eq!([opened[0].1, opened[1].1], ports);
        assert_eq!(spec, record.streams[0].clone().expect("stream").spec);
        assert_eq!(other.ports_in_use(), 2);

        // Taken already (the restored session holds them): nothing more is taken.
        let again = Session::restore(&mut other, &record);
        assert!(matches!(again, Err(RelayError::PortTaken { .. })), "{again:?}");
        assert_eq!(other.ports_in_use(), 2);
        assert_eq!(other.pop_command(), None);
    }
}
