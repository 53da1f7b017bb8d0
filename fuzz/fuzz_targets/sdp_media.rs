//! The SDP media reader and the relay's anchoring rewrite on arbitrary bodies: no panic, and an
//! anchored body still describes the same number of streams, each at the port it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use profiles::sdp::media::{anchor, describe, sdp_range};

fuzz_target!(|data: &[u8]| {
    // A multipart body's SDP part is a slice of it.
    if let Some(r) = sdp_range(data) {
        assert!(r.start <= r.end && r.end <= data.len());
    }
    let Some(streams) = describe(data) else { return };
    let ports: Vec<Option<u16>> = (0..streams.len()).map(|i| (i % 3 != 2).then_some(20000 + 2 * i as u16)).collect();
    for ours in ["192.0.2.1", "2001:db8::1"] {
        let out = anchor(data, ours.parse().expect("ip"), &ports).expect("what describe reads, anchor rewrites");
        let again = describe(&out).expect("the rewrite is still SDP");
        assert_eq!(again.len(), streams.len());
        for (d, p) in again.iter().zip(&ports) {
            assert_eq!(d.port, p.unwrap_or(0));
        }
    }
});
