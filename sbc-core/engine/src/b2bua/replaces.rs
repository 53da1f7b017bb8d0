//! Replaces, Join and Target-Dialog across the B2BUA (RFC 3891, RFC 3911, RFC 4538): a new
//! request that names one of this SBC's dialogs. The caller names the dialog as its side sees it (its leg with us);
//! the far side only knows its own leg, so the header is rewritten to name the other leg of
//! the same call (SEMS's `fix_replaces_inv`, done here by default). A header that names the
//! far side's leg already (a REFER mapped on its way, `fix_replaces_ref`) goes on unchanged;
//! one that names no dialog of ours is held back (it would point at nothing, and show one
//! network's identifiers to the other).

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::{Engine, Instant, Source};
use crate::sip::msg::{trim, HeaderName, Message};

/// What a URI's header value may hold unescaped (RFC 3261 §25.1 `hnv-unreserved` aside):
/// alphanumerics and marks.
const HVALUE: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'!').remove(b'~').remove(b'*').remove(b'\'');

/// The dialog a Replaces or Join value names: `call-id;to-tag=..;from-tag=..` and the other
/// parameters (`early-only` ...), kept as written. A Target-Dialog value says the same with
/// `local-tag` (the recipient's, as `to-tag`) and `remote-tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DialogRef<'a> {
    call_id: &'a [u8],
    to_tag: &'a [u8],
    from_tag: &'a [u8],
    /// `;early-only` and any other parameter, with their leading `;`.
    rest: Vec<&'a [u8]>,
}

/// The names of a header's two tags: the recipient's and the sender's.
#[derive(Debug, Clone, Copy)]
pub(super) struct TagNames {
    recipient: &'static str,
    sender: &'static str,
}

const REPLACES: TagNames = TagNames { recipient: "to-tag", sender: "from-tag" };
const TARGET_DIALOG: TagNames = TagNames { recipient: "local-tag", sender: "remote-tag" };

/// Parses a Replaces/Join value; `None` without a Call-ID or either tag.
pub(super) fn parse(value: &[u8]) -> Option<DialogRef<'_>> {
    parse_with(value, REPLACES)
}

fn parse_with(value: &[u8], names: TagNames) -> Option<DialogRef<'_>> {
    let mut parts = value.split(|b| *b == b';');
    let call_id = trim(parts.next()?);
    let (mut to_tag, mut from_tag, mut rest) = (None, None, Vec::new());
    for p in parts {
        let p = trim(p);
        let (name, v) = match p.iter().position(|b| *b == b'=') {
            Some(i) => (trim(&p[..i]), trim(&p[i + 1..])),
            None => (p, &p[p.len()..]),
        };
        if name.eq_ignore_ascii_case(names.recipient.as_bytes()) {
            to_tag = Some(v);
        } else if name.eq_ignore_ascii_case(names.sender.as_bytes()) {
            from_tag = Some(v);
        } else if !p.is_empty() {
            rest.push(p);
        }
    }
    let (to_tag, from_tag) = (to_tag?, from_tag?);
    (!call_id.is_empty() && !to_tag.is_empty() && !from_tag.is_empty()).then_some(DialogRef {
        call_id,
        to_tag,
        from_tag,
        rest,
    })
}

/// The Call-ID of the dialog a new request's Replaces, Join or Target-Dialog names (the driver
/// hands such a request to the shard that holds that dialog).
pub fn replaced_call_id(msg: &Message) -> Option<&[u8]> {
    if let Some(value) = msg.header_value(HeaderName::Replaces).or_else(|| msg.header_value(HeaderName::Join)) {
        return parse(value).map(|r| r.call_id);
    }
    parse_with(msg.header_value(HeaderName::TargetDialog)?, TARGET_DIALOG).map(|r| r.call_id)
}

/// A REFER's Refer-To, with where its URI headers begin (`?`) and end.
fn refer_to_headers(msg: &Message) -> Option<(&str, usize, usize)> {
    let value = msg.other_header("Refer-To").or_else(|| msg.other_header("r"))?;
    let text = std::str::from_utf8(value).ok()?;
    let q = text.find('?')?;
    let end = text[q..].find('>').map_or(text.len(), |e| q + e);
    Some((text, q, end))
}

/// A URI header `Replaces=value`: its name as written and its value, percent-decoded.
fn replaces_header(h: &str) -> Option<(&str, std::borrow::Cow<'_, str>)> {
    let (n, v) = h.split_once('=').filter(|(n, _)| n.eq_ignore_ascii_case("replaces"))?;
    Some((n, percent_decode_str(v).decode_utf8().ok()?))
}

/// The Call-ID of the dialog the Replaces in a REFER's Refer-To names: the driver asks the
/// shard holding it to map the Refer-To when that is not the REFER's own shard.
pub fn refer_to_replaced_call_id(msg: &Message) -> Option<String> {
    let (text, q, end) = refer_to_headers(msg)?;
    let (_, decoded) = text[q + 1..end].split('&').find_map(replaces_header)?;
    parse(decoded.as_bytes()).map(|r| String::from_utf8_lossy(r.call_id).into_owned())
}

/// What a Replaces/Join value becomes on the other leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Mapped {
    /// It named one of our legs as the sender sees it: this names the other leg as the far
    /// side sees it.
    Other(String),
    /// It names the far side's leg already.
    AsIs,
    /// No dialog of ours.
    Unknown,
}

impl Engine {
    /// Maps a Replaces/Join value that names one of this SBC's dialogs (RFC 3891 §3: the
    /// recipient matches `to-tag` with its local tag, `from-tag` with the remote one).
    pub(super) fn map_dialog_ref(&self, r: &DialogRef<'_>) -> Mapped {
        self.map_dialog_ref_as(r, REPLACES)
    }

    fn map_dialog_ref_as(&self, r: &DialogRef<'_>, names: TagNames) -> Mapped {
        let leg_of = |tag: &[u8]| {
            let (call, side) = self.dialogs.get(tag)?;
            Some((self.calls.get(call)?, *side))
        };
        if let Some((call, side)) = leg_of(r.to_tag) {
            let ours = call.leg(side);
            if *ours.call_id == *r.call_id && ours.remote_tag.as_deref() == Some(r.from_tag) {
                let other = call.leg(side.other());
                let Some(far_tag) = other.remote_tag.as_deref() else { return Mapped::Unknown };
                let mut v = format!(
                    "{};{}={};{}={}",
                    String::from_utf8_lossy(&other.call_id),
                    names.recipient,
                    String::from_utf8_lossy(far_tag),
                    names.sender,
                    String::from_utf8_lossy(&other.local_tag)
                );
                for p in &r.rest {
                    v.push(';');
                    v.push_str(&String::from_utf8_lossy(p));
                }
                return Mapped::Other(v);
            }
        }
        if let Some((call, side)) = leg_of(r.from_tag) {
            let ours = call.leg(side);
            if *ours.call_id == *r.call_id && ours.remote_tag.as_deref() == Some(r.to_tag) {
                return Mapped::AsIs;
            }
        }
        Mapped::Unknown
    }

    /// A relayed REFER's Refer-To with the Replaces in its URI headers mapped to the other leg
    /// (`fix_replaces_ref`): `None` when it has none that names a dialog of ours as the
    /// REFER's sender sees it (the row is then copied as it is). The dialog may live on
    /// another shard than the REFER's: the driver then asks that shard's engine first, and
    /// hands its answer over with the REFER ([`Engine::handle_refer_mapped_elsewhere`]).
    pub fn mapped_refer_to(&self, msg: &Message) -> Option<String> {
        let (text, q, end) = refer_to_headers(msg)?;
        let mut changed = false;
        let headers: Vec<String> = text[q + 1..end]
            .split('&')
            .map(|h| {
                let mapped = replaces_header(h).and_then(|(n, decoded)| {
                    match self.map_dialog_ref(&parse(decoded.as_bytes())?) {
                        Mapped::Other(m) => Some(format!("{n}={}", utf8_percent_encode(&m, HVALUE))),
                        Mapped::AsIs | Mapped::Unknown => None,
                    }
                });
                changed |= mapped.is_some();
                mapped.unwrap_or_else(|| h.to_string())
            })
            .collect();
        changed.then(|| format!("{}{}{}", &text[..=q], headers.join("&"), &text[end..]))
    }

    /// An in-dialog REFER whose Refer-To the shard holding the dialog its Replaces names has
    /// mapped already (`refer_to`, `None` when that shard knew no such dialog).
    pub fn handle_refer_mapped_elsewhere(&mut self, now: Instant, msg: Message, src: Source, refer_to: Option<String>) {
        self.refer_to_from_elsewhere = refer_to;
        self.handle_message(now, msg, src);
        self.refer_to_from_elsewhere = None;
    }

    /// The Replaces, Join and Target-Dialog rows a new request's other leg carries: each one
    /// that names a dialog of ours, mapped (see the module's documentation).
    pub(super) fn dialog_ref_rows(&self, msg: &Message) -> Vec<(&'static str, String)> {
        let mut rows = Vec::new();
        for (name, header, names) in [
            ("Replaces", HeaderName::Replaces, REPLACES),
            ("Join", HeaderName::Join, REPLACES),
            ("Target-Dialog", HeaderName::TargetDialog, TARGET_DIALOG),
        ] {
            for value in msg.values(header) {
                let mapped = parse_with(value, names).map_or(Mapped::Unknown, |r| self.map_dialog_ref_as(&r, names));
                match mapped {
                    Mapped::Other(v) => rows.push((name, v)),
                    Mapped::AsIs => rows.push((name, String::from_utf8_lossy(value).into_owned())),
                    Mapped::Unknown => {
                        tracing::info!(header = name, "names no dialog of this SBC: held back");
                    }
                }
            }
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_with_their_parameters_kept() {
        let r = parse(b"98asjd8@host ; to-tag=7743;from-tag=6472;early-only").expect("parses");
        assert_eq!((r.call_id, r.to_tag, r.from_tag), (&b"98asjd8@host"[..], &b"7743"[..], &b"6472"[..]));
        assert_eq!(r.rest, [&b"early-only"[..]]);
        assert!(parse(b"id;to-tag=1").is_none(), "both tags are needed");
        assert!(parse(b";to-tag=1;from-tag=2").is_none(), "and a Call-ID");
    }

    #[test]
    fn the_call_id_a_refer_to_names_is_found_percent_decoded() {
        let refer = |to: &str| {
            let text = format!(
                "REFER sip:a@h SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:b@h>;tag=1\r\nTo: <sip:a@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 REFER\r\nRefer-To: {to}\r\nContent-Length: 0\r\n\r\n"
            );
            Message::parse(bytes::Bytes::from(text)).expect("parses")
        };
        let named = refer("<sip:c@h?Subject=x&replaces=id%40host%3Bto-tag%3D1%3Bfrom-tag%3D2>");
        assert_eq!(refer_to_replaced_call_id(&named).as_deref(), Some("id@host"));
        assert_eq!(refer_to_replaced_call_id(&refer("<sip:c@h?Subject=x>")), None);
        assert_eq!(refer_to_replaced_call_id(&refer("<sip:c@h?Replaces=id%3Bto-tag%3D1>")), None, "a tag missing");
    }
}
