//! AST → text, against one request. Variable output is written once and never scanned again,
//! and CR, LF and NUL coming from the request are replaced by spaces, so a caller cannot put a
//! header of its own into what the SBC sends (only the operator's literal `\r\n` can).

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt::Write as _;
use std::net::SocketAddr;

use md5::{Digest, Md5};

use super::request::{CcVars, InterfaceFacts, PeerIdentity, RegCacheView, RequestView};
use super::{Func, Node, Part, Pattern, UriSource, Var};
use crate::regex_map::RegexMaps;
use crate::uri::{split_hostport, NameAddrParts, UriParts};

/// Everything a pattern can read.
pub struct Env<'a> {
    pub req: &'a dyn RequestView,
    pub source: SocketAddr,
    pub local: SocketAddr,
    pub interface: InterfaceFacts<'a>,
    /// The verified TLS client certificate of the connection the request came on.
    pub peer: Option<&'a PeerIdentity>,
    /// The profile's first `next_hop` entry (`host[:port][/transport]`) for `$di`/`$dp`; `None`
    /// means the Request-URI's host and port are used.
    pub next_hop: Option<&'a str>,
    pub maps: &'a RegexMaps,
    pub cc_vars: &'a dyn CcVars,
    pub reg_cache: &'a dyn RegCacheView,
    /// State of the generator behind `$_r(n)`.
    pub rng: &'a Cell<u64>,
}

fn text(b: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// Appends certificate text: only the characters of host names, addresses and SIP URIs. A CA
/// may sign any text; it must not change the structure of the message a pattern builds.
fn push_cert(out: &mut String, s: &str) {
    out.extend(s.chars().filter(|c| c.is_ascii_alphanumeric() || "-._:@*+=/".contains(*c)));
}

/// Appends request-derived text with line breaks and NULs neutralised.
fn push_clean(out: &mut String, s: &str) {
    if s.bytes().any(|c| matches!(c, b'\r' | b'\n' | 0)) {
        out.extend(s.chars().map(|c| if matches!(c, '\r' | '\n' | '\0') { ' ' } else { c }));
    } else {
        out.push_str(s);
    }
}

impl Pattern {
    pub fn expand(&self, env: &Env<'_>) -> String {
        let mut out = String::with_capacity(self.source.len() + 32);
        self.expand_into(env, &mut out);
        out
    }

    pub fn expand_into(&self, env: &Env<'_>, out: &mut String) {
        for node in &self.nodes {
            match node {
                Node::Lit(s) => out.push_str(s),
                Node::Var(v) => var(v, env, out),
            }
        }
    }
}

fn var(v: &Var, env: &Env<'_>, out: &mut String) {
    let req = env.req;
    match v {
        Var::Method => push_clean(out, &text(req.method())),
        Var::Uri(src, part) => uri_var(src, part, env, out),
        Var::FromTag => push_clean(out, NameAddrParts::parse(&text(req.caller())).tag()),
        Var::ToTag => push_clean(out, NameAddrParts::parse(&text(req.callee())).tag()),
        Var::CallId => push_clean(out, &text(req.call_id())),
        Var::SourceIp => push_ip(out, env.source),
        Var::SourcePort => {
            let _ = write!(out, "{}", env.source.port());
        }
        Var::LocalIp => push_ip(out, env.local),
        Var::LocalPort => {
            let _ = write!(out, "{}", env.local.port());
        }
        Var::InterfaceIndex => {
            let _ = write!(out, "{}", env.interface.index);
        }
        Var::InterfaceName => out.push_str(env.interface.name),
        Var::InterfacePublicIp => out.push_str(env.interface.public_ip),
        Var::CertCommonName => push_cert(out, env.peer.map_or("", |p| p.common_name.as_str())),
        Var::CertAltNames => {
            for (i, name) in env.peer.iter().flat_map(|p| p.alt_names.iter()).enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                push_cert(out, name);
            }
        }
        Var::DestIp | Var::DestPort => destination(v == &Var::DestIp, env, out),
        Var::AppParam(key) => {
            if let Some(v) = app_param(req, key) {
                push_clean(out, &v);
            }
        }
        Var::CallControl { name, member } => {
            let member = member.as_ref().map(|m| m.expand(env));
            if let Some(v) = env.cc_vars.get(name, member.as_deref()) {
                push_clean(out, &v);
            }
        }
        Var::Map { value, map } => {
            let key = value.expand(env);
            if let Some(v) = env.maps.get(map).and_then(|m| m.lookup(&key)) {
                push_clean(out, &v);
            }
        }
        Var::Func(f, arg) => {
            let v = arg.expand(env);
            func(*f, &v, env.rng, out);
        }
        Var::RegCache(which) => {
            if let Some(v) = env.reg_cache.lookup(*which, req, env.source) {
                push_clean(out, &v);
            }
        }
    }
}

fn push_ip(out: &mut String, a: SocketAddr) {
    let _ = write!(out, "{}", a.ip());
}

fn uri_var(src: &UriSource, part: &Part, env: &Env<'_>, out: &mut String) {
    let req = env.req;
    let raw: Cow<'_, str> = match src {
        UriSource::RequestUri => text(req.request_uri()),
        UriSource::From => text(req.caller()),
        UriSource::To => text(req.callee()),
        UriSource::AssertedIdentity => joined(req, "P-Asserted-Identity"),
        UriSource::PreferredIdentity => joined(req, "P-Preferred-Identity"),
        UriSource::Header(name) => joined(req, name),
    };
    if *part == Part::Whole {
        return match src {
            // From without its header parameters: `["dn" ]<uri>`.
            UriSource::From => {
                let mut s = String::new();
                let na = NameAddrParts::parse(&raw);
                if !na.uri.is_empty() {
                    na.display_and_uri(&mut s);
                }
                push_clean(out, &s);
            }
            _ => push_clean(out, &raw),
        };
    }
    // A header with several values (PAI sip + tel): the components come from the first.
    let first = match src {
        UriSource::RequestUri => &raw[..],
        _ => first_value(&raw),
    };
    let (display, uri) = match src {
        UriSource::RequestUri => ("", first),
        _ => {
            let na = NameAddrParts::parse(first);
            (na.display, na.uri)
        }
    };
    let u = UriParts::parse(uri);
    let mut s = String::new();
    match part {
        Part::Whole => {}
        Part::UserHostPort => u.user_host_port(&mut s),
        Part::User => s.push_str(u.user),
        Part::HostPort => u.hostport(&mut s),
        Part::Host => s.push_str(u.host),
        Part::Port => s.push_str(u.port),
        Part::UriHeaders => s.push_str(u.headers),
        Part::Params => s.push_str(u.params),
        Part::Param(name) => s.push_str(u.param(name)),
        Part::Display => s.push_str(display),
    }
    push_clean(out, &s);
}

/// Every value of a header joined with `, ` (the SEMS `$H()` form).
fn joined<'a>(req: &'a dyn RequestView, name: &str) -> Cow<'a, str> {
    let mut all: Option<String> = None;
    req.for_each_header(name, &mut |v| {
        let v = String::from_utf8_lossy(v);
        match &mut all {
            None => all = Some(v.trim().to_string()),
            Some(s) => {
                s.push_str(", ");
                s.push_str(v.trim());
            }
        }
    });
    Cow::Owned(all.unwrap_or_default())
}

/// The first comma-separated value (commas inside quotes or `<>` do not split).
fn first_value(s: &str) -> &str {
    let (mut quoted, mut angle) = (false, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => return &s[..i],
            _ => {}
        }
    }
    s
}

/// `$di`/`$dp`: the profile's first next hop, else the Request-URI.
fn destination(ip: bool, env: &Env<'_>, out: &mut String) {
    if let Some(nh) = env.next_hop {
        let first = nh.split(',').next().unwrap_or_default().trim();
        let hostport = first.split(['/', ';']).next().unwrap_or_default();
        let (host, port) = split_hostport(hostport);
        out.push_str(if ip {
            host
        } else if port.is_empty() {
            "0"
        } else {
            port
        });
        return;
    }
    let ruri = text(env.req.request_uri());
    let u = UriParts::parse(&ruri);
    push_clean(out, if ip { u.host } else { u.port });
}

/// `$P(key)`: `key` in `P-App-Param` (`k=v;k2="v;2"`), keys case-insensitive, quotes stripped.
fn app_param(req: &dyn RequestView, key: &str) -> Option<String> {
    let mut found = None;
    req.for_each_header("P-App-Param", &mut |v| {
        if found.is_none() {
            found = keyvalue(&String::from_utf8_lossy(v), key);
        }
    });
    found
}

/// Finds `key` in a `k=v;k="quoted;v"` list (`,` also separates, outside quotes).
pub(crate) fn keyvalue(list: &str, key: &str) -> Option<String> {
    let mut rest = list;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ';' || c == ',' || c.is_whitespace());
        if rest.is_empty() {
            return None;
        }
        let name_end = rest.find(['=', ';', ',']).unwrap_or(rest.len());
        let name = rest[..name_end].trim();
        rest = &rest[name_end..];
        let mut value = String::new();
        if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            if let Some(q) = after.strip_prefix('"') {
                let mut end = q.len();
                let mut escaped = false;
                for (i, c) in q.char_indices() {
                    match c {
                        _ if escaped => {
                            escaped = false;
                            value.push(c);
                        }
                        '\\' => escaped = true,
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        _ => value.push(c),
                    }
                }
                rest = &q[end.min(q.len())..];
            } else {
                let end = after.find([';', ',']).unwrap_or(after.len());
                value.push_str(after[..end].trim());
                rest = &after[end..];
            }
        }
        if name.eq_ignore_ascii_case(key) {
            return Some(value);
        }
    }
}

fn func(f: Func, v: &str, rng: &Cell<u64>, out: &mut String) {
    match f {
        Func::Upper => push_clean(out, &v.to_uppercase()),
        Func::Lower => push_clean(out, &v.to_lowercase()),
        Func::Length => {
            let _ = write!(out, "{}", v.len());
        }
        Func::Md5 => {
            for b in Md5::digest(v.as_bytes()) {
                let _ = write!(out, "{b:02x}");
            }
        }
        Func::Last3 => {
            let n = v.chars().count();
            push_clean(out, if n >= 4 { &v[v.char_indices().nth(n - 3).map_or(0, |(i, _)| i)..] } else { v });
        }
        Func::Random => {
            // `$_r(0)` and non-numbers give 0 (SEMS divides by zero there).
            let n: u64 = v.trim().parse().unwrap_or(0);
            let r = if n == 0 { 0 } else { next_random(rng) % n };
            let _ = write!(out, "{r}");
        }
        Func::UrlEncode => {
            for b in v.bytes() {
                match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
                    b' ' => out.push('+'),
                    _ => {
                        let _ = write!(out, "%{b:02x}");
                    }
                }
            }
        }
    }
}

/// xorshift64*: `$_r` needs spread, not secrecy.
pub(crate) fn next_random(state: &Cell<u64>) -> u64 {
    let mut x = state.get() | 1;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    state.set(x);
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}
