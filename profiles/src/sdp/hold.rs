//! SEMS's hold options (`hold_alter_b2b_*`, `hold_zero_connection_*`, `hold_activity_*`): a
//! relayed re-offer that puts the call on hold — every stream still offered is `sendonly` or
//! `inactive`, or has the RFC 2543 address `0.0.0.0` — reaches the other leg with the direction
//! the profile names on every stream (e.g. `sendrecv` for music on hold through NAT) and,
//! if asked, the zero address.

use super::media::{describe, Direction};
use super::model::Sdp;

/// What a leg's hold offers are turned into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldRules {
    /// `hold_activity_*` (SEMS's default `sendonly`).
    pub activity: Direction,
    /// `hold_zero_connection_*`: every `c=` set to `0.0.0.0` (`::` for IPv6).
    pub zero_connection: bool,
}

impl Direction {
    /// A `hold_activity_*` value.
    pub fn parse_activity(v: &str) -> Result<Self, String> {
        Self::parse(v.trim()).ok_or_else(|| format!("'{v}' is not sendrecv, sendonly, recvonly or inactive"))
    }

    fn attr(self) -> &'static str {
        match self {
            Self::SendRecv => "a=sendrecv",
            Self::SendOnly => "a=sendonly",
            Self::RecvOnly => "a=recvonly",
            Self::Inactive => "a=inactive",
        }
    }
}

/// Whether `body` puts the call on hold: it offers a stream, and every one it offers is
/// `sendonly`, `inactive` or at the zero address.
pub fn is_hold(body: &[u8]) -> bool {
    let Some(streams) = describe(body) else { return false };
    let mut offered = streams.iter().filter(|s| !s.rejected()).peekable();
    offered.peek().is_some()
        && offered.all(|s| s.zero_addr || matches!(s.direction, Direction::SendOnly | Direction::Inactive))
}

fn is_direction(text: &str) -> bool {
    matches!(text.trim(), "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive")
}

/// The hold offer as the other leg gets it; `None` when `body` is not SDP.
pub fn rewrite(body: &[u8], rules: HoldRules) -> Option<Vec<u8>> {
    let mut sdp = Sdp::parse(body)?;
    // The direction is given per stream: a session-level one would say otherwise for streams
    // without their own.
    let first_media = sdp.lines.iter().position(|l| l.kind() == b'm').unwrap_or(sdp.lines.len());
    let mut i = 0;
    sdp.lines.retain(|l| {
        i += 1;
        i > first_media || !is_direction(&l.text)
    });
    for (start, end) in sdp.media_sections().into_iter().rev() {
        let rejected = super::model::MediaLine::parse(&sdp.lines[start].text).is_none_or(|m| m.is_disabled());
        let mut k = start + 1;
        let mut end = end;
        while k < end {
            if is_direction(&sdp.lines[k].text) {
                sdp.lines.remove(k);
                end -= 1;
            } else {
                k += 1;
            }
        }
        if !rejected {
            let eol = sdp.lines[start].eol;
            sdp.lines.insert(end, super::model::Line { text: rules.activity.attr().to_string(), eol });
        }
    }
    if rules.zero_connection {
        for l in sdp.lines.iter_mut().filter(|l| l.kind() == b'c') {
            l.text = if l.text.contains("IP6") { "c=IN IP6 ::".into() } else { "c=IN IP4 0.0.0.0".into() };
        }
    }
    // The last line may have had no line ending: the added one follows it on a line of its own.
    if let Some(pos) = sdp.lines.iter().position(|l| l.eol.is_empty()).filter(|p| *p + 1 < sdp.lines.len()) {
        sdp.lines[pos].eol = "\r\n";
    }
    Some(sdp.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: &str = "v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\na=sendonly\r\nm=audio 4000 RTP/AVP 0\r\nm=video 0 RTP/AVP 96\r\n";

    #[test]
    fn hold_offers_are_told_apart() {
        assert!(is_hold(HOLD.as_bytes()));
        assert!(!is_hold(HOLD.replace("a=sendonly", "a=recvonly").as_bytes()), "recvonly is not hold");
        assert!(is_hold(HOLD.replace("a=sendonly\r\n", "").replace("192.0.2.1\r\nt", "0.0.0.0\r\nt").as_bytes()));
        assert!(!is_hold(HOLD.replace("a=sendonly\r\n", "").as_bytes()));
        assert!(!is_hold(b"not sdp"));
    }

    #[test]
    fn every_offered_stream_gets_the_activity_and_the_zero_address() {
        let rules = HoldRules { activity: Direction::SendRecv, zero_connection: true };
        let out = String::from_utf8(rewrite(HOLD.as_bytes(), rules).expect("sdp")).expect("text");
        assert_eq!(
            out,
            "v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendrecv\r\nm=video 0 RTP/AVP 96\r\n"
        );
        let rules = HoldRules { activity: Direction::Inactive, zero_connection: false };
        let media_level = "v=0\r\no=- 1 2 IN IP6 ::1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP6 2001:db8::1\r\na=sendonly\r\na=rtpmap:0 PCMU/8000";
        let out = String::from_utf8(rewrite(media_level.as_bytes(), rules).expect("sdp")).expect("text");
        assert!(out.ends_with("c=IN IP6 2001:db8::1\r\na=rtpmap:0 PCMU/8000\r\na=inactive\r\n"), "{out:?}");
        let zero = rewrite(media_level.as_bytes(), HoldRules { zero_connection: true, ..rules }).expect("sdp");
        assert!(String::from_utf8_lossy(&zero).contains("c=IN IP6 ::\r\n"));
    }
}
