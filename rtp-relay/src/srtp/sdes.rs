//! The SDES `a=crypto` attribute (RFC 4568 §9.1):
//! `a=crypto:<tag> <crypto-suite> inline:<key||salt base64>[|<lifetime>][|<MKI>:<length>] [<session-params>]`.
//!
//! A line the relay cannot honour is read as unusable with the reason, so an offer with a
//! usable line beside it still goes on, and one without gets a refusal that says why.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::{MasterKey, Suite};

/// One `a=crypto` line of an SDP, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoLine {
    pub tag: u32,
    /// The key, or why the line cannot be used.
    pub key: Result<MasterKey, &'static str>,
}

/// Reads the value of an `a=crypto:` attribute (what follows the colon). `None` when not even
/// the tag is readable (the line is malformed).
pub fn parse(value: &str) -> Option<CryptoLine> {
    let mut fields = value.split_whitespace();
    let tag_text = fields.next()?;
    if tag_text.is_empty() || tag_text.len() > 9 || !tag_text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let tag = tag_text.parse().ok()?;
    let key = (|| {
        let suite = Suite::from_name(fields.next().ok_or("no crypto suite")?).ok_or("unknown crypto suite")?;
        let key_params = fields.next().ok_or("no key parameters")?;
        if key_params.contains(';') {
            return Err("more than one master key");
        }
        let info = key_params
            .get(..7)
            .filter(|m| m.eq_ignore_ascii_case("inline:"))
            .map(|_| &key_params[7..])
            .ok_or("key method is not inline")?;
        let mut parts = info.split('|');
        let material = STANDARD.decode(parts.next().unwrap_or_default()).map_err(|_| "key is not base64")?;
        for p in parts {
            // A lifetime ("2^31" or digits) is taken: the relay re-keys never, and a call ends
            // long before 2^31 packets. An MKI would have to be carried in every packet.
            if p.contains(':') {
                return Err("MKI is not supported");
            }
            let digits = p.strip_prefix("2^").unwrap_or(p);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err("malformed key lifetime");
            }
        }
        for param in fields {
            // A window-size hint is a hint (RFC 4568 §6.3.7); the others change the transform.
            if !param.to_ascii_uppercase().starts_with("WSH=") {
                return Err("session parameter not supported");
            }
        }
        MasterKey::new(suite, &material).ok_or("key has the wrong length for its suite")
    })();
    Some(CryptoLine { tag, key })
}

/// The value of an `a=crypto:` attribute offering or answering `key` under `tag`.
pub fn format(tag: u32, key: &MasterKey) -> String {
    format!("{tag} {} inline:{}", key.suite.name(), STANDARD.encode(key.material()))
}
