//! A shard's media work: it carries out its engine's relay commands (bind, open, update,
//! close), answers its activity probes from the relay's counters, and hands back the pairs
//! whose sockets the forwarder has closed. The engine only ever sees port numbers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use rtp_relay::counters::StreamCounters;
use rtp_relay::forwarder::StreamId;
use rtp_relay::ports::ReleaseSink;
use rtp_relay::{MediaCommand, PacketTap, Relay, SideSnapshot};
use tokio::sync::mpsc;

use super::capture::{PcapFile, PcapWriter};

pub(super) struct ShardMedia {
    relay: Arc<Relay>,
    streams: HashMap<StreamId, Arc<StreamCounters>>,
    sink: ReleaseSink,
    /// Pairs whose leases dropped, from the forwarder's threads. Unbounded, but never holds
    /// more than the shard's pairs.
    released: mpsc::UnboundedReceiver<(usize, u16)>,
    /// Where tapped streams write (`log_rtp`).
    pcap: Arc<PcapWriter>,
}

impl ShardMedia {
    pub(super) fn new(relay: Arc<Relay>, pcap: Arc<PcapWriter>) -> Self {
        let (tx, released) = mpsc::unbounded_channel();
        let sink: ReleaseSink = Arc::new(move |iface, port| {
            // A shard that is gone (the process stops) needs its ports no more.
            let _ = tx.send((iface, port));
        });
        Self { relay, streams: HashMap::new(), sink, released, pcap }
    }

    /// Carries out one command; returns a stream that could not be opened, with the pair that
    /// would not bind.
    pub(super) fn run(&mut self, cmd: MediaCommand) -> Option<(StreamId, Option<(usize, u16)>)> {
        match cmd {
            MediaCommand::Open { stream, ports, spec, tap } => {
                // `log_rtp`: the stream holds the call's pcap file as long as it relays.
                let tap = tap.map(|path| PcapFile::hold(&self.pcap, path) as Arc<dyn PacketTap>);
                self.open(stream, ports, spec, tap)
            }
            MediaCommand::Update { stream, spec } => {
                self.relay.update(stream, spec);
                None
            }
            MediaCommand::Close { stream } => {
                self.streams.remove(&stream);
                self.relay.close(stream);
                None
            }
        }
    }

    fn open(
        &mut self,
        stream: StreamId,
        ports: [(usize, u16); 2],
        spec: rtp_relay::flow::StreamSpec,
        tap: Option<Arc<dyn PacketTap>>,
    ) -> Option<(StreamId, Option<(usize, u16)>)> {
        match self.relay.open(stream, ports, spec, tap, &self.sink) {
            Ok(counters) => {
                self.streams.insert(stream, counters);
                None
            }
            Err(e) => {
                tracing::warn!(stream, error = %e.error, "cannot open a media stream");
                Some((stream, e.busy))
            }
        }
    }

    /// When any of `streams` last saw a packet.
    pub(super) fn last_activity(&self, streams: &[StreamId]) -> Option<Instant> {
        streams.iter().filter_map(|s| self.streams.get(s)).filter_map(|c| self.relay.last_activity(c)).max()
    }

    /// Counters per side summed over `streams`.
    pub(super) fn totals(&self, streams: &[StreamId]) -> [SideSnapshot; 2] {
        let mut t = [SideSnapshot::default(); 2];
        for c in streams.iter().filter_map(|s| self.streams.get(s)) {
            for (acc, side) in t.iter_mut().zip(c.snapshot()) {
                acc.add(&side);
            }
        }
        t
    }

    /// The next pair the forwarder gave back (waits).
    pub(super) async fn released(&mut self) -> Option<(usize, u16)> {
        self.released.recv().await
    }

    /// A pair given back already, if any.
    pub(super) fn try_released(&mut self) -> Option<(usize, u16)> {
        self.released.try_recv().ok()
    }
}
