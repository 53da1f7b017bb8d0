//! `interfaces[].tls`: the certificate of an interface that listens on `tls:`, and how it
//! treats its peers' (docs/manual/sip.md, TLS). The files are read by the driver, which
//! refuses to start (and `--check-config` fails) when one does not load.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTls {
    cert_file: Option<String>,
    key_file: Option<String>,
    #[serde(default)]
    ca_file: Option<String>,
    #[serde(default)]
    verify_client: Option<String>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    cipher_suites: Option<Vec<String>>,
    #[serde(default)]
    peers: Option<Vec<FileTlsPeer>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTlsPeer {
    host: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    ca_file: Option<String>,
    #[serde(default)]
    verify_server: Option<bool>,
}

/// How the interface checks one server it connects to (a next hop), in place of its own
/// `ca_file` or the system's CAs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPeer {
    /// The host name or address as the next hop or URI names it.
    pub host: String,
    /// Only on this port (any, when `None`).
    pub port: Option<u16>,
    /// The only CAs this server's certificate may chain to (pinned).
    pub ca_file: Option<PathBuf>,
    /// `false`: the server's certificate is not checked at all (labs; logged loudly).
    pub verify_server: bool,
}

/// Whether clients must show a certificate the interface's CA signed (mutual TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyClient {
    None,
    /// Asked for; a client without one is let in, one with a bad one is not.
    Optional,
    Required,
}

/// The lowest TLS version the interface speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// An interface's TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The certificate chain (PEM, leaf first) and its private key (PEM).
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// CAs (PEM) that sign clients' certificates and the servers this interface connects to;
    /// `None`: the system's CAs for servers, and no client certificates.
    pub ca_file: Option<PathBuf>,
    pub verify_client: VerifyClient,
    pub min_version: TlsVersion,
    /// The cipher suites offered and accepted, by their IANA names, in order of preference
    /// (the driver checks the names); empty: rustls's defaults.
    pub cipher_suites: Vec<String>,
    /// Servers checked their own way (`peers`).
    pub peers: Vec<TlsPeer>,
}

impl TlsSettings {
    /// The certificate and key given on the command line (`--tls-cert`, `--tls-key`).
    pub fn from_files(cert_file: PathBuf, key_file: PathBuf) -> Self {
        Self {
            cert_file,
            key_file,
            ca_file: None,
            verify_client: VerifyClient::None,
            min_version: TlsVersion::Tls12,
            cipher_suites: Vec::new(),
            peers: Vec::new(),
        }
    }

    /// The settings of a `tls:` section; `Err` names the key (under `tls.`) and what is wrong.
    /// Relative paths are taken from `dir` (the configuration file's directory).
    pub(super) fn from_file(f: &FileTls, dir: &std::path::Path) -> Result<Self, (String, String)> {
        let path = |key: &str, v: &Option<String>| -> Result<Option<PathBuf>, (String, String)> {
            match v.as_deref().map(str::trim) {
                None => Ok(None),
                Some("") => Err((key.to_string(), "is empty".into())),
                Some(p) => Ok(Some(dir.join(p))),
            }
        };
        let cert_file = path("cert_file", &f.cert_file)?.ok_or(("cert_file".to_string(), "is needed".to_string()))?;
        let key_file = path("key_file", &f.key_file)?.ok_or(("key_file".to_string(), "is needed".to_string()))?;
        let ca_file = path("ca_file", &f.ca_file)?;
        let verify_client = match f.verify_client.as_deref().map(str::trim) {
            None | Some("none") => VerifyClient::None,
            Some("optional") => VerifyClient::Optional,
            Some("required") => VerifyClient::Required,
            Some(v) => return Err(("verify_client".into(), format!("'{v}' is not none, optional or required"))),
        };
        if verify_client != VerifyClient::None && ca_file.is_none() {
            return Err(("verify_client".into(), "needs ca_file: the CAs that sign the clients' certificates".into()));
        }
        let min_version = match f.min_version.as_deref().map(str::trim) {
            None | Some("1.2") => TlsVersion::Tls12,
            Some("1.3") => TlsVersion::Tls13,
            Some(v) => return Err(("min_version".into(), format!("'{v}' is not 1.2 or 1.3"))),
        };
        let cipher_suites: Vec<String> =
            f.cipher_suites.iter().flatten().map(|s| s.trim().to_ascii_uppercase()).filter(|s| !s.is_empty()).collect();
        if f.cipher_suites.is_some() && cipher_suites.is_empty() {
            return Err(("cipher_suites".into(), "is empty (leave it out for the defaults)".into()));
        }
        let mut peers = Vec::new();
        for (i, p) in f.peers.iter().flatten().enumerate() {
            let key = |k: &str| format!("peers[{i}].{k}");
            // An address in its canonical form (brackets off): it is compared as an address.
            let host = p.host.trim().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
            let host = host.parse::<std::net::IpAddr>().map_or(host, |ip| ip.to_string());
            if host.is_empty() {
                return Err((key("host"), "is empty".into()));
            }
            let ca_file = path(&key("ca_file"), &p.ca_file)?;
            let verify_server = p.verify_server.unwrap_or(true);
            match (&ca_file, verify_server) {
                (Some(_), false) => return Err((key("ca_file"), "has no effect with verify_server: no".into())),
                (None, true) => return Err((key("ca_file"), "is needed (or verify_server: no)".into())),
                _ => {}
            }
            peers.push(TlsPeer { host, port: p.port, ca_file, verify_server });
        }
        Ok(Self { cert_file, key_file, ca_file, verify_client, min_version, cipher_suites, peers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(extra: &[(&str, &str)]) -> FileTls {
        let get = |k: &str| extra.iter().find(|(key, _)| *key == k).map(|(_, v)| v.to_string());
        FileTls {
            cert_file: get("cert_file"),
            key_file: get("key_file"),
            ca_file: get("ca_file"),
            verify_client: get("verify_client"),
            min_version: get("min_version"),
            cipher_suites: None,
            peers: None,
        }
    }

    #[test]
    fn a_tls_section_is_checked_key_by_key() {
        let dir = std::path::Path::new("/etc/sbc");
        let ok =
            TlsSettings::from_file(&file(&[("cert_file", "tls/a.crt"), ("key_file", "/k/a.key")]), dir).expect("ok");
        assert_eq!(ok.cert_file, PathBuf::from("/etc/sbc/tls/a.crt"), "relative to the configuration");
        assert_eq!(ok.key_file, PathBuf::from("/k/a.key"));
        assert_eq!((ok.verify_client, ok.min_version), (VerifyClient::None, TlsVersion::Tls12));
        let mutual = [("cert_file", "a"), ("key_file", "b"), ("ca_file", "c"), ("verify_client", "required")];
        let m = TlsSettings::from_file(&file(&mutual), dir).expect("mutual");
        assert_eq!(m.verify_client, VerifyClient::Required);
        for (extra, key) in [
            (vec![("key_file", "b")], "cert_file"),
            (vec![("cert_file", "a")], "key_file"),
            (vec![("cert_file", "a"), ("key_file", "b"), ("verify_client", "required")], "verify_client"),
            (vec![("cert_file", "a"), ("key_file", "b"), ("verify_client", "maybe")], "verify_client"),
            (vec![("cert_file", "a"), ("key_file", "b"), ("min_version", "1.1")], "min_version"),
            (vec![("cert_file", " "), ("key_file", "b")], "cert_file"),
        ] {
            assert_eq!(TlsSettings::from_file(&file(&extra), dir).expect_err(key).0, key, "{extra:?}");
        }
    }

    #[test]
    fn peers_pin_a_ca_or_skip_the_check_and_say_which_entry_is_wrong() {
        let dir = std::path::Path::new("/etc/sbc");
        let peer = |host: &str, ca: Option<&str>, verify: Option<bool>| FileTlsPeer {
            host: host.into(),
            port: Some(5061),
            ca_file: ca.map(str::to_string),
            verify_server: verify,
        };
        let mut f = file(&[("cert_file", "a.crt"), ("key_file", "a.key")]);
        f.peers = Some(vec![peer("Trunk.Example", Some("pin.pem"), None), peer("10.0.0.9", None, Some(false))]);
        let s = TlsSettings::from_file(&f, dir).expect("ok");
        assert_eq!(s.peers[0].host, "trunk.example");
        assert_eq!(s.peers[0].ca_file, Some(PathBuf::from("/etc/sbc/pin.pem")));
        assert!(s.peers[0].verify_server && !s.peers[1].verify_server);
        f.peers = Some(vec![peer("a", None, None)]);
        assert_eq!(TlsSettings::from_file(&f, dir).map(|_| ()).map_err(|e| e.0), Err("peers[0].ca_file".to_string()));
        f.peers = Some(vec![peer("a", None, Some(true)), peer("b", Some("x.pem"), Some(false))]);
        assert_eq!(TlsSettings::from_file(&f, dir).map(|_| ()).map_err(|e| e.0), Err("peers[0].ca_file".to_string()));
        f.peers = Some(vec![peer(" ", Some("x.pem"), None)]);
        assert_eq!(TlsSettings::from_file(&f, dir).map(|_| ()).map_err(|e| e.0), Err("peers[0].host".to_string()));
    }
}
