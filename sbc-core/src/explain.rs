//! `sbcd explain`: runs one request through the real engine, in memory, and tells what the
//! SBC would do with it — which rule of the chain matched, the profile, every option's
//! expansion, and the exact message it would send (or the refusal). Nothing is sent.

use std::cell::Cell;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use profiles::pattern::{Env, InterfaceFacts, NoCcVars, NoRegCache};
use profiles::selection::Rule;
use profiles::{Snapshot, Store};

use crate::b2bua::MsgView;
use crate::b2bua::{CcVerdict, Engine, EngineConfig, Interface, LocalSocket, Output, Source, Transport};
use crate::config::Config;
use crate::sip::msg::Message;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExplainError {
    #[error("the request does not parse: {0}")]
    Parse(String),
    #[error("the configuration has no listen address to receive the request on")]
    NoInterface,
}

/// Operators write requests with an editor: bare LF line ends become CRLF and the
/// Content-Length is set to the body that is really there.
fn normalise(raw: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(raw).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((text.trim_end_matches('\n'), ""));
    let body = body.replace('\n', "\r\n");
    let mut out = String::new();
    for line in head.lines() {
        let name = line.split(':').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("content-length") || name == "l" {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    let _ = write!(out, "Content-Length: {}\r\n\r\n{body}", body.len());
    out.into_bytes()
}

fn engine_for(cfg: &Config) -> Result<(Engine, Vec<LocalSocket>), ExplainError> {
    let mut sockets = Vec::new();
    let mut interfaces = Vec::new();
    for iface in &cfg.interfaces {
        let mut socks = Vec::new();
        for l in &iface.listen {
            let s = LocalSocket {
                id: sockets.len() as u16,
                transport: l.transport,
                addr: l.addr,
                advertised: iface.advertise.clone(),
            };
            socks.push(s.clone());
            sockets.push(s);
        }
        interfaces.push(Interface { name: iface.name.clone(), sockets: socks });
    }
    if sockets.is_empty() {
        return Err(ExplainError::NoInterface);
    }
    let ecfg = EngineConfig::from_config(cfg, 0, 1, interfaces, Arc::new(Store::new(cfg.profiles.clone())));
    Ok((Engine::new(ecfg, [1; 32]), sockets))
}

/// Explains what the SBC does with `raw` arriving from `source` over `transport`.
// The engine needs a time to run; any will do, nothing is scheduled for later.
#[allow(clippy::disallowed_methods)]
pub fn explain(cfg: &Config, raw: &[u8], source: SocketAddr, transport: Transport) -> Result<String, ExplainError> {
    let msg = Message::parse(Bytes::from(normalise(raw))).map_err(|e| ExplainError::Parse(e.to_string()))?;
    let (mut engine, sockets) = engine_for(cfg)?;
    let local = sockets
        .iter()
        .find(|s| s.transport == transport && s.addr.is_ipv6() == source.is_ipv6())
        .or_else(|| sockets.iter().find(|s| s.transport == transport))
        .ok_or(ExplainError::NoInterface)?
        .clone();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "request: {} {} from {transport}:{source} to {}",
        String::from_utf8_lossy(msg.method_bytes()),
        String::from_utf8_lossy(msg.request_uri()),
        local.addr
    );
    describe_profile(&mut out, &cfg.profiles, &msg, source, &local, engine.config());

    let now = std::time::Instant::now();
    engine.handle_message(now, msg, Source { transport, local: local.id, remote: source, conn: None });
    let mut sent = Vec::new();
    // Call control runs here, in memory, with fresh module state (nothing is counted for real).
    // Explaining a call must leave no trace: no CDR, no balance touched.
    let registry = callcontrol::modules::dry_run(&callcontrol::modules::ModuleSettings::of(cfg));
    let mut verdicts = Vec::new();
    let mut resolves = Vec::new();
    loop {
        while let Some(o) = engine.poll_output() {
            match o {
                Output::Transmit { dest, bytes, .. } => sent.push((dest, bytes)),
                Output::CallControl(
                    req @ (crate::b2bua::CcRequest::Start { .. } | crate::b2bua::CcRequest::Route { .. }),
                ) => {
                    let (call, chain, facts, is_start) = match req {
                        crate::b2bua::CcRequest::Start { call, chain, facts } => (call, chain, facts, true),
                        crate::b2bua::CcRequest::Route { call, chain, facts } => (call, chain, facts, false),
                        _ => continue,
                    };
                    let times =
                        callcontrol::Times { start: std::time::SystemTime::UNIX_EPOCH, connect: None, end: None };
                    let started = std::sync::atomic::AtomicUsize::new(0);
                    for inst in chain.iter() {
                        let _ =
                            writeln!(out, "  call control: {} (module {}) {:?}", inst.name, inst.module, inst.params);
                    }
                    // Operators' modules: a panic is reported here, as in a call, not fatal.
                    let outcome = crate::crash::supervised(|| {
                        if is_start {
                            registry.run_start(&chain, &facts, &times, &started)
                        } else {
                            registry.run_route(&chain, &facts)
                        }
                    });
                    let Ok(outcome) = outcome else {
                        let _ = writeln!(out, "  call control: a hook panicked");
                        continue;
                    };
                    let verdict = match outcome {
                        Ok(o) => match o.verdict {
                            callcontrol::Verdict::Continue => {
                                if let Some(t) = o.effects.call_timer {
                                    let _ = writeln!(
                                        out,
                                        "  call control: call timer {} s from the answer",
                                        t.as_secs_f64()
                                    );
                                }
                                for (k, v) in &o.effects.overrides {
                                    let _ = writeln!(out, "  call control sets {k} = {v:?}");
                                }
                                let e = o.effects;
                                CcVerdict::Continue { call_timer: e.call_timer, vars: e.vars, overrides: e.overrides }
                            }
                            callcontrol::Verdict::Refuse(reply) => CcVerdict::Refuse(reply),
                            callcontrol::Verdict::Drop => CcVerdict::Drop,
                        },
                        Err(e) => {
                            let _ = writeln!(out, "  call control: {e}");
                            CcVerdict::Failed(profiles::LocalReply::owned(
                                cfg.call_control.failure_code,
                                cfg.call_control.failure_reason.clone(),
                            ))
                        }
                    };
                    verdicts.push((call, verdict));
                }
                Output::Resolve { ticket, queries } => resolves.push((ticket, queries)),
                _ => {}
            }
        }
        if let Some((ticket, queries)) = resolves.pop() {
            let answers = queries.iter().map(|q| placeholder_target(&mut out, q)).collect();
            engine.handle_targets(now, ticket, answers);
            continue;
        }
        let Some((call, verdict)) = verdicts.pop() else { break };
        engine.handle_cc_verdict(now, call, verdict);
    }
    engine.handle_timeout(now + Duration::from_millis(1));
    // What the engine sent: a request is the relayed one, a response is its answer.
    let is_response = |b: &Bytes| b.starts_with(b"SIP/2.0 ");
    let relayed = sent.iter().find(|(_, b)| !is_response(b));
    let answer = sent.iter().rev().find(|(_, b)| is_response(b) && !b.starts_with(b"SIP/2.0 100 "));
    match (relayed, answer) {
        (Some((dest, bytes)), _) => {
            let _ = writeln!(
                out,
                "result: relayed to {}:{} from {}",
                dest.transport, dest.peer, sockets[dest.local as usize].addr
            );
            let _ = writeln!(out, "--- message sent ---\n{}", String::from_utf8_lossy(bytes));
        }
        (None, Some((_, bytes))) => {
            let status = String::from_utf8_lossy(bytes.split(|&c| c == b'\r').next().unwrap_or_default()).into_owned();
            let _ = writeln!(out, "result: answered by the SBC: {status}");
            let _ = writeln!(out, "--- reply sent ---\n{}", String::from_utf8_lossy(bytes));
        }
        (None, None) => {
            let _ = writeln!(out, "result: dropped (nothing would be sent)");
        }
    }
    Ok(out)
}

/// Where explain pretends a next-hop name resolved: it looks nothing up (no query leaves),
/// so the target is a documentation address (RFC 5737) on the port and transport the
/// name would default to.
fn placeholder_target(out: &mut String, q: &crate::b2bua::TargetQuery) -> Vec<crate::b2bua::Target> {
    let transport = q.transport.unwrap_or(if q.secure { Transport::Tls } else { Transport::Udp });
    let port = q.port.unwrap_or(if transport == Transport::Tls { 5061 } else { 5060 });
    let how = match (q.port, q.transport) {
        (Some(_), _) => "A/AAAA",
        (None, Some(_)) => "SRV, then A/AAAA",
        (None, None) => "NAPTR, then SRV, then A/AAAA",
    };
    let _ = writeln!(
        out,
        "  next hop {} is resolved when the request is sent ({how}); explain looks nothing up and shows 192.0.2.1",
        q.host
    );
    vec![crate::b2bua::Target { transport, addr: SocketAddr::from(([192, 0, 2, 1], port)) }]
}

fn describe_profile(
    out: &mut String,
    snap: &Snapshot,
    msg: &Message,
    source: SocketAddr,
    local: &LocalSocket,
    ecfg: &EngineConfig,
) {
    let view = MsgView(msg);
    let iface_index = ecfg.interface_of(local.id).unwrap_or(0);
    let rng = Cell::new(1);
    let env = Env {
        req: &view,
        source,
        local: local.addr,
        interface: InterfaceFacts {
            index: iface_index,
            name: ecfg.interfaces.get(iface_index).map_or("", |i| i.name.as_str()),
            public_ip: local.advertised.as_deref().unwrap_or(""),
        },
        next_hop: None,
        peer: None,
        maps: &snap.maps,
        cc_vars: &NoCcVars,
        reg_cache: &NoRegCache,
        rng: &rng,
    };
    let _ = writeln!(out, "active_profile: {}", snap.selection.render());
    let selected = snap.selection.select(&env);
    for (i, r) in snap.selection.rules.iter().enumerate() {
        let text = match r {
            Rule::ParamHeader => "$(paramhdr)",
            Rule::RuriUser => "$(ruri.user)",
            Rule::Pattern(p) => p.source(),
        };
        let mark = match selected.rule {
            Some(k) if k == i => format!("-> '{}'", selected.name),
            Some(k) if k < i => "(not evaluated)".to_string(),
            _ => "-> empty".to_string(),
        };
        let _ = writeln!(out, "  rule {}: {text} {mark}", i + 1);
    }
    let Some(profile) = snap.profiles.get(&selected.name) else {
        let _ = writeln!(out, "profile: '{}' is not loaded -> 500", selected.name);
        return;
    };
    let _ = writeln!(
        out,
        "profile: {} ({}{})",
        profile.name,
        profile.file,
        profile.md5.as_deref().map(|m| format!(", md5 {m}")).unwrap_or_default()
    );
    let env = Env { next_hop: Snapshot::literal_next_hop(profile), ..env };
    if let Some(r) = profile.refusal(&env) {
        match r {
            Ok(r) => {
                let _ = writeln!(out, "  refuse_with -> {} {}", r.code, r.reason);
            }
            Err(e) => {
                let _ = writeln!(out, "  {e} -> 500");
            }
        }
        return;
    }
    match profile.evaluate(&env) {
        Ok(plan) => {
            for (key, value) in &plan.expanded {
                let written = match profile.option(key) {
                    Some(_) if profiles::options::is_secret(key) => "(hidden)",
                    Some(o) => o.value.as_str(),
                    None => "",
                };
                let _ = writeln!(out, "  {key} = {written}  ->  {value:?}");
            }
            for o in &profile.options {
                if !plan.expanded.iter().any(|(k, _)| *k == o.key) {
                    let value = if profiles::options::is_secret(&o.key) { "(hidden)" } else { o.value.as_str() };
                    let _ = writeln!(out, "  {} = {value}", o.key);
                }
            }
        }
        Err(e) => {
            let _ = writeln!(out, "  {e} -> 500");
        }
    }
    for n in &profile.not_applied {
        let _ = writeln!(out, "  note: {n}");
    }
}
