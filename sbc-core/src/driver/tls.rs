//! TLS for SIP (RFC 3261 §26.2, docs/manual/sip.md, TLS): each interface with a `tls:`
//! section gets a server side (its certificate; clients' certificates checked against its CA
//! when `verify_client` asks) and a client side for the connections it opens (servers checked
//! against its CA, else the system's, by host name or IP address; its certificate shown to
//! servers that ask for one, as trunks with mutual TLS do). rustls on ring; the connections
//! themselves are `tcp.rs`'s. The files are read again on reload (SIGHUP, `POST /tls/reload`):
//! new connections get what they hold, established ones keep their session, and files that do
//! not load leave the running certificate in place.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use profiles::config::{TlsSettings, TlsVersion, VerifyClient};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The system's CAs on Debian (package ca-certificates), for servers when no `ca_file` is set.
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why an interface's TLS could not be set up: the file or setting, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {why}")]
pub struct TlsError {
    what: String,
    why: String,
}

fn error(what: impl std::fmt::Display, why: impl std::fmt::Display) -> TlsError {
    TlsError { what: what.to_string(), why: why.to_string() }
}

/// The server and client sides of one interface, as loaded.
struct Loaded {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    /// Servers checked their own way (`tls_peers.rs`).
    peers: Vec<super::tls_peers::PeerConnector>,
    /// When the certificate runs out (unix seconds).
    not_after: i64,
}

/// One interface's TLS: its settings, and what they loaded, replaced on reload.
pub(crate) struct TlsContext {
    pub(crate) interface: String,
    settings: TlsSettings,
    loaded: ArcSwap<Loaded>,
}

impl TlsContext {
    /// Loads the interface's files (an error names the file).
    pub(crate) fn new(interface: &str, settings: &TlsSettings) -> Result<Self, TlsError> {
        let loaded = load(settings)?;
        Ok(Self { interface: interface.to_string(), settings: settings.clone(), loaded: ArcSwap::from_pointee(loaded) })
    }

    /// The server side for a connection accepted now.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        self.loaded.load().acceptor.clone()
    }

    /// The client side for a connection opened now to a server named `host` (or at `addr`):
    /// its `peers` rule if one matches, else the interface's; and whether the server's
    /// certificate goes unchecked.
    pub(crate) fn connector_for(&self, host: Option<&str>, addr: std::net::SocketAddr) -> (TlsConnector, bool) {
        let loaded = self.loaded.load();
        match loaded.peers.iter().find(|p| p.matches(host, addr)) {
            Some(p) => (p.connector.clone(), !p.peer.verify_server),
            None => (loaded.connector.clone(), false),
        }
    }

    /// Whether `host` at `addr` has its own `tls.peers` rule.
    pub(crate) fn has_peer_rule(&self, host: &str, addr: std::net::SocketAddr) -> bool {
        let host = host.parse::<std::net::IpAddr>().is_err().then_some(host);
        self.loaded.load().peers.iter().any(|p| p.matches(host, addr))
    }

    /// When the running certificate runs out (unix seconds).
    pub(crate) fn not_after(&self) -> i64 {
        self.loaded.load().not_after
    }

    /// Reads the files again; on an error the running certificate stays.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        self.loaded.store(Arc::new(load(&self.settings)?));
        Ok(())
    }
}

/// When `cert` runs out (unix seconds).
fn not_after(cert: &CertificateDer<'_>, path: &Path) -> Result<i64, TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|e| error(path.display(), e))?;
    Ok(parsed.validity().not_after.timestamp())
}

/// ring, as the one provider, with the interface's cipher suites (their IANA names, in its
/// order; none: ring's defaults). (rustls marks its ring provider deprecated for lacking
/// post-quantum key exchange; aws-lc would bring a C and assembler build of its own.)
#[allow(deprecated)]
fn provider(suites: &[String]) -> Result<Arc<rustls::crypto::CryptoProvider>, TlsError> {
    let mut p = rustls::crypto::ring::default_provider();
    if !suites.is_empty() {
        let name = |s: &rustls::SupportedCipherSuite| format!("{:?}", s.suite());
        let all = rustls::crypto::ring::ALL_CIPHER_SUITES;
        let mut chosen = Vec::with_capacity(suites.len());
        for wanted in suites {
            let Some(s) = all.iter().find(|s| name(s) == *wanted) else {
                let known: Vec<String> = all.iter().map(name).collect();
                return Err(error("tls.cipher_suites", format!("'{wanted}' is not one of {}", known.join(", "))));
            };
            chosen.push(*s);
        }
        p.cipher_suites = chosen;
    }
    Ok(Arc::new(p))
}

static TLS12_UP: [&rustls::SupportedProtocolVersion; 2] = [&rustls::version::TLS13, &rustls::version::TLS12];
static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];

fn versions(min: TlsVersion) -> &'static [&'static rustls::SupportedProtocolVersion] {
    match min {
        TlsVersion::Tls12 => &TLS12_UP,
        TlsVersion::Tls13 => &TLS13_ONLY,
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| error(path.display(), e))?;
    if certs.is_empty() {
        return Err(error(path.display(), "holds no PEM certificate"));
    }
    Ok(certs)
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(certificates(path)?);
    if added == 0 {
        return Err(error(path.display(), "holds no usable CA certificate"));
    }
    Ok(store)
}

/// Who a client's verified certificate says it is (`$Tc`, `$Ts`): the leaf's subject CN and
/// subjectAltNames. rustls has checked the chain by the time there is one to read.
pub(crate) fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> Option<sbc_engine::connections::PeerIdentity> {
    use x509_parser::extensions::GeneralName;
    let (_, leaf) = x509_parser::parse_x509_certificate(certs?.first()?).ok()?;
    let common_name =
        leaf.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or_default().to_string();
    let mut alt_names = Vec::new();
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => alt_names.push((*d).to_string()),
                GeneralName::URI(u) => alt_names.push((*u).to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => alt_names.push(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()),
                    16 => {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(b);
                        alt_names.push(std::net::Ipv6Addr::from(a).to_string());
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Some(sbc_engine::connections::PeerIdentity { common_name, alt_names })
}

/// Whether an interface's TLS files load and fit together (`--check-config`, and at start).
pub fn check(s: &TlsSettings) -> Result<(), TlsError> {
    load(s).map(drop)
}

/// Loads an interface's certificate, key and CAs: its server and client sides.
fn load(s: &TlsSettings) -> Result<Loaded, TlsError> {
    let chain = certificates(&s.cert_file)?;
    let not_after = not_after(&chain[0], &s.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&s.key_file).map_err(|e| error(s.key_file.display(), e))?;
    let cas = s.ca_file.as_deref().map(roots).transpose()?;
    let p = provider(&s.cipher_suites)?;
    // (A version none of the chosen suites speaks is refused here.)
    let versions_key = if s.cipher_suites.is_empty() { "tls.min_version" } else { "tls.cipher_suites" };
    let server = ServerConfig::builder_with_provider(p.clone())
        .with_protocol_versions(versions(s.min_version))
        .map_err(|e| error(versions_key, e))?;
    let server = match (s.verify_client, &cas) {
        (VerifyClient::None, _) | (_, None) => server.with_no_client_auth(),
        (mode, Some(cas)) => {
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(cas.clone()), p.clone());
            let v = if mode == VerifyClient::Optional { v.allow_unauthenticated() } else { v };
            server.with_client_cert_verifier(v.build().map_err(|e| error("tls.ca_file", e))?)
        }
    };
    let server = server
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| error(format!("{} and {}", s.cert_file.display(), s.key_file.display()), e))?;
    let servers_cas = match cas {
        Some(c) => c,
        None if Path::new(SYSTEM_CAS).exists() => roots(Path::new(SYSTEM_CAS))?,
        None => RootCertStore::empty(),
    };
    let pair = || format!("{} and {}", s.cert_file.display(), s.key_file.display());
    let client = ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(versions(s.min_version))
        .map_err(|e| error(versions_key, e))?
        .with_root_certificates(servers_cas)
        .with_client_auth_cert(chain.clone(), key.clone_key())
        .map_err(|e| error(pair(), e))?;
    let mut peers = Vec::with_capacity(s.peers.len());
    for (i, peer) in s.peers.iter().enumerate() {
        let builder = ClientConfig::builder_with_provider(p.clone())
            .with_protocol_versions(versions(s.min_version))
            .map_err(|e| error(versions_key, e))?;
        let builder = match &peer.ca_file {
            Some(ca) => builder.with_root_certificates(roots(ca)?),
            None => {
                tracing::warn!(
                    host = %peer.host,
                    "TLS: the certificate of this server is NOT checked (interfaces[].tls.peers[{i}].verify_server: no)"
                );
                builder.dangerous().with_custom_certificate_verifier(Arc::new(super::tls_peers::Unchecked(p.clone())))
            }
        };
        let cfg = builder.with_client_auth_cert(chain.clone(), key.clone_key()).map_err(|e| error(pair(), e))?;
        peers
            .push(super::tls_peers::PeerConnector { peer: peer.clone(), connector: TlsConnector::from(Arc::new(cfg)) });
    }
    Ok(Loaded {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        connector: TlsConnector::from(Arc::new(client)),
        peers,
        not_after,
    })
}
