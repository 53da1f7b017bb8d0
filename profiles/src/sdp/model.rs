//! A lossless, line-based SDP model: the body is a list of lines, each with its own line ending;
//! only the lines an operation touches are rewritten, every other byte is copied as received.
//! (Why not a typed SDP crate, docs/ARCHITECTURE.md, Dependencies: sdp-rs corrupts rtpmap and
//! drops sections; sdp-types reorders out-of-order lines, drops `y=` and adds `t=`.)

use std::collections::HashMap;

#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub(crate) text: String,
    pub(crate) eol: &'static str,
}

impl Line {
    pub(crate) fn kind(&self) -> u8 {
        self.text.as_bytes().first().copied().unwrap_or(b' ')
    }
    /// `a=name[:value]` → `name`.
    pub(crate) fn attr_name(&self) -> Option<&str> {
        let rest = self.text.strip_prefix("a=")?;
        Some(rest.split(':').next().unwrap_or(rest).trim())
    }
    /// For `a=rtpmap:96 ...`, `a=fmtp:96 ...`, `a=rtcp-fb:96 ...`: the payload type it is about.
    pub(crate) fn payload_attr(&self) -> Option<(&str, &str)> {
        let rest = self.text.strip_prefix("a=")?;
        let (name, value) = rest.split_once(':')?;
        let pt = value.split_whitespace().next()?;
        Some((name, pt))
    }
}

/// An `m=` line: `m=<media> <port>[/<n>] <proto> <fmt>...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MediaLine {
    pub(crate) media: String,
    pub(crate) port: String,
    pub(crate) proto: String,
    pub(crate) formats: Vec<String>,
}

impl MediaLine {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let mut it = text.strip_prefix("m=")?.split_whitespace();
        let media = it.next()?.to_string();
        let port = it.next()?.to_string();
        let proto = it.next()?.to_string();
        Some(Self { media, port, proto, formats: it.map(str::to_string).collect() })
    }
    pub(crate) fn render(&self) -> String {
        let mut s = format!("m={} {} {}", self.media, self.port, self.proto);
        for f in &self.formats {
            s.push(' ');
            s.push_str(f);
        }
        s
    }
    pub(crate) fn is_disabled(&self) -> bool {
        self.port.split('/').next() == Some("0")
    }
    /// RTP profiles carry payload types in the format list (RFC 4566 §5.14).
    pub(crate) fn is_rtp(&self) -> bool {
        self.proto.to_ascii_uppercase().contains("RTP")
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Sdp {
    pub(crate) lines: Vec<Line>,
}

impl Sdp {
    /// Splits a body into lines. `None` for a body that is not text.
    pub(crate) fn parse(body: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(body).ok()?;
        let mut lines = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            let (text, eol, next) = match rest.find('\n') {
                Some(i) if i > 0 && rest.as_bytes()[i - 1] == b'\r' => (&rest[..i - 1], "\r\n", &rest[i + 1..]),
                Some(i) => (&rest[..i], "\n", &rest[i + 1..]),
                None => (rest, "", ""),
            };
            lines.push(Line { text: text.to_string(), eol });
            rest = next;
        }
        lines.first().filter(|l| l.text.starts_with("v="))?;
        Some(Self { lines })
    }

    pub(crate) fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.lines.iter().map(|l| l.text.len() + 2).sum());
        for l in &self.lines {
            out.extend_from_slice(l.text.as_bytes());
            out.extend_from_slice(l.eol.as_bytes());
        }
        out
    }

    /// Index ranges `[start, end)` of each media section (its `m=` line first).
    pub(crate) fn media_sections(&self) -> Vec<(usize, usize)> {
        let starts: Vec<usize> =
            self.lines.iter().enumerate().filter(|(_, l)| l.kind() == b'm').map(|(i, _)| i).collect();
        starts.iter().enumerate().map(|(k, &s)| (s, starts.get(k + 1).copied().unwrap_or(self.lines.len()))).collect()
    }

    /// Encoding name and clock rate of every payload type with an `a=rtpmap` in the section
    /// `[start, end)`; [`Codecs::get`] adds the static assignments of RFC 3551.
    pub(crate) fn codecs(&self, start: usize, end: usize) -> Codecs<'_> {
        let mut map = HashMap::new();
        for l in &self.lines[start..end] {
            let Some(v) = l.text.strip_prefix("a=rtpmap:") else { continue };
            let mut it = v.split_whitespace();
            let (Some(pt), Some(enc)) = (it.next(), it.next()) else { continue };
            let mut parts = enc.split('/');
            let name = parts.next().unwrap_or_default();
            let rate = parts.next().and_then(|r| r.parse().ok()).unwrap_or(0);
            // The first rtpmap of a payload type counts (RFC 4566: one per type).
            map.entry(pt).or_insert((name, rate));
        }
        Codecs(map)
    }
}

/// Payload type → (encoding name, clock rate) of one media section.
pub(crate) struct Codecs<'a>(HashMap<&'a str, (&'a str, u32)>);

impl Codecs<'_> {
    /// The codec of `pt`: its rtpmap, else its static assignment.
    pub(crate) fn get(&self, pt: &str) -> Option<(&str, u32)> {
        match self.0.get(pt) {
            Some(&(n, r)) => Some((n, r)),
            None => static_payload(pt.parse().ok()?),
        }
    }
}

/// Static RTP payload types (RFC 3551 tables 4 and 5).
pub(crate) fn static_payload(pt: u8) -> Option<(&'static str, u32)> {
    Some(match pt {
        0 => ("PCMU", 8000),
        3 => ("GSM", 8000),
        4 => ("G723", 8000),
        5 => ("DVI4", 8000),
        6 => ("DVI4", 16000),
        7 => ("LPC", 8000),
        8 => ("PCMA", 8000),
        9 => ("G722", 8000),
        10 | 11 => ("L16", 44100),
        12 => ("QCELP", 8000),
        13 => ("CN", 8000),
        14 => ("MPA", 90000),
        15 => ("G728", 8000),
        16 => ("DVI4", 11025),
        17 => ("DVI4", 22050),
        18 => ("G729", 8000),
        25 => ("CelB", 90000),
        26 => ("JPEG", 90000),
        28 => ("nv", 90000),
        31 => ("H261", 90000),
        32 => ("MPV", 90000),
        33 => ("MP2T", 90000),
        34 => ("H263", 90000),
        _ => return None,
    })
}
