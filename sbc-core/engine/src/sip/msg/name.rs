//! Header names: the handful the B2BUA interprets, recognised in long and compact form.

/// A header the SBC interprets. Everything else is [`HeaderName::Other`] and only ever copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    MaxForwards,
    ContentLength,
    ContentType,
    Route,
    RecordRoute,
    RSeq,
    RAck,
    Require,
    ProxyRequire,
    Supported,
    Expires,
    Date,
    Unsupported,
    Path,
    ServiceRoute,
    Replaces,
    Join,
    TargetDialog,
    Other,
}

impl HeaderName {
    /// Classifies a raw header name (case-insensitive, compact forms of RFC 3261 §7.3.3).
    pub fn classify(raw: &[u8]) -> Self {
        if raw.len() == 1 {
            return match raw[0].to_ascii_lowercase() {
                b'v' => Self::Via,
                b'f' => Self::From,
                b't' => Self::To,
                b'i' => Self::CallId,
                b'm' => Self::Contact,
                b'l' => Self::ContentLength,
                b'c' => Self::ContentType,
                b'k' => Self::Supported,
                _ => Self::Other,
            };
        }
        const TABLE: &[(&[u8], HeaderName)] = &[
            (b"via", HeaderName::Via),
            (b"from", HeaderName::From),
            (b"to", HeaderName::To),
            (b"call-id", HeaderName::CallId),
            (b"cseq", HeaderName::CSeq),
            (b"contact", HeaderName::Contact),
            (b"max-forwards", HeaderName::MaxForwards),
            (b"content-length", HeaderName::ContentLength),
            (b"content-type", HeaderName::ContentType),
            (b"route", HeaderName::Route),
            (b"record-route", HeaderName::RecordRoute),
            (b"rseq", HeaderName::RSeq),
            (b"rack", HeaderName::RAck),
            (b"require", HeaderName::Require),
            (b"proxy-require", HeaderName::ProxyRequire),
            (b"supported", HeaderName::Supported),
            (b"expires", HeaderName::Expires),
            (b"date", HeaderName::Date),
            (b"unsupported", HeaderName::Unsupported),
            (b"path", HeaderName::Path),
            (b"service-route", HeaderName::ServiceRoute),
            (b"replaces", HeaderName::Replaces),
            (b"join", HeaderName::Join),
            (b"target-dialog", HeaderName::TargetDialog),
        ];
        TABLE
            .iter()
            .find(|(name, _)| name.len() == raw.len() && name.eq_ignore_ascii_case(raw))
            .map_or(Self::Other, |(_, h)| *h)
    }

    /// Headers of which a request may carry at most one (RFC 3261 §7.3.1: not comma lists).
    pub fn is_single(self) -> bool {
        matches!(
            self,
            Self::From
                | Self::To
                | Self::CallId
                | Self::CSeq
                | Self::MaxForwards
                | Self::ContentLength
                | Self::ContentType
                | Self::RSeq
                | Self::RAck
                | Self::Expires
                | Self::Date
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_case_insensitive() {
        assert_eq!(HeaderName::classify(b"v"), HeaderName::Via);
        assert_eq!(HeaderName::classify(b"I"), HeaderName::CallId);
        assert_eq!(HeaderName::classify(b"MaX-fOrWaRdS"), HeaderName::MaxForwards);
        assert_eq!(HeaderName::classify(b"C%6Fntact"), HeaderName::Other);
        assert_eq!(HeaderName::classify(b"s"), HeaderName::Other);
    }
}
