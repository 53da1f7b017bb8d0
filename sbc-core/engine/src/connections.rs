//! What the driver knows of the connection a request came on, as the engine sees it: a port
//! answered from the driver's table at once (like admission, `admission.rs`). Today: the
//! verified TLS client certificate, for the patterns `$Tc` and `$Ts` (a trunk recognised by its
//! certificate).

use std::sync::Arc;

pub use profiles::pattern::PeerIdentity;

use crate::b2bua::ConnId;

pub trait ConnectionFacts: Send + Sync + std::fmt::Debug {
    /// The verified client certificate of connection `conn`, if it showed one.
    fn peer_identity(&self, conn: ConnId) -> Option<Arc<PeerIdentity>>;
}

/// No connections known (tools, tests, UDP only).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoConnections;

impl ConnectionFacts for NoConnections {
    fn peer_identity(&self, _conn: ConnId) -> Option<Arc<PeerIdentity>> {
        None
    }
}
