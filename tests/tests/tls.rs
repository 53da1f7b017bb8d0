//! SIP over TLS with real peers: a UA calls over TLS through sbcd to a SIPp callee on UDP;
//! an interface that requires client certificates refuses a UA without one and takes one with
//! a certificate its CA signed; a certificate that does not load is named by `--check-config`.
//! Certificates are made by the test (rcgen).

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use sbc_e2e::tls::{TestCerts, TlsUa};
use sbc_e2e::ua::sdp;
use sbc_e2e::{config_file, free_port, sbcd_bin, sipp_uas, Sbcd, Transport};

/// The header SIPp's `uas_basic.xml` checks the SBC relays.
const TEST_HEADER: &str = "X-Test-Header: kept verbatim ;x=1\r\n";

/// sbcd with one interface on UDP and on TLS at `tls_port`, with the test certificates.
fn sbcd_with_tls(certs: &TestCerts, verify: &str, tls_port: u16) -> Sbcd {
    let yaml = format!("interfaces:\n  - name: default\n    listen: [udp:127.0.0.1:5060]\n{}", certs.yaml(verify));
    let listen = format!("tls:127.0.0.1:{tls_port}");
    Sbcd::with_config(&yaml, &["--listen", &listen])
}

#[test]
fn a_call_over_tls_reaches_a_udp_callee_and_ends() {
    let certs = TestCerts::new();
    let tls_port = free_port();
    let sbcd = sbcd_with_tls(&certs, "none", tls_port);
    let uas_port = free_port();
    let uas = sipp_uas("uas_basic.xml", uas_port, Transport::Udp, 1);
    let mut ua = TlsUa::connect(format!("127.0.0.1:{tls_port}").parse().unwrap(), &certs, false).unwrap();
    ua.extra_headers = TEST_HEADER.into();
    let ok = ua.invite(&format!("sip:callee@127.0.0.1:{uas_port}"), &sdp("127.0.0.1", 40000, "")).unwrap();
    assert_eq!(ok.status(), Some(200), "{}\n{}", ok.0, sbcd.log_text());
    let contact = ok.header("Contact").unwrap_or_default().to_string();
    assert!(contact.contains(&format!(":{tls_port};transport=tls")), "sbcd's TLS address: {contact}");
    assert!(ok.header("Via").unwrap_or_default().starts_with("SIP/2.0/TLS"), "{}", ok.0);
    assert_eq!(ua.bye().unwrap().status(), Some(200));
    uas.assert_passed(Duration::from_secs(30), &sbcd);
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate() {
    let certs = TestCerts::new();
    let tls_port = free_port();
    let sbcd = sbcd_with_tls(&certs, "required", tls_port);
    let addr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let uas_port = free_port();
    let uas = sipp_uas("uas_basic.xml", uas_port, Transport::Udp, 1);
    let uri = format!("sip:callee@127.0.0.1:{uas_port}");
    // Without a certificate: no SIP gets through (the handshake fails, at the latest with the
    // first read).
    let refused = TlsUa::connect(addr, &certs, false).and_then(|mut ua| ua.invite(&uri, &sdp("127.0.0.1", 40000, "")));
    assert!(refused.is_err(), "{:?}", refused.map(|m| m.0));
    // With one the CA signed: the call goes through.
    let mut ua = TlsUa::connect(addr, &certs, true).unwrap();
    ua.extra_headers = TEST_HEADER.into();
    let ok = ua.invite(&uri, &sdp("127.0.0.1", 40000, "")).unwrap();
    assert_eq!(ok.status(), Some(200), "{}", sbcd.log_text());
    assert_eq!(ua.bye().unwrap().status(), Some(200));
    uas.assert_passed(Duration::from_secs(30), &sbcd);
    assert!(sbc_e2e::http(&sbcd, "GET", "/metrics", None, None).1.contains("reason=\"tls_handshake\""));
}

#[test]
fn check_config_names_a_tls_file_that_does_not_load() {
    let certs = TestCerts::new();
    let missing = certs.server_key.with_extension("missing");
    let yaml = certs.yaml("none").replace(&certs.server_key.display().to_string(), &missing.display().to_string());
    let bad =
        config_file("tls-check", &format!("interfaces:\n  - name: default\n    listen: [tls:127.0.0.1:5061]\n{yaml}"));
    let out = Command::new(sbcd_bin()).args(["--check-config", "--config", bad.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("interfaces[0].tls") && err.contains(&missing.display().to_string()), "{err}");
    // A tls: listen address without a certificate.
    let none = config_file("tls-check", "interfaces:\n  - name: default\n    listen: [tls:127.0.0.1:5061]\n");
    let out = Command::new(sbcd_bin()).args(["--check-config", "--config", none.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("interfaces[0].tls"), "{err}");
    // Given on the command line instead, it loads.
    let out = Command::new(sbcd_bin())
        .args(["--check-config", "--config", none.to_str().unwrap()])
        .args(["--tls-cert", certs.server_cert.to_str().unwrap(), "--tls-key", certs.server_key.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_call_leaves_over_tls_to_a_server_the_ca_signed() {
    let certs = TestCerts::new();
    // The far end: a second sbcd that takes TLS and requires a client certificate, in front of
    // a SIPp callee on UDP.
    let far_tls = free_port();
    let far = sbcd_with_tls(&certs, "required", far_tls);
    let uas_port = free_port();
    let uas = sipp_uas("uas_basic.xml", uas_port, Transport::Udp, 1);
    // The near end: its profile sends every call to the far end over TLS; it checks the far
    // end's certificate against the CA and shows its own.
    let yaml = format!(
        "interfaces:\n  - name: default\n    listen: [udp:127.0.0.1:5060]\n{}active_profile: out\nprofiles:\n  out:\n    next_hop: 127.0.0.1:{far_tls}/tls\n",
        certs.yaml("none")
    );
    let near = Sbcd::with_config(&yaml, &["--listen", &format!("tls:127.0.0.1:{}", free_port())]);
    let mut ua = sbc_e2e::ua::TestUa::new(near.addr());
    ua.extra_headers = TEST_HEADER.into();
    let ok = ua.invite(&format!("sip:callee@127.0.0.1:{uas_port}"), &sdp("127.0.0.1", 40000, ""));
    assert_eq!(ok.status(), Some(200), "near:\n{}\nfar:\n{}", near.log_text(), far.log_text());
    let (_, metrics) = sbc_e2e::http(&far, "GET", "/metrics", None, None);
    assert!(metrics.contains("sbc_calls_started_total 1"), "through the far end: {metrics}");
    assert_eq!(ua.bye().status(), Some(200));
    uas.assert_passed(Duration::from_secs(30), &far);
}

/// A TLS trunk by name, located through SRV (RFC 3263): its certificate is checked against
/// the domain the call was for (RFC 5922 §4), not the SRV target's name; a domain the
/// certificate does not name is refused though it leads to the same server.
#[test]
fn a_tls_trunk_found_through_srv_is_checked_against_the_domain() {
    use sbc_e2e::dns::{FakeDns, Record};
    let certs = TestCerts::new();
    let far_tls = free_port();
    let far = sbcd_with_tls(&certs, "none", far_tls);
    let uas_port = free_port();
    let uas = sipp_uas("uas_basic.xml", uas_port, Transport::Udp, 1);
    let dns = FakeDns::with_records(&[
        ("_sips._tcp.sbc.test", Record::srv(10, 1, far_tls, "gw.elsewhere.test")),
        ("_sips._tcp.impostor.test", Record::srv(10, 1, far_tls, "gw.elsewhere.test")),
        ("gw.elsewhere.test", Record::A(std::net::Ipv4Addr::LOCALHOST)),
    ]);
    let near = |domain: &str| {
        let yaml = format!(
            "dns:\n  servers: [\"{}\"]\ninterfaces:\n  - name: default\n    listen: [udp:127.0.0.1:5060]\n{}active_profile: out\nprofiles:\n  out:\n    next_hop: {domain}/tls\n",
            dns.addr,
            certs.yaml("none")
        );
        Sbcd::with_config(&yaml, &["--listen", &format!("tls:127.0.0.1:{}", free_port())])
    };
    let good = near("sbc.test");
    let mut ua = sbc_e2e::ua::TestUa::new(good.addr());
    ua.extra_headers = TEST_HEADER.into();
    let ok = ua.invite(&format!("sip:callee@127.0.0.1:{uas_port}"), &sdp("127.0.0.1", 40000, ""));
    assert_eq!(ok.status(), Some(200), "near:\n{}\nfar:\n{}", good.log_text(), far.log_text());
    assert_eq!(ua.bye().status(), Some(200));
    uas.assert_passed(Duration::from_secs(30), &far);

    let bad = near("impostor.test");
    let mut ua = sbc_e2e::ua::TestUa::new(bad.addr());
    let refused = ua.invite(&format!("sip:callee@127.0.0.1:{uas_port}"), &sdp("127.0.0.1", 40000, ""));
    assert!(refused.status().is_some_and(|s| s >= 400), "{}", refused.0);
    let (_, metrics) = sbc_e2e::http(&far, "GET", "/metrics", None, None);
    assert!(metrics.contains("sbc_calls_started_total 1"), "the impostor domain's call never got through: {metrics}");
}

#[test]
fn a_certificate_reloads_without_dropping_calls_and_a_bad_one_is_refused() {
    let certs = TestCerts::new();
    let tls_port = free_port();
    let sbcd = sbcd_with_tls(&certs, "none", tls_port);
    let addr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let uas_port = free_port();
    let uas = sipp_uas("uas_basic.xml", uas_port, Transport::Udp, 1);
    let first = certs.server_der();
    let mut held = TlsUa::connect(addr, &certs, false).unwrap();
    assert_eq!(held.peer_certificate(), first);
    held.extra_headers = TEST_HEADER.into();
    let ok = held.invite(&format!("sip:callee@127.0.0.1:{uas_port}"), &sdp("127.0.0.1", 40000, "")).unwrap();
    assert_eq!(ok.status(), Some(200));
    // A new certificate, read again while the call is up: new connections get it.
    certs.reissue_server();
    let (status, body) = sbc_e2e::http(&sbcd, "POST", "/tls/reload", None, None);
    assert_eq!((status, body.as_str()), (200, r#"{"interfaces":["default"]}"#));
    let second = certs.server_der();
    assert_ne!(first, second);
    assert_eq!(TlsUa::connect(addr, &certs, false).unwrap().peer_certificate(), second);
    // The call's connection kept its session.
    assert_eq!(held.bye().unwrap().status(), Some(200));
    uas.assert_passed(Duration::from_secs(30), &sbcd);
    // A key that does not load: refused, naming the file; the running certificate stays.
    std::fs::write(&certs.server_key, "not a key").unwrap();
    let (status, body) = sbc_e2e::http(&sbcd, "POST", "/tls/reload", None, None);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains(&certs.server_key.display().to_string()), "{body}");
    assert_eq!(TlsUa::connect(addr, &certs, false).unwrap().peer_certificate(), second);
    // When it runs out, in /metrics and /health.
    let (_, metrics) = sbc_e2e::http(&sbcd, "GET", "/metrics", None, None);
    let left: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sbc_tls_certificate_expiry_seconds{interface=\"default\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(left > 86_400, "rcgen's certificates last years: {left}");
    let (_, health) = sbc_e2e::http(&sbcd, "GET", "/health", None, None);
    assert!(health.contains(r#""tls":[{"interface":"default""#), "{health}");
}

/// sbcd with TLS whose profile sends every call to SIPp over UDP at `uas_port`; `downgrade`
/// sets `sips_downgrade`.
fn sbcd_with_udp_next_hop(certs: &TestCerts, tls_port: u16, uas_port: u16, downgrade: bool) -> Sbcd {
    let yaml = format!(
        "interfaces:\n  - name: default\n    listen: [udp:127.0.0.1:5060]\n{}active_profile: p\nprofiles:\n  p:\n    next_hop: 127.0.0.1:{uas_port}\n    sips_downgrade: {}\n",
        certs.yaml("none"),
        if downgrade { "yes" } else { "no" }
    );
    Sbcd::with_config(&yaml, &["--listen", &format!("tls:127.0.0.1:{tls_port}")])
}

/// RFC 5630: a `sips:` call arrives over TLS only and leaves over TLS only, unless the
/// profile allows the downgrade; then its Request-URI turns `sip:` and the caller's dialog
/// stays `sips:` (sbcd's Contact).
#[test]
fn a_sips_call_leaves_over_tls_only_unless_the_profile_allows_the_downgrade() {
    let certs = TestCerts::new();
    let (tls_port, uas_port) = (free_port(), free_port());
    let addr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let uri = format!("sips:callee@127.0.0.1:{uas_port}");
    // Over UDP: refused, whatever the profile.
    let sbcd = sbcd_with_udp_next_hop(&certs, tls_port, uas_port, true);
    let mut udp = sbc_e2e::ua::TestUa::new(sbcd.addr());
    let refused = udp.invite(&uri, &sdp("127.0.0.1", 40000, ""));
    assert_eq!(refused.status(), Some(480), "{}", refused.0);
    assert!(refused.header("Warning").unwrap_or_default().starts_with("381 "), "{}", refused.0);
    drop(sbcd);
    // Over TLS to a UDP next hop, without the downgrade: 480 with Warning 380.
    let sbcd = sbcd_with_udp_next_hop(&certs, tls_port, uas_port, false);
    let mut ua = TlsUa::connect(addr, &certs, false).unwrap();
    let refused = ua.invite(&uri, &sdp("127.0.0.1", 40000, "")).unwrap();
    assert_eq!(refused.status(), Some(480), "{}\n{}", refused.0, sbcd.log_text());
    assert!(refused.header("Warning").unwrap_or_default().starts_with("380 "), "{}", refused.0);
    drop(sbcd);
    // With it: the callee gets a sip: Request-URI over UDP, the caller a sips: Contact.
    let sbcd = sbcd_with_udp_next_hop(&certs, tls_port, uas_port, true);
    let uas = sipp_uas("uas_sip_ruri.xml", uas_port, Transport::Udp, 1);
    let mut ua = TlsUa::connect(addr, &certs, false).unwrap();
    let ok = ua.invite(&uri, &sdp("127.0.0.1", 40000, "")).unwrap();
    assert_eq!(ok.status(), Some(200), "{}\n{}", ok.0, sbcd.log_text());
    let contact = ok.header("Contact").unwrap_or_default();
    assert!(contact.starts_with(&format!("<sips:127.0.0.1:{tls_port}>")), "{contact}");
    assert!(sbcd.log_text().contains("sips: call downgraded"), "{}", sbcd.log_text());
    assert_eq!(ua.bye().unwrap().status(), Some(200));
    uas.assert_passed(Duration::from_secs(30), &sbcd);
}

/// A `sips:` call through two SBCs: the first keeps it `sips:` over TLS to the second, which
/// is allowed to take it down to its UDP callee.
#[test]
fn a_sips_call_stays_sips_across_tls_hops() {
    let certs = TestCerts::new();
    let (far_tls, near_tls, uas_port) = (free_port(), free_port(), free_port());
    let far = sbcd_with_udp_next_hop(&certs, far_tls, uas_port, true);
    let uas = sipp_uas("uas_sip_ruri.xml", uas_port, Transport::Udp, 1);
    let yaml = format!(
        "interfaces:\n  - name: default\n    listen: [udp:127.0.0.1:5060]\n{}active_profile: out\nprofiles:\n  out:\n    next_hop: 127.0.0.1:{far_tls}/tls\n",
        certs.yaml("none")
    );
    let near = Sbcd::with_config(&yaml, &["--listen", &format!("tls:127.0.0.1:{near_tls}")]);
    let mut ua = TlsUa::connect(format!("127.0.0.1:{near_tls}").parse().unwrap(), &certs, false).unwrap();
    let ok = ua.invite(&format!("sips:callee@127.0.0.1:{uas_port}"), &sdp("127.0.0.1", 40000, "")).unwrap();
    assert_eq!(ok.status(), Some(200), "near:\n{}\nfar:\n{}", near.log_text(), far.log_text());
    assert!(!near.log_text().contains("downgraded"), "the near end keeps it sips: {}", near.log_text());
    assert!(far.log_text().contains("sips: call downgraded"), "{}", far.log_text());
    assert_eq!(ua.bye().unwrap().status(), Some(200));
    uas.assert_passed(Duration::from_secs(30), &far);
}

/// A source that handshakes faster than `limits.tls_handshakes_per_source` has the extra
/// connections closed before their handshake (counted); once its rate allows, it is served.
#[test]
fn tls_handshakes_beyond_a_sources_rate_are_refused_and_counted() {
    let certs = TestCerts::new();
    let tls_port = free_port();
    let yaml = format!(
        "interfaces:\n  - name: default\n    listen: [udp:127.0.0.1:5060]\n{}limits:\n  tls_handshakes_per_source: 2\n",
        certs.yaml("none")
    );
    let sbcd = Sbcd::with_config(&yaml, &["--listen", &format!("tls:127.0.0.1:{tls_port}")]);
    let addr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let results: Vec<bool> = (0..6).map(|_| TlsUa::connect(addr, &certs, false).is_ok()).collect();
    let served = results.iter().filter(|ok| **ok).count();
    assert!((2..=3).contains(&served), "a burst of 2 (and maybe one refill): {results:?}");
    let refused = sbc_e2e::cluster::metric(&sbcd, "sbc_tls_handshakes_refused_total").unwrap_or(0);
    assert_eq!(refused, 6 - served as i64, "each refusal counted");
    std::thread::sleep(Duration::from_millis(600));
    assert!(TlsUa::connect(addr, &certs, false).is_ok(), "served again once its rate allows");
}

/// `tls.cipher_suites` narrows what an interface speaks, in its order; a name rustls does not
/// know is a configuration error naming the key.
#[test]
fn cipher_suites_are_the_interfaces_choice_and_an_unknown_one_is_named() {
    let certs = TestCerts::new();
    let tls_port = free_port();
    let section = format!("{}      cipher_suites: [TLS13_CHACHA20_POLY1305_SHA256]\n", certs.yaml("none"));
    let yaml = format!("interfaces:\n  - name: default\n    listen: [udp:127.0.0.1:5060]\n{section}");
    let sbcd = Sbcd::with_config(&yaml, &["--listen", &format!("tls:127.0.0.1:{tls_port}")]);
    let ua = TlsUa::connect(format!("127.0.0.1:{tls_port}").parse().unwrap(), &certs, false).unwrap();
    assert_eq!(ua.cipher_suite(), "TLS13_CHACHA20_POLY1305_SHA256", "{}", sbcd.log_text());
    let odd = section.replace("TLS13_CHACHA20_POLY1305_SHA256", "TLS_RSA_WITH_RC4_128_MD5");
    let bad =
        config_file("tls-suites", &format!("interfaces:\n  - name: default\n    listen: [tls:127.0.0.1:5061]\n{odd}"));
    let out = Command::new(sbcd_bin()).args(["--check-config", "--config", bad.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("interfaces[0].tls") && err.contains("cipher_suites") && err.contains("TLS_RSA_WITH_RC4_128_MD5"),
        "{err}"
    );
}

/// A trunk recognised by its certificate: the verified client certificate's CN and
/// subjectAltNames are `$Tc` and `$Ts` in patterns (here in the reason of a refusal).
#[test]
fn the_client_certificate_names_the_caller_in_patterns() {
    let certs = TestCerts::new();
    let tls_port = free_port();
    let yaml = format!(
        "interfaces:\n  - name: default\n    listen: [udp:127.0.0.1:5060]\n{}active_profile: p\nprofiles:\n  p:\n    refuse_with: \"403 cert=$Tc san=$Ts\"\n",
        certs.yaml("required")
    );
    let sbcd = Sbcd::with_config(&yaml, &["--listen", &format!("tls:127.0.0.1:{tls_port}")]);
    let mut ua = TlsUa::connect(format!("127.0.0.1:{tls_port}").parse().unwrap(), &certs, true).unwrap();
    let refused = ua.invite("sip:callee@127.0.0.1:9", &sdp("127.0.0.1", 40000, "")).unwrap();
    assert_eq!(refused.status(), Some(403), "{}\n{}", refused.0, sbcd.log_text());
    let status_line = refused.0.lines().next().unwrap_or_default();
    assert!(status_line.ends_with("cert=client.test san=client.test, 127.0.0.1"), "{status_line}");
    // Over UDP nobody showed a certificate: the same pattern expands to nothing.
    let mut udp = sbc_e2e::ua::TestUa::new(sbcd.addr());
    let refused = udp.invite("sip:callee@127.0.0.1:9", &sdp("127.0.0.1", 40000, ""));
    assert!(refused.0.lines().next().unwrap_or_default().ends_with("cert= san="), "{}", refused.0);
}

/// `tls.peers`: a next hop whose certificate must chain to a pinned CA, or (a lab) is not
/// checked; without either, a server the interface's CAs do not know is refused.
#[test]
fn a_next_hops_ca_is_pinned_or_its_check_skipped_per_peer() {
    let certs = TestCerts::new();
    let far_tls = free_port();
    // The far end answers every call itself: a 486 back means the TLS connection was made.
    let far_yaml = format!(
        "interfaces:\n  - name: default\n    listen: [udp:127.0.0.1:5060]\n{}active_profile: p\nprofiles:\n  p:\n    refuse_with: \"486 Far End\"\n",
        certs.yaml("none")
    );
    let _far = Sbcd::with_config(&far_yaml, &["--listen", &format!("tls:127.0.0.1:{far_tls}")]);
    // The near end's interface has no CA of its own: the test CA is unknown to it.
    let own = certs.yaml("none").replace(&format!("      ca_file: {}\n", certs.ca.display()), "");
    let call = |peers: &str| {
        let yaml = format!(
            "interfaces:\n  - name: default\n    listen: [udp:127.0.0.1:5060]\n{own}{peers}active_profile: out\nprofiles:\n  out:\n    next_hop: 127.0.0.1:{far_tls}/tls\n"
        );
        let near = Sbcd::with_config(&yaml, &["--listen", &format!("tls:127.0.0.1:{}", free_port())]);
        let mut ua = sbc_e2e::ua::TestUa::new(near.addr());
        let status = ua.invite("sip:callee@127.0.0.1:9", &sdp("127.0.0.1", 40000, "")).status();
        (status, near.log_text())
    };
    let (status, log) = call("");
    assert_eq!(status, Some(503), "a server whose CA is unknown is not reached: {log}");
    let pinned =
        format!("      peers:\n        - {{host: 127.0.0.1, port: {far_tls}, ca_file: {}}}\n", certs.ca.display());
    let (status, log) = call(&pinned);
    assert_eq!(status, Some(486), "through the pinned CA: {log}");
    let (status, log) = call("      peers:\n        - {host: 127.0.0.1, verify_server: no}\n");
    assert_eq!(status, Some(486), "unchecked: {log}");
    assert!(log.contains("NOT checked"), "said loudly: {log}");
    // A pin replaces the interface's CAs: with the far end's CA on the interface but another
    // CA pinned for it, the far end is not reached.
    let other = TestCerts::new();
    let yaml = format!(
        "interfaces:\n  - name: default\n    listen: [udp:127.0.0.1:5060]\n{}      peers:\n        - {{host: 127.0.0.1, ca_file: {}}}\nactive_profile: out\nprofiles:\n  out:\n    next_hop: 127.0.0.1:{far_tls}/tls\n",
        certs.yaml("none"),
        other.ca.display()
    );
    let near = Sbcd::with_config(&yaml, &["--listen", &format!("tls:127.0.0.1:{}", free_port())]);
    let mut ua = sbc_e2e::ua::TestUa::new(near.addr());
    let status = ua.invite("sip:callee@127.0.0.1:9", &sdp("127.0.0.1", 40000, "")).status();
    assert_eq!(status, Some(503), "the pinned CA, not the interface's: {}", near.log_text());
}

/// `admin.tls`: the API over HTTPS with the same machinery; with `verify_client: required`
/// a client without a certificate gets nothing; the certificate's expiry shows as `admin`.
#[test]
fn the_admin_api_answers_over_https_and_can_require_client_certificates() {
    let certs = TestCerts::new();
    let yaml = format!(
        "interfaces:\n  - name: default\n    listen: [udp:127.0.0.1:5060]\nadmin:\n  tls:\n    cert_file: {}\n    key_file: {}\n    ca_file: {}\n    verify_client: required\n",
        certs.server_cert.display(),
        certs.server_key.display(),
        certs.ca.display()
    );
    let sbcd = Sbcd::with_config(&yaml, &[]);
    let api: std::net::SocketAddr = format!("127.0.0.1:{}", sbcd.admin_port).parse().unwrap();
    let health = sbc_e2e::tls::https_get(api, "/health", &certs, true).unwrap();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}\n{}", sbcd.log_text());
    let metrics = sbc_e2e::tls::https_get(api, "/metrics", &certs, true).unwrap();
    assert!(metrics.contains("sbc_tls_certificate_expiry_seconds{interface=\"admin\"}"), "{metrics}");
    // No client certificate, or plain HTTP: no answer.
    assert!(sbc_e2e::tls::https_get(api, "/health", &certs, false).map(|r| r.is_empty()).unwrap_or(true));
    let (status, _) = sbc_e2e::http(&sbcd, "GET", "/health", None, None);
    assert_ne!(status, 200, "plain HTTP is not served");
    // The sems-sbc tools over HTTPS, with the CA and their own certificate.
    let tool = |with_cert: bool| {
        let mut cmd = Command::new(sbc_e2e::repo_root().join("packaging/bin/sems-sbc-list-profiles"));
        cmd.env("SBC_ADMIN_URL", format!("https://127.0.0.1:{}", sbcd.admin_port))
            .env("SBC_ADMIN_CACERT", &certs.ca)
            .env("SBC_TOOLS_LIB", sbc_e2e::repo_root().join("packaging/lib"));
        if with_cert {
            cmd.env("SBC_ADMIN_CERT", &certs.client_cert).env("SBC_ADMIN_KEY", &certs.client_key);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (rc, out, err) = tool(true);
    assert_eq!(rc, Some(0), "{out}{err}");
    assert!(out.contains("transparent"), "{out}");
    assert_eq!(tool(false).0, Some(2), "no client certificate: the API is not reached");
}

/// RFC 5923: a UA whose request over TLS has `alias` in its Via, and whose client certificate
/// names its address, is reached on that connection by new requests to its Via address (it
/// listens nowhere else); without `alias` the SBC would connect anew and fail.
#[test]
fn a_tls_connection_aliased_by_its_client_certificate_carries_new_requests() {
    let certs = TestCerts::new();
    let tls_port = free_port();
    let sbcd = sbcd_with_tls(&certs, "required", tls_port);
    let addr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let mut callee = TlsUa::connect(addr, &certs, true).unwrap();
    callee.via_params = ";alias".into();
    let sbc_uri = format!("sip:127.0.0.1:{tls_port};transport=tls");
    assert_eq!(callee.options(&sbc_uri).unwrap().status(), Some(200), "{}", sbcd.log_text());
    // A caller over UDP calls the TLS UA at its Via address.
    let mut caller = sbc_e2e::ua::TestUa::new(sbcd.addr());
    let target = format!("sip:callee@{};transport=tls", callee.local());
    let (answered, inv) = std::thread::scope(|s| {
        let call = s.spawn(|| caller.invite(&target, &sdp("127.0.0.1", 40000, "")));
        let inv = callee.recv(Duration::from_secs(5));
        if let Ok(inv) = &inv {
            callee.respond(inv, 486).unwrap();
        }
        (call.join().unwrap(), inv)
    });
    let inv = inv.unwrap_or_else(|e| panic!("the INVITE came on the aliased connection: {e}\n{}", sbcd.log_text()));
    assert_eq!(inv.method(), Some("INVITE"), "{}", inv.0);
    assert_eq!(answered.status(), Some(486), "{}", answered.0);
    // Without alias: no connection carries it, and the UA listens nowhere.
    let mut plain = TlsUa::connect(addr, &certs, true).unwrap();
    assert_eq!(plain.options(&sbc_uri).unwrap().status(), Some(200));
    let mut caller = sbc_e2e::ua::TestUa::new(sbcd.addr());
    let refused = caller.invite(&format!("sip:callee@{};transport=tls", plain.local()), &sdp("127.0.0.1", 40000, ""));
    assert_eq!(refused.status(), Some(503), "{}", refused.0);
}

/// A TLS record trickled in is cut like a message that comes too slowly
/// (`tcp_message_timeout_s`), not left until the idle timeout.
#[test]
fn a_tls_record_trickled_in_is_cut_by_the_message_timeout() {
    let certs = TestCerts::new();
    let tls_port = free_port();
    let yaml = format!(
        "interfaces:\n  - name: default\n    listen: [udp:127.0.0.1:5060]\n{}limits:\n  tcp_message_timeout_s: 1\n",
        certs.yaml("none")
    );
    let sbcd = Sbcd::with_config(&yaml, &["--listen", &format!("tls:127.0.0.1:{tls_port}")]);
    let mut ua = TlsUa::connect(format!("127.0.0.1:{tls_port}").parse().unwrap(), &certs, false).unwrap();
    // An application-data record header announcing 200 bytes, and one of them.
    ua.write_raw(&[23, 3, 3, 0, 200, 0]).unwrap();
    let cut = || sbc_e2e::cluster::metric(&sbcd, "sbc_tcp_cuts_total{reason=\"message_timeout\"}") == Some(1);
    assert!(
        sbc_e2e::eventually(Duration::from_secs(5), cut),
        "{}",
        sbc_e2e::http(&sbcd, "GET", "/metrics", None, None).1
    );
}
