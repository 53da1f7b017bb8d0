//! HTTP Digest for SIP (RFC 3261 §22, RFC 7616, RFC 8760): answering a challenge as a client
//! (MD5 and SHA-256, with or without `-sess`, qop=auth or none) and checking a client's answer to
//! a challenge of ours. Pure functions: nonces and cnonces come from the caller.

use md5::Md5;
use sha2::{Digest, Sha256};

use super::msg::{split_values, trim};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl Algorithm {
    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "MD5" => Some(Self::Md5),
            "MD5-SESS" => Some(Self::Md5Sess),
            "SHA-256" => Some(Self::Sha256),
            "SHA-256-SESS" => Some(Self::Sha256Sess),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Md5Sess => "MD5-sess",
            Self::Sha256 => "SHA-256",
            Self::Sha256Sess => "SHA-256-sess",
        }
    }
    fn strength(self) -> u8 {
        match self {
            Self::Sha256 | Self::Sha256Sess => 2,
            Self::Md5 | Self::Md5Sess => 1,
        }
    }
    fn hash(self, data: &str) -> String {
        match self {
            Self::Md5 | Self::Md5Sess => hex(&Md5::digest(data.as_bytes())),
            Self::Sha256 | Self::Sha256Sess => hex(&Sha256::digest(data.as_bytes())),
        }
    }
    fn sess(self) -> bool {
        matches!(self, Self::Md5Sess | Self::Sha256Sess)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `k=v` / `k="v"` pairs of a Digest header value (after the scheme).
fn params(v: &str) -> Vec<(String, String)> {
    split_values(v.as_bytes())
        .filter_map(|p| {
            let p = std::str::from_utf8(trim(p)).ok()?;
            let (k, v) = p.split_once('=')?;
            let v = v.trim();
            let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
            Some((k.trim().to_ascii_lowercase(), v.replace("\\\"", "\"")))
        })
        .collect()
}

fn digest_params(value: &[u8]) -> Option<Vec<(String, String)>> {
    let v = std::str::from_utf8(trim(value)).ok()?;
    let (scheme, rest) = v.split_once(char::is_whitespace)?;
    scheme.eq_ignore_ascii_case("digest").then(|| params(rest))
}

fn get<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
    p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// A `WWW-Authenticate` / `Proxy-Authenticate` Digest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// The server offers qop=auth (auth-int alone is not supported: answered without qop).
    pub qop_auth: bool,
    pub stale: bool,
}

impl Challenge {
    /// `None` for another scheme, an unknown algorithm or a missing nonce.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let p = digest_params(value)?;
        let algorithm = match get(&p, "algorithm") {
            Some(a) => Algorithm::parse(a)?,
            None => Algorithm::Md5,
        };
        let qop = get(&p, "qop").unwrap_or_default();
        if !qop.is_empty() && !qop.split(',').any(|q| q.trim().eq_ignore_ascii_case("auth")) {
            return None; // only auth-int offered
        }
        Some(Self {
            realm: get(&p, "realm")?.to_string(),
            nonce: get(&p, "nonce").filter(|n| !n.is_empty())?.to_string(),
            opaque: get(&p, "opaque").map(str::to_string),
            algorithm,
            qop_auth: !qop.is_empty(),
            stale: get(&p, "stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }

    /// The strongest challenge we can answer among several (RFC 8760 §2.4: SHA-256 first).
    pub fn best<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<Self> {
        values.filter_map(Self::parse).max_by_key(|c| c.algorithm.strength())
    }
}

/// The inputs of a request-digest (RFC 7616 §3.4.1).
struct DigestInput<'a> {
    alg: Algorithm,
    user: &'a str,
    realm: &'a str,
    password: &'a str,
    nonce: &'a str,
    cnonce: &'a str,
    nc: &'a str,
    qop: Option<&'a str>,
    method: &'a str,
    uri: &'a str,
}

/// The request-digest (RFC 7616 §3.4.1).
fn response(d: &DigestInput<'_>) -> String {
    let DigestInput { alg, user, realm, password, nonce, cnonce, nc, qop, method, uri } = *d;
    let mut ha1 = alg.hash(&format!("{user}:{realm}:{password}"));
    if alg.sess() {
        ha1 = alg.hash(&format!("{ha1}:{nonce}:{cnonce}"));
    }
    let ha2 = alg.hash(&format!("{method}:{uri}"));
    match qop {
        Some(q) => alg.hash(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{q}:{ha2}")),
        None => alg.hash(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The `Authorization` / `Proxy-Authorization` value answering `ch` for a request.
pub fn authorization(ch: &Challenge, user: &str, password: &str, method: &str, uri: &str, cnonce: &str) -> String {
    let nc = "00000001";
    let qop = ch.qop_auth.then_some("auth");
    let (alg, realm, nonce) = (ch.algorithm, ch.realm.as_str(), ch.nonce.as_str());
    let resp = response(&DigestInput { alg, user, realm, password, nonce, cnonce, nc, qop, method, uri });
    // Parameter order matters to nobody by the RFC, but to naive parsers that look names up as
    // substrings (SIPp 3.6 finds "nc" inside "nonce"): nc first, nonce before cnonce.
    let mut v = format!("Digest username={}, realm={}", quoted(user), quoted(&ch.realm));
    if qop.is_some() {
        v.push_str(&format!(", nc={nc}, qop=auth"));
    }
    v.push_str(&format!(", uri={}, nonce={}", quoted(uri), quoted(&ch.nonce)));
    if qop.is_some() {
        v.push_str(&format!(", cnonce={}", quoted(cnonce)));
    }
    v.push_str(&format!(", response=\"{resp}\", algorithm={}", ch.algorithm.name()));
    if let Some(o) = &ch.opaque {
        v.push_str(&format!(", opaque={}", quoted(o)));
    }
    v
}

/// A client's `Authorization` value, for checking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Algorithm,
    pub qop: Option<String>,
    pub nc: String,
    pub cnonce: String,
}

impl Answer {
    pub fn parse(value: &[u8]) -> Option<Self> {
        let p = digest_params(value)?;
        let s = |k: &str| get(&p, k).map(str::to_string);
        Some(Self {
            username: s("username")?,
            realm: s("realm")?,
            nonce: s("nonce")?,
            uri: s("uri")?,
            response: s("response")?,
            algorithm: match get(&p, "algorithm") {
                Some(a) => Algorithm::parse(a)?,
                None => Algorithm::Md5,
            },
            qop: s("qop"),
            nc: s("nc").unwrap_or_default(),
            cnonce: s("cnonce").unwrap_or_default(),
        })
    }

    /// Whether the answer proves knowledge of `password` for `method` (constant-time compare).
    pub fn verify(&self, password: &str, method: &str) -> bool {
        let expected = response(&DigestInput {
            alg: self.algorithm,
            user: &self.username,
            realm: &self.realm,
            password,
            nonce: &self.nonce,
            cnonce: &self.cnonce,
            nc: &self.nc,
            qop: self.qop.as_deref(),
            method,
            uri: &self.uri,
        });
        let given = self.response.to_ascii_lowercase();
        expected.len() == given.len() && expected.bytes().zip(given.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7616 §3.9.1: the same request answered with MD5 and with SHA-256.
    const CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    const NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";

    fn challenge(alg: &str) -> Challenge {
        let v = format!(
            "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm={alg}, nonce=\"{NONCE}\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
        );
        Challenge::parse(v.as_bytes()).expect("challenge parses")
    }

    fn response_of(auth: &str) -> String {
        auth.split("response=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or_default().to_string()
    }

    #[test]
    fn rfc7616_examples() {
        for (alg, expected) in [
            ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
            ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ] {
            let ch = challenge(alg);
            assert!(ch.qop_auth);
            let auth = authorization(&ch, "Mufasa", "Circle of Life", "GET", "/dir/index.html", CNONCE);
            assert_eq!(response_of(&auth), expected, "{alg}");
            let answer = Answer::parse(auth.as_bytes()).expect("our own answer parses");
            assert!(answer.verify("Circle of Life", "GET"));
            assert!(!answer.verify("circle of life", "GET"));
            assert!(!answer.verify("Circle of Life", "POST"));
        }
    }

    #[test]
    fn the_strongest_known_challenge_wins_and_odd_ones_are_skipped() {
        let md5 = b"Digest realm=\"r\", nonce=\"n1\"".as_slice();
        let sha = b"Digest realm=\"r\", nonce=\"n2\", algorithm=SHA-256, qop=\"auth\"".as_slice();
        let odd = b"Digest realm=\"r\", nonce=\"n3\", algorithm=SHA-512-256".as_slice();
        let basic = b"Basic realm=\"r\"".as_slice();
        let best = Challenge::best([md5, odd, sha, basic].into_iter()).expect("one");
        assert_eq!((best.algorithm, best.nonce.as_str()), (Algorithm::Sha256, "n2"));
        assert!(Challenge::parse(b"Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\"").is_none());
        assert!(Challenge::parse(b"Digest realm=\"r\"").is_none());
        // Without qop the answer is the RFC 2069 form.
        let ch = Challenge::parse(md5).expect("md5");
        let auth = authorization(&ch, "u", "p", "INVITE", "sip:b@x", "c");
        assert!(!auth.contains("qop=") && !auth.contains("cnonce"));
        assert!(Answer::parse(auth.as_bytes()).expect("parses").verify("p", "INVITE"));
    }
}
