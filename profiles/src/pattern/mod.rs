//! SER-style replacement patterns (`sip:$rU@$M($si=>gw)`): compiled once at load into a small
//! AST, expanded per request against [`Env`].
//!
//! The lexing rules are SEMS's so that its profiles mean the same here (after `$` a variable
//! takes exactly two characters; `$r`/`$f`/`$t`/`$a`/`$p` alone need `.` or the end; `$m`
//! swallows the character after it; `$M()`/`$_x()`/`$#()` nest with balanced parentheses,
//! `$H()`/`$P()`/`$V()` end at the first `)`). Unlike SEMS, an unknown or malformed variable is
//! a load error instead of silently eaten text, and nothing that came from the request is ever
//! expanded again.

mod compile;
mod expand;
mod request;

#[cfg(test)]
pub(crate) mod tests;

pub use compile::PatternError;
pub use expand::Env;
pub(crate) use expand::{keyvalue, next_random};
pub use request::{CcVars, InterfaceFacts, NoCcVars, NoRegCache, PeerIdentity, RegCacheView, RequestView};

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    nodes: Vec<Node>,
    source: String,
}

impl Pattern {
    /// Compiles `source`; errors say where in it and why.
    pub fn compile(source: &str) -> Result<Self, PatternError> {
        let nodes = compile::compile_nodes(source, 0)?;
        Ok(Self { nodes, source: source.to_string() })
    }

    /// The text the pattern was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// True when the pattern is a fixed text (no variables).
    pub fn is_literal(&self) -> bool {
        self.nodes.iter().all(|n| matches!(n, Node::Lit(_)))
    }

    /// The fixed text of a literal pattern (escapes applied).
    pub fn literal(&self) -> Option<String> {
        self.is_literal().then(|| {
            self.nodes
                .iter()
                .map(|n| match n {
                    Node::Lit(s) => s.as_str(),
                    Node::Var(_) => "",
                })
                .collect()
        })
    }

    /// Regex maps this pattern looks up, so a snapshot can check they exist.
    pub fn map_names(&self) -> Vec<&str> {
        let mut out = Vec::new();
        collect_maps(&self.nodes, &mut out);
        out
    }

    /// Whether the pattern reads call-control variables (`$V`) — only meaningful in profiles.
    pub fn uses_cc_vars(&self) -> bool {
        uses(&self.nodes, &|v| matches!(v, Var::CallControl { .. }))
    }

    /// Whether the pattern reads the registration cache (`$uc $us $ui $Ua $UA`).
    pub fn uses_registrations(&self) -> bool {
        uses(&self.nodes, &|v| matches!(v, Var::RegCache(_)))
    }

    /// Whether the pattern reads `$di`/`$dp`.
    pub fn uses_destination(&self) -> bool {
        uses(&self.nodes, &|v| matches!(v, Var::DestIp | Var::DestPort))
    }
}

fn collect_maps<'a>(nodes: &'a [Node], out: &mut Vec<&'a str>) {
    for n in nodes {
        if let Node::Var(v) = n {
            match v {
                Var::Map { value, map } => {
                    out.push(map);
                    collect_maps(&value.nodes, out);
                }
                Var::Func(_, p) => collect_maps(&p.nodes, out),
                Var::CallControl { member: Some(p), .. } => collect_maps(&p.nodes, out),
                _ => {}
            }
        }
    }
}

fn uses(nodes: &[Node], pred: &dyn Fn(&Var) -> bool) -> bool {
    nodes.iter().any(|n| match n {
        Node::Lit(_) => false,
        Node::Var(v) => {
            pred(v)
                || match v {
                    Var::Map { value, .. } | Var::Func(_, value) => uses(&value.nodes, pred),
                    Var::CallControl { member: Some(p), .. } => uses(&p.nodes, pred),
                    _ => false,
                }
        }
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Lit(String),
    Var(Var),
}

/// Which URI-bearing value a `$x<suffix>` variable reads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum UriSource {
    RequestUri,
    From,
    To,
    AssertedIdentity,
    PreferredIdentity,
    Header(String),
}

/// The component of a URI or name-addr.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// `$r`, `$f`, `$t`, `$a`, `$p`: the value as a whole.
    Whole,
    /// `u` (and `i` for `$a`/`$p`): `user@host[:port]`.
    UserHostPort,
    User,
    HostPort,
    Host,
    Port,
    UriHeaders,
    Params,
    Param(String),
    Display,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Upper,
    Lower,
    Length,
    Md5,
    Last3,
    Random,
    UrlEncode,
}

/// Registration-cache lookups (filled once registration caching exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegVar {
    /// `$uc`: contact registered for the R-URI user (an alias).
    Contact,
    /// `$us`: source `ip[:port]` of that registration.
    Source,
    /// `$ui`: interface the REGISTER arrived on.
    Interface,
    /// `$Ua`: AoR registered from this request's Contact and source.
    AorOfContact,
    /// `$UA`: the caller's alias.
    CallerAlias,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    Method,
    Uri(UriSource, Part),
    FromTag,
    ToTag,
    CallId,
    SourceIp,
    SourcePort,
    LocalIp,
    LocalPort,
    InterfaceIndex,
    InterfaceName,
    InterfacePublicIp,
    /// The verified TLS client certificate of the request's connection: subject CN, and its
    /// subjectAltNames.
    CertCommonName,
    CertAltNames,
    DestIp,
    DestPort,
    AppParam(String),
    CallControl {
        name: String,
        member: Option<Pattern>,
    },
    Map {
        value: Pattern,
        map: String,
    },
    Func(Func, Pattern),
    RegCache(RegVar),
}
