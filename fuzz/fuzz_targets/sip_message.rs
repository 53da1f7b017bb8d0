//! Datagram parsing, validation and every typed view: no panic, and an accepted message's
//! rows and body lie inside the buffer.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sbc_engine::sip::msg::{
    check_request, check_response, salvage_request_rows, split_values, HeaderName, Message, NameAddr, Uri, Via,
};

fuzz_target!(|data: &[u8]| {
    let buf = Bytes::copy_from_slice(data);
    let _ = salvage_request_rows(&buf);
    let Ok(m) = Message::parse(buf) else { return };
    let _ = if m.is_request() { check_request(&m).is_ok() } else { check_response(&m).is_ok() };
    for h in m.headers() {
        assert!(h.line.end as usize <= data.len());
        for v in split_values(m.value(h)) {
            match h.name {
                HeaderName::Via => {
                    let _ = Via::parse(v).map(|v| (v.branch(), v.has_param(b"rport")));
                }
                HeaderName::From
                | HeaderName::To
                | HeaderName::Contact
                | HeaderName::Route
                | HeaderName::RecordRoute => {
                    let _ = NameAddr::parse(v).map(|n| (n.tag(), n.parsed_uri()));
                }
                _ => {}
            }
        }
    }
    let _ = (m.cseq(), m.max_forwards(), m.call_id(), m.content_type(), m.body().len());
    let _ = Uri::parse(m.request_uri()).map(|u| u.param(b"transport"));
});
