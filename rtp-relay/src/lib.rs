//! Media anchoring for the SBC.
//!
//! - [`book`] and [`session`]: the control plane's pure half, in the engine. A shard's
//!   [`MediaBook`] lends media ports and queues [`MediaCommand`]s; a [`Session`] is one call's
//!   media, fed the SDP signalling relays.
//! - [`relay`]: the driver's half: a [`Relay`] binds the ports and carries out the commands
//!   over a [`Forwarder`].
//! - [`flow`]: the sans-IO per-stream state the data path reads (destinations, latching).
//! - [`forwarder`]: the trait between the two, so an offload backend (XDP/AF_XDP, io_uring)
//!   can take flows later without changing callers; [`abi`] is the record it would mirror.
//! - [`userspace`]: the reference forwarder (epoll + recvmmsg/sendmmsg, a thread per core).
//! - [`counters`]: per-stream and relay-wide counters for metrics.
//! - [`policy`]: where an SDP may aim a stream.
//! - [`srtp`]: SRTP termination keyed by SDES: the negotiation (pure) and the data path's contexts.

pub mod abi;
pub mod book;
pub mod counters;
pub mod flow;
pub mod forwarder;
pub mod policy;
pub mod ports;
pub mod relay;
pub mod session;
pub mod srtp;
pub mod userspace;

pub use book::{BookConfig, MediaBook, MediaCommand};
pub use counters::{DropReason, RelayStats, SideSnapshot};
pub use forwarder::{ForwardError, Forwarder, PacketTap};
pub use policy::DestinationPolicy;
pub use ports::MediaInterface;
pub use relay::{OpenError, Relay, RelayConfig};
pub use session::{Advert, Anchoring, Offered, Session, SessionRecord, SideOptions, StreamRecord};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    #[error("no free media port pair on interface '{interface}'")]
    NoPorts { interface: String },
    #[error("no media interface named '{0}'")]
    UnknownInterface(String),
    #[error("media port {port} of interface '{interface}' is not free in this shard's share")]
    PortTaken { interface: String, port: u16 },
    #[error(transparent)]
    Forward(#[from] ForwardError),
    #[error("a call whose SRTP the relay terminates cannot be taken over (its keys' packet indexes cannot move)")]
    SrtpNotAdoptable,
}
