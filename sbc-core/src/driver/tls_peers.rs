//! Servers an interface checks its own way (`interfaces[].tls.peers`): a next hop whose
//! certificate must chain to a pinned CA, or, in a lab, one not checked at all. The latter is
//! logged as a warning when loaded and on every connection.

use std::net::SocketAddr;
use std::sync::Arc;

use profiles::config::TlsPeer;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_rustls::TlsConnector;

/// A peer's rule and the client side built for it.
pub(super) struct PeerConnector {
    pub(super) peer: TlsPeer,
    pub(super) connector: TlsConnector,
}

impl PeerConnector {
    /// Whether this rule is for a server named `host`, or (a destination given as an address,
    /// `host` none) at `addr`, on `addr`'s port. A rule for an address never applies to a name
    /// that resolves to it: the operator named the one they meant.
    pub(super) fn matches(&self, host: Option<&str>, addr: SocketAddr) -> bool {
        let named = match (host, self.peer.host.parse::<std::net::IpAddr>()) {
            (Some(h), Err(_)) => h.eq_ignore_ascii_case(&self.peer.host),
            (None, Ok(ip)) => ip.to_canonical() == addr.ip().to_canonical(),
            _ => false,
        };
        named && self.peer.port.is_none_or(|p| p == addr.port())
    }
}

/// Accepts any certificate; the handshake's signatures are still checked (the server holds
/// the key of the certificate it shows), so only who it is goes unproven.
#[derive(Debug)]
pub(super) struct Unchecked(pub(super) Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
