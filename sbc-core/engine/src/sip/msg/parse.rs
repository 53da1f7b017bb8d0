//! Framing and indexing: find the start line, the header rows and the body, record spans.
//!
//! Content-Length is authoritative: on a datagram a larger value is an error and trailing bytes
//! are dropped (RFC 3261 §18.3); on a stream it decides where the next message begins.

use bytes::Bytes;

use super::message::{Header, Message, Method, Span, StartLine};
use super::name::HeaderName;
use super::ParseError;

/// Largest header block accepted; beyond it a stream peer is cut off (slowloris, junk).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Largest body accepted on a stream (a UDP datagram is bounded by its own size).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub(super) fn parse_message(buf: Bytes) -> Result<Message, ParseError> {
    let b: &[u8] = &buf;
    let mut pos = skip_leading_crlf(b);
    let (line_end, next) = find_line(b, pos).ok_or(ParseError::Incomplete)?;
    let start = parse_start_line(b, pos, line_end)?;
    pos = next;

    let mut headers: Vec<Header> = Vec::with_capacity(16);
    let body_start;
    loop {
        let (line_end, next) = find_line(b, pos).ok_or(ParseError::MissingEmptyLine)?;
        if line_end == pos {
            body_start = next;
            break;
        }
        let first = b[pos];
        if first == b' ' || first == b'\t' {
            // Continuation line (RFC 3261 §7.3.1): extends the previous row.
            let last = headers.last_mut().ok_or(ParseError::BadHeader)?;
            let value_end = trim_end(b, pos, line_end);
            if value_end > pos {
                if last.value.is_empty() {
                    last.value.start = skip_ws(b, pos, line_end) as u32;
                }
                last.value.end = value_end as u32;
            }
            last.line.end = next as u32;
        } else {
            headers.push(parse_header_line(b, pos, line_end, next)?);
        }
        pos = next;
        if pos > MAX_HEADER_BYTES {
            return Err(ParseError::TooLarge);
        }
    }

    let body_len = content_length(b, &headers)?;
    let available = b.len() - body_start;
    let body_end = match body_len {
        None => b.len(),
        Some(n) if n > available => return Err(ParseError::ContentLengthExceedsData),
        Some(n) => body_start + n,
    };
    Ok(Message { buf, start, headers, body: Span::new(body_start, body_end) })
}

/// Result of looking for one message at the front of a stream buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamFrame {
    /// The first `len` bytes form one message.
    Message { len: usize },
    /// Only CR/LF so far: a keepalive. `ping` is true for the RFC 5626 double CRLF.
    KeepAlive { len: usize, ping: bool },
    /// More bytes are needed.
    Incomplete,
}

/// Frames the first message of a stream by its header block and Content-Length (RFC 3261 §18.3).
pub fn frame_stream(b: &[u8]) -> Result<StreamFrame, ParseError> {
    StreamFramer::default().next(b)
}

/// Frames a stream across reads: what was already searched of the message at the front is
/// kept, and so is its length once the header block is known. A message trickled in a byte at
/// a time then costs time in proportion to its size, not to its square (issue 16). The owner
/// calls [`Self::next`] with the buffer after every read; after a `Message` or `KeepAlive` it
/// removes that many bytes from the front and the framer starts over.
#[derive(Debug, Default, Clone)]
pub struct StreamFramer {
    /// Bytes at the front already searched for the end of the header block.
    scanned: usize,
    /// The message's total length, once its header block and Content-Length are known.
    total: Option<usize>,
}

impl StreamFramer {
    pub fn next(&mut self, b: &[u8]) -> Result<StreamFrame, ParseError> {
        if let Some(total) = self.total {
            if b.len() < total {
                return Ok(StreamFrame::Incomplete);
            }
            *self = Self::default();
            return Ok(StreamFrame::Message { len: total });
        }
        if self.scanned == 0 {
            if b.starts_with(b"\r\n\r\n") {
                return Ok(StreamFrame::KeepAlive { len: 4, ping: true });
            }
            if b.len() < 4 && b"\r\n\r\n".starts_with(b) {
                return Ok(StreamFrame::Incomplete);
            }
            let skip = skip_leading_crlf(b);
            if skip > 0 {
                return Ok(StreamFrame::KeepAlive { len: skip, ping: false });
            }
        }
        // The end may straddle the bytes searched and the new ones: look back three bytes.
        let Some(hdr_end) = find_header_end_from(b, self.scanned.saturating_sub(3)) else {
            if b.len() > MAX_HEADER_BYTES {
                return Err(ParseError::TooLarge);
            }
            self.scanned = b.len();
            return Ok(StreamFrame::Incomplete);
        };
        if hdr_end > MAX_HEADER_BYTES {
            return Err(ParseError::TooLarge);
        }
        let total = hdr_end + stream_content_length(b, hdr_end)?;
        if b.len() < total {
            self.total = Some(total);
            return Ok(StreamFrame::Incomplete);
        }
        *self = Self::default();
        Ok(StreamFrame::Message { len: total })
    }
}

/// The Content-Length of a stream message whose header block ends at `hdr_end`: indexed only
/// for it; the full parse happens once the message is complete.
fn stream_content_length(b: &[u8], hdr_end: usize) -> Result<usize, ParseError> {
    let mut cl: Option<usize> = None;
    let mut pos = 0;
    let mut seen_start = false;
    while pos < hdr_end {
        let Some((line_end, next)) = find_line(b, pos) else {
            break;
        };
        if seen_start && line_end > pos && b[pos] != b' ' && b[pos] != b'\t' {
            if let Some(colon) = b[pos..line_end].iter().position(|&c| c == b':') {
                let name = trim_slice(&b[pos..pos + colon]);
                if HeaderName::classify(name) == HeaderName::ContentLength {
                    if cl.is_some() {
                        return Err(ParseError::BadContentLength);
                    }
                    cl = Some(
                        parse_decimal(trim_slice(&b[pos + colon + 1..line_end])).ok_or(ParseError::BadContentLength)?,
                    );
                }
            }
        }
        seen_start = true;
        pos = next;
    }
    // A stream message must carry Content-Length (RFC 3261 §18.3).
    let len = cl.ok_or(ParseError::MissingContentLength)?;
    if len > MAX_BODY_BYTES {
        return Err(ParseError::TooLarge);
    }
    Ok(len)
}

/// Offset just past the empty line that ends the header block (CRLFCRLF, or bare LFs),
/// searching from `from` (a line feed before it is not looked at again).
fn find_header_end_from(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from.min(b.len());
    while let Some(off) = b[i..].iter().position(|&c| c == b'\n') {
        let nl = i + off;
        let rest = &b[nl + 1..];
        if rest.first() == Some(&b'\n') {
            return Some(nl + 2);
        }
        if rest.len() >= 2 && rest[0] == b'\r' && rest[1] == b'\n' {
            return Some(nl + 3);
        }
        i = nl + 1;
    }
    None
}

fn skip_leading_crlf(b: &[u8]) -> usize {
    b.iter().take_while(|&&c| c == b'\r' || c == b'\n').count()
}

/// Returns (end of line content, start of next line). Accepts CRLF and bare LF.
fn find_line(b: &[u8], pos: usize) -> Option<(usize, usize)> {
    let off = b.get(pos..)?.iter().position(|&c| c == b'\n')?;
    let nl = pos + off;
    let end = if nl > pos && b[nl - 1] == b'\r' { nl - 1 } else { nl };
    Some((end, nl + 1))
}

fn skip_ws(b: &[u8], mut pos: usize, end: usize) -> usize {
    while pos < end && (b[pos] == b' ' || b[pos] == b'\t') {
        pos += 1;
    }
    pos
}

fn trim_end(b: &[u8], start: usize, mut end: usize) -> usize {
    while end > start && matches!(b[end - 1], b' ' | b'\t' | b'\r') {
        end -= 1;
    }
    end
}

fn trim_slice(s: &[u8]) -> &[u8] {
    super::headers::trim(s)
}

pub(super) fn parse_decimal(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 9 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0usize, |a, d| a * 10 + usize::from(d - b'0')))
}

pub(super) fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c)
}

fn parse_start_line(b: &[u8], start: usize, end: usize) -> Result<StartLine, ParseError> {
    let line = &b[start..end];
    if line.starts_with(b"SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let sp1 = line.iter().position(|&c| c == b' ').ok_or(ParseError::BadStartLine)?;
        check_version(&line[..sp1])?;
        let rest = &line[sp1 + 1..];
        let sp2 = rest.iter().position(|&c| c == b' ').unwrap_or(rest.len());
        let code = &rest[..sp2];
        if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) || code[0] == b'0' {
            return Err(ParseError::BadStatusCode);
        }
        let code = code.iter().fold(0u16, |a, d| a * 10 + u16::from(d - b'0'));
        let reason_start = (start + sp1 + 1 + sp2 + 1).min(end);
        return Ok(StartLine::Response { code, reason: Span::new(reason_start, end) });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version: exactly single spaces (RFC 4475 §3.1.2.9/10).
    let mut parts = line.split(|&c| c == b' ');
    let method = parts.next().unwrap_or_default();
    let uri = parts.next().ok_or(ParseError::BadStartLine)?;
    let version = parts.next().ok_or(ParseError::BadStartLine)?;
    if parts.next().is_some() || method.is_empty() || uri.is_empty() {
        return Err(ParseError::BadStartLine);
    }
    if !method.iter().all(|&c| is_token_char(c)) {
        return Err(ParseError::BadStartLine);
    }
    if uri[0] == b'<' || uri.iter().any(|&c| c <= b' ' || c == 0x7f) || !uri.contains(&b':') {
        return Err(ParseError::BadRequestUri);
    }
    check_version(version)?;
    let m_end = start + method.len();
    let u_start = m_end + 1;
    Ok(StartLine::Request {
        method: Method::from_bytes(method),
        method_span: Span::new(start, m_end),
        uri: Span::new(u_start, u_start + uri.len()),
    })
}

fn check_version(v: &[u8]) -> Result<(), ParseError> {
    if v.eq_ignore_ascii_case(b"SIP/2.0") {
        return Ok(());
    }
    let well_formed = v.len() > 4
        && v[..4].eq_ignore_ascii_case(b"SIP/")
        && v[4..].split(|&c| c == b'.').all(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit))
        && v[4..].contains(&b'.');
    Err(if well_formed { ParseError::UnsupportedVersion } else { ParseError::BadStartLine })
}

fn parse_header_line(b: &[u8], pos: usize, line_end: usize, next: usize) -> Result<Header, ParseError> {
    let colon = b[pos..line_end].iter().position(|&c| c == b':').ok_or(ParseError::BadHeader)? + pos;
    let name_end = trim_end(b, pos, colon);
    let name = &b[pos..name_end];
    if name.is_empty() || !name.iter().all(|&c| is_token_char(c)) {
        return Err(ParseError::BadHeader);
    }
    let value_start = skip_ws(b, colon + 1, line_end);
    let value_end = trim_end(b, value_start, line_end);
    Ok(Header {
        name: HeaderName::classify(name),
        name_span: Span::new(pos, name_end),
        value: Span::new(value_start, value_end),
        line: Span::new(pos, next),
    })
}

fn content_length(b: &[u8], headers: &[Header]) -> Result<Option<usize>, ParseError> {
    let mut rows = headers.iter().filter(|h| h.name == HeaderName::ContentLength);
    let Some(first) = rows.next() else {
        return Ok(None);
    };
    if rows.next().is_some() {
        return Err(ParseError::BadContentLength);
    }
    let v = trim_slice(&b[first.value.range()]);
    parse_decimal(v).map(Some).ok_or(ParseError::BadContentLength)
}
