//! `flood FROM_IP[,FROM_IP...] SBC_ADDR CALLEE_ADDR RATE SECONDS`: new INVITEs from the
//! FROM_IPs in turn to SBC_ADDR (RATE a second, 0 = as fast as one thread sends) for SECONDS;
//! prints what it did as `key=value` words. The sender of `benches/load/flood.sh`; the red-team test calls the same
//! code (`sbc_e2e::flood`). Sends only to the addresses it is given: use loopback.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = (|| -> Option<(String, SocketAddr, SocketAddr, u32, u64)> {
        let [from, sbc, callee, rate, seconds] = args.as_slice() else { return None };
        Some((from.clone(), sbc.parse().ok()?, callee.parse().ok()?, rate.parse().ok()?, seconds.parse().ok()?))
    })();
    let Some((from, sbc, callee, rate, seconds)) = parsed else {
        eprintln!("usage: flood FROM_IP[,FROM_IP...] SBC_ADDR CALLEE_ADDR RATE SECONDS");
        return ExitCode::from(2);
    };
    let sources: Vec<String> = from.split(',').map(str::to_string).collect();
    let r = sbc_e2e::flood::flood_invites_from(&sources, sbc, callee, rate, Duration::from_secs(seconds));
    println!("sent={} seconds={:.2} rate={:.0} replies={}", r.sent, r.seconds, r.rate(), r.replies);
    ExitCode::SUCCESS
}
