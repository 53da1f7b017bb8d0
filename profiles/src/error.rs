//! Configuration errors: every one names the file, the line when known, and the key.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<u64>,
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn at(file: &str, line: u64, key: &str, message: impl Into<String>) -> Self {
        Self { file: file.into(), line: Some(line), key: key.into(), message: message.into() }
    }
    pub fn new(file: &str, line: Option<u64>, key: &str, message: impl Into<String>) -> Self {
        Self { file: file.into(), line, key: key.into(), message: message.into() }
    }
    /// An error about a whole file (cannot read it).
    pub fn file(file: &str, message: impl Into<String>) -> Self {
        Self { file: file.into(), line: None, key: "-".into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}: {}", self.file, l, self.key, self.message),
            None => write!(f, "{}: {}: {}", self.file, self.key, self.message),
        }
    }
}
