//! Stream framing: any byte sequence must frame, wait or fail cleanly, and a framed length must
//! lie within the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sbc_engine::sip::msg::{frame_stream, StreamFrame};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    // Frame as a TCP reader would, message after message.
    for _ in 0..64 {
        match frame_stream(rest) {
            Ok(StreamFrame::Message { len }) | Ok(StreamFrame::KeepAlive { len, .. }) => {
                assert!(len > 0 && len <= rest.len());
                rest = &rest[len..];
            }
            Ok(StreamFrame::Incomplete) | Err(_) => break,
        }
    }
});
