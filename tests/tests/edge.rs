//! The red-team suite (issue 16): a running sbcd attacked as an Internet peer would, each test
//! asserting one defence. Traffic stays on 127.0.0.0/8.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use sbc_e2e::phone::Phone;
use sbc_e2e::ua::{sdp, SipText, TestUa};
use sbc_e2e::*;

/// Every datagram `sock` receives within `within`.
fn collect(sock: &UdpSocket, within: Duration) -> Vec<SipText> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1)))).expect("timeout");
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            got.push(SipText(String::from_utf8_lossy(&buf[..n]).into_owned()));
        }
    }
    got
}

/// One spoofed INVITE that is refused and never ACKed brings its source one reply, not the
/// eleven a transaction's Timer G would send over 64·T1; a copy of it gets the same reply.
#[test]
fn a_refused_invite_never_acked_gets_exactly_one_reply() {
    // T1 = 50 ms: Timer H would end a transaction after 3.2 s; we listen for 4.5 s.
    let sbcd = Sbcd::with_config("sip:\n  t1_ms: 50\n  t2_ms: 400\n", &[]);
    let victim = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let me = victim.local_addr().expect("addr");
    let invite = format!(
        "INVITE sip:bob@example.net SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKamp1\r\nMax-Forwards: 0\r\nFrom: <sip:x@example.net>;tag=a1\r\nTo: <sip:bob@example.net>\r\nCall-ID: amp1@{me}\r\nCSeq: 1 INVITE\r\nContact: <sip:x@{me}>\r\nContent-Length: 0\r\n\r\n"
    );
    victim.send_to(invite.as_bytes(), sbcd.addr()).expect("send");
    let replies = collect(&victim, Duration::from_millis(4500));
    assert_eq!(replies.len(), 1, "one reply, no retransmissions: {replies:#?}");
    assert_eq!(replies[0].status(), Some(483));
    // A retransmission is answered once more, with the same To tag (RFC 3261 §8.2.6.2).
    victim.send_to(invite.as_bytes(), sbcd.addr()).expect("send");
    let again = collect(&victim, Duration::from_millis(1000));
    assert_eq!(again.len(), 1, "{again:#?}");
    assert_eq!(again[0].tag("To"), replies[0].tag("To"));
    assert!(!replies[0].tag("To").is_empty());
}

/// The next 16 outputs of xorshift64* (sbcd's generator before ChaCha20) after one that
/// printed as `word`: its output is the state times an odd constant, so one output gives all
/// the following ones.
fn xorshift_predictions(word: u64) -> Vec<u64> {
    const MUL: u64 = 0x2545_f491_4f6c_dd1d;
    let inv = (0..6).fold(MUL, |x, _| x.wrapping_mul(2u64.wrapping_sub(MUL.wrapping_mul(x))));
    let mut state = word.wrapping_mul(inv);
    (0..16)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(MUL)
        })
        .collect()
}

/// The 64-bit hex words at the end of an identifier (tags hold one, Call-IDs two).
fn words(id: &str) -> Vec<u64> {
    let hex: String =
        id.chars().rev().take_while(char::is_ascii_hexdigit).collect::<Vec<_>>().into_iter().rev().collect();
    let hex = &hex[hex.len() % 16..];
    hex.as_bytes().chunks(16).filter_map(|c| u64::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok()).collect()
}

/// Each identifier a caller and a callee see of six calls (the caller's To tag, the callee's
/// From tag, Call-ID and branch) predicts none of the others: the attack that breaks a
/// multiply-output generator from one tag finds nothing.
#[test]
fn no_identifier_seen_predicts_the_next_ones() {
    let (sbcd, mut callee) = sbcd_with_phone("bob", |_, phone| next_hop_config(phone, ""));
    let callee_addr = callee.local_addr();
    let mut seen: Vec<u64> = Vec::new();
    for n in 0..6 {
        let answering = std::thread::spawn(move || {
            let inv = callee.recv_request(Duration::from_secs(10)).expect("INVITE");
            callee.answer(&inv, 200);
            callee.recv_request(Duration::from_secs(10)).expect("ACK");
            (callee, inv)
        });
        let mut caller = TestUa::new(sbcd.addr());
        let ok = caller.invite(&format!("sip:bob@{callee_addr}"), &sdp("127.0.0.1", 7100 + n, ""));
        assert_eq!(ok.status(), Some(200), "{}", ok.0);
        let (c, inv) = answering.join().expect("callee");
        callee = c;
        seen.extend(words(&ok.tag("To")));
        seen.extend(words(&inv.tag("From")));
        seen.extend(words(inv.header("Call-ID").unwrap_or_default()));
        let branch = inv.header("Via").and_then(|v| v.split("branch=").nth(1)).unwrap_or_default();
        seen.extend(words(branch.split(';').next().unwrap_or_default()));
        let bye = std::thread::spawn(move || {
            let b = callee.recv_request(Duration::from_secs(10)).expect("BYE");
            callee.answer(&b, 200);
            callee
        });
        assert_eq!(caller.bye().status(), Some(200));
        callee = bye.join().expect("callee");
    }
    assert!(seen.len() >= 6 * 5, "{seen:x?}");
    for (i, w) in seen.iter().enumerate() {
        let predicted = xorshift_predictions(*w);
        let hit = seen.iter().enumerate().find(|(j, v)| *j != i && predicted.contains(v));
        assert!(hit.is_none(), "{w:016x} predicted {:016x}", hit.map_or(0, |(_, v)| *v));
    }
}

/// A 200 forged from another address with the branch of the callee's INVITE (an attacker who
/// saw or guessed it) does not answer the call; the callee's own answer does.
#[test]
fn a_response_forged_from_another_address_is_dropped() {
    let (sbcd, mut callee) = sbcd_with_phone("bob", |_, phone| next_hop_config(phone, ""));
    let callee_addr = callee.local_addr();
    let sbc = sbcd.addr();
    let answering = std::thread::spawn(move || {
        let inv = callee.recv_request(Duration::from_secs(10)).expect("INVITE");
        // The forger copies the INVITE's rows into a 200 and sends it from 127.0.0.66.
        let forger = UdpSocket::bind("127.0.0.66:0").expect("bind forger");
        let rows: String = inv
            .0
            .split("\r\n")
            .take_while(|l| !l.is_empty())
            .skip(1)
            .filter(|l| {
                let n = l.split(':').next().unwrap_or_default().to_ascii_lowercase();
                matches!(n.as_str(), "via" | "from" | "to" | "call-id" | "cseq")
            })
            .map(|l| if l.starts_with("To:") { format!("{l};tag=forged\r\n") } else { format!("{l}\r\n") })
            .collect();
        let forged = format!("SIP/2.0 200 OK\r\n{rows}Contact: <sip:evil@127.0.0.66>\r\nContent-Length: 0\r\n\r\n");
        forger.send_to(forged.as_bytes(), sbc).expect("forge");
        std::thread::sleep(Duration::from_millis(500));
        callee.answer(&inv, 486);
    });
    let mut caller = TestUa::new(sbcd.addr());
    let r = caller.invite(&format!("sip:bob@{callee_addr}"), &sdp("127.0.0.1", 7120, ""));
    answering.join().expect("callee");
    assert_eq!(r.status(), Some(486), "the forged 200 answered the call: {}", r.0);
    let (_, metrics) = http(&sbcd, "GET", "/metrics", None, None);
    assert!(metrics.contains("sbc_sip_drops_total{reason=\"response_wrong_source\"} 1"), "{metrics}");
}

/// A caller who points the Request-URI at its own server gets that server's challenge back,
/// and the server never sees a digest of the operator's password.
#[test]
fn credentials_never_reach_a_server_the_caller_chose() {
    let (sbcd, mut evil) = sbcd_with_phone("evil", |_, _| {
        "active_profile: p\nprofiles:\n  p:\n    enable_auth: yes\n    auth_user: trunk\n    auth_pwd: s3cret\n".into()
    });
    let evil_addr = evil.local_addr();
    let challenging = std::thread::spawn(move || {
        let inv = evil.recv_request(Duration::from_secs(10)).expect("INVITE");
        evil.answer_with(&inv, 407, "Proxy-Authenticate: Digest realm=\"evil\", nonce=\"n\", qop=\"auth\"\r\n");
        // Nothing but the ACK of the 407 may come: no INVITE with credentials.
        let mut after = Vec::new();
        while let Some(m) = evil.recv(Duration::from_millis(1500)) {
            after.push(m);
        }
        after
    });
    let mut caller = TestUa::new(sbcd.addr());
    let r = caller.invite(&format!("sip:bob@{evil_addr}"), &sdp("127.0.0.1", 7130, ""));
    assert_eq!(r.status(), Some(407), "{}", r.0);
    let after = challenging.join().expect("evil");
    assert!(after.iter().all(|m| m.method() == Some("ACK")), "{after:#?}");
    assert!(after.iter().all(|m| m.header("Proxy-Authorization").is_none()));
    assert!(sbcd.log_text().contains("challenge relayed, not answered"));
}

/// Waits until the server closes `conn` (a read gives 0 or an error); the time it took.
fn closed_within(conn: &mut std::net::TcpStream, limit: Duration) -> Option<Duration> {
    use std::io::Read;
    let start = Instant::now();
    conn.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    let mut buf = [0u8; 256];
    while start.elapsed() < limit {
        match conn.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

fn cut_count(sbcd: &Sbcd, reason: &str) -> u64 {
    let (_, metrics) = http(sbcd, "GET", "/metrics", None, None);
    let key = format!("sbc_tcp_cuts_total{{reason=\"{reason}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&key)?.trim().parse().ok()).unwrap_or(0)
}

/// Slowloris: a message trickled a byte every 300 ms is cut `tcp_message_timeout_s` after its
/// first byte, although every read brings something (the deadline used to restart per read).
#[test]
fn a_trickled_message_is_cut_at_its_deadline_from_the_first_byte() {
    use std::io::Write;
    let sbcd = Sbcd::with_config("limits:\n  tcp_message_timeout_s: 2\n", &[]);
    let mut conn = std::net::TcpStream::connect(sbcd.addr()).expect("connect");
    let trickle = b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKslow\r\nX-Slow: ";
    let start = Instant::now();
    let mut cut_after = None;
    for b in trickle.iter().cycle() {
        if conn.write_all(&[*b]).is_err() {
            cut_after = Some(start.elapsed());
            break;
        }
        if let Some(after) = closed_within(&mut conn, Duration::from_millis(300)) {
            cut_after = Some(start.elapsed().max(after));
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never cut");
    }
    let cut_after = cut_after.expect("cut");
    assert!(cut_after >= Duration::from_millis(1800) && cut_after < Duration::from_secs(5), "{cut_after:?}");
    assert!(eventually(Duration::from_secs(5), || cut_count(&sbcd, "message_timeout") == 1));
}

/// A connection that never says anything is closed after `tcp_first_message_timeout_s`, not
/// after the hour a registered phone's idle connection may live.
#[test]
fn a_silent_new_connection_is_closed_after_the_first_message_deadline() {
    let sbcd = Sbcd::with_config("limits:\n  tcp_first_message_timeout_s: 1\n", &[]);
    let mut silent = std::net::TcpStream::connect(sbcd.addr()).expect("connect");
    let after = closed_within(&mut silent, Duration::from_secs(5)).expect("closed");
    assert!(after >= Duration::from_millis(800), "{after:?}");
    assert!(eventually(Duration::from_secs(5), || cut_count(&sbcd, "first_message_timeout") == 1));
    // One that speaks at once is served.
    assert!(options_ping(sbcd.addr(), Duration::from_secs(5)).is_some());
}

/// Partial messages held over all connections are bounded: connections that pile up
/// megabyte bodies without finishing them are cut at `tcp_max_buffered_kib`, and signalling
/// on another connection goes on.
#[test]
fn partial_messages_cannot_take_more_than_the_buffer_budget() {
    use std::io::Write;
    let sbcd = Sbcd::with_config("limits:\n  tcp_max_buffered_kib: 2048\n", &[]);
    let head = "MESSAGE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKbig\r\nContent-Length: 1000000\r\n\r\n";
    let body = vec![b'x'; 900_000];
    let mut hogs = Vec::new();
    for _ in 0..3 {
        let mut c = std::net::TcpStream::connect(sbcd.addr()).expect("connect");
        c.write_all(head.as_bytes()).expect("head");
        let _ = c.write_all(&body);
        hogs.push(c);
    }
    assert!(eventually(Duration::from_secs(5), || cut_count(&sbcd, "buffer_budget") >= 1), "{}", sbcd.log_text());
    // A TCP client with a whole message is still answered.
    let mut ua = std::net::TcpStream::connect(sbcd.addr()).expect("connect");
    let me = ua.local_addr().expect("addr");
    let ping = format!("OPTIONS sip:{} SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bKok\r\nMax-Forwards: 70\r\nFrom: <sip:t@{me}>;tag=1\r\nTo: <sip:{}>\r\nCall-ID: tcp-ok@{me}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", sbcd.addr(), sbcd.addr());
    ua.write_all(ping.as_bytes()).expect("ping");
    ua.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut buf = [0u8; 2048];
    let n = std::io::Read::read(&mut ua, &mut buf).expect("an answer");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200"), "{}", String::from_utf8_lossy(&buf[..n]));
}

/// A call from a test UA to `uri` through sbcd, which `callee` answers 486; the final
/// status the caller got, and the callee back.
fn busy_call(sbcd: &Sbcd, mut callee: Phone, uri: &str, rtp_port: u16) -> (Option<u16>, Phone) {
    let answering = std::thread::spawn(move || {
        // (The ACK of a previous call's 486 may come first.)
        let inv = std::iter::from_fn(|| callee.recv_request(Duration::from_secs(10)))
            .find(|m| m.method() == Some("INVITE"))
            .expect("INVITE");
        callee.answer(&inv, 486);
        callee
    });
    let r = TestUa::new(sbcd.addr()).invite(uri, &sdp("127.0.0.1", rtp_port, ""));
    (r.status(), answering.join().expect("callee"))
}

/// A next hop by name is resolved by sbcd's own cached resolver on the configured name server:
/// the second call asks nothing (the answer's TTL is 60 s).
#[test]
fn host_names_are_resolved_once_through_the_cache() {
    let dns = dns::FakeDns::answering(&[("callee.test", std::net::Ipv4Addr::LOCALHOST)]);
    let (sbcd, mut callee) = sbcd_with_phone("bob", |_, phone| {
        format!("dns:\n  servers: ['{}']\n{}", dns.addr, next_hop_config(format!("callee.test:{}", phone.port()), ""))
    });
    for n in 0..2 {
        let status;
        (status, callee) = busy_call(&sbcd, callee, "sip:bob@example.net", 7200 + n);
        assert_eq!(status, Some(486), "{}", sbcd.log_text());
        if n == 0 {
            assert!(dns.queries().iter().all(|q| q == "callee.test"), "{:?}", dns.queries());
        }
    }
    assert_eq!(dns.a_queries("callee.test"), 1, "the second call is served from the cache: {:?}", dns.queries());
    let (_, metrics) = http(&sbcd, "GET", "/metrics", None, None);
    // Every transmission asks the resolver (INVITE, then the ACK of its 486); the cache answers.
    assert!(metrics.contains("sbc_dns_lookups_total{result=\"failed\"} 0"), "{metrics}");
    assert!(!metrics.contains("sbc_dns_lookups_total{result=\"resolved\"} 0"), "{metrics}");
}

/// A name server that hangs for some names ties up at most 64 lookups; the INVITEs beyond
/// them fail at once (503 to their callers) instead of queueing threads, a name already in the
/// cache is still resolved meanwhile, and sbcd keeps answering.
#[test]
fn a_hanging_name_server_gets_a_bounded_number_of_lookups() {
    let dns = dns::FakeDns::answering_else_silent(&[("callee.test", std::net::Ipv4Addr::LOCALHOST)]);
    let (sbcd, callee) = sbcd_with_phone("bob", |_, _| format!("dns:\n  servers: ['{}']\n", dns.addr));
    let callee_port = callee.local_addr().port();
    let uri = format!("sip:bob@callee.test:{callee_port}");
    let (status, callee) = busy_call(&sbcd, callee, &uri, 7300);
    assert_eq!(status, Some(486), "callee.test resolves (and is cached)");
    let caller = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let me = caller.local_addr().expect("addr");
    for n in 0..100 {
        let inv = format!(
            "INVITE sip:u@h{n}.slow.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKdns{n}\r\nMax-Forwards: 70\r\nFrom: <sip:c@{me}>;tag=d{n}\r\nTo: <sip:u@h{n}.slow.test>\r\nCall-ID: dns{n}@{me}\r\nCSeq: 1 INVITE\r\nContact: <sip:c@{me}>\r\nContent-Length: 0\r\n\r\n"
        );
        caller.send_to(inv.as_bytes(), sbcd.addr()).expect("send");
    }
    let replies = collect(&caller, Duration::from_secs(1));
    let unavailable = replies.iter().filter(|r| r.status() == Some(503)).count();
    assert!(unavailable >= 30, "lookups over the limit fail at once: {unavailable} 503s");
    let slow: std::collections::HashSet<String> =
        dns.queries().into_iter().filter(|q| q.ends_with(".slow.test")).collect();
    assert!(!slow.is_empty() && slow.len() <= 64, "{} names asked at once", slow.len());
    // The slow lookups still hold their permits: a cached name goes through all the same.
    assert_eq!(busy_call(&sbcd, callee, &uri, 7301).0, Some(486), "a cached name resolves while the others hang");
    assert!(options_ping(sbcd.addr(), Duration::from_secs(2)).is_some(), "sbcd still answers");
    let (_, metrics) = http(&sbcd, "GET", "/metrics", None, None);
    assert!(!metrics.contains("sbc_dns_lookups_total{result=\"shed\"} 0"), "{metrics}");
}

/// An untrusted address holds at most `per_source_calls` calls at once: with two ringing, its
/// third INVITE gets 503 and never reaches the callee (the cap that also bounds its media
/// ports); the callee meanwhile sees only the first two.
#[test]
fn a_source_holds_no_more_calls_than_its_cap() {
    let (sbcd, mut callee) = sbcd_with_phone("bob", |_, phone| {
        format!("limits:\n  admission:\n    per_source_calls: 2\n{}", next_hop_config(phone, ""))
    });
    let caller = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let me = caller.local_addr().expect("addr");
    let invite = |n: u32| {
        format!(
            "INVITE sip:bob@example.net SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKcap{n}\r\nMax-Forwards: 70\r\nFrom: <sip:c@{me}>;tag=c{n}\r\nTo: <sip:bob@example.net>\r\nCall-ID: cap{n}@{me}\r\nCSeq: 1 INVITE\r\nContact: <sip:c@{me}>\r\nContent-Length: 0\r\n\r\n"
        )
    };
    for n in 0..2 {
        caller.send_to(invite(n).as_bytes(), sbcd.addr()).expect("send");
        let inv = callee.recv_request(Duration::from_secs(5)).expect("the call reaches the callee");
        callee.answer(&inv, 180);
    }
    caller.send_to(invite(2).as_bytes(), sbcd.addr()).expect("send");
    let replies = collect(&caller, Duration::from_secs(1));
    assert!(
        replies.iter().any(|r| r.status() == Some(503) && r.header("Call-ID").is_some_and(|c| c.starts_with("cap2@"))),
        "{replies:#?}"
    );
    assert!(callee.recv_request(Duration::from_millis(500)).is_none(), "the third call went on");
    let (_, metrics) = http(&sbcd, "GET", "/metrics", None, None);
    assert!(metrics.contains("sbc_admission_calls_refused_total 1"), "{metrics}");
}
