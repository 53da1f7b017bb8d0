//! Pattern text → AST. Every error names the byte offset in the pattern.

use super::{Func, Node, Part, Pattern, RegVar, UriSource, Var};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at offset {offset}: {message}")]
pub struct PatternError {
    pub offset: usize,
    pub message: String,
}

fn err<T>(offset: usize, message: impl Into<String>) -> Result<T, PatternError> {
    Err(PatternError { offset, message: message.into() })
}

/// Compiles `s`; `base` is its offset inside the outermost pattern (for error positions).
pub(super) fn compile_nodes(s: &str, base: usize) -> Result<Vec<Node>, PatternError> {
    let b = s.as_bytes();
    let mut nodes = Vec::new();
    let mut lit = String::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                let Some(c) = s[i + 1..].chars().next() else {
                    lit.push('\\'); // a lone backslash at the end is kept
                    break;
                };
                lit.push(match c {
                    'r' => '\r',
                    'n' => '\n',
                    't' => '\t',
                    other => other,
                });
                i += 1 + c.len_utf8();
            }
            b'$' => {
                let (var, next) = variable(s, i + 1, base)?;
                if !lit.is_empty() {
                    nodes.push(Node::Lit(std::mem::take(&mut lit)));
                }
                nodes.push(Node::Var(var));
                i = next;
            }
            _ => {
                let c = s[i..].chars().next().unwrap_or_default();
                lit.push(c);
                i += c.len_utf8().max(1);
            }
        }
    }
    if !lit.is_empty() {
        nodes.push(Node::Lit(lit));
    }
    Ok(nodes)
}

/// Parses the variable whose name starts at `j` (just after `$`); returns it and the offset
/// after it.
fn variable(s: &str, j: usize, base: usize) -> Result<(Var, usize), PatternError> {
    let b = s.as_bytes();
    let at = base + j - 1;
    let Some(&c1) = b.get(j) else {
        return err(at, "'$' at the end (write \\$ for a literal dollar)");
    };
    let c2 = b.get(j + 1).copied();
    let two = |v: Var| Ok((v, j + 2));
    match c1 {
        b'r' | b'f' | b't' | b'a' | b'p' => {
            let src = match c1 {
                b'r' => UriSource::RequestUri,
                b'f' => UriSource::From,
                b't' => UriSource::To,
                b'a' => UriSource::AssertedIdentity,
                _ => UriSource::PreferredIdentity,
            };
            match c2 {
                None => Ok((Var::Uri(src, Part::Whole), j + 1)),
                Some(b'.') => two(Var::Uri(src, Part::Whole)),
                Some(b't') if c1 == b'f' => two(Var::FromTag),
                Some(b't') if c1 == b't' => two(Var::ToTag),
                Some(b'i') if c1 == b'a' || c1 == b'p' => two(Var::Uri(src, Part::UserHostPort)),
                Some(b'P') if b.get(j + 2) == Some(&b'(') => {
                    let (name, next) = until_close(s, j + 3, base)?;
                    let part = if name.is_empty() { Part::Params } else { Part::Param(name.to_string()) };
                    Ok((Var::Uri(src, part), next))
                }
                Some(c) => match uri_part(c) {
                    Some(part) => two(Var::Uri(src, part)),
                    None => err(at, format!("unknown variable '${}{}'", c1 as char, c as char)),
                },
            }
        }
        // SEMS swallows the character after `$m`, whatever it is.
        b'm' => Ok((Var::Method, j + 1 + s[j + 1..].chars().next().map_or(0, char::len_utf8))),
        b'c' => match c2 {
            None => Ok((Var::CallId, j + 1)),
            Some(b'i') => two(Var::CallId),
            Some(_) => err(at, "unknown variable (did you mean $ci?)"),
        },
        b's' => match c2 {
            Some(b'i') => two(Var::SourceIp),
            Some(b'p') => two(Var::SourcePort),
            _ => err(at, "unknown variable (use $si or $sp)"),
        },
        b'd' => match c2 {
            Some(b'i') => two(Var::DestIp),
            Some(b'p') => two(Var::DestPort),
            _ => err(at, "unknown variable (use $di or $dp)"),
        },
        b'R' => match c2 {
            Some(b'i') => two(Var::LocalIp),
            Some(b'p') => two(Var::LocalPort),
            Some(b'f') => two(Var::InterfaceIndex),
            Some(b'n') => two(Var::InterfaceName),
            Some(b'I') => two(Var::InterfacePublicIp),
            _ => err(at, "unknown variable (use $Ri, $Rp, $Rf, $Rn or $RI)"),
        },
        b'T' => match c2 {
            Some(b'c') => two(Var::CertCommonName),
            Some(b's') => two(Var::CertAltNames),
            _ => err(at, "unknown variable (use $Tc or $Ts)"),
        },
        b'u' => match c2 {
            Some(b'c') => two(Var::RegCache(RegVar::Contact)),
            Some(b's') => two(Var::RegCache(RegVar::Source)),
            Some(b'i') => two(Var::RegCache(RegVar::Interface)),
            _ => err(at, "unknown variable (use $uc, $us or $ui)"),
        },
        b'U' => match c2 {
            Some(b'a') => two(Var::RegCache(RegVar::AorOfContact)),
            Some(b'A') => two(Var::RegCache(RegVar::CallerAlias)),
            _ => err(at, "unknown variable (use $Ua or $UA)"),
        },
        b'P' => {
            expect_open(s, j + 1, at, "$P(key)")?;
            let (key, next) = until_close(s, j + 2, base)?;
            if key.is_empty() {
                return err(at, "$P() needs a key");
            }
            Ok((Var::AppParam(key.to_string()), next))
        }
        b'V' => {
            expect_open(s, j + 1, at, "$V(name)")?;
            let (inner, next) = until_close(s, j + 2, base)?;
            let (name, member) = match inner.split_once('.') {
                Some((n, m)) => (n, Some(Pattern { nodes: compile_nodes(m, base + j + 2)?, source: m.to_string() })),
                None => (inner, None),
            };
            if name.is_empty() {
                return err(at, "$V() needs a name");
            }
            Ok((Var::CallControl { name: name.to_string(), member }, next))
        }
        b'H' => header_variable(s, j, base, at),
        b'M' => {
            expect_open(s, j + 1, at, "$M(value=>map)")?;
            let (inner, next) = balanced(s, j + 2, base)?;
            let Some((value, map)) = inner.rsplit_once("=>") else {
                return err(at, "$M() needs 'value=>map'");
            };
            let map = map.trim();
            if map.is_empty() {
                return err(at, "$M() names no map");
            }
            let value = Pattern { nodes: compile_nodes(value, base + j + 2)?, source: value.to_string() };
            Ok((Var::Map { value, map: map.to_string() }, next))
        }
        b'_' => {
            let func = match c2 {
                Some(b'u') => Func::Upper,
                Some(b'l') => Func::Lower,
                Some(b's') => Func::Length,
                Some(b'5') => Func::Md5,
                Some(b't') => Func::Last3,
                Some(b'r') => Func::Random,
                _ => return err(at, "unknown function (use $_u $_l $_s $_5 $_t $_r)"),
            };
            expect_open(s, j + 2, at, "$_x(value)")?;
            let (inner, next) = balanced(s, j + 3, base)?;
            Ok((
                Var::Func(func, Pattern { nodes: compile_nodes(inner, base + j + 3)?, source: inner.to_string() }),
                next,
            ))
        }
        b'#' => {
            expect_open(s, j + 1, at, "$#(value)")?;
            let (inner, next) = balanced(s, j + 2, base)?;
            let p = Pattern { nodes: compile_nodes(inner, base + j + 2)?, source: inner.to_string() };
            Ok((Var::Func(Func::UrlEncode, p), next))
        }
        b'(' => err(at, "$(paramhdr) and $(ruri.user) are only valid as a whole active_profile rule"),
        other => err(at, format!("unknown variable '${}'", other as char)),
    }
}

/// `$H(name)`, `$H<c>(name)`, `$HP(name)(param)`.
fn header_variable(s: &str, j: usize, base: usize, at: usize) -> Result<(Var, usize), PatternError> {
    let b = s.as_bytes();
    if b.get(j + 1) == Some(&b'(') {
        let (name, next) = until_close(s, j + 2, base)?;
        if name.is_empty() {
            return err(at, "$H() needs a header name");
        }
        return Ok((Var::Uri(UriSource::Header(name.to_string()), Part::Whole), next));
    }
    let Some(part) = b.get(j + 1).copied().and_then(uri_part) else {
        return err(at, "unknown header variable (use $H(name) or $H<u|U|d|h|p|H|P|n>(name))");
    };
    expect_open(s, j + 2, at, "$H<c>(name)")?;
    let (name, mut next) = until_close(s, j + 3, base)?;
    if name.is_empty() {
        return err(at, "$H<c>() needs a header name");
    }
    let mut part = part;
    if part == Part::Params && b.get(next) == Some(&b'(') {
        let (param, after) = until_close(s, next + 1, base)?;
        part = Part::Param(param.to_string());
        next = after;
    }
    Ok((Var::Uri(UriSource::Header(name.to_string()), part), next))
}

fn uri_part(c: u8) -> Option<Part> {
    Some(match c {
        b'u' => Part::UserHostPort,
        b'U' => Part::User,
        b'd' => Part::HostPort,
        b'h' => Part::Host,
        b'p' => Part::Port,
        b'H' => Part::UriHeaders,
        b'P' => Part::Params,
        b'n' => Part::Display,
        _ => return None,
    })
}

fn expect_open(s: &str, i: usize, at: usize, form: &str) -> Result<(), PatternError> {
    if s.as_bytes().get(i) == Some(&b'(') {
        Ok(())
    } else {
        err(at, format!("expected '(' (form {form})"))
    }
}

/// Text from `start` up to the first `)`; returns it and the offset after the `)`.
fn until_close(s: &str, start: usize, base: usize) -> Result<(&str, usize), PatternError> {
    match s[start..].find(')') {
        Some(k) => Ok((&s[start..start + k], start + k + 1)),
        None => err(base + start, "missing ')'"),
    }
}

/// Text from `start` to the `)` that balances the `(` before it; `\(` and `\)` do not count.
fn balanced(s: &str, start: usize, base: usize) -> Result<(&str, usize), PatternError> {
    let b = s.as_bytes();
    let mut depth = 1usize;
    let mut i = start;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Ok((&s[start..i], i + 1));
                }
            }
            _ => {}
        }
        i += 1;
    }
    err(base + start, "missing ')' (unbalanced parentheses)")
}
