//! Name filters (headers, methods, codecs, media types, SDP attributes) and reply translations.

use std::collections::HashSet;

/// `whitelist`: only listed names pass; `blacklist`: listed names are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterMode {
    Whitelist,
    Blacklist,
}

/// A whitelist or blacklist of names, matched case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameFilter {
    pub mode: FilterMode,
    names: HashSet<String>,
}

impl NameFilter {
    /// Builds a filter from a SEMS mode word and a comma list. `transparent` (or nothing) means
    /// no filter: `Ok(None)`.
    pub fn parse(mode: &str, list: &str) -> Result<Option<Self>, String> {
        let mode = match mode.trim().to_ascii_lowercase().as_str() {
            "" | "transparent" => return Ok(None),
            "whitelist" => FilterMode::Whitelist,
            "blacklist" => FilterMode::Blacklist,
            other => return Err(format!("'{other}' is not transparent, whitelist or blacklist")),
        };
        let names =
            list.split(',').map(|n| n.trim().to_ascii_lowercase()).filter(|n| !n.is_empty()).collect::<HashSet<_>>();
        Ok(Some(Self { mode, names }))
    }

    /// Whether `name` passes.
    pub fn allows(&self, name: &str) -> bool {
        let listed = self.names.iter().any(|n| n.eq_ignore_ascii_case(name));
        match self.mode {
            FilterMode::Whitelist => listed,
            FilterMode::Blacklist => !listed,
        }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }
}

/// One `code=>code reason` rule of `reply_translations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTranslation {
    pub from: u16,
    pub to: u16,
    pub reason: String,
}

/// Parses `603=>488 Not acceptable here|600=>406 Not Acceptable`.
///
/// Unlike SEMS, a rule may not move a reply into or out of the 2xx class or between
/// provisional and final: that would leave the two legs in different dialog states.
pub fn parse_reply_translations(s: &str) -> Result<Vec<ReplyTranslation>, String> {
    let mut out = Vec::new();
    for rule in s.split('|').map(str::trim).filter(|r| !r.is_empty()) {
        let (from, to) = rule.split_once("=>").ok_or_else(|| format!("'{rule}' is not code=>code reason"))?;
        let from: u16 = from.trim().parse().map_err(|_| format!("'{}' is not a status code", from.trim()))?;
        let to = to.trim();
        let (code, reason) = to.split_once(' ').unwrap_or((to, ""));
        let to: u16 = code.parse().map_err(|_| format!("'{code}' is not a status code"))?;
        for c in [from, to] {
            if !(101..=699).contains(&c) {
                return Err(format!("{c} is not a reply code (101-699)"));
            }
        }
        let class = |c: u16| match c {
            ..=199 => 1,
            200..=299 => 2,
            _ => 3,
        };
        if class(from) != class(to) {
            return Err(format!("{from}=>{to} changes the reply's class (1xx, 2xx and 3xx-6xx stay apart)"));
        }
        if reason.contains(['\r', '\n']) {
            return Err("a reason phrase is one line".into());
        }
        out.push(ReplyTranslation { from, to, reason: reason.trim().to_string() });
    }
    Ok(out)
}

/// The translated code and reason for a relayed reply, if a rule matches.
pub fn translate_reply(rules: &[ReplyTranslation], code: u16) -> Option<&ReplyTranslation> {
    rules.iter().find(|r| r.from == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_filters() {
        let w = NameFilter::parse("whitelist", "P-Asserted-Identity, x-keep").unwrap().unwrap();
        assert!(w.allows("p-asserted-identity"));
        assert!(w.allows("X-Keep"));
        assert!(!w.allows("User-Agent"));
        let b = NameFilter::parse("Blacklist", "user-agent").unwrap().unwrap();
        assert!(!b.allows("User-Agent"));
        assert!(b.allows("Allow"));
        assert_eq!(NameFilter::parse("transparent", "x").unwrap(), None);
        assert!(NameFilter::parse("greylist", "x").is_err());
    }

    #[test]
    fn reply_translation_rules() {
        let r = parse_reply_translations("603=>488 Not acceptable here|488=>603 Decline").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(translate_reply(&r, 603).unwrap().to, 488);
        assert_eq!(translate_reply(&r, 603).unwrap().reason, "Not acceptable here");
        assert!(translate_reply(&r, 486).is_none());
        assert!(parse_reply_translations("200=>486 Busy").is_err());
        assert!(parse_reply_translations("486=>180 Ringing").is_err());
        assert!(parse_reply_translations("abc=>486 Busy").is_err());
        assert!(parse_reply_translations("486").is_err());
        assert_eq!(parse_reply_translations("183=>180 Ringing").unwrap()[0].to, 180);
    }
}
