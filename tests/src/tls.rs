//! TLS for the tests: certificates made by the test itself (rcgen: a CA, a server certificate
//! for 127.0.0.1, a client certificate; never committed keys), and a UA that calls over TLS
//! (rustls, the same library as sbcd's, client side).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::scratch_dir;
use crate::ua::SipText;

/// PEM files in a scratch directory: the CA, sbcd's certificate and key, a client's.
pub struct TestCerts {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestCerts {
    pub fn new() -> Self {
        let dir = scratch_dir("tls");
        let write = |name: &str, pem: String| {
            let p = dir.join(name);
            std::fs::write(&p, pem).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            p
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key")).expect("ca");
        let (server, server_key) = server_leaf(&ca);
        // The client's certificate names it and its address (RFC 5923 aliases need the latter).
        let names = vec!["client.test".into(), "127.0.0.1".into()];
        let (client, client_key) = leaf(&ca, names, vec![ExtendedKeyUsagePurpose::ClientAuth]);
        Self {
            ca: write("ca.pem", ca.pem()),
            server_cert: write("server.pem", server),
            server_key: write("server.key", server_key),
            client_cert: write("client.pem", client),
            client_key: write("client.key", client_key),
            issuer: ca,
        }
    }

    /// A new certificate and key for sbcd, the CA's again, written over the old files.
    pub fn reissue_server(&self) {
        let (cert, key) = server_leaf(&self.issuer);
        std::fs::write(&self.server_cert, cert).expect("cert written");
        std::fs::write(&self.server_key, key).expect("key written");
    }

    /// sbcd's certificate as the file holds it (DER).
    pub fn server_der(&self) -> Vec<u8> {
        let mut certs = CertificateDer::pem_file_iter(&self.server_cert).expect("cert file");
        certs.next().expect("a certificate").expect("pem").to_vec()
    }

    /// The `tls:` section of an interface with these certificates (mutual TLS as `verify`
    /// says: none, optional or required).
    pub fn yaml(&self, verify: &str) -> String {
        format!(
            "    tls:\n      cert_file: {}\n      key_file: {}\n      ca_file: {}\n      verify_client: {verify}\n",
            self.server_cert.display(),
            self.server_key.display(),
            self.ca.display()
        )
    }
}

/// A certificate the CA signs for `names` with `purposes` (PEM), and its key (PEM).
fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    names: Vec<String>,
    purposes: Vec<ExtendedKeyUsagePurpose>,
) -> (String, String) {
    let mut p = CertificateParams::new(names.clone()).expect("params");
    // The subject's CN is the first name (sbcd shows it as `$Tc`).
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, names.first().cloned().unwrap_or_default());
    p.extended_key_usages = purposes;
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, ca).expect("signed");
    (cert.pem(), key.serialize_pem())
}

/// sbcd's certificate: for 127.0.0.1, serving both ends, as an SBC's does toward a trunk with
/// mutual TLS.
fn server_leaf(ca: &CertifiedIssuer<'static, KeyPair>) -> (String, String) {
    let both = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    leaf(ca, vec!["127.0.0.1".into(), "sbc.test".into()], both)
}

impl Default for TestCerts {
    fn default() -> Self {
        Self::new()
    }
}

#[allow(deprecated)] // rustls's ring provider, as sbcd's (driver/tls.rs)
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS client of `server` that checks its certificate against the test CA (for its
/// address), with the client certificate if `with_client_cert`; the handshake is not done yet.
fn tls_stream(
    server: SocketAddr,
    certs: &TestCerts,
    with_client_cert: bool,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&certs.ca).expect("ca file") {
        roots.add(c.expect("ca pem")).expect("ca added");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let cfg = if with_client_cert {
        let chain: Vec<_> =
            CertificateDer::pem_file_iter(&certs.client_cert).expect("cert").map(|c| c.expect("pem")).collect();
        let key = PrivateKeyDer::from_pem_file(&certs.client_key).expect("key");
        builder.with_client_auth_cert(chain, key).expect("client cert")
    } else {
        builder.with_no_client_auth()
    };
    let name = ServerName::IpAddress(server.ip().into());
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).map_err(std::io::Error::other)?;
    let sock = TcpStream::connect(server)?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(rustls::StreamOwned::new(conn, sock))
}

/// `GET path` over HTTPS (HTTP/1.1, one request): the whole response, or why there is none.
pub fn https_get(server: SocketAddr, path: &str, certs: &TestCerts, with_client_cert: bool) -> std::io::Result<String> {
    let mut tls = tls_stream(server, certs, with_client_cert)?;
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => {}
        // A server that closes without close_notify: what came is the answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
        Err(e) => return Err(e),
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A UA calling over one TLS connection to the SBC.
pub struct TlsUa {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    pub local: SocketAddr,
    buf: Vec<u8>,
    call_id: String,
    cseq: u32,
    to: Option<String>,
    target: Option<String>,
    /// Header lines (each ending in CRLF) added to every request.
    pub extra_headers: String,
    /// Parameters added to its Via (`;alias`, RFC 5923).
    pub via_params: String,
}

impl TlsUa {
    /// Connects and completes the handshake, checking sbcd's certificate against the test CA
    /// (for its address), with the client certificate if `with_client_cert`.
    pub fn connect(sbc: SocketAddr, certs: &TestCerts, with_client_cert: bool) -> std::io::Result<Self> {
        let mut tls = tls_stream(sbc, certs, with_client_cert)?;
        let local = tls.sock.local_addr()?;
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        // (TLS 1.3: the server refuses a client certificate after the handshake's end; the
        // refusal comes with the first read.)
        Ok(Self {
            tls,
            local,
            buf: Vec::new(),
            call_id: format!("tls-{}@test", local.port()),
            cseq: 0,
            to: None,
            target: None,
            extra_headers: String::new(),
            via_params: String::new(),
        })
    }

    /// The cipher suite the handshake settled on (its IANA name).
    pub fn cipher_suite(&self) -> String {
        self.tls.conn.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())).unwrap_or_default()
    }

    /// The certificate the SBC showed (DER).
    pub fn peer_certificate(&self) -> Vec<u8> {
        self.tls.conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default()
    }

    fn send(&mut self, text: &str) -> std::io::Result<()> {
        self.tls.write_all(text.as_bytes())?;
        self.tls.flush()
    }

    /// The next message within `within`, or why none came (the connection closed, a TLS alert).
    pub fn recv(&mut self, within: Duration) -> std::io::Result<SipText> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(m) = crate::phone::frame(&mut self.buf) {
                return Ok(m);
            }
            if Instant::now() >= deadline {
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no message"));
            }
            let mut chunk = [0u8; 8192];
            match self.tls.read(&mut chunk) {
                Ok(0) => return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed")),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn request(&mut self, method: &str, uri: &str, cseq: u32, body: &str) -> String {
        let to = self.to.clone().unwrap_or_else(|| format!("<{uri}>"));
        let ct = if body.is_empty() { "" } else { "Content-Type: application/sdp\r\n" };
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/TLS {l};branch=z9hG4bKtls{cseq}{method};rport{v}\r\nMax-Forwards: 70\r\nFrom: <sip:ua@{l}>;tag=tls{p}\r\nTo: {to}\r\nCall-ID: {ci}\r\nCSeq: {cseq} {method}\r\nContact: <sip:ua@{l};transport=tls>\r\n{x}{ct}Content-Length: {len}\r\n\r\n{body}",
            x = self.extra_headers,
            v = self.via_params,
            l = self.local,
            p = self.local.port(),
            ci = self.call_id,
            len = body.len(),
        )
    }

    /// The final response to our `cseq method` (provisionals and requests skipped).
    /// OPTIONS to `uri`: its final response.
    pub fn options(&mut self, uri: &str) -> std::io::Result<SipText> {
        self.cseq += 1;
        let cseq = self.cseq;
        let text = self.request("OPTIONS", uri, cseq, "");
        self.send(&text)?;
        self.final_response(cseq, "OPTIONS")
    }

    /// Answers a request the SBC sent on this connection with `code` (Via, From, To + tag,
    /// Call-ID, CSeq copied).
    pub fn respond(&mut self, req: &SipText, code: u16) -> std::io::Result<()> {
        let mut resp = format!("SIP/2.0 {code} Answered\r\n");
        for l in req.0.split("\r\n").take_while(|l| !l.is_empty()).skip(1) {
            let name = l.split(':').next().unwrap_or_default().trim().to_ascii_lowercase();
            match name.as_str() {
                "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => resp.push_str(&format!("{l}\r\n")),
                "to" | "t" => resp.push_str(&format!("{l};tag=tlsua\r\n")),
                _ => {}
            }
        }
        resp.push_str("Content-Length: 0\r\n\r\n");
        self.send(&resp)
    }

    /// Writes `bytes` on the TCP connection under TLS, as they are (a record trickled in).
    pub fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tls.sock.write_all(bytes)
    }

    /// This UA's address (the sent-by of its Via).
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    fn final_response(&mut self, cseq: u32, method: &str) -> std::io::Result<SipText> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = self.recv(deadline.saturating_duration_since(Instant::now()))?;
            let ours = m.header("CSeq").is_some_and(|c| c.split_whitespace().eq([cseq.to_string().as_str(), method]));
            if ours && m.status().is_some_and(|s| s >= 200) {
                return Ok(m);
            }
        }
    }

    /// INVITE with `body`: the final response; a 2xx is acknowledged.
    pub fn invite(&mut self, uri: &str, body: &str) -> std::io::Result<SipText> {
        self.cseq += 1;
        let cseq = self.cseq;
        let text = self.request("INVITE", uri, cseq, body);
        self.send(&text)?;
        let resp = self.final_response(cseq, "INVITE")?;
        if resp.status().is_some_and(|s| (200..300).contains(&s)) {
            self.to = resp.header("To").map(str::to_string);
            self.target =
                resp.header("Contact").and_then(|c| Some(c.split_once('<')?.1.split_once('>')?.0.to_string()));
            let ack = self.request("ACK", self.target.clone().as_deref().unwrap_or(uri), cseq, "");
            self.send(&ack)?;
        }
        Ok(resp)
    }

    /// BYE in the dialog the last INVITE made: its final response.
    pub fn bye(&mut self) -> std::io::Result<SipText> {
        self.cseq += 1;
        let cseq = self.cseq;
        let target = self.target.clone().unwrap_or_default();
        let text = self.request("BYE", &target, cseq, "");
        self.send(&text)?;
        self.final_response(cseq, "BYE")
    }
}
