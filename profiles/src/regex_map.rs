//! Regex maps for `$M(value=>map)`: SEMS's file format (`regex=>value` per line, `#` comments),
//! tried in order, first match wins, `\1`…`\9` in the value refer to capture groups.

use std::collections::HashMap;
use std::sync::Arc;

use regex::Regex;

/// The maps of one snapshot, by name.
pub type RegexMaps = HashMap<String, Arc<RegexMap>>;

#[derive(Debug, Clone)]
pub struct RegexMap {
    pub name: String,
    rules: Vec<(Regex, String)>,
    /// MD5 of the file's bytes (as `md5sum` prints it), when the map came from a file.
    pub md5: Option<String>,
}

/// A rule that does not parse: its line (1-based) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct MapError {
    pub line: usize,
    pub message: String,
}

impl RegexMap {
    /// Parses the SEMS map format. Any bad line rejects the whole map.
    pub fn parse(name: &str, text: &str) -> Result<Self, MapError> {
        let mut rules = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            rules.push(Self::rule(t).map_err(|message| MapError { line: n + 1, message })?);
        }
        Ok(Self { name: name.to_string(), rules, md5: None })
    }

    /// Builds a map from `regex=>value` rules given one by one (YAML); errors name the rule's
    /// index (0-based) as `line`.
    pub fn from_rules<'a>(name: &str, rules: impl IntoIterator<Item = &'a str>) -> Result<Self, MapError> {
        let mut out = Vec::new();
        for (i, r) in rules.into_iter().enumerate() {
            out.push(Self::rule(r.trim()).map_err(|message| MapError { line: i, message })?);
        }
        Ok(Self { name: name.to_string(), rules: out, md5: None })
    }

    fn rule(t: &str) -> Result<(Regex, String), String> {
        let parts: Vec<&str> = t.split("=>").collect();
        let [re, value] = parts[..] else {
            return Err("expected exactly one '=>' (regex=>value)".into());
        };
        if re.is_empty() || value.is_empty() {
            return Err("both sides of '=>' must be non-empty".into());
        }
        // Map rules are short; a bound on the compiled size keeps a hostile or mistaken rule
        // (an API upload, `(a{1000}){1000}`) from costing seconds and megabytes per rule.
        let re = regex::RegexBuilder::new(re)
            .size_limit(1 << 20)
            .dfa_size_limit(1 << 20)
            .build()
            .map_err(|e| format!("bad regex: {}", e.to_string().lines().last().unwrap_or("")))?;
        Ok((re, value.to_string()))
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// The rules as written: (regex, value).
    pub fn rules(&self) -> impl Iterator<Item = (&str, &str)> {
        self.rules.iter().map(|(re, v)| (re.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The value of the first rule matching `input` (unanchored, like POSIX `regexec`).
    pub fn lookup(&self, input: &str) -> Option<String> {
        self.rules.iter().find_map(|(re, value)| re.captures(input).map(|caps| substitute(value, &caps)))
    }
}

/// Replaces `\1`…`\9` with capture groups (an unmatched group gives nothing) and `\\` with `\`.
fn substitute(value: &str, caps: &regex::Captures<'_>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some(d @ '1'..='9') => {
                chars.next();
                let idx = d as usize - '0' as usize;
                if let Some(m) = caps.get(idx) {
                    out.push_str(m.as_str());
                }
            }
            Some('\\') => {
                chars.next();
                out.push('\\');
            }
            _ => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_rule_is_refused() {
        let e = RegexMap::parse("m", "(a{1000}){1000}=>x").expect_err("too big");
        assert!(e.to_string().contains("bad regex"), "{e}");
    }

    #[test]
    fn first_match_wins_with_backreferences() {
        let m = RegexMap::parse(
            "src",
            "# internal networks\n^10\\.0\\..*=>internal1\n\n^10\\.(.)\\..*=>internal\\1\n.*=>other\\\\x\n",
        )
        .unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m.lookup("10.0.3.4").as_deref(), Some("internal1"));
        assert_eq!(m.lookup("10.7.3.4").as_deref(), Some("internal7"));
        assert_eq!(m.lookup("192.0.2.1").as_deref(), Some("other\\x"));
    }

    #[test]
    fn unanchored_and_no_match() {
        let m = RegexMap::parse("m", "abc=>x").unwrap();
        assert_eq!(m.lookup("zzabczz").as_deref(), Some("x"));
        assert_eq!(m.lookup("ab"), None);
    }

    #[test]
    fn bad_lines_reject_the_map() {
        assert_eq!(RegexMap::parse("m", "ok=>1\nnoarrow\n").unwrap_err().line, 2);
        assert_eq!(RegexMap::parse("m", "a=>b=>c").unwrap_err().line, 1);
        assert_eq!(RegexMap::parse("m", "=>b").unwrap_err().line, 1);
        let e = RegexMap::parse("m", "\n(unclosed=>b").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("regex"), "{e}");
    }

    #[test]
    fn unmatched_group_is_empty() {
        let m = RegexMap::parse("m", "^(a)|(b)$=>[\\1\\2]").unwrap();
        assert_eq!(m.lookup("b").as_deref(), Some("[b]"));
    }
}
