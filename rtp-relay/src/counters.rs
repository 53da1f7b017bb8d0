//! Counters the data path writes and the control plane / metrics read. Only the worker that owns
//! a stream writes its counters (plain relaxed atomics, no contention); readers take snapshots.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a received packet was not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    /// The other side's address is unknown (no SDP yet, held with 0.0.0.0, port 0).
    NoDestination = 0,
    /// Symmetric RTP: a source other than the latched one after the latching window.
    ForeignSource = 1,
    /// `rtprelay_dtmf_filtering`: an RFC 4733 event packet.
    DtmfFiltered = 2,
    /// The kernel refused to send (buffer full, unreachable).
    SendError = 3,
    /// Too short to be RTP/RTCP (fewer than 4 bytes: not even an RTCP header).
    Malformed = 4,
    /// Over the endpoint's packet rate (`media.max_packet_rate`).
    RateLimited = 5,
    /// Sent from one of the relay's own sockets (a forwarding loop, or a spoofed source).
    OwnSource = 6,
    /// SRTP/SRTCP whose authentication tag does not check (forged, corrupted, or plain RTP
    /// from a side that agreed on SRTP).
    SrtpAuthentication = 7,
    /// SRTP/SRTCP seen before or older than the replay window.
    SrtpReplay = 8,
    /// SRTP agreed with a side whose key is not known yet (its answer has not come).
    SrtpNoKey = 9,
    /// A new SSRC towards an SRTP side whose context holds its maximum already.
    SrtpSsrcLimit = 10,
}

impl DropReason {
    pub const COUNT: usize = 11;
    pub const ALL: [Self; Self::COUNT] = [
        Self::NoDestination,
        Self::ForeignSource,
        Self::DtmfFiltered,
        Self::SendError,
        Self::Malformed,
        Self::RateLimited,
        Self::OwnSource,
        Self::SrtpAuthentication,
        Self::SrtpReplay,
        Self::SrtpNoKey,
        Self::SrtpSsrcLimit,
    ];

    /// Drops that say nothing of the call's own media: they never count as activity.
    pub fn is_rejection(self) -> bool {
        matches!(
            self,
            Self::ForeignSource
                | Self::Malformed
                | Self::RateLimited
                | Self::OwnSource
                | Self::SrtpAuthentication
                | Self::SrtpReplay
                | Self::SrtpNoKey
        )
    }
    pub fn label(self) -> &'static str {
        match self {
            Self::NoDestination => "no_destination",
            Self::ForeignSource => "foreign_source",
            Self::DtmfFiltered => "dtmf_filtered",
            Self::SendError => "send_error",
            Self::Malformed => "malformed",
            Self::RateLimited => "rate_limited",
            Self::OwnSource => "own_source",
            Self::SrtpAuthentication => "srtp_authentication",
            Self::SrtpReplay => "srtp_replay",
            Self::SrtpNoKey => "srtp_no_key",
            Self::SrtpSsrcLimit => "srtp_ssrc_limit",
        }
    }
}

/// Counters of what one side of a stream sent us.
#[derive(Debug, Default)]
pub struct SideCounters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub forwarded: AtomicU64,
    pub drops: [AtomicU64; DropReason::COUNT],
    pub latches: AtomicU64,
    /// Milliseconds since the relay's epoch of the last packet received (0 = none yet).
    pub last_rx_ms: AtomicU64,
}

/// Counters of one stream (one m-line of a call), index 0 = A side, 1 = B side.
#[derive(Debug, Default)]
pub struct StreamCounters {
    pub sides: [SideCounters; 2],
}

impl StreamCounters {
    /// The last time either side sent anything, in relay-epoch milliseconds (0 = never).
    pub fn last_rx_ms(&self) -> u64 {
        self.sides.iter().map(|s| s.last_rx_ms.load(Relaxed)).max().unwrap_or(0)
    }
    pub fn snapshot(&self) -> [SideSnapshot; 2] {
        [SideSnapshot::of(&self.sides[0]), SideSnapshot::of(&self.sides[1])]
    }
}

/// A copy of [`SideCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SideSnapshot {
    pub packets: u64,
    pub bytes: u64,
    pub forwarded: u64,
    pub drops: [u64; DropReason::COUNT],
    pub latches: u64,
}

impl SideSnapshot {
    pub fn add(&mut self, o: &Self) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.forwarded += o.forwarded;
        for (a, b) in self.drops.iter_mut().zip(o.drops) {
            *a += b;
        }
        self.latches += o.latches;
    }

    fn of(c: &SideCounters) -> Self {
        Self {
            packets: c.packets.load(Relaxed),
            bytes: c.bytes.load(Relaxed),
            forwarded: c.forwarded.load(Relaxed),
            drops: c.drops.each_ref().map(|d| d.load(Relaxed)),
            latches: c.latches.load(Relaxed),
        }
    }
}

/// Totals of one forwarder worker, added once per batch. Padded so two workers never share a
/// cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct WorkerCounters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub forwarded: AtomicU64,
    pub drops: [AtomicU64; DropReason::COUNT],
    pub latches: AtomicU64,
    pub streams: AtomicU64,
}

/// Relay-wide totals: the sum over workers, plus the control plane's own counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub packets: u64,
    pub bytes: u64,
    pub forwarded: u64,
    pub drops: [u64; DropReason::COUNT],
    pub latches: u64,
    /// Streams installed in the forwarder now.
    pub streams: u64,
}

impl RelayStats {
    pub(crate) fn add_worker(&mut self, w: &WorkerCounters) {
        self.packets += w.packets.load(Relaxed);
        self.bytes += w.bytes.load(Relaxed);
        self.forwarded += w.forwarded.load(Relaxed);
        for (t, d) in self.drops.iter_mut().zip(&w.drops) {
            *t += d.load(Relaxed);
        }
        self.latches += w.latches.load(Relaxed);
        self.streams += w.streams.load(Relaxed);
    }
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }
}
