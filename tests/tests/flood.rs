//! The flood of issue 16 against a running sbcd on its default configuration. A test binary of
//! its own: the flood takes a core, and no other test runs beside it.

use std::net::SocketAddr;
use std::time::Duration;

use sbc_e2e::flood;
use sbc_e2e::*;

/// A single source floods the default configuration with new INVITEs for 10 s, as fast as one
/// thread sends them (hundreds of thousands a second here; at least 20,000 asked), while SIPp
/// places 20 calls from another address: every call completes, sbcd stays small, and the
/// flood gets at most one reply per INVITE, most of them none.
#[test]
fn a_flood_from_one_source_does_not_stop_other_callers() {
    let sbcd = Sbcd::start(&[]);
    let (sbc, pid) = (sbcd.addr(), sbcd.pid());
    // Admitted flood INVITEs would go here, where nothing answers.
    let nowhere = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let flood = std::thread::spawn(move || flood::flood_invites("127.0.0.2", sbc, nowhere, 0, Duration::from_secs(10)));
    std::thread::sleep(Duration::from_secs(2));
    call_through(&sbcd, "basic", Transport::Udp, 20);
    let report = flood.join().expect("flood");
    let rss = flood::peak_rss(pid).expect("VmHWM of sbcd");
    eprintln!("flood: {report:?}, {:.0}/s; sbcd peak RSS {} MiB", report.rate(), rss >> 20);
    assert!(report.rate() >= 20_000.0, "the flood fell short of 20,000/s: {report:?}");
    assert!(report.replies <= report.sent / 10, "most of the flood must get no reply: {report:?}");
    assert!(rss < 256 << 20, "sbcd grew to {} MiB", rss >> 20);
}
