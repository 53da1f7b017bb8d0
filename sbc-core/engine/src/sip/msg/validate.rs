//! What a server must check before it acts on a message, and the reply it owes when a check
//! fails (RFC 3261 §8.2, §16.3; RFC 4475 §3.1.2 and §3.3).

use super::headers::{parse_u32, split_values, trim, CSeq, NameAddr, Scheme, Uri, Via};
use super::message::Message;
use super::name::HeaderName;
use profiles::LocalReply;

/// Option tags this SBC implements itself; a `Proxy-Require` naming anything else gets 420.
pub const SUPPORTED_OPTIONS: &[&str] = &["100rel"];

/// 400 with the reason the request is malformed.
const fn bad(reason: &'static str) -> LocalReply {
    LocalReply::new(400, reason)
}

/// Checks a parsed request. `Ok` means the B2BUA may process it; `Err` is the reply it owes
/// (a 420 lists the unsupported options in `Unsupported`).
pub fn check_request(msg: &Message) -> Result<(), LocalReply> {
    let mut vias = 0;
    for v in msg.values(HeaderName::Via) {
        Via::parse(v).ok_or(bad("Malformed Via"))?;
        vias += 1;
    }
    if vias == 0 {
        return Err(bad("Missing Via"));
    }
    single(msg, HeaderName::From, "Missing From", "Multiple From")?;
    single(msg, HeaderName::To, "Missing To", "Multiple To")?;
    single(msg, HeaderName::CallId, "Missing Call-ID", "Multiple Call-ID")?;
    single(msg, HeaderName::CSeq, "Missing CSeq", "Multiple CSeq")?;
    msg.from_hdr().ok_or(bad("Malformed From"))?;
    msg.to_hdr().ok_or(bad("Malformed To"))?;
    if msg.call_id().is_none_or(|c| c.is_empty() || c.iter().any(|&b| b <= b' ')) {
        return Err(bad("Malformed Call-ID"));
    }
    let cseq_raw = msg.header_value(HeaderName::CSeq).unwrap_or_default();
    CSeq::parse(cseq_raw).ok_or(bad("Malformed CSeq"))?;
    if CSeq::method_bytes(cseq_raw) != msg.method_bytes() {
        return Err(bad("CSeq method does not match the request method"));
    }
    if let Some(Err(())) = msg.max_forwards() {
        return Err(bad("Malformed Max-Forwards"));
    }
    for v in msg.values(HeaderName::Contact) {
        NameAddr::parse(v).ok_or(bad("Malformed Contact"))?;
    }
    for name in [HeaderName::Route, HeaderName::RecordRoute] {
        for v in msg.values(name) {
            NameAddr::parse(v).ok_or(bad("Malformed Route"))?;
        }
    }
    if let Some(e) = msg.header_value(HeaderName::Expires) {
        parse_u32(e).ok_or(bad("Malformed Expires"))?;
    }
    if let Some(d) = msg.header_value(HeaderName::Date) {
        // rfc1123-date ends in "GMT" (RFC 3261 §20.17).
        if !trim(d).ends_with(b"GMT") {
            return Err(bad("Malformed Date"));
        }
    }
    check_request_uri(msg)?;
    let unsupported: Vec<String> = msg
        .values(HeaderName::ProxyRequire)
        .map(trim)
        .filter(|o| !o.is_empty() && !SUPPORTED_OPTIONS.iter().any(|s| s.as_bytes().eq_ignore_ascii_case(o)))
        .map(|o| String::from_utf8_lossy(o).into_owned())
        .collect();
    if !unsupported.is_empty() {
        return Err(LocalReply::new(420, "Bad Extension").with("Unsupported", unsupported.join(", ")));
    }
    Ok(())
}

fn single(msg: &Message, name: HeaderName, missing: &'static str, multiple: &'static str) -> Result<(), LocalReply> {
    let mut rows = msg.headers_named(name);
    let first = rows.next().ok_or(bad(missing))?;
    if rows.next().is_some() || (name != HeaderName::CallId && split_values(msg.value(first)).count() > 1) {
        return Err(bad(multiple));
    }
    Ok(())
}

fn check_request_uri(msg: &Message) -> Result<(), LocalReply> {
    let uri = Uri::parse(msg.request_uri()).ok_or(bad("Malformed Request-URI"))?;
    match uri.scheme {
        // Headers in a Request-URI are not allowed (RFC 3261 §19.1.5, RFC 4475 §3.1.2.11).
        Scheme::Sip | Scheme::Sips if !uri.headers.is_empty() => Err(bad("Headers in Request-URI")),
        Scheme::Sip | Scheme::Sips | Scheme::Tel => Ok(()),
        Scheme::Other => Err(LocalReply::new(416, "Unsupported URI Scheme")),
    }
}

/// Checks a parsed response; `Err` carries the drop reason (responses are never answered).
pub fn check_response(msg: &Message) -> Result<(), &'static str> {
    msg.top_via().ok_or("response_bad_via")?;
    msg.cseq().ok_or("response_bad_cseq")?;
    msg.call_id().ok_or("response_no_call_id")?;
    msg.from_hdr().ok_or("response_bad_from")?;
    msg.to_hdr().ok_or("response_bad_to")?;
    Ok(())
}

/// For a request that could not be parsed, the rows a 400 needs (Via, From, To, Call-ID, CSeq),
/// found by a lenient scan. `None` when no Via is found: then there is no one to answer.
pub fn salvage_request_rows(buf: &[u8]) -> Option<Vec<(HeaderName, &[u8])>> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(buf.len());
    let head = &buf[..head_end.min(super::MAX_HEADER_BYTES)];
    let mut lines = head.split(|&c| c == b'\n');
    let first = lines.next()?;
    if first.starts_with(b"SIP/") {
        return None;
    }
    let mut rows = Vec::new();
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_none_or(|c| *c == b' ' || *c == b'\t') {
            continue; // folded rows are too risky to salvage
        }
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        let name = HeaderName::classify(trim(&line[..colon]));
        let keep =
            matches!(name, HeaderName::Via | HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::CSeq);
        let value = trim(&line[colon + 1..]);
        if keep && !value.is_empty() && !rows.iter().any(|(n, _)| *n == name && name != HeaderName::Via) {
            rows.push((name, value));
        }
    }
    let via = rows.iter().find(|(n, _)| *n == HeaderName::Via)?;
    Via::parse_any_version(split_values(via.1).next()?)?;
    Some(rows)
}
