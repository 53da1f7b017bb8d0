//! Address-of-record canonicalisation (docs/manual/access.md, Registration caching): the key
//! registrations are filed under.

/// `sip:`/`sips:` + `user@` (if any) + host + `:port` only when it is not 5060; URI parameters
/// and headers dropped; host lowercased (user parts are case-sensitive and kept). `None` for
/// anything that is not a sip(s) URI with a host. Accepts a bare URI or a name-addr
/// (`"Bob" <sip:bob@example.com>;tag=x`).
pub fn canonical_aor(value: &str) -> Option<String> {
    let v = value.trim();
    let uri = match (v.find('<'), v.rfind('>')) {
        (Some(a), Some(b)) if a < b => &v[a + 1..b],
        _ => v.split(';').next().unwrap_or_default(),
    };
    let uri = uri.trim();
    let (scheme, rest) = uri.split_once(':')?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "sip" && scheme != "sips" {
        return None;
    }
    let rest = rest.split(['?', ';']).next().unwrap_or_default();
    let (user, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (host, port) = split_hostport(hostport);
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    let mut out = format!("{scheme}:");
    if let Some(u) = user.filter(|u| !u.is_empty()) {
        out.push_str(u);
        out.push('@');
    }
    out.push_str(&host.to_ascii_lowercase());
    match port {
        Some(p) if p != "5060" => {
            p.parse::<u16>().ok()?;
            out.push(':');
            out.push_str(p);
        }
        _ => {}
    }
    Some(out)
}

/// `host[:port]`, IPv6 references kept in brackets.
fn split_hostport(s: &str) -> (&str, Option<&str>) {
    if s.starts_with('[') {
        return match s.find(']') {
            Some(i) => (&s[..=i], s[i + 1..].strip_prefix(':')),
            None => (s, None),
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    }
}

#[cfg(test)]
mod tests {
    use super::canonical_aor;

    #[test]
    fn canonical_forms() {
        assert_eq!(
            canonical_aor("<sip:alice@Example.COM:5060;transport=tcp>;tag=1").as_deref(),
            Some("sip:alice@example.com")
        );
        assert_eq!(canonical_aor("\"A\" <sip:alice@example.com:5070>").as_deref(), Some("sip:alice@example.com:5070"));
        assert_eq!(canonical_aor("sips:[::1]:5061").as_deref(), Some("sips:[::1]:5061"));
        assert_eq!(canonical_aor("sip:example.com;user=phone").as_deref(), Some("sip:example.com"));
        assert_eq!(canonical_aor("tel:+4930123"), None);
        assert_eq!(canonical_aor("<sip:alice@>"), None);
        assert_eq!(canonical_aor("sip:a@b:port"), None);
    }
}
