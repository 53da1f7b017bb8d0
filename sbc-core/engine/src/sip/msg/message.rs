//! The span-indexed SIP message: one shared buffer and byte ranges into it.
//!
//! Nothing is copied or normalised at parse time, so every header the SBC does not touch is
//! re-emitted exactly as received (case, compact form, folding, order, multi-value rows).

use bytes::Bytes;

use super::headers::{CSeq, NameAddr, Via};
use super::name::HeaderName;
use super::ParseError;

/// A byte range into [`Message::buf`]. `u32` keeps the header index small (messages are < 4 GiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        // Framing caps a message far below u32::MAX, so the narrowing is lossless.
        Self { start: start as u32, end: end as u32 }
    }
    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
    pub fn is_empty(self) -> bool {
        self.start >= self.end
    }
}

/// SIP methods. Extension methods are kept (their bytes are in the start line span).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Prack,
    Update,
    Info,
    Message,
    Notify,
    Refer,
    Subscribe,
    Publish,
    Other,
}

impl Method {
    pub const COUNT: usize = 15;
    pub const ALL: [Self; Self::COUNT] = [
        Self::Invite,
        Self::Ack,
        Self::Bye,
        Self::Cancel,
        Self::Options,
        Self::Register,
        Self::Prack,
        Self::Update,
        Self::Info,
        Self::Message,
        Self::Notify,
        Self::Refer,
        Self::Subscribe,
        Self::Publish,
        Self::Other,
    ];
    /// Position in [`ALL`](Self::ALL), for per-method counters.
    pub fn index(self) -> usize {
        self as usize
    }
    pub fn from_bytes(raw: &[u8]) -> Self {
        match raw {
            b"INVITE" => Self::Invite,
            b"ACK" => Self::Ack,
            b"BYE" => Self::Bye,
            b"CANCEL" => Self::Cancel,
            b"OPTIONS" => Self::Options,
            b"REGISTER" => Self::Register,
            b"PRACK" => Self::Prack,
            b"UPDATE" => Self::Update,
            b"INFO" => Self::Info,
            b"MESSAGE" => Self::Message,
            b"NOTIFY" => Self::Notify,
            b"REFER" => Self::Refer,
            b"SUBSCRIBE" => Self::Subscribe,
            b"PUBLISH" => Self::Publish,
            _ => Self::Other,
        }
    }

    /// Canonical spelling; `None` for extension methods (use the raw bytes).
    pub fn as_str(self) -> Option<&'static str> {
        Some(match self {
            Self::Invite => "INVITE",
            Self::Ack => "ACK",
            Self::Bye => "BYE",
            Self::Cancel => "CANCEL",
            Self::Options => "OPTIONS",
            Self::Register => "REGISTER",
            Self::Prack => "PRACK",
            Self::Update => "UPDATE",
            Self::Info => "INFO",
            Self::Message => "MESSAGE",
            Self::Notify => "NOTIFY",
            Self::Refer => "REFER",
            Self::Subscribe => "SUBSCRIBE",
            Self::Publish => "PUBLISH",
            Self::Other => return None,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub enum StartLine {
    Request { method: Method, method_span: Span, uri: Span },
    Response { code: u16, reason: Span },
}

/// One header row as received. `line` covers the whole row including continuation lines and
/// the line terminator, which is what gets copied when the header is relayed untouched.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub name: HeaderName,
    pub name_span: Span,
    pub value: Span,
    pub line: Span,
}

/// A parsed SIP message. Cheap to clone (the buffer is reference counted).
#[derive(Debug, Clone)]
pub struct Message {
    pub(super) buf: Bytes,
    pub(super) start: StartLine,
    pub(super) headers: Vec<Header>,
    pub(super) body: Span,
}

impl Message {
    /// Parses one complete message that arrived as a UDP datagram (or was framed off a stream).
    pub fn parse(buf: Bytes) -> Result<Self, ParseError> {
        super::parse::parse_message(buf)
    }

    pub fn bytes(&self) -> &Bytes {
        &self.buf
    }
    pub fn slice(&self, span: Span) -> &[u8] {
        self.buf.get(span.range()).unwrap_or_default()
    }
    pub fn start_line(&self) -> StartLine {
        self.start
    }
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }
    /// The request method, or `None` for a response (use [`Message::cseq`] there).
    pub fn method(&self) -> Option<Method> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }
    pub fn method_bytes(&self) -> &[u8] {
        match self.start {
            StartLine::Request { method_span, .. } => self.slice(method_span),
            StartLine::Response { .. } => b"",
        }
    }
    pub fn request_uri(&self) -> &[u8] {
        match self.start {
            StartLine::Request { uri, .. } => self.slice(uri),
            StartLine::Response { .. } => b"",
        }
    }
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }
    pub fn reason(&self) -> &[u8] {
        match self.start {
            StartLine::Response { reason, .. } => self.slice(reason),
            StartLine::Request { .. } => b"",
        }
    }
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }
    pub fn value(&self, h: &Header) -> &[u8] {
        self.slice(h.value)
    }
    pub fn line(&self, h: &Header) -> &[u8] {
        self.slice(h.line)
    }
    pub fn body(&self) -> &[u8] {
        self.slice(self.body)
    }
    pub fn body_bytes(&self) -> Bytes {
        self.buf.slice(self.body.range())
    }

    pub fn header(&self, name: HeaderName) -> Option<&Header> {
        self.headers.iter().find(|h| h.name == name)
    }
    pub fn headers_named(&self, name: HeaderName) -> impl Iterator<Item = &Header> + '_ {
        self.headers.iter().filter(move |h| h.name == name)
    }
    /// Finds an unclassified header by its name (case-insensitive).
    pub fn other_header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name == HeaderName::Other && self.slice(h.name_span).eq_ignore_ascii_case(name.as_bytes()))
            .map(|h| self.value(h))
    }
    pub fn header_value(&self, name: HeaderName) -> Option<&[u8]> {
        self.header(name).map(|h| self.value(h))
    }

    /// Every comma-separated value of every row of `name`, in order.
    pub fn values(&self, name: HeaderName) -> impl Iterator<Item = &[u8]> + '_ {
        self.headers_named(name).flat_map(move |h| super::headers::split_values(self.value(h)))
    }

    pub fn call_id(&self) -> Option<&[u8]> {
        self.header_value(HeaderName::CallId).map(super::headers::trim)
    }
    pub fn cseq(&self) -> Option<CSeq> {
        self.header_value(HeaderName::CSeq).and_then(CSeq::parse)
    }
    pub fn top_via(&self) -> Option<Via<'_>> {
        self.values(HeaderName::Via).next().and_then(Via::parse)
    }
    pub fn from_hdr(&self) -> Option<NameAddr<'_>> {
        self.header_value(HeaderName::From).and_then(NameAddr::parse)
    }
    pub fn to_hdr(&self) -> Option<NameAddr<'_>> {
        self.header_value(HeaderName::To).and_then(NameAddr::parse)
    }
    pub fn from_tag(&self) -> Option<&[u8]> {
        self.from_hdr().and_then(|n| n.param(b"tag"))
    }
    pub fn to_tag(&self) -> Option<&[u8]> {
        self.to_hdr().and_then(|n| n.param(b"tag"))
    }
    pub fn contact(&self) -> Option<NameAddr<'_>> {
        self.values(HeaderName::Contact).next().and_then(NameAddr::parse)
    }
    /// Max-Forwards; `None` when absent, `Some(Err)` when malformed.
    pub fn max_forwards(&self) -> Option<Result<u8, ()>> {
        self.header_value(HeaderName::MaxForwards).map(|v| {
            let v = super::headers::trim(v);
            // Leading zeros are legal ("0068" in RFC 4475 §3.1.1.1); the value must fit 0..=255.
            super::headers::parse_u32(v).and_then(|n| u8::try_from(n).ok()).ok_or(())
        })
    }
    pub fn content_type(&self) -> Option<&[u8]> {
        self.header_value(HeaderName::ContentType).map(super::headers::trim)
    }
    /// True when a `Require`/`Supported` style header lists `option` (case-insensitive).
    pub fn lists_option(&self, name: HeaderName, option: &[u8]) -> bool {
        self.values(name).any(|v| super::headers::trim(v).eq_ignore_ascii_case(option))
    }
}
