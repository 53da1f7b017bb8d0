//! The `active_profile` chain: rules tried left to right, the first non-empty result names the
//! profile. An unknown name is not skipped (SEMS answers 500, and so do we).

use crate::pattern::{Env, Pattern, PatternError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// `$(paramhdr)`: key `profile` of the `P-App-Param` header.
    ParamHeader,
    /// `$(ruri.user)`: the user part of the Request-URI.
    RuriUser,
    Pattern(Pattern),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub rules: Vec<Rule>,
}

/// Which rule chose what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// Index of the first rule that gave a name; `None` when every rule was empty.
    pub rule: Option<usize>,
    pub name: String,
}

impl Selection {
    /// Parses a comma chain; empty items are skipped. Commas inside parentheses do not split.
    pub fn parse(chain: &str) -> Result<Self, (String, PatternError)> {
        let mut rules = Vec::new();
        for item in split_top_level(chain).into_iter().map(str::trim).filter(|i| !i.is_empty()) {
            let rule = match item {
                "$(paramhdr)" => Rule::ParamHeader,
                "$(ruri.user)" => Rule::RuriUser,
                _ => {
                    let p = Pattern::compile(item).map_err(|e| (item.to_string(), e))?;
                    if p.uses_cc_vars() || p.uses_destination() {
                        let e = PatternError {
                            offset: 0,
                            message: "$V, $di and $dp need a profile; not usable here".into(),
                        };
                        return Err((item.to_string(), e));
                    }
                    Rule::Pattern(p)
                }
            };
            rules.push(rule);
        }
        Ok(Self { rules })
    }

    /// Static profile names in the chain (rules without variables), to be checked at load.
    pub fn static_names(&self) -> Vec<String> {
        self.rules
            .iter()
            .filter_map(|r| match r {
                Rule::Pattern(p) => p.literal(),
                _ => None,
            })
            .collect()
    }

    /// Whether a rule reads the registration cache.
    pub fn uses_registrations(&self) -> bool {
        self.rules.iter().any(|r| matches!(r, Rule::Pattern(p) if p.uses_registrations()))
    }

    pub fn render(&self) -> String {
        self.rules
            .iter()
            .map(|r| match r {
                Rule::ParamHeader => "$(paramhdr)",
                Rule::RuriUser => "$(ruri.user)",
                Rule::Pattern(p) => p.source(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn select(&self, env: &Env<'_>) -> Selected {
        for (i, r) in self.rules.iter().enumerate() {
            let name = match r {
                Rule::ParamHeader => {
                    let mut v = None;
                    env.req.for_each_header("P-App-Param", &mut |h| {
                        if v.is_none() {
                            v = crate::pattern::keyvalue(&String::from_utf8_lossy(h), "profile");
                        }
                    });
                    v.unwrap_or_default()
                }
                Rule::RuriUser => {
                    let ruri = String::from_utf8_lossy(env.req.request_uri());
                    crate::uri::UriParts::parse(&ruri).user.to_string()
                }
                Rule::Pattern(p) => p.expand(env),
            };
            let name = name.trim();
            if !name.is_empty() {
                return Selected { rule: Some(i), name: name.to_string() };
            }
        }
        Selected { rule: None, name: String::new() }
    }
}

fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth <= 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}
