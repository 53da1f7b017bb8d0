//! The SIP message layer: framing, a span index over the received bytes, lazy typed views of
//! the headers a B2BUA needs, validation with the reply a server owes, and a writer for the
//! messages the SBC generates. Lossless by construction: untouched rows are copied verbatim.
//!
//! Why our own and not `rsip`: docs/ARCHITECTURE.md, Dependencies.

mod headers;
mod message;
mod name;
mod parse;
mod validate;
mod writer;

pub use headers::{
    find_param, parse_hostport, parse_rack, parse_u32, split_values, trim, CSeq, NameAddr, Scheme, Uri, Via,
};
pub use message::{Header, Message, Method, Span, StartLine};
pub use name::HeaderName;
pub use parse::{frame_stream, StreamFrame, StreamFramer, MAX_BODY_BYTES, MAX_HEADER_BYTES};
pub use validate::{check_request, check_response, salvage_request_rows, SUPPORTED_OPTIONS};
pub use writer::{reason_phrase, MessageWriter};

/// Why a byte sequence is not a SIP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("no complete start line")]
    Incomplete,
    #[error("header block not terminated by an empty line")]
    MissingEmptyLine,
    #[error("malformed start line")]
    BadStartLine,
    #[error("malformed Request-URI")]
    BadRequestUri,
    #[error("malformed status code")]
    BadStatusCode,
    #[error("unsupported SIP version")]
    UnsupportedVersion,
    #[error("malformed header row")]
    BadHeader,
    #[error("malformed or repeated Content-Length")]
    BadContentLength,
    #[error("Content-Length larger than the data received")]
    ContentLengthExceedsData,
    #[error("Content-Length missing on a stream transport")]
    MissingContentLength,
    #[error("message too large")]
    TooLarge,
}

impl ParseError {
    /// Stable label for drop counters and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Incomplete => "incomplete",
            Self::MissingEmptyLine => "missing_empty_line",
            Self::BadStartLine => "bad_start_line",
            Self::BadRequestUri => "bad_request_uri",
            Self::BadStatusCode => "bad_status_code",
            Self::UnsupportedVersion => "unsupported_version",
            Self::BadHeader => "bad_header",
            Self::BadContentLength => "bad_content_length",
            Self::ContentLengthExceedsData => "content_length_exceeds_data",
            Self::MissingContentLength => "missing_content_length",
            Self::TooLarge => "too_large",
        }
    }
    /// The status a server answers with when it can frame a reply (RFC 4475 §3.1.2).
    pub fn status(self) -> u16 {
        if self == Self::UnsupportedVersion {
            505
        } else {
            400
        }
    }
}

#[cfg(test)]
mod tests;
