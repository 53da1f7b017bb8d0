//! SEMS's `key=value` configuration syntax (AmConfigReader), read the way SEMS reads it:
//! `#` comments outside quotes, double-quoted values with `\"` kept verbatim (the pattern
//! compiler turns it into `"`), an unquoted value ending at the first blank, `@file` includes
//! relative to the including file's folder, and the last of duplicate keys winning (with a
//! warning). Every entry keeps its file and line so errors can name them.

use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use crate::error::ConfigError;

/// One `key=value` with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfEntry {
    pub key: String,
    pub value: String,
    pub file: String,
    pub line: u64,
}

/// A parsed `.conf` file (with its includes).
#[derive(Debug, Clone, Default)]
pub struct ConfFile {
    pub path: String,
    /// In file order; a duplicate key keeps the position and value of its last occurrence.
    pub entries: Vec<ConfEntry>,
    /// MD5 of the file's own bytes, lowercase hex as `md5sum` prints it.
    pub md5: String,
    /// Things worth logging that do not stop the load (duplicates, text after a value).
    pub warnings: Vec<String>,
}

/// Lowercase hex MD5 of `bytes`.
pub fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Nested `@include`s deeper than this are a loop.
const MAX_INCLUDE_DEPTH: usize = 8;

impl ConfFile {
    /// Reads `path`; its `@file` includes are taken from its own folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_including_from(path, path.parent().unwrap_or(Path::new(".")))
    }

    /// Reads `path`, its `@file` includes (and theirs) taken relative to `includes`: SEMS
    /// takes them from its module configuration folder, where `sbc.conf` is.
    pub fn load_including_from(path: &Path, includes: &Path) -> Result<Self, ConfigError> {
        let mut out = Self { path: path.display().to_string(), ..Self::default() };
        let bytes = read(path)?;
        out.md5 = md5_hex(&bytes);
        out.read_text(&String::from_utf8_lossy(&bytes), path, includes, 0)?;
        Ok(out)
    }

    /// Parses text that did not come from a file (tests, REST uploads); `name` is used in errors.
    pub fn parse(text: &str, name: &str) -> Result<Self, ConfigError> {
        let mut out = Self { path: name.to_string(), md5: md5_hex(text.as_bytes()), ..Self::default() };
        out.read_text(text, Path::new(name), Path::new("."), 0)?;
        Ok(out)
    }

    pub fn get(&self, key: &str) -> Option<&ConfEntry> {
        self.entries.iter().find(|e| e.key == key)
    }

    fn read_text(&mut self, text: &str, path: &Path, includes: &Path, depth: usize) -> Result<(), ConfigError> {
        let file = path.display().to_string();
        for (n, raw) in text.lines().enumerate() {
            let line = n as u64 + 1;
            let t = raw.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if let Some(inc) = t.strip_prefix('@') {
                let inc = strip_comment(inc).trim();
                if depth >= MAX_INCLUDE_DEPTH {
                    return Err(ConfigError::at(&file, line, "@include", "includes nested too deep (a loop?)"));
                }
                let target = includes.join(inc);
                let bytes = read(&target).map_err(|e| ConfigError::at(&file, line, "@include", e.message))?;
                self.read_text(&String::from_utf8_lossy(&bytes), &target, includes, depth + 1)?;
                continue;
            }
            let Some((key, rest)) = t.split_once('=') else {
                return Err(ConfigError::at(&file, line, t, "expected key=value"));
            };
            let key = key.trim();
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(ConfigError::at(&file, line, key, "a key is one word before '='"));
            }
            let (value, trailing) = value_of(rest.trim_start()).map_err(|m| ConfigError::at(&file, line, key, m))?;
            if !trailing.is_empty() {
                self.warnings.push(format!(
                    "{file}:{line}: {key}: text after the value ignored ('{trailing}'); quote values with spaces"
                ));
            }
            let entry = ConfEntry { key: key.to_string(), value, file: file.clone(), line };
            if let Some(pos) = self.entries.iter().position(|e| e.key == entry.key) {
                let old = self.entries.remove(pos);
                self.warnings.push(format!(
                    "{file}:{line}: {key}: set again (first at {}:{}); the last one wins",
                    old.file, old.line
                ));
            }
            self.entries.push(entry);
        }
        Ok(())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::file(&path.display().to_string(), format!("cannot read: {e}")))
}

/// Text before a `#` that is not inside quotes.
fn strip_comment(s: &str) -> &str {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '#' if !quoted => return &s[..i],
            _ => {}
        }
    }
    s
}

/// The value at the start of `s` and any non-comment text after it.
fn value_of(s: &str) -> Result<(String, String), String> {
    if let Some(q) = s.strip_prefix('"') {
        let mut escaped = false;
        for (i, c) in q.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    let after = strip_comment(&q[i + 1..]).trim().to_string();
                    return Ok((q[..i].to_string(), after));
                }
                _ => {}
            }
        }
        return Err("unterminated quoted value".into());
    }
    let s = strip_comment(s).trim_end();
    match s.find([' ', '\t']) {
        Some(i) => Ok((s[..i].to_string(), s[i..].trim().to_string())),
        None => Ok((s.to_string(), String::new())),
    }
}

/// Resolves a SEMS path option relative to the folder of the file that names it.
pub fn relative_to(file: &str, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        Path::new(file).parent().unwrap_or(Path::new(".")).join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sems_syntax() {
        let c = ConfFile::parse(
            "# comment\n\
             RURI=sip:$rU@example.com   # trailing comment\n\
             From=\"\\\"Anonymous\\\" <sip:anonymous@invalid>\"\n\
             append_headers=\"P-A: 1#2\\r\\nP-B: x\"\n\
             header_list = p-app-param , p-app-name\n\
             key=first\n\
             key=second\n\
             empty=\n",
            "t.sbcprofile.conf",
        )
        .unwrap();
        assert_eq!(c.get("RURI").unwrap().value, "sip:$rU@example.com");
        assert_eq!(c.get("RURI").unwrap().line, 2);
        assert_eq!(c.get("From").unwrap().value, "\\\"Anonymous\\\" <sip:anonymous@invalid>");
        assert_eq!(c.get("append_headers").unwrap().value, "P-A: 1#2\\r\\nP-B: x");
        // An unquoted value ends at the first blank, as in SEMS, and that is reported.
        assert_eq!(c.get("header_list").unwrap().value, "p-app-param");
        assert_eq!(c.get("key").unwrap().value, "second");
        assert_eq!(c.get("empty").unwrap().value, "");
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert_eq!(c.md5.len(), 32);
    }

    #[test]
    fn errors_name_file_line_key() {
        let e = ConfFile::parse("a=1\nbroken line\n", "x.conf").unwrap_err();
        assert_eq!(e.to_string(), "x.conf:2: broken line: expected key=value");
        let e = ConfFile::parse("a=\"open\n", "x.conf").unwrap_err();
        assert_eq!(e.to_string(), "x.conf:1: a: unterminated quoted value");
    }

    #[test]
    fn includes_and_md5() {
        let dir = std::env::temp_dir().join(format!("conf-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("common.conf"), "x=from_include\ny=1\n").unwrap();
        std::fs::write(dir.join("main.conf"), "@common.conf\ny=2\n").unwrap();
        let c = ConfFile::load(&dir.join("main.conf")).unwrap();
        assert_eq!(c.get("x").unwrap().value, "from_include");
        assert!(c.get("x").unwrap().file.ends_with("common.conf"));
        assert_eq!(c.get("y").unwrap().value, "2");
        assert_eq!(c.md5, md5_hex(b"@common.conf\ny=2\n"));
        std::fs::write(dir.join("loop.conf"), "@loop.conf\n").unwrap();
        assert!(ConfFile::load(&dir.join("loop.conf")).unwrap_err().to_string().contains("nested"));
        // A profile kept in another folder includes from the module folder, as SEMS does.
        std::fs::create_dir_all(dir.join("profiles")).unwrap();
        std::fs::write(dir.join("profiles/p.conf"), "@common.conf\n").unwrap();
        let c = ConfFile::load_including_from(&dir.join("profiles/p.conf"), &dir).unwrap();
        assert_eq!(c.get("x").unwrap().value, "from_include");
        let e = ConfFile::load(&dir.join("profiles/p.conf")).unwrap_err();
        assert!(e.to_string().contains("p.conf:1: @include"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn md5_matches_md5sum() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
