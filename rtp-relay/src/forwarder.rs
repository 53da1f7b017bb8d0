//! The boundary between signalling and the data path. Signalling installs, updates and removes
//! streams; a forwarder moves their packets. The userspace forwarder is the reference; an
//! offload backend implements the same trait (and may hand flows back to userspace at will).

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::SystemTime;

use crate::counters::{StreamCounters, WorkerCounters};
use crate::flow::StreamSpec;
use crate::ports::PortLease;

/// Identifies a stream for the life of the relay.
pub type StreamId = u64;

/// The four bound sockets of a stream: `[side][component]`, side 0 = A, component 0 = RTP.
#[derive(Debug)]
pub struct StreamSockets {
    pub sockets: [[UdpSocket; 2]; 2],
    /// Their local addresses, same indexes.
    pub locals: [[SocketAddr; 2]; 2],
    /// The pool ports behind the sockets: dropped after them, they go back to the pool.
    pub leases: [PortLease; 2],
}

/// A stream handed to a forwarder.
#[derive(Debug)]
pub struct NewStream {
    pub id: StreamId,
    pub sockets: StreamSockets,
    pub spec: StreamSpec,
    pub counters: Arc<StreamCounters>,
    /// Where copies of the stream's packets go (SEMS's `log_rtp`); `None` for nearly all.
    pub tap: Option<Arc<dyn PacketTap>>,
}

/// Takes a copy of each packet of a stream as it crossed the wire: what came in (before SRTP
/// is taken off) and what went out (after it is put on). Called on the forwarder's threads, so
/// it must not block: a tap that cannot keep up drops copies, never packets.
pub trait PacketTap: Send + Sync + std::fmt::Debug {
    fn packet(&self, at: SystemTime, from: SocketAddr, to: SocketAddr, bytes: &[u8]);
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    #[error("the forwarder has stopped")]
    Stopped,
    #[error("cannot watch the stream's sockets: {0}")]
    Io(#[from] std::io::Error),
}

pub trait Forwarder: Send + Sync {
    /// Starts relaying a stream; the forwarder owns its sockets until [`remove`](Self::remove).
    fn add(&self, stream: NewStream) -> Result<(), ForwardError>;
    /// New SDP addresses or options for a stream (a re-offer, an answer, hold).
    fn update(&self, id: StreamId, spec: StreamSpec);
    /// Stops relaying and closes the stream's sockets.
    fn remove(&self, id: StreamId);
    /// The counters of each worker (for relay-wide totals).
    fn worker_counters(&self) -> Vec<Arc<WorkerCounters>>;
}
