//! The engine's test harness, with virtual time: a scripted caller (A) and callee (B) on fake
//! addresses, every message the SBC emits inspected, the relay and the registration store
//! played without sockets. The flows are in `tests/`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use profiles::LocalReply;

use super::*;
use crate::sip::msg::{HeaderName, Message};
use crate::sip::transaction::TimerConfig;

const SBC: &str = "127.0.0.1:5060";
const ALICE: &str = "127.0.0.1:5001";
const BOB: &str = "127.0.0.1:5002";
const CAROL: &str = "127.0.0.1:5003";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Harness {
    engine: Engine,
    now: Instant,
    /// Call-control requests the engine emitted, in order.
    cc: Vec<CcRequest>,
    /// The fake relay: streams opened (their pairs), what activity probes answer, and
    /// whether opens fail (their ports would not bind).
    streams: HashMap<rtp_relay::forwarder::StreamId, [(usize, u16); 2]>,
    /// The latest spec the relay was given for each stream.
    specs: HashMap<rtp_relay::forwarder::StreamId, rtp_relay::flow::StreamSpec>,
    media_activity: Option<Instant>,
    /// Opens to fail, by their order (0 = the first open), with the A side's pair busy.
    media_fails: Vec<usize>,
    opened: usize,
    /// The registration cache behind the engine's port, how its lookups are answered, and
    /// the lookups a test answers itself.
    regs: std::sync::Arc<regcache::RegCache>,
    store: Store,
    lookups: Vec<(RegTicket, regcache::RegQuery)>,
    /// The driver's resolver: each name's targets (a name not here has none), every query
    /// the engine asked, and the resolutions held for the test to answer (`dns_held`).
    dns: HashMap<String, Vec<Target>>,
    dns_held: bool,
    queries: Vec<TargetQuery>,
    resolves: Vec<(ResolveTicket, Vec<TargetQuery>)>,
}

/// How the engine's registration lookups are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    /// By the port itself, at once (sbcd's in-process cache).
    AtOnce,
    /// Later, as the driver's input: right after the engine asks.
    Later,
    /// Later, when the test calls [`Harness::answer_lookups`].
    Held,
}

/// The cluster's relay key in the tests whose store knows a peer.
const RELAY_KEY: [u8; 32] = [9; 32];

/// The registration cache behind the engine's port as a test wants it: answering lookups at
/// once, or never (as a store on other machines: every lookup goes to the driver as
/// `Output::RegistrationLookup`); knowing one cluster peer (with the cluster's key), or none.
#[derive(Debug)]
struct TestRegs {
    cache: std::sync::Arc<regcache::RegCache>,
    at_once: bool,
    peer: Option<SocketAddr>,
}

impl crate::registrations::Registrations for TestRegs {
    fn lookup(&self, query: &regcache::RegQuery) -> Option<regcache::RegView> {
        self.at_once.then(|| self.cache.view(query))
    }
    fn len(&self) -> usize {
        self.cache.len()
    }
    fn put(&self, binding: regcache::Binding) {
        self.cache.put(binding);
    }
    fn set_ua_expires(&self, binding: &regcache::Binding, ua_expires: Instant) {
        self.cache.set_ua_expires(&binding.alias, ua_expires);
    }
    fn remove(&self, alias: &str) {
        self.cache.remove(alias);
    }
    fn collect_expired(&self, now: Instant) -> usize {
        self.cache.collect_expired(now)
    }
    fn is_peer(&self, source: SocketAddr) -> bool {
        self.peer == Some(source)
    }
    fn relay_key(&self) -> Option<[u8; 32]> {
        self.peer.map(|_| RELAY_KEY)
    }
}

#[derive(Debug)]
struct Sent {
    to: Peer,
    msg: Message,
}

impl Harness {
    fn new() -> Self {
        Self::with_profiles(profiles::Snapshot::transparent("test", vec!["default".into()]))
    }

    /// An engine whose calls use the profiles of `yaml` (a configuration's profile sections).
    fn with_yaml(yaml: &str) -> Self {
        let cfg = profiles::config::Config::from_yaml(yaml, "test.yaml").expect("test config loads");
        Self::with_profiles(cfg.profiles)
    }

    /// An engine with the profiles of `yaml` whose registration lookups are answered as
    /// `store` says.
    fn with_store(yaml: &str, store: Store) -> Self {
        let cfg = profiles::config::Config::from_yaml(yaml, "test.yaml").expect("test config loads");
        Self::with_profiles_and_store(cfg.profiles, store)
    }

    /// The same configuration twice: registrations answered at once, and later.
    fn with_both_stores(yaml: &str) -> [Self; 2] {
        [Self::with_store(yaml, Store::AtOnce), Self::with_store(yaml, Store::Later)]
    }

    fn with_profiles(snapshot: profiles::Snapshot) -> Self {
        Self::with_profiles_and_store(snapshot, Store::AtOnce)
    }

    fn with_profiles_and_store(snapshot: profiles::Snapshot, store: Store) -> Self {
        let regs = std::sync::Arc::new(regcache::RegCache::in_memory());
        let reg_cache: std::sync::Arc<dyn crate::registrations::Registrations> = match store {
            Store::AtOnce => regs.clone(),
            Store::Later | Store::Held => {
                std::sync::Arc::new(TestRegs { cache: regs.clone(), at_once: false, peer: None })
            }
        };
        let cfg = EngineConfig {
            shard: 0,
            timers: TimerConfig::default(),
            timer_c: Duration::from_secs(180),
            max_call_duration: Duration::from_secs(3600),
            interfaces: vec![Interface {
                name: "default".into(),
                sockets: vec![LocalSocket { id: 0, transport: Transport::Udp, addr: addr(SBC), advertised: None }],
            }],
            outbound_interface: 0,
            next_hop: None,
            max_calls: 100,
            profiles: std::sync::Arc::new(profiles::Store::new(snapshot)),
            media: None,
            reg_cache,
            max_registrations: 1000,
            nonce_key: [7; 32],
            admission: std::sync::Arc::new(crate::admission::Unlimited),
            connections: std::sync::Arc::new(crate::connections::NoConnections),
            retransmission_cache: 32 << 20,
            health: std::sync::Arc::new(crate::health::AlwaysUsable),
            probe_interval: None,
        };
        // Virtual time: an arbitrary start, advanced only by the test.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        Self {
            engine: Engine::new(cfg, [7; 32]),
            now,
            cc: Vec::new(),
            streams: Default::default(),
            specs: Default::default(),
            media_activity: None,
            media_fails: Vec::new(),
            opened: 0,
            regs,
            store,
            lookups: Vec::new(),
            dns: HashMap::new(),
            dns_held: false,
            queries: Vec::new(),
            resolves: Vec::new(),
        }
    }

    /// An engine with the profiles of `yaml` and a relay lending pairs of `ports` (the harness
    /// plays the relay), advertising 192.0.2.99.
    fn with_relay_yaml(yaml: &str, ports: (u16, u16)) -> Self {
        let mut h = Self::with_yaml(yaml);
        let book = rtp_relay::BookConfig {
            interfaces: vec![rtp_relay::MediaInterface {
                name: "default".into(),
                bind: "127.0.0.1".parse().unwrap(),
                advertise: Some("192.0.2.99".parse().unwrap()),
                port_min: ports.0,
                port_max: ports.1,
            }],
            max_streams: rtp_relay::session::DEFAULT_MAX_STREAMS,
            policy: None,
        };
        let mut cfg = h.engine.cfg.clone();
        cfg.media = Some(MediaSettings {
            book,
            shards: 1,
            timeout: Duration::from_secs(60),
            hold_timeout: Duration::from_secs(600),
        });
        h.engine = Engine::new(cfg, [7; 32]);
        h
    }

    /// Answers the lookups held so far from the cache, as a driver would.
    fn answer_lookups(&mut self) -> Vec<Sent> {
        for (ticket, query) in std::mem::take(&mut self.lookups) {
            self.engine.handle_registrations(self.now, ticket, self.regs.view(&query));
        }
        self.drain()
    }

    fn send(&mut self, from: &str, text: &str) -> Vec<Sent> {
        let msg = Message::parse(Bytes::from(text.replace('\n', "\r\n"))).expect("test message parses");
        let src = Source { transport: Transport::Udp, local: 0, remote: addr(from), conn: None };
        self.engine.handle_message(self.now, msg, src);
        self.drain()
    }

    fn advance(&mut self, d: Duration) -> Vec<Sent> {
        let end = self.now + d;
        let mut all = Vec::new();
        while let Some(at) = self.engine.poll_timeout() {
            if at > end {
                break;
            }
            self.now = at.max(self.now);
            self.engine.handle_timeout(self.now);
            all.extend(self.drain());
        }
        self.now = end;
        all
    }

    fn drain(&mut self) -> Vec<Sent> {
        let mut v = Vec::new();
        while let Some(o) = self.engine.poll_output() {
            match o {
                Output::Transmit { dest, bytes, .. } => {
                    v.push(Sent { to: dest.peer, msg: Message::parse(bytes).expect("SBC output parses") });
                }
                Output::CallControl(r) => self.cc.push(r),
                Output::Media(cmd) => self.relay(cmd),
                Output::MediaProbe { call, streams } => {
                    assert!(streams.iter().all(|s| self.streams.contains_key(s)), "probes name open streams");
                    self.engine.handle_media_activity(self.now, call, self.media_activity);
                }
                Output::RegistrationLookup { ticket, query } => {
                    assert_ne!(self.store, Store::AtOnce, "a store that answers at once is not asked later");
                    if self.store == Store::Later {
                        self.engine.handle_registrations(self.now, ticket, self.regs.view(&query));
                    } else {
                        self.lookups.push((ticket, query));
                    }
                }
                Output::Resolve { ticket, queries } => {
                    self.queries.extend(queries.iter().cloned());
                    if self.dns_held {
                        self.resolves.push((ticket, queries));
                    } else {
                        let answers = self.answers(&queries);
                        self.engine.handle_targets(self.now, ticket, answers);
                    }
                }
                Output::Event(_) => {}
            }
        }
        v
    }

    fn answers(&self, queries: &[TargetQuery]) -> Vec<Vec<Target>> {
        queries.iter().map(|q| self.dns.get(&*q.host).cloned().unwrap_or_default()).collect()
    }

    /// Answers the resolutions held so far, as a driver would.
    fn answer_resolves(&mut self) -> Vec<Sent> {
        for (ticket, queries) in std::mem::take(&mut self.resolves) {
            let answers = self.answers(&queries);
            self.engine.handle_targets(self.now, ticket, answers);
        }
        self.drain()
    }

    /// What a shard does with the engine's media commands, without sockets: a closed
    /// stream's pairs come back at once.
    fn relay(&mut self, cmd: rtp_relay::MediaCommand) {
        match cmd {
            rtp_relay::MediaCommand::Open { stream, ports, spec, .. } => {
                self.specs.insert(stream, spec);
                let n = self.opened;
                self.opened += 1;
                if self.media_fails.contains(&n) {
                    // The leases drop: both pairs come back; the busy one is set aside.
                    self.engine.handle_media_error(self.now, stream, Some(ports[0]));
                    for (iface, port) in ports {
                        self.engine.handle_media_released(iface, port);
                    }
                    return;
                }
                assert!(self.streams.insert(stream, ports).is_none(), "a stream is opened once");
            }
            rtp_relay::MediaCommand::Update { stream, spec } => {
                assert!(self.streams.contains_key(&stream), "updates name open streams");
                self.specs.insert(stream, spec);
            }
            rtp_relay::MediaCommand::Close { stream } => {
                let ports = self.streams.remove(&stream).expect("closes name open streams");
                for (iface, port) in ports {
                    self.engine.handle_media_released(iface, port);
                }
            }
        }
    }

    fn verdict(&mut self, call: CallHandle, verdict: CcVerdict) -> Vec<Sent> {
        self.engine.handle_cc_verdict(self.now, call, verdict);
        self.drain()
    }
}

fn to(sent: &[Sent], who: &str) -> Vec<Message> {
    sent.iter().filter(|s| s.to.addr() == Some(addr(who))).map(|s| s.msg.clone()).collect()
}

/// The first message to `who` (later ones are retransmissions while time runs).
fn first(sent: &[Sent], who: &str) -> Message {
    to(sent, who).into_iter().next().unwrap_or_else(|| panic!("nothing to {who}: {sent:#?}"))
}

fn one(sent: &[Sent], who: &str) -> Message {
    let v = to(sent, who);
    assert_eq!(v.len(), 1, "expected one message to {who}, got {sent:#?}");
    v.into_iter().next().unwrap()
}

fn hv(m: &Message, name: HeaderName) -> String {
    String::from_utf8_lossy(m.header_value(name).unwrap_or_default()).into_owned()
}

const SDP: &str = "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 6000 RTP/AVP 0\n";

fn invite(call_id: &str, extra: &str) -> String {
    invite_sdp(call_id, extra, SDP)
}

fn invite_sdp(call_id: &str, extra: &str, sdp: &str) -> String {
    let body = sdp.replace('\n', "\r\n");
    format!(
        "INVITE sip:bob@{BOB} SIP/2.0\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bK{call_id};rport\nMax-Forwards: 70\nFrom: \"Alice\" <sip:alice@atlanta.example>;tag=at\nTo: <sip:bob@biloxi.example>\nCall-ID: {call_id}\nCSeq: 10 INVITE\nContact: <sip:alice@{ALICE}>\nX-Custom:   keep  me\n{extra}Content-Type: application/sdp\nContent-Length: {}\n\n{}",
        body.len(),
        sdp
    )
}

fn response_to(req: &Message, code: u16, to_tag: &str, extra: &str) -> String {
    response_from(BOB, req, code, to_tag, extra)
}

fn response_from(who: &str, req: &Message, code: u16, to_tag: &str, extra: &str) -> String {
    let mut s = format!("SIP/2.0 {code} Whatever\n");
    for h in req.headers_named(HeaderName::Via) {
        s.push_str(&format!("Via: {}\n", String::from_utf8_lossy(req.value(h))));
    }
    let to_val = hv(req, HeaderName::To);
    let to_val = if to_val.contains("tag=") || to_tag.is_empty() { to_val } else { format!("{to_val};tag={to_tag}") };
    s.push_str(&format!(
        "From: {}\nTo: {to_val}\nCall-ID: {}\nCSeq: {}\nContact: <sip:peer@{who}>\n{extra}Content-Length: 0\n\n",
        hv(req, HeaderName::From),
        hv(req, HeaderName::CallId),
        hv(req, HeaderName::CSeq)
    ));
    s
}

/// In-dialog request from a peer to the SBC's Contact, built from the dialog rows it learned.
fn in_dialog(method: &str, via: &str, from: &str, to: &str, call_id: &str, cseq: u32, extra: &str) -> String {
    format!(
        "{method} sip:{SBC} SIP/2.0\nVia: SIP/2.0/UDP {via};branch=z9hG4bK{method}{cseq}{call_id}\nMax-Forwards: 70\nFrom: {from}\nTo: {to}\nCall-ID: {call_id}\nCSeq: {cseq} {method}\n{extra}Content-Length: 0\n\n"
    )
}

/// Sets up an answered call; returns (B's INVITE as received, A's 200 as received).
fn established(h: &mut Harness) -> (Message, Message) {
    let out = h.send(ALICE, &invite("call-1@alice", ""));
    let b_inv = one(&out, BOB);
    let out = h.send(BOB, &response_to(&b_inv, 200, "bt", ""));
    let ok = one(&out, ALICE);
    let out = h.send(
        ALICE,
        &in_dialog("ACK", ALICE, &hv(&ok, HeaderName::From), &hv(&ok, HeaderName::To), "call-1@alice", 10, ""),
    );
    let ack = one(&out, BOB);
    assert_eq!(ack.method(), Some(Method::Ack));
    assert_eq!(ack.cseq().unwrap().num, b_inv.cseq().unwrap().num);
    (b_inv, ok)
}

fn cancel_for_invite(inv_text: &str) -> String {
    let cancel = inv_text.replacen("INVITE sip", "CANCEL sip", 1).replace("CSeq: 10 INVITE", "CSeq: 10 CANCEL");
    cancel.split("Content-Type").next().unwrap().to_string() + "Content-Length: 0\n\n"
}

mod access;
mod admission;
mod calls;
mod cc;
mod edge;
mod health;
mod media;
mod peer_relay;
mod profile_rules;
mod record;
mod resolve;
mod srtp;
mod subscriptions;
mod transfer;
