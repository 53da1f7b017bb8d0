//! Lazy typed views of the headers a B2BUA interprets. They borrow from the message and never
//! allocate; `None` means "malformed". Line folding (CRLF + WS inside a value) counts as white
//! space everywhere here, so folded rows need no normalisation.

use super::message::Method;
use super::parse::{is_token_char, parse_decimal};
use profiles::uri::split_uri;

pub(crate) fn is_lws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// Trims linear white space (including folding) from both ends.
pub fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&c| !is_lws(c)).unwrap_or(s.len());
    let end = s.iter().rposition(|&c| !is_lws(c)).map_or(start, |e| e + 1);
    &s[start..end]
}

/// Splits a header value at commas that are outside quotes and angle brackets (RFC 3261 §7.3.1).
pub fn split_values(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(v);
    std::iter::from_fn(move || {
        let s = rest?;
        let (mut in_quote, mut in_angle, mut escaped) = (false, false, false);
        for (i, &c) in s.iter().enumerate() {
            if in_quote {
                match c {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_quote = false,
                    _ => {}
                }
                continue;
            }
            match c {
                b'"' => in_quote = true,
                b'<' => in_angle = true,
                b'>' => in_angle = false,
                b',' if !in_angle => {
                    rest = Some(&s[i + 1..]);
                    return Some(trim(&s[..i]));
                }
                _ => {}
            }
        }
        rest = None;
        Some(trim(s))
    })
}

/// Iterates `;name[=value]` parameters; yields (name, value) trimmed. `None` item = malformed.
fn params(s: &[u8]) -> impl Iterator<Item = Option<(&[u8], Option<&[u8]>)>> {
    let mut rest = s;
    std::iter::from_fn(move || {
        let t = trim(rest);
        if t.is_empty() {
            return None;
        }
        let Some(t) = t.strip_prefix(b";") else {
            rest = b"";
            return Some(None);
        };
        let end = find_unquoted(t, b';').unwrap_or(t.len());
        let item = &t[..end];
        rest = &t[end..];
        let (name, value) = match item.iter().position(|&c| c == b'=') {
            Some(eq) => (trim(&item[..eq]), Some(trim(&item[eq + 1..]))),
            None => (trim(item), None),
        };
        if name.is_empty() || !name.iter().all(|&c| is_token_char(c)) {
            return Some(None);
        }
        Some(Some((name, value)))
    })
}

fn find_unquoted(s: &[u8], needle: u8) -> Option<usize> {
    let (mut in_quote, mut escaped) = (false, false);
    for (i, &c) in s.iter().enumerate() {
        if in_quote {
            match c {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_quote = false,
                _ => {}
            }
        } else if c == b'"' {
            in_quote = true;
        } else if c == needle {
            return Some(i);
        }
    }
    None
}

/// The value of parameter `name` (case-insensitive) in `;name=value` text; empty for a
/// parameter without one.
pub fn find_param<'a>(s: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    params(s).flatten().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.unwrap_or_default())
}

fn params_well_formed(s: &[u8]) -> bool {
    params(s).all(|p| p.is_some())
}

// === Via ===

/// One Via value: `SIP/2.0/UDP host[:port];params`.
#[derive(Debug, Clone, Copy)]
pub struct Via<'a> {
    pub transport: &'a [u8],
    pub host: &'a [u8],
    pub port: Option<u16>,
    pub params: &'a [u8],
}

impl<'a> Via<'a> {
    pub fn parse(v: &'a [u8]) -> Option<Self> {
        Self::parse_inner(v, false)
    }

    /// Accepts any SIP version in sent-protocol: enough to answer 505 to such a request.
    pub fn parse_any_version(v: &'a [u8]) -> Option<Self> {
        Self::parse_inner(v, true)
    }

    fn parse_inner(v: &'a [u8], any_version: bool) -> Option<Self> {
        let v = trim(v);
        // sent-protocol: three tokens separated by "/" with optional LWS around the slashes.
        let mut rest = v;
        let mut proto = [&b""[..]; 3];
        for (i, slot) in proto.iter_mut().enumerate() {
            let t = trim_start(rest);
            let end = t.iter().position(|&c| !is_token_char(c)).unwrap_or(t.len());
            *slot = &t[..end];
            if slot.is_empty() {
                return None;
            }
            rest = trim_start(&t[end..]);
            if i < 2 {
                rest = rest.strip_prefix(b"/")?;
            }
        }
        if !proto[0].eq_ignore_ascii_case(b"SIP") || (proto[1] != b"2.0" && !any_version) {
            return None;
        }
        let rest = trim_start(rest);
        let end = rest.iter().position(|&c| c == b';' || is_lws(c)).unwrap_or(rest.len());
        let (host, port) = parse_hostport(&rest[..end])?;
        let params = &rest[end..];
        if !params_well_formed(params) {
            return None;
        }
        Some(Self { transport: proto[2], host, port, params })
    }
    pub fn param(&self, name: &[u8]) -> Option<&'a [u8]> {
        find_param(self.params, name)
    }
    pub fn branch(&self) -> Option<&'a [u8]> {
        self.param(b"branch")
    }
    pub fn has_param(&self, name: &[u8]) -> bool {
        params(self.params).flatten().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

fn trim_start(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&c| !is_lws(c)).unwrap_or(s.len());
    &s[start..]
}

/// `host[:port]` with IPv6 references. Host syntax is checked loosely (token chars or a
/// bracketed address); the port must be a valid u16.
pub fn parse_hostport(s: &[u8]) -> Option<(&[u8], Option<u16>)> {
    let (host, port) = if s.first() == Some(&b'[') {
        let close = s.iter().position(|&c| c == b']')?;
        let host = &s[..=close];
        if !host[1..close].iter().all(|&c| c.is_ascii_hexdigit() || c == b':' || c == b'.') {
            return None;
        }
        (host, &s[close + 1..])
    } else {
        let colon = s.iter().position(|&c| c == b':').unwrap_or(s.len());
        let host = &s[..colon];
        if host.is_empty() || !host.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_') {
            return None;
        }
        (host, &s[colon..])
    };
    if port.is_empty() {
        return Some((host, None));
    }
    let digits = port.strip_prefix(b":")?;
    let p = parse_decimal(digits)?;
    Some((host, Some(u16::try_from(p).ok()?)))
}

// === name-addr / addr-spec (From, To, Contact, Route, Record-Route) ===

#[derive(Debug, Clone, Copy)]
pub struct NameAddr<'a> {
    pub display: &'a [u8],
    pub uri: &'a [u8],
    pub params: &'a [u8],
}

impl<'a> NameAddr<'a> {
    pub fn parse(v: &'a [u8]) -> Option<Self> {
        let v = trim(v);
        if v == b"*" {
            return Some(Self { display: b"", uri: v, params: b"" });
        }
        let lt = find_unquoted(v, b'<');
        let (display, uri, params) = match lt {
            Some(lt) => {
                let display = trim(&v[..lt]);
                let gt = v[lt..].iter().position(|&c| c == b'>')? + lt;
                let uri = &v[lt + 1..gt];
                if uri.is_empty() || uri.iter().any(|&c| is_lws(c)) {
                    return None;
                }
                (display, uri, &v[gt + 1..])
            }
            None => {
                if v.contains(&b'"') {
                    return None; // quoted display name without <uri>, or unbalanced quote
                }
                let end = v.iter().position(|&c| c == b';').unwrap_or(v.len());
                let uri = trim(&v[..end]);
                // addr-spec may not contain ',', '?' or ';' (RFC 3261 §20) nor white space.
                if uri.is_empty() || uri.iter().any(|&c| is_lws(c) || c == b'?' || c == b',') {
                    return None;
                }
                (&b""[..], uri, &v[end..])
            }
        };
        if !display_ok(display) || !params_well_formed(params) || !uri.contains(&b':') {
            return None;
        }
        Some(Self { display, uri, params })
    }
    pub fn param(&self, name: &[u8]) -> Option<&'a [u8]> {
        find_param(self.params, name)
    }
    pub fn tag(&self) -> Option<&'a [u8]> {
        self.param(b"tag")
    }
    pub fn parsed_uri(&self) -> Option<Uri<'a>> {
        Uri::parse(self.uri)
    }
}

/// display-name = *(token LWS) / quoted-string
fn display_ok(d: &[u8]) -> bool {
    if d.is_empty() {
        return true;
    }
    if d[0] == b'"' {
        let mut escaped = false;
        for (i, &c) in d.iter().enumerate().skip(1) {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                return i == d.len() - 1;
            }
        }
        return false;
    }
    d.iter().all(|&c| is_token_char(c) || is_lws(c))
}

// === URI ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    Other,
}

/// A URI split into parts. For `tel:` the number is in `user` and `host` is empty; for unknown
/// schemes everything after the colon is in `host` unparsed.
#[derive(Debug, Clone, Copy)]
pub struct Uri<'a> {
    pub scheme: Scheme,
    pub user: Option<&'a [u8]>,
    pub host: &'a [u8],
    pub port: Option<u16>,
    pub params: &'a [u8],
    pub headers: &'a [u8],
}

impl<'a> Uri<'a> {
    pub fn parse(s: &'a [u8]) -> Option<Self> {
        let colon = s.iter().position(|&c| c == b':')?;
        let scheme_raw = &s[..colon];
        if scheme_raw.is_empty()
            || !scheme_raw[0].is_ascii_alphabetic()
            || !scheme_raw.iter().all(|&c| c.is_ascii_alphanumeric() || b"+-.".contains(&c))
        {
            return None;
        }
        let rest = &s[colon + 1..];
        let scheme = if scheme_raw.eq_ignore_ascii_case(b"sip") {
            Scheme::Sip
        } else if scheme_raw.eq_ignore_ascii_case(b"sips") {
            Scheme::Sips
        } else if scheme_raw.eq_ignore_ascii_case(b"tel") {
            Scheme::Tel
        } else {
            return Some(Self { scheme: Scheme::Other, user: None, host: rest, port: None, params: b"", headers: b"" });
        };
        // The pieces are cut by the one URI splitter (`profiles/src/uri.rs`) and judged here.
        let spans = split_uri(s)?;
        let (params, headers) = (&s[spans.params], &s[spans.headers]);
        if scheme == Scheme::Tel {
            let number = spans.userinfo.map(|r| &s[r]).filter(|n| !n.is_empty())?;
            return Some(Self { scheme, user: Some(number), host: b"", port: None, params, headers });
        }
        let (host, port) = parse_hostport(&s[spans.hostport])?;
        if !params_well_formed(params) {
            return None;
        }
        Some(Self { scheme, user: spans.userinfo.map(|r| &s[r]), host, port, params, headers })
    }
    pub fn param(&self, name: &[u8]) -> Option<&'a [u8]> {
        find_param(self.params, name)
    }
    pub fn has_param(&self, name: &[u8]) -> bool {
        params(self.params).flatten().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

// === CSeq ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq {
    pub num: u32,
    pub method: Method,
}

impl CSeq {
    /// `1*DIGIT LWS Method`, the number below 2**31 (RFC 3261 §8.1.1.5).
    pub fn parse(v: &[u8]) -> Option<Self> {
        let v = trim(v);
        let ws = v.iter().position(|&c| is_lws(c))?;
        let num = &v[..ws];
        if num.is_empty() || num.len() > 10 || !num.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n: u64 = num.iter().fold(0, |a, d| a * 10 + u64::from(d - b'0'));
        if n >= 1 << 31 {
            return None;
        }
        let method = trim(&v[ws..]);
        if method.is_empty() || !method.iter().all(|&c| is_token_char(c)) {
            return None;
        }
        Some(Self { num: n as u32, method: Method::from_bytes(method) })
    }
    /// Returns the raw method token of a CSeq value.
    pub fn method_bytes(v: &[u8]) -> &[u8] {
        let v = trim(v);
        let ws = v.iter().position(|&c| is_lws(c)).unwrap_or(v.len());
        trim(&v[ws..])
    }
}

/// RAck: `response-num CSeq-num Method` (RFC 3262 §7.2).
pub fn parse_rack(v: &[u8]) -> Option<(u32, u32, &[u8])> {
    let mut it = trim(v).split(|&c| is_lws(c)).filter(|p| !p.is_empty());
    let rseq = parse_u32(it.next()?)?;
    let cseq = parse_u32(it.next()?)?;
    let method = it.next()?;
    Some((rseq, cseq, method))
}

pub fn parse_u32(s: &[u8]) -> Option<u32> {
    let s = trim(s);
    if s.is_empty() || s.len() > 10 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    u32::try_from(s.iter().fold(0u64, |a, d| a * 10 + u64::from(d - b'0'))).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_folding_and_spaces() {
        let v = Via::parse(b"SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8").unwrap();
        assert_eq!(v.transport, b"TCP");
        assert_eq!(v.host, b"spindle.example.com");
        assert_eq!(v.branch(), Some(&b"z9hG4bK9ikj8"[..]));
        let v = Via::parse(b"SIP/2.0/UDP [2001:db8::1]:5060;rport;branch=z9hG4bKx").unwrap();
        assert_eq!(v.host, b"[2001:db8::1]");
        assert_eq!(v.port, Some(5060));
        assert!(v.has_param(b"rport"));
        assert!(Via::parse(b"SIP/2.0/UDP 192.0.2.15;;").is_none());
    }

    #[test]
    fn split_respects_quotes_and_angles() {
        let vals: Vec<_> = split_values(b"\"a,b\" <sip:x@y;p=1,2>, <sip:z@w>").collect();
        assert_eq!(vals.len(), 2);
        assert_eq!(vals[1], b"<sip:z@w>");
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(b"\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8")
            .unwrap();
        assert_eq!(n.tag(), Some(&b"98asjd8"[..]));
        let n = NameAddr::parse(b"sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(n.uri, b"sip:vivekg@chair-dnrc.example.com");
        assert_eq!(n.tag(), Some(&b"1918181833n"[..]));
        assert!(NameAddr::parse(b"\"Mr. J. User <sip:j.user@example.com>").is_none());
        assert!(NameAddr::parse(b"Bell, Alexander <sip:a@b>").is_none());
        assert!(NameAddr::parse(b"\"Watson, Thomas\" < sip:t.watson@example.org >").is_none());
        assert!(NameAddr::parse(b"sip:user@example.com?Route=%3Csip:sip.example.com%3E").is_none());
    }

    #[test]
    fn uris() {
        let u = Uri::parse(b"sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user, Some(&b"user;par=u%40example.net"[..]));
        assert_eq!(u.host, b"example.com");
        let u = Uri::parse(b"sip:bob@[2001:db8::2]:5070;transport=tcp").unwrap();
        assert_eq!(u.host, b"[2001:db8::2]");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.param(b"transport"), Some(&b"tcp"[..]));
        let u = Uri::parse(b"tel:+1-201-555-0123;phone-context=x").unwrap();
        assert_eq!(u.scheme, Scheme::Tel);
        assert_eq!(Uri::parse(b"nobodyKnowsThisScheme:totallyopaquecontent").unwrap().scheme, Scheme::Other);
        assert!(Uri::parse(b"sip:host:99999").is_none());
    }

    #[test]
    fn cseq_limits() {
        assert_eq!(CSeq::parse(b"0009\r\n  INVITE").unwrap().num, 9);
        assert!(CSeq::parse(b"36893488147419103232 REGISTER").is_none());
        assert!(CSeq::parse(b"2147483648 INVITE").is_none());
    }
}
