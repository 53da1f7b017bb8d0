//! What patterns read: the incoming request (behind a trait, so the SIP stack stays out of this
//! crate), the interface it came in on, and the optional call-control and registration-cache
//! data.

use super::RegVar;

/// The incoming request that created the call or transaction, as received.
pub trait RequestView {
    fn method(&self) -> &[u8];
    fn request_uri(&self) -> &[u8];
    /// The From (caller) and To (callee) header values, as received (with their parameters).
    fn caller(&self) -> &[u8];
    fn callee(&self) -> &[u8];
    fn call_id(&self) -> &[u8];
    /// Calls `each` with every value of header `name` (case-insensitive), in order.
    fn for_each_header(&self, name: &str, each: &mut dyn FnMut(&[u8]));
}

/// The interface a request arrived on (`$Rf`, `$Rn`, `$RI`).
#[derive(Debug, Clone, Copy, Default)]
pub struct InterfaceFacts<'a> {
    pub index: usize,
    pub name: &'a str,
    /// Public address configured for it (empty when none).
    pub public_ip: &'a str,
}

/// Who the request's TLS connection proved to be: its client certificate, verified against
/// the interface's CAs (`$Tc`, `$Ts`). Only a certificate that was checked is ever here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject's common name (empty when it has none).
    pub common_name: String,
    /// Its subjectAltNames: DNS names, URIs and IP addresses, in order.
    pub alt_names: Vec<String>,
}

/// Call-control variables (`$V(name)`, `$V(name.member)`), set by call-control modules.
pub trait CcVars {
    fn get(&self, name: &str, member: Option<&str>) -> Option<String>;
}

/// No call-control variables (profile selection, OoD without call control).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCcVars;

impl CcVars for NoCcVars {
    fn get(&self, _name: &str, _member: Option<&str>) -> Option<String> {
        None
    }
}

/// Registration-cache lookups (`$uc $us $ui $Ua $UA`).
pub trait RegCacheView {
    /// `source` is where the request came from (`$Ua`, `$UA` match on it).
    fn lookup(&self, var: RegVar, req: &dyn RequestView, source: std::net::SocketAddr) -> Option<String>;
}

/// No registration cache: the variables expand to nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRegCache;

impl RegCacheView for NoRegCache {
    fn lookup(&self, _var: RegVar, _req: &dyn RequestView, _source: std::net::SocketAddr) -> Option<String> {
        None
    }
}
