//! What the RTP relay reads from an SDP (per m-line: address, ports, direction) and the
//! rewrite that anchors it: `o=`/`c=` addresses, `m=` ports and `a=rtcp` become the SBC's,
//! ICE candidates (which would let the peers bypass the relay) are removed, and every other
//! line stays byte-exact.

use std::net::IpAddr;

use super::model::{MediaLine, Sdp};
use super::security::{self, StreamSecurity};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub(crate) fn parse(attr: &str) -> Option<Self> {
        Some(match attr {
            "sendrecv" => Self::SendRecv,
            "sendonly" => Self::SendOnly,
            "recvonly" => Self::RecvOnly,
            "inactive" => Self::Inactive,
            _ => return None,
        })
    }
}

/// One m-line as the relay sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDesc {
    pub media: String,
    pub port: u16,
    /// Carried over UDP (RTP/AVP, RTP/SAVP, UDP/TLS/RTP/SAVPF, udptl ...); TCP transports are not.
    pub udp: bool,
    /// The effective connection address (media level, else session level); `None` if absent
    /// or unreadable.
    pub addr: Option<IpAddr>,
    /// `0.0.0.0` / `::`: RFC 2543 hold.
    pub zero_addr: bool,
    /// `a=rtcp:<port> [IN IP4 <addr>]` (RFC 3605).
    pub rtcp: Option<(u16, Option<IpAddr>)>,
    pub direction: Direction,
    /// The payload type of `telephone-event` (RFC 4733), if offered.
    pub telephone_event: Option<u8>,
    /// `a=direction:active` (session or media level): the sender is behind NAT and will send
    /// first ("comedia"); SEMS latches on it without being told to.
    pub sends_first: bool,
    /// An RTP profile (`RTP/AVP`, `RTP/SAVP` ...; not `udptl`).
    pub rtp: bool,
    /// A secure RTP transport (`RTP/SAVP`, `RTP/SAVPF`, ...).
    pub secure: bool,
    /// `a=rtcp-mux` (RFC 5761).
    pub rtcp_mux: bool,
    /// The values of its `a=crypto:` lines (SDES, RFC 4568), in order.
    pub crypto: Vec<String>,
}

impl MediaDesc {
    pub fn rejected(&self) -> bool {
        self.port == 0
    }
    pub fn held(&self) -> bool {
        self.zero_addr || self.direction != Direction::SendRecv
    }
}

/// The codec of each stream an SDP body offers or accepts (its first format: `PCMA/8000`, or
/// the format itself for a transport without payload types); rejected streams are left out.
pub fn stream_codecs(body: &[u8]) -> Vec<String> {
    let Some(sdp) = Sdp::parse(body) else { return Vec::new() };
    sdp.media_sections()
        .into_iter()
        .filter_map(|(start, end)| {
            let m = MediaLine::parse(&sdp.lines[start].text).filter(|m| !m.is_disabled())?;
            let first = m.formats.first()?;
            if !m.is_rtp() {
                return Some(first.clone());
            }
            Some(match sdp.codecs(start, end).get(first) {
                Some((name, rate)) => format!("{name}/{rate}"),
                None => first.clone(),
            })
        })
        .collect()
}

/// The media of an SDP body; `None` if it is not SDP.
pub fn describe(body: &[u8]) -> Option<Vec<MediaDesc>> {
    MediaSdp::parse(body).map(|s| s.streams())
}

/// Anchors `body` at `ours`: per m-line (in order) the RTP port to write, or `None` to reject
/// the stream with port 0. `None` if the body is not SDP.
pub fn anchor(body: &[u8], ours: IpAddr, ports: &[Option<u16>]) -> Option<Vec<u8>> {
    MediaSdp::parse(body).map(|s| s.anchor(ours, ports))
}

/// An SDP parsed once, to read its streams and then rewrite it (the relay does both for every
/// body it anchors).
#[derive(Debug, Clone)]
pub struct MediaSdp(Sdp);

impl MediaSdp {
    /// `None` if the body is not SDP.
    pub fn parse(body: &[u8]) -> Option<Self> {
        Sdp::parse(body).map(Self)
    }

    /// The m-lines, in order.
    pub fn streams(&self) -> Vec<MediaDesc> {
        let sdp = &self.0;
        let sections = sdp.media_sections();
        let session_end = sections.first().map_or(sdp.lines.len(), |s| s.0);
        let session = &sdp.lines[..session_end];
        let session_conn = session.iter().find_map(|l| l.text.strip_prefix("c=")).map(parse_conn);
        let session_dir = session.iter().filter_map(|l| l.attr_name()).find_map(Direction::parse);
        let active = |l: &super::model::Line| l.text.trim_end().eq_ignore_ascii_case("a=direction:active");
        let session_active = session.iter().any(active);
        let mut out = Vec::new();
        for (s, e) in sections {
            let Some(m) = MediaLine::parse(&sdp.lines[s].text) else { continue };
            let lines = &sdp.lines[s + 1..e];
            let conn = lines.iter().find_map(|l| l.text.strip_prefix("c=")).map(parse_conn).or(session_conn);
            let (addr, zero_addr) = conn.unwrap_or((None, false));
            let rtcp = lines.iter().find_map(|l| l.text.strip_prefix("a=rtcp:")).and_then(parse_rtcp);
            let direction = lines
                .iter()
                .filter_map(|l| l.attr_name())
                .find_map(Direction::parse)
                .or(session_dir)
                .unwrap_or(Direction::SendRecv);
            let codecs = sdp.codecs(s, e);
            let telephone_event = m
                .formats
                .iter()
                .find(|pt| codecs.get(pt).is_some_and(|(n, _)| n.eq_ignore_ascii_case("telephone-event")))
                .and_then(|pt| pt.parse().ok());
            let crypto = lines
                .iter()
                .filter(|l| l.attr_name().is_some_and(|n| n.eq_ignore_ascii_case("crypto")))
                .filter_map(|l| l.text.split_once(':').map(|(_, v)| v.trim().to_string()))
                .collect();
            out.push(MediaDesc {
                port: m.port.split('/').next().and_then(|p| p.parse().ok()).unwrap_or(0),
                rtp: m.is_rtp(),
                secure: security::is_secure(&m.proto),
                rtcp_mux: lines.iter().any(|l| l.attr_name().is_some_and(|n| n.eq_ignore_ascii_case("rtcp-mux"))),
                crypto,
                udp: !m.proto.to_ascii_uppercase().starts_with("TCP"),
                media: m.media,
                addr,
                zero_addr,
                rtcp,
                direction,
                telephone_event,
                sends_first: session_active || lines.iter().any(active),
            });
        }
        out
    }

    /// The `o=` line, which tells a repeated SDP from a new one (RFC 3264 §8).
    pub fn origin(&self) -> Option<&str> {
        self.0.lines.iter().find(|l| l.kind() == b'o').map(|l| l.text.as_str())
    }

    /// The body anchored at `ours`: per m-line (in order, as [`streams`](Self::streams) lists
    /// them) the RTP port to write, or `None` to reject the stream with port 0.
    pub fn anchor(self, ours: IpAddr, ports: &[Option<u16>]) -> Vec<u8> {
        self.anchor_secured(ours, ports, &[])
    }

    /// [`anchor`](Self::anchor), with each m-line's transport and `a=crypto` lines rewritten
    /// as `security` says (missing entries: kept).
    pub fn anchor_secured(self, ours: IpAddr, ports: &[Option<u16>], security: &[StreamSecurity]) -> Vec<u8> {
        let mut sdp = self.0;
        security::apply(&mut sdp, security);
        let family = if ours.is_ipv6() { "IP6" } else { "IP4" };
        let zero = if ours.is_ipv6() { "::" } else { "0.0.0.0" };
        let mut stream = None::<usize>;
        sdp.lines.retain(|l| l.attr_name().is_none_or(|n| !ICE_ATTRIBUTES.iter().any(|i| i.eq_ignore_ascii_case(n))));
        for l in &mut sdp.lines {
            match l.kind() {
                // Only m-lines that parse are streams, as in `describe` (the indexes must agree).
                b'm' => {
                    if let Some(mut m) = MediaLine::parse(&l.text) {
                        let k = stream.map_or(0, |k| k + 1);
                        stream = Some(k);
                        m.port = ports.get(k).copied().flatten().unwrap_or(0).to_string();
                        l.text = m.render();
                    }
                }
                b'o' => {
                    let f: Vec<&str> = l.text.get(2..).unwrap_or_default().split_whitespace().collect();
                    if let [user, id, version, net, ..] = f[..] {
                        l.text = format!("o={user} {id} {version} {net} {family} {ours}");
                    }
                }
                b'c' => {
                    let (_, is_zero) = parse_conn(l.text.get(2..).unwrap_or_default());
                    let addr = if is_zero { zero.to_string() } else { ours.to_string() };
                    l.text = format!("c=IN {family} {addr}");
                }
                _ if l.text.starts_with("a=rtcp:") => {
                    let port = stream.and_then(|k| ports.get(k).copied().flatten()).map_or(0, |p| p.saturating_add(1));
                    let with_addr = l.text.split_whitespace().count() > 1;
                    l.text =
                        if with_addr { format!("a=rtcp:{port} IN {family} {ours}") } else { format!("a=rtcp:{port}") };
                }
                _ => {}
            }
        }
        sdp.render()
    }
}

/// Where the SDP is in a body: all of it, or the `application/sdp` part of a multipart body
/// (SIP-I carries ISUP beside the SDP). `None`: no SDP found.
pub fn sdp_range(body: &[u8]) -> Option<std::ops::Range<usize>> {
    if body.starts_with(b"v=") {
        return Some(0..body.len());
    }
    let first_eol = body.iter().position(|&b| b == b'\n')?;
    let boundary = body.get(2..first_eol)?.strip_suffix(b"\r").unwrap_or(body.get(2..first_eol)?);
    if !body.starts_with(b"--") || boundary.is_empty() {
        return None;
    }
    let mut delim = b"\n--".to_vec();
    delim.extend_from_slice(boundary);
    let mut start = first_eol + 1;
    loop {
        let rest = body.get(start..)?;
        let end = start + find(rest, &delim)?;
        let part = &body[start..end];
        let (head_len, sep) =
            find(part, b"\r\n\r\n").map(|i| (i, 4)).or_else(|| find(part, b"\n\n").map(|i| (i, 2)))?;
        let is_sdp = String::from_utf8_lossy(&part[..head_len]).lines().any(|l| {
            l.split_once(':').is_some_and(|(n, v)| {
                n.trim().eq_ignore_ascii_case("content-type")
                    && v.trim().to_ascii_lowercase().starts_with("application/sdp")
            })
        });
        if is_sdp {
            let from = start + head_len + sep;
            // The line end before the delimiter belongs to it (RFC 2046 §5.1.1).
            let to = if end > from && body[end - 1] == b'\r' { end - 1 } else { end };
            return (from <= to).then_some(from..to);
        }
        start = end + delim.len();
        let after = body.get(start..)?;
        if after.starts_with(b"--") {
            return None;
        }
        start += after.iter().position(|&b| b == b'\n')? + 1;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `IN IP4 192.0.2.1` → (address, is zero). A multicast TTL suffix (`/127`) is ignored.
fn parse_conn(v: &str) -> (Option<IpAddr>, bool) {
    let addr = v.split_whitespace().nth(2).and_then(|a| a.split('/').next()).and_then(|a| a.parse::<IpAddr>().ok());
    (addr, addr.is_some_and(|a| a.is_unspecified()))
}

fn parse_rtcp(v: &str) -> Option<(u16, Option<IpAddr>)> {
    let mut it = v.split_whitespace();
    let port = it.next()?.parse().ok()?;
    Some((port, it.nth(2).and_then(|a| a.parse().ok())))
}

/// ICE attributes (RFC 8839): the relay does not do ICE, so candidates would only let the
/// peers try each other directly, around the SBC.
const ICE_ATTRIBUTES: [&str; 8] = [
    "candidate",
    "remote-candidates",
    "end-of-candidates",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "ice-mismatch",
];

#[cfg(test)]
mod tests;
