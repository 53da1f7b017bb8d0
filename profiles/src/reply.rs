//! The one type for a SIP reply the SBC gives itself instead of relaying a request: a profile's
//! `refuse_with`, a call-control refusal or failure, a request that does not validate, no
//! route, a session interval too small. It lives here, in the lowest crate that profiles, call
//! control and the engine all use, so each hands the same value on without converting it.

use std::borrow::Cow;

/// Status, reason phrase and extra header rows of a local reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub code: u16,
    pub reason: Cow<'static, str>,
    /// Rows added to the reply, in order (name, value). A constant reply borrows them, so the
    /// refusals sent most (admission's 503 under a flood) allocate nothing.
    pub headers: Cow<'static, [Row]>,
}

/// A header row of a local reply: name, value.
pub type Row = (Cow<'static, str>, Cow<'static, str>);

impl LocalReply {
    /// A reply with a fixed reason and no extra row (a constant: no allocation).
    pub const fn new(code: u16, reason: &'static str) -> Self {
        Self { code, reason: Cow::Borrowed(reason), headers: Cow::Borrowed(&[]) }
    }

    /// A constant reply with fixed rows.
    pub const fn with_rows(code: u16, reason: &'static str, rows: &'static [Row]) -> Self {
        Self { code, reason: Cow::Borrowed(reason), headers: Cow::Borrowed(rows) }
    }

    /// A reply whose reason was computed (a profile's expansion, a module's setting).
    pub fn owned(code: u16, reason: String) -> Self {
        Self { code, reason: Cow::Owned(reason), headers: Cow::Borrowed(&[]) }
    }

    /// The same reply with one more header row.
    #[must_use]
    pub fn with(mut self, name: impl Into<Cow<'static, str>>, value: impl Into<Cow<'static, str>>) -> Self {
        self.headers.to_mut().push((name.into(), value.into()));
        self
    }
}

impl std::fmt::Display for LocalReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_keeps_its_rows_in_order() {
        const BUSY: LocalReply = LocalReply::new(486, "Busy Here");
        let r = BUSY.with("Retry-After", "5").with("Warning", format!("399 sbc \"{}\"", "x"));
        assert_eq!(r.to_string(), "486 Busy Here");
        let rows: Vec<(&str, &str)> = r.headers.iter().map(|(n, v)| (n.as_ref(), v.as_ref())).collect();
        assert_eq!(rows, [("Retry-After", "5"), ("Warning", "399 sbc \"x\"")]);
        assert!(BUSY.headers.is_empty());
        const RETRY: LocalReply =
            LocalReply::with_rows(503, "Service Unavailable", &[(Cow::Borrowed("Retry-After"), Cow::Borrowed("1"))]);
        assert!(matches!(RETRY.headers, Cow::Borrowed(_)), "a constant reply allocates nothing");
        assert_eq!(RETRY.clone().with("X", "y").headers.len(), 2);
    }
}
