//! The security half of anchoring: per m-line, the transport profile (`RTP/AVP` ↔
//! `RTP/SAVP`, RFC 3711 §12) and the SDES `a=crypto` lines (RFC 4568 §9.1) the relay writes
//! when it terminates SRTP. The lines themselves are made by the relay (`rtp-relay/src/srtp/`);
//! here they are only placed.

use super::model::{Line, MediaLine, Sdp};

/// What an m-line's transport and `a=crypto` lines become.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StreamSecurity {
    /// As they came.
    #[default]
    Keep,
    /// `RTP/AVP(F)` without `a=crypto`.
    Plain,
    /// `RTP/SAVP(F)` with these `a=crypto:` values, replacing the ones that came.
    Sdes(Vec<String>),
    /// Transport as it came, `a=crypto` lines removed: a stream the relay could not anchor
    /// must not carry one leg's keys to the other.
    Strip,
}

/// The transport of a secure RTP profile (`RTP/SAVP`, `RTP/SAVPF`, and DTLS's
/// `UDP/TLS/RTP/SAVP(F)`).
pub fn is_secure(proto: &str) -> bool {
    proto.to_ascii_uppercase().contains("SAVP")
}

fn transport(proto: &str, secure: bool) -> String {
    match (proto.to_ascii_uppercase().as_str(), secure) {
        ("RTP/SAVP", false) => "RTP/AVP".into(),
        ("RTP/SAVPF", false) => "RTP/AVPF".into(),
        ("RTP/AVP", true) => "RTP/SAVP".into(),
        ("RTP/AVPF", true) => "RTP/SAVPF".into(),
        _ => proto.to_string(),
    }
}

/// Applies `streams` (per m-line that parses, in order) to `sdp`: new `a=crypto` lines go
/// at the end of their media section, after the `c=`/`b=` lines RFC 4566 §5 puts first.
pub(crate) fn apply(sdp: &mut Sdp, streams: &[StreamSecurity]) {
    if streams.iter().all(|s| *s == StreamSecurity::Keep) {
        return;
    }
    let mut out: Vec<Line> = Vec::with_capacity(sdp.lines.len() + 4);
    let mut current: Option<(&StreamSecurity, &'static str)> = None;
    let mut k = 0usize;
    let flush = |out: &mut Vec<Line>, current: Option<(&StreamSecurity, &'static str)>| {
        if let Some((StreamSecurity::Sdes(lines), eol)) = current {
            out.extend(lines.iter().map(|v| Line { text: format!("a=crypto:{v}"), eol }));
        }
    };
    for mut line in std::mem::take(&mut sdp.lines) {
        if line.kind() == b'm' {
            flush(&mut out, current.take());
            if let Some(mut m) = MediaLine::parse(&line.text) {
                let security = streams.get(k).unwrap_or(&StreamSecurity::Keep);
                k += 1;
                if matches!(security, StreamSecurity::Plain | StreamSecurity::Sdes(_)) {
                    m.proto = transport(&m.proto, matches!(security, StreamSecurity::Sdes(_)));
                    line.text = m.render();
                }
                // A media section's last line may have no line end: a line added after it
                // needs one.
                let eol = if line.eol.is_empty() { "\r\n" } else { line.eol };
                current = Some((security, eol));
            }
        } else if current.is_some_and(|(s, _)| *s != StreamSecurity::Keep)
            && line.attr_name().is_some_and(|n| n.eq_ignore_ascii_case("crypto"))
        {
            continue;
        }
        out.push(line);
    }
    if let (Some(last), Some((StreamSecurity::Sdes(_), eol))) = (out.last_mut(), current) {
        if last.eol.is_empty() {
            last.eol = eol;
        }
    }
    flush(&mut out, current);
    sdp.lines = out;
}
