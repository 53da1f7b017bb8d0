//! SIPp UAC → sbcd → SIPp UAS over loopback, UDP and TCP: every call flow of the B2BUA core.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use sbc_e2e::{call_through, sipp_uac, Sbcd, Transport};

macro_rules! flow {
    ($name:ident, $scenario:literal) => {
        mod $name {
            use super::*;

            #[test]
            fn udp() {
                let sbcd = Sbcd::start(&[]);
                call_through(&sbcd, $scenario, Transport::Udp, 2);
            }

            #[test]
            fn tcp() {
                let sbcd = Sbcd::start(&[]);
                call_through(&sbcd, $scenario, Transport::Tcp, 2);
            }
        }
    };
}

flow!(basic_call_with_sdp, "basic");
flow!(busy_486, "busy");
flow!(cancel_after_180, "cancel");
flow!(reinvite_hold_and_back, "reinvite");
flow!(info_in_dialog, "info");
flow!(bye_from_callee, "callee_bye");
flow!(reliable_183_and_prack, "prack");
flow!(out_of_dialog_message, "message");
flow!(subscribe_and_notify, "subscribe");

fn options_ping(transport: Transport) {
    let sbcd = Sbcd::start(&[]);
    let out = sipp_uac("uac_options_ping.xml", sbcd.addr(), None::<SocketAddr>, transport, 3, 10);
    assert!(out.status.success(), "OPTIONS ping over {transport:?} failed; sbcd log:\n{}", sbcd.log_text());
}

#[test]
fn options_ping_to_the_sbc_udp() {
    options_ping(Transport::Udp);
}

#[test]
fn options_ping_to_the_sbc_tcp() {
    options_ping(Transport::Tcp);
}
