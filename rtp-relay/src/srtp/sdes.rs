//! The SDES `a=crypto` attribute (RFC 4568 §9.1):
//! `a=crypto:<tag> <crypto-suite> inline:<key||salt base64>[|<lifetime>][|<MKI>:<length>] [<session-params>]`.
//! The key may come with or without base64 padding (implementations differ).
//!
//! A line the relay cannot honour is read as unusable with the reason, so an offer with a
//! usable line beside it still goes on, and one without gets a refusal that says why.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

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
        let material = LENIENT.decode(parts.next().unwrap_or_default()).map_err(|_| "key is not base64")?;
        let mut mki = None;
        for p in parts {
            // An MKI (`value:length`) is what the side's packets carry; the relay sends none.
            if let Some((value, len)) = p.split_once(':') {
                let value: u32 = value.parse().map_err(|_| "MKI value not supported")?;
                let len: u8 = len.parse().map_err(|_| "MKI length not supported")?;
                mki = Some((value, len));
                continue;
            }
            // A lifetime ("2^31" or digits) is taken: the relay re-keys never, and a call ends
            // long before 2^31 packets.
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
        let key = MasterKey::new(suite, &material).ok_or("key has the wrong length for its suite")?;
        match mki {
            Some((value, len)) => key.with_mki(value, len).ok_or("MKI longer than 4 bytes or its value too large"),
            None => Ok(key),
        }
    })();
    Some(CryptoLine { tag, key })
}

/// The value of an `a=crypto:` attribute offering or answering `key` under `tag`.
pub fn format(tag: u32, key: &MasterKey) -> String {
    format!("{tag} {} inline:{}", key.suite.name(), STANDARD.encode(key.material()))
}
