//! Transaction and dialog event sequences: the input is cut into messages (at NUL bytes), fed
//! to one engine from two peers with time moving on between them. Nothing may panic and the
//! engine must keep its bookkeeping bounded. Calls run through a profile that rewrites,
//! filters headers and SDP, translates replies and appends headers, so that path is fuzzed too;
//! `P-SBCProfile: access` runs NAT handling, session timers and digest auth both ways, `reg`
//! registration caching, `relay` media anchoring. The target plays the driver: the relay
//! (opens recorded, every fifth one failing with a busy pair, closed pairs given back, probes
//! answered), and a registration store that answers every other lookup later (at the next
//! message, after the lookup's deadline if time jumped). At the end every media port must be
//! back in its book and nothing may wait.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sbc_engine::b2bua::{
    Engine, EngineConfig, Interface, LocalSocket, MediaSettings, Output, RegTicket, Source, Transport,
};
use sbc_engine::sip::msg::Message;
use sbc_engine::sip::transaction::TimerConfig;

const PROFILES_YAML: &str = r#"
active_profile: ["$H(P-SBCProfile)", "$M($si=>m)", rewrite]
regex_maps:
  m: ["^127\\.0\\.0\\.1$=>rewrite"]
profiles:
  plain: {}
  rewrite:
    RURI: "sip:$rU@$rd"
    From: "\"$fn\" <sip:$fU@$fd>"
    To: "<sip:$tU@$td>"
    append_headers: ["X-A: $H(X-In)", "X-B: $P(k)"]
    append_headers_req: "X-Req: 1"
    header_filter: blacklist
    header_list: [User-Agent]
    message_filter: blacklist
    message_list: [info]
    sdp_filter: whitelist
    sdpfilter_list: [pcma, telephone-event]
    sdp_anonymize: yes
    reply_translations: "486=>603 Decline"
  access:
    dlg_nat_handling: yes
    enable_session_timer: yes
    session_expires: 90
    minimum_timer: 90
    enable_auth: yes
    auth_user: u
    auth_pwd: p
    enable_aleg_auth: yes
    auth_aleg_user: a
    auth_aleg_pwd: b
    enable_bleg_uas_auth: yes
    uas_auth_bleg_realm: r
    uas_auth_bleg_user: u
    uas_auth_bleg_pwd: p
  relay:
    enable_rtprelay: yes
    rtprelay_force_symmetric_rtp: yes
  reg:
    enable_reg_caching: yes
    min_reg_expires: 120
    max_ua_expires: 60
    contact_user: $fU
"#;

thread_local! {
    static PROFILES: std::sync::Arc<profiles::Store> = std::sync::Arc::new(profiles::Store::new(
        profiles::config::Config::from_yaml(PROFILES_YAML, "fuzz.yaml").expect("fuzz profiles load").profiles,
    ));
}

fuzz_target!(|data: &[u8]| {
    let sbc: SocketAddr = ([127, 0, 0, 1], 5060).into();
    let regs = std::sync::Arc::new(regcache::RegCache::in_memory());
    let cfg = EngineConfig {
        shard: 0,
        timers: TimerConfig::default(),
        timer_c: Duration::from_secs(181),
        max_call_duration: Duration::from_secs(3600),
        interfaces: vec![Interface {
            name: "f".into(),
            sockets: vec![LocalSocket { id: 0, transport: Transport::Udp, addr: sbc, advertised: None }],
        }],
        outbound_interface: 0,
        next_hop: None,
        max_calls: 1000,
        profiles: PROFILES.with(Clone::clone),
        media: Some(MediaSettings {
            book: rtp_relay::BookConfig {
                interfaces: vec![rtp_relay::MediaInterface {
                    name: "f".into(),
                    bind: sbc.ip(),
                    advertise: None,
                    // Ten pairs: enough for a few calls, few enough to run out.
                    port_min: 30000,
                    port_max: 30019,
                }],
                max_streams: 4,
                policy: None,
            },
            shards: 1,
            timeout: Duration::from_secs(60),
            hold_timeout: Duration::from_secs(600),
        }),
        reg_cache: std::sync::Arc::new(SometimesLater { cache: regs.clone(), asked: Default::default() }),
            max_registrations: 1000,
            nonce_key: [7; 32],
            admission: std::sync::Arc::new(sbc_engine::admission::Unlimited),
            connections: std::sync::Arc::new(sbc_engine::connections::NoConnections),
            retransmission_cache: 32 << 20,
            health: std::sync::Arc::new(sbc_engine::health::AlwaysUsable),
            probe_interval: None,
    };
    let mut engine = Engine::new(cfg, [1; 32]);
    let mut driver = FakeDriver { regs, ..FakeDriver::default() };
    let mut now = Instant::now();
    for (i, chunk) in data.split(|&b| b == 0).enumerate().take(64) {
        driver.answer_lookups(&mut engine, now);
        let peer: SocketAddr = ([127, 0, 0, 1], 5001 + (i % 2) as u16).into();
        let src = Source {
            transport: if i % 3 == 0 { Transport::Tcp } else { Transport::Udp },
            local: 0,
            remote: peer,
            conn: None,
        };
        let buf = Bytes::copy_from_slice(chunk);
        match Message::parse(buf.clone()) {
            Ok(m) => engine.handle_message(now, m, src),
            Err(e) => engine.handle_unparseable(now, &buf, e, src),
        }
        driver.drain(&mut engine, now);
        now += Duration::from_millis(u64::from(chunk.first().copied().unwrap_or(0)) * 300);
        engine.handle_timeout(now);
        driver.drain(&mut engine, now);
    }
    // Let time run out: every timer fires (cascades included), every transaction and call ends.
    for _ in 0..100_000 {
        let Some(at) = engine.poll_timeout() else { break };
        now = now.max(at);
        engine.handle_timeout(now);
        driver.drain(&mut engine, now);
        driver.answer_lookups(&mut engine, now);
        if engine.active_transactions() == 0 && engine.is_idle() {
            break;
        }
    }
    assert_eq!((engine.active_transactions(), engine.active_calls()), (0, 0));
    assert!(engine.is_idle(), "nothing waits");
    assert_eq!((engine.media_ports_in_use(), driver.open.len()), (0, 0), "every media port is back");
});

/// A registration store that answers every other lookup later, as one on other machines.
#[derive(Debug)]
struct SometimesLater {
    cache: std::sync::Arc<regcache::RegCache>,
    asked: std::sync::atomic::AtomicUsize,
}

impl sbc_engine::registrations::Registrations for SometimesLater {
    fn lookup(&self, query: &regcache::RegQuery) -> Option<regcache::RegView> {
        let n = self.asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (n % 2 == 0).then(|| self.cache.view(query))
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
}

/// The relay and the registration store, as a shard drives them, without sockets.
#[derive(Default)]
struct FakeDriver {
    open: std::collections::HashMap<u64, [(usize, u16); 2]>,
    opened: usize,
    regs: std::sync::Arc<regcache::RegCache>,
    lookups: Vec<(RegTicket, regcache::RegQuery)>,
    /// Next-hop names waiting for their targets, and how many were answered so far.
    resolves: Vec<(sbc_engine::b2bua::ResolveTicket, usize)>,
    answered: usize,
}

impl FakeDriver {
    /// Answers the lookups held since the last call (some of them late).
    fn answer_lookups(&mut self, engine: &mut Engine, now: Instant) {
        while !self.lookups.is_empty() || !self.resolves.is_empty() {
            for (ticket, query) in std::mem::take(&mut self.lookups) {
                engine.handle_registrations(now, ticket, self.regs.view(&query));
            }
            // Names resolve to the callee, to nothing, or to the SBC itself, in turn.
            for (ticket, n) in std::mem::take(&mut self.resolves) {
                self.answered += 1;
                let to: Option<SocketAddr> = match self.answered % 3 {
                    0 => None,
                    1 => Some(([127, 0, 0, 1], 5002).into()),
                    _ => Some(([127, 0, 0, 1], 5060).into()),
                };
                let targets = to
                    .map(|addr| vec![sbc_engine::b2bua::Target { transport: Transport::Udp, addr }])
                    .unwrap_or_default();
                engine.handle_targets(now, ticket, vec![targets; n]);
            }
            self.drain(engine, now);
        }
    }

    fn drain(&mut self, engine: &mut Engine, now: Instant) {
        while let Some(o) = engine.poll_output() {
            match o {
                Output::Media(rtp_relay::MediaCommand::Open { stream, ports, .. }) => {
                    self.opened += 1;
                    if self.opened % 5 == 0 {
                        // As the relay does: the leases drop, the busy pair is reported.
                        engine.handle_media_error(now, stream, Some(ports[1]));
                        for (iface, port) in ports {
                            engine.handle_media_released(iface, port);
                        }
                        continue;
                    }
                    assert!(self.open.insert(stream, ports).is_none(), "a stream opens once");
                }
                Output::Media(rtp_relay::MediaCommand::Update { stream, .. }) => {
                    assert!(self.open.contains_key(&stream), "updates name open streams");
                }
                Output::Media(rtp_relay::MediaCommand::Close { stream }) => {
                    let ports = self.open.remove(&stream).expect("closes name open streams");
                    for (iface, port) in ports {
                        engine.handle_media_released(iface, port);
                    }
                }
                Output::MediaProbe { call, streams } => {
                    assert!(streams.iter().all(|s| self.open.contains_key(s)), "probes name open streams");
                    // Every other probe finds the media alive.
                    let last = (self.opened % 2 == 0).then_some(now);
                    engine.handle_media_activity(now, call, last);
                }
                Output::RegistrationLookup { ticket, query } => self.lookups.push((ticket, query)),
                Output::Resolve { ticket, queries } => self.resolves.push((ticket, queries.len())),
                _ => {}
            }
        }
    }
}
