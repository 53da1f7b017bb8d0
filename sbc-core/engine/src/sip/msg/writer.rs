//! Building the messages the SBC sends: a start line, rows (generated or copied verbatim from a
//! received message), Content-Length, body. One buffer, written front to back.

use std::fmt::Write as _;

use bytes::Bytes;

use super::message::{Header, Message};

/// Writes one SIP message. Rows copied from a received message keep their exact bytes.
pub struct MessageWriter {
    buf: Vec<u8>,
}

impl MessageWriter {
    pub fn request(method: &[u8], uri: &[u8]) -> Self {
        let mut buf = Vec::with_capacity(1024);
        buf.extend_from_slice(method);
        buf.push(b' ');
        buf.extend_from_slice(uri);
        buf.extend_from_slice(b" SIP/2.0\r\n");
        Self { buf }
    }

    pub fn response(code: u16, reason: &[u8]) -> Self {
        let mut buf = Vec::with_capacity(1024);
        let _ = write!(Fmt(&mut buf), "SIP/2.0 {code} ");
        buf.extend_from_slice(reason);
        buf.extend_from_slice(b"\r\n");
        Self { buf }
    }

    /// Appends `Name: value`.
    pub fn header(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        self.buf.extend_from_slice(value);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Appends `Name: <formatted value>` without an intermediate String.
    pub fn header_fmt(&mut self, name: &str, value: std::fmt::Arguments<'_>) -> &mut Self {
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        let _ = Fmt(&mut self.buf).write_fmt(value);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Copies a received row verbatim (continuation lines included); the terminator becomes CRLF.
    pub fn copy_row(&mut self, msg: &Message, h: &Header) -> &mut Self {
        let line = msg.line(h);
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.buf.extend_from_slice(line);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Appends raw bytes (the caller supplies complete rows).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// Adds Content-Length, the empty line and the body.
    pub fn finish(mut self, body: &[u8]) -> Bytes {
        let _ = write!(Fmt(&mut self.buf), "Content-Length: {}\r\n\r\n", body.len());
        self.buf.extend_from_slice(body);
        Bytes::from(self.buf)
    }
}

/// `fmt::Write` over a byte vector.
struct Fmt<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Fmt<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// The default reason phrase of a status code (RFC 3261 §21 and extensions).
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        _ => match code / 100 {
            1 => "Progress",
            2 => "OK",
            3 => "Redirect",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}
