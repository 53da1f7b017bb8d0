//! The pieces of a SIP URI or name-addr that pseudo-variables read (`$rU`, `$fd`, `$HP(x)` ...).
//! Forgiving on purpose: a value that does not parse yields empty components, never an error.
//!
//! [`split_uri`] is the project's one URI splitter: [`UriParts`] reads its pieces as text, and
//! `sbc-engine`'s `sip::msg::Uri` checks them (scheme, host, port, parameters) for routing.

use std::ops::Range;

/// Where the pieces of a URI are in its text (RFC 3261 §19.1.1, RFC 3966), found by the
/// delimiters alone, without judging the pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriSpans {
    pub scheme: Range<usize>,
    /// Before the `@`: user and password; for `tel:` the number.
    pub userinfo: Option<Range<usize>>,
    /// `host[:port]` (empty for `tel:`).
    pub hostport: Range<usize>,
    /// The URI parameters with their leading `;` (empty when there are none).
    pub params: Range<usize>,
    /// After the `?`.
    pub headers: Range<usize>,
}

/// Cuts `scheme:[userinfo@]hostport[;params][?headers]`; `None` without a `:`. The userinfo may
/// hold `?`, `;` and `,` (RFC 4475 §3.1.1.2), so headers are looked for only after the `@`
/// that ends it; an IPv6 reference's brackets are skipped when looking for parameters.
pub fn split_uri(s: &[u8]) -> Option<UriSpans> {
    let colon = s.iter().position(|&c| c == b':')?;
    let scheme = 0..colon;
    let rest = colon + 1;
    let find = |from: usize, to: usize, c: u8| s[from..to].iter().position(|&x| x == c).map(|p| p + from);
    let host_from = find(rest, s.len(), b'@').map_or(rest, |at| at + 1);
    let (body_end, headers) = match find(host_from, s.len(), b'?') {
        Some(q) => (q, q + 1..s.len()),
        None => (s.len(), s.len()..s.len()),
    };
    if s[scheme.clone()].eq_ignore_ascii_case(b"tel") {
        let semi = find(rest, body_end, b';').unwrap_or(body_end);
        return Some(UriSpans {
            scheme,
            userinfo: Some(rest..semi),
            hostport: semi..semi,
            params: semi..body_end,
            headers,
        });
    }
    let (userinfo, host) = match find(rest, body_end, b'@') {
        Some(at) => (Some(rest..at), at + 1),
        None => (None, rest),
    };
    let after_ref =
        if s.get(host) == Some(&b'[') { find(host, body_end, b']').map_or(body_end, |p| p + 1) } else { host };
    let semi = find(after_ref, body_end, b';').unwrap_or(body_end);
    Some(UriSpans { scheme, userinfo, hostport: host..semi, params: semi..body_end, headers })
}

/// `[display-name] <uri>;params` or `uri;params` split into its parts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NameAddrParts<'a> {
    /// Display name without its quotes.
    pub display: &'a str,
    pub uri: &'a str,
    /// Header parameters after the URI (`tag=...`), without the leading `;`.
    pub params: &'a str,
}

/// A URI split into its parts; `user`, `port`, `params` and `headers` are empty when absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UriParts<'a> {
    pub scheme: &'a str,
    pub user: &'a str,
    pub host: &'a str,
    pub port: &'a str,
    /// URI parameters, raw, without the leading `;`.
    pub params: &'a str,
    /// URI headers (after `?`), raw.
    pub headers: &'a str,
}

impl<'a> UriParts<'a> {
    pub fn parse(s: &'a str) -> Self {
        let s = s.trim();
        let Some(spans) = split_uri(s.as_bytes()) else {
            return Self::default();
        };
        // The delimiters are ASCII: every span starts and ends on a character boundary.
        let part = |r: Range<usize>| s.get(r).unwrap_or("");
        let userinfo = spans.userinfo.map_or("", part);
        let tel = part(spans.scheme.clone()).eq_ignore_ascii_case("tel");
        let user = if tel { userinfo } else { userinfo.split_once(':').map_or(userinfo, |(u, _password)| u) };
        let (host, port) = split_hostport(part(spans.hostport));
        let params = part(spans.params);
        Self {
            scheme: part(spans.scheme),
            user,
            host,
            port,
            params: params.strip_prefix(';').unwrap_or(params),
            headers: part(spans.headers),
        }
    }

    /// `host[:port]`.
    pub fn hostport(&self, out: &mut String) {
        out.push_str(self.host);
        if !self.port.is_empty() {
            out.push(':');
            out.push_str(self.port);
        }
    }

    /// `user@host[:port]` (no scheme); just `host[:port]` when there is no user.
    pub fn user_host_port(&self, out: &mut String) {
        if !self.user.is_empty() {
            out.push_str(self.user);
            out.push('@');
        }
        self.hostport(out);
    }

    /// Value of URI parameter `name` (case-insensitive, last occurrence wins, empty for a flag).
    pub fn param(&self, name: &str) -> &'a str {
        param_value(self.params, name)
    }
}

/// Splits `host[:port]`, IPv6 references in brackets kept with their brackets.
pub fn split_hostport(s: &str) -> (&str, &str) {
    if s.starts_with('[') {
        return match s.find(']') {
            Some(end) => (&s[..=end], s[end + 1..].strip_prefix(':').unwrap_or("")),
            None => (s, ""),
        };
    }
    s.split_once(':').unwrap_or((s, ""))
}

/// Value of `name` in a `;`-separated parameter list (case-insensitive, last one wins).
pub fn param_value<'a>(params: &'a str, name: &str) -> &'a str {
    let mut found = "";
    for p in params.split(';') {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        if k.trim().eq_ignore_ascii_case(name) {
            found = v.trim();
        }
    }
    found
}

impl<'a> NameAddrParts<'a> {
    pub fn parse(v: &'a str) -> Self {
        let v = v.trim();
        let mut rest = v;
        let mut display = "";
        if let Some(after) = v.strip_prefix('"') {
            let mut escaped = false;
            let mut close = None;
            for (i, c) in after.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => {
                        close = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let Some(close) = close else {
                return Self::default();
            };
            display = &after[..close];
            rest = after[close + 1..].trim_start();
        }
        if let Some(lt) = rest.find('<') {
            if display.is_empty() {
                display = rest[..lt].trim();
            }
            let inner = &rest[lt + 1..];
            let Some(gt) = inner.find('>') else {
                return Self::default();
            };
            let params = inner[gt + 1..].trim().trim_start_matches(';').trim();
            return Self { display, uri: inner[..gt].trim(), params };
        }
        // addr-spec without brackets: parameters belong to the header (RFC 3261 §20.10).
        let (uri, params) = rest.split_once(';').unwrap_or((rest, ""));
        Self { display, uri: uri.trim(), params: params.trim() }
    }

    pub fn tag(&self) -> &'a str {
        param_value(self.params, "tag")
    }

    /// `["display" ]<uri>`: the value without its header parameters.
    pub fn display_and_uri(&self, out: &mut String) {
        if !self.display.is_empty() {
            out.push('"');
            out.push_str(self.display);
            out.push_str("\" ");
        }
        out.push('<');
        out.push_str(self.uri);
        out.push('>');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The splitter both views use: headers only after the userinfo's `@`, brackets skipped,
    /// `tel:` numbers in the userinfo.
    #[test]
    fn one_splitter_cuts_at_the_delimiters() {
        let cut = |s: &'static str| {
            let sp = split_uri(s.as_bytes()).expect("a URI");
            let at = |r: Range<usize>| &s[r];
            (at(sp.scheme), sp.userinfo.map(at), at(sp.hostport), at(sp.params), at(sp.headers))
        };
        assert_eq!(
            cut("sip:a?b;c@[2001:db8::1]:5070;lr?Subject=x"),
            ("sip", Some("a?b;c"), "[2001:db8::1]:5070", ";lr", "Subject=x")
        );
        assert_eq!(cut("sips:host.example"), ("sips", None, "host.example", "", ""));
        assert_eq!(cut("tel:+1-555;phone-context=x"), ("tel", Some("+1-555"), "", ";phone-context=x", ""));
        assert!(split_uri(b"no-scheme").is_none());
    }

    #[test]
    fn uri_parts() {
        let u = UriParts::parse("sip:+4930123;npdi@[2001:db8::1]:5070;transport=tcp;user=phone?Subject=hi");
        assert_eq!(u.user, "+4930123;npdi");
        assert_eq!(u.host, "[2001:db8::1]");
        assert_eq!(u.port, "5070");
        assert_eq!(u.params, "transport=tcp;user=phone");
        assert_eq!(u.headers, "Subject=hi");
        assert_eq!(u.param("TRANSPORT"), "tcp");
        let mut s = String::new();
        u.user_host_port(&mut s);
        assert_eq!(s, "+4930123;npdi@[2001:db8::1]:5070");
        let u = UriParts::parse("sip:alice:secret@example.com");
        assert_eq!((u.user, u.host, u.port), ("alice", "example.com", ""));
        let t = UriParts::parse("tel:+1-201-555-0123;phone-context=example.com");
        assert_eq!((t.user, t.host, t.param("phone-context")), ("+1-201-555-0123", "", "example.com"));
        assert_eq!(UriParts::parse("garbage"), UriParts::default());
    }

    #[test]
    fn name_addr_parts() {
        let n = NameAddrParts::parse("\"Bob \\\"B\\\" Smith\" <sip:bob@b.example;user=phone>;tag=x1;foo");
        assert_eq!(n.display, "Bob \\\"B\\\" Smith");
        assert_eq!(n.uri, "sip:bob@b.example;user=phone");
        assert_eq!(n.tag(), "x1");
        let n = NameAddrParts::parse("Alice <sip:a@x>");
        assert_eq!((n.display, n.uri, n.params), ("Alice", "sip:a@x", ""));
        let n = NameAddrParts::parse("sip:a@x;tag=9");
        assert_eq!((n.uri, n.tag()), ("sip:a@x", "9"));
        let mut s = String::new();
        NameAddrParts::parse("\"A\" <sip:a@x>;tag=1").display_and_uri(&mut s);
        assert_eq!(s, "\"A\" <sip:a@x>");
        assert_eq!(NameAddrParts::parse("\"unterminated <sip:a@x>"), NameAddrParts::default());
    }
}
