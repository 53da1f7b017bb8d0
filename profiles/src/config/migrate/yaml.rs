//! The YAML a migration writes: lines with comments, each remembering the SEMS line it came
//! from, so an error in the written YAML is reported against the SEMS file and key.

use crate::conf::ConfEntry;

/// Where a written line came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) file: String,
    pub(crate) line: u64,
    pub(crate) key: String,
}

impl From<&ConfEntry> for Origin {
    fn from(e: &ConfEntry) -> Self {
        Self { file: e.file.clone(), line: e.line, key: e.key.clone() }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Yaml {
    text: String,
    /// The origin of each written line (index = line number - 1).
    origins: Vec<Option<Origin>>,
}

impl Yaml {
    /// A comment line (`# text`), at `indent` spaces; long text wrapped, a list item's
    /// continuation lines indented under it.
    pub(crate) fn comment(&mut self, indent: usize, text: &str) {
        let hang = if text.starts_with("- ") { "  " } else { "" };
        let mut line = String::new();
        for word in text.split(' ') {
            if !line.is_empty() && indent + line.len() + word.len() > 96 {
                self.push(indent, &format!("# {line}"), None);
                line = hang.to_string();
            }
            if !line.trim().is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        self.push(indent, &format!("# {line}"), None);
    }

    /// `key: value` (the value already YAML) with an optional trailing comment.
    pub(crate) fn key(&mut self, indent: usize, key: &str, value: &str, note: Option<&str>, origin: Option<Origin>) {
        let sep = if value.is_empty() { "" } else { " " };
        let text = match note {
            Some(n) => format!("{key}:{sep}{value}   # {n}"),
            None => format!("{key}:{sep}{value}"),
        };
        self.push(indent, &text, origin);
    }

    /// Any other line (a list item).
    pub(crate) fn raw(&mut self, indent: usize, text: &str, origin: Option<Origin>) {
        self.push(indent, text, origin);
    }

    pub(crate) fn blank(&mut self) {
        self.text.push('\n');
        self.origins.push(None);
    }

    fn push(&mut self, indent: usize, text: &str, origin: Option<Origin>) {
        self.text.extend(std::iter::repeat_n(' ', indent));
        self.text.push_str(text);
        self.text.push('\n');
        self.origins.push(origin);
    }

    /// The SEMS line that a written line (1-based) came from.
    pub(crate) fn origin_of(&self, line: u64) -> Option<&Origin> {
        let i = usize::try_from(line).ok()?.checked_sub(1)?;
        self.origins.get(i)?.as_ref()
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }
}

/// A YAML double-quoted scalar.
pub(crate) fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_read_back_as_written() {
        for s in ["plain", "with \"quotes\" and \\", "sip:$rU@x;lr", "#not a comment", "tab\there"] {
            let v: String = serde_saphyr::from_str(&quoted(s)).expect("parses");
            assert_eq!(v, s);
        }
    }

    #[test]
    fn lines_remember_their_origin() {
        let mut y = Yaml::default();
        y.comment(0, "head");
        let o = Origin { file: "sems.conf".into(), line: 7, key: "sip_port".into() };
        y.key(2, "listen", "[]", Some("note"), Some(o.clone()));
        assert_eq!(y.origin_of(2), Some(&o));
        assert_eq!(y.origin_of(1), None);
        assert_eq!(y.text(), "# head\n  listen: []   # note\n");
    }
}
