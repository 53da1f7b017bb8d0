//! `capture:`: copies of the SIP messages sent and received, to a Homer server (HEPv3) and
//! into each call's trace (`GET /calls/{id}/trace`). See docs/manual/capture.md.

use std::net::SocketAddr;

use serde::Deserialize;

use super::Transport;

/// Messages waiting for the HEP sender before new ones are dropped (and counted).
const DEFAULT_QUEUE: usize = 10_000;
/// Messages kept per call for its trace; the rest are counted, not kept.
const DEFAULT_TRACE_MESSAGES: usize = 100;
/// Ended calls whose trace is kept (the oldest go first).
const DEFAULT_TRACE_ENDED_CALLS: usize = 1000;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileCapture {
    #[serde(default)]
    hep: Option<String>,
    #[serde(default)]
    hep_transport: Option<String>,
    #[serde(default)]
    agent_id: Option<u32>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    node_name: Option<String>,
    #[serde(default)]
    sampling_percent: Option<u8>,
    #[serde(default)]
    interfaces: Option<Vec<String>>,
    #[serde(default)]
    queue: Option<usize>,
    #[serde(default)]
    trace_messages: Option<usize>,
    #[serde(default)]
    trace_ended_calls: Option<usize>,
}

/// Where Homer listens: an address, or a name resolved when sbcd starts and again later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HepTarget {
    Addr(SocketAddr),
    Host(String, u16),
}

impl std::fmt::Display for HepTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Addr(a) => write!(f, "{a}"),
            Self::Host(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// HEPv3 export to a Homer server (`capture.hep` and the keys beside it).
#[derive(Clone, PartialEq, Eq)]
pub struct HepSettings {
    pub target: HepTarget,
    /// UDP (one datagram per message) or TCP (a stream of HEP packets).
    pub transport: Transport,
    /// The capture agent id Homer shows (HEP chunk 0x000c).
    pub agent_id: u32,
    /// Homer's authentication key (chunk 0x000e), when it asks for one.
    pub password: Option<String>,
    /// This node's name in Homer (chunk 0x0013); defaults to the cluster node id.
    pub node_name: Option<String>,
    /// Share of calls exported, whole calls at a time (1-100).
    pub sampling_percent: u8,
    /// Interfaces whose messages are exported; `None`: all.
    pub interfaces: Option<Vec<String>>,
    /// Messages waiting for the sender before new ones are dropped.
    pub queue: usize,
}

impl std::fmt::Debug for HepSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HepSettings")
            .field("target", &self.target)
            .field("transport", &self.transport)
            .field("agent_id", &self.agent_id)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("node_name", &self.node_name)
            .field("sampling_percent", &self.sampling_percent)
            .field("interfaces", &self.interfaces)
            .field("queue", &self.queue)
            .finish()
    }
}

/// What is copied where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureSettings {
    pub hep: Option<HepSettings>,
    /// Messages kept per call for its trace (0: no traces).
    pub trace_messages: usize,
    /// Ended calls whose trace is kept.
    pub trace_ended_calls: usize,
}

impl Default for CaptureSettings {
    fn default() -> Self {
        Self { hep: None, trace_messages: DEFAULT_TRACE_MESSAGES, trace_ended_calls: DEFAULT_TRACE_ENDED_CALLS }
    }
}

impl CaptureSettings {
    /// Validates `capture:` against the interfaces' names; an error names its key.
    pub(super) fn from_file(f: &FileCapture, interfaces: &[String]) -> Result<Self, (String, String)> {
        let key = |k: &str| format!("capture.{k}");
        let hep_only = [
            ("hep_transport", f.hep_transport.is_some()),
            ("agent_id", f.agent_id.is_some()),
            ("password", f.password.is_some()),
            ("node_name", f.node_name.is_some()),
            ("sampling_percent", f.sampling_percent.is_some()),
            ("interfaces", f.interfaces.is_some()),
            ("queue", f.queue.is_some()),
        ];
        // Each rides in every packet, in a chunk whose length field is 16 bits.
        for (k, v) in [("password", &f.password), ("node_name", &f.node_name)] {
            if v.as_ref().is_some_and(|v| v.len() > 255) {
                return Err((key(k), "is longer than 255 bytes".into()));
            }
        }
        let hep = match &f.hep {
            None => {
                if let Some((k, _)) = hep_only.iter().find(|(_, set)| *set) {
                    return Err((key(k), "only applies with capture.hep (Homer's address)".into()));
                }
                None
            }
            Some(target) => Some(HepSettings {
                target: parse_target(target.trim()).map_err(|m| (key("hep"), m))?,
                transport: match f.hep_transport.as_deref().map(str::trim) {
                    None | Some("udp") => Transport::Udp,
                    Some("tcp") => Transport::Tcp,
                    Some(t) => return Err((key("hep_transport"), format!("'{t}' is not udp or tcp"))),
                },
                agent_id: f.agent_id.unwrap_or(1),
                password: f.password.clone().filter(|p| !p.is_empty()),
                node_name: f.node_name.as_ref().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()),
                sampling_percent: match f.sampling_percent.unwrap_or(100) {
                    p @ 1..=100 => p,
                    p => return Err((key("sampling_percent"), format!("{p} is not 1-100"))),
                },
                interfaces: match &f.interfaces {
                    None => None,
                    Some(names) => {
                        if let Some(n) = names.iter().find(|n| !interfaces.contains(n)) {
                            return Err((key("interfaces"), format!("no interface named '{n}'")));
                        }
                        Some(names.clone())
                    }
                },
                queue: match f.queue.unwrap_or(DEFAULT_QUEUE) {
                    0 => return Err((key("queue"), "must be at least 1".into())),
                    q => q,
                },
            }),
        };
        Ok(Self {
            hep,
            trace_messages: f.trace_messages.unwrap_or(DEFAULT_TRACE_MESSAGES),
            trace_ended_calls: f.trace_ended_calls.unwrap_or(DEFAULT_TRACE_ENDED_CALLS),
        })
    }
}

/// `IP:PORT`, `[IPv6]:PORT` or `host:PORT`: Homer has no default port worth guessing.
fn parse_target(s: &str) -> Result<HepTarget, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(HepTarget::Addr(a));
    }
    let bad = || format!("'{s}' is not IP:PORT or host:PORT");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'));
    if !name_ok {
        return Err(bad());
    }
    Ok(HepTarget::Host(host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["intern".into(), "extern".into()]
    }

    #[test]
    fn defaults_keep_traces_and_send_nothing() {
        let s = CaptureSettings::from_file(&FileCapture::default(), &names()).expect("valid");
        assert_eq!(s, CaptureSettings::default());
        assert!(s.hep.is_none() && s.trace_messages == 100 && s.trace_ended_calls == 1000);
    }

    #[test]
    fn hep_targets_and_keys_are_checked() {
        let f = |hep: &str| FileCapture { hep: Some(hep.into()), ..Default::default() };
        let ok = CaptureSettings::from_file(&f("10.0.0.5:9060"), &names()).expect("valid").hep.expect("hep");
        assert_eq!(ok.target, HepTarget::Addr("10.0.0.5:9060".parse().expect("addr")));
        assert_eq!((ok.transport, ok.agent_id, ok.sampling_percent, ok.queue), (Transport::Udp, 1, 100, 10_000));
        let host = CaptureSettings::from_file(&f("Homer.example.net:9061"), &names()).expect("valid");
        assert_eq!(host.hep.expect("hep").target, HepTarget::Host("homer.example.net".into(), 9061));
        let v6 = CaptureSettings::from_file(&f("[::1]:9060"), &names()).expect("valid");
        assert_eq!(v6.hep.expect("hep").target, HepTarget::Addr("[::1]:9060".parse().expect("addr")));
        for bad in ["10.0.0.5", "homer:0", "homer:x", "ho mer:9060", ":9060", "a..b:9060"] {
            assert_eq!(CaptureSettings::from_file(&f(bad), &names()).expect_err(bad).0, "capture.hep");
        }
        let mut t = f("10.0.0.5:9060");
        t.hep_transport = Some("sctp".into());
        assert_eq!(CaptureSettings::from_file(&t, &names()).expect_err("sctp").0, "capture.hep_transport");
        t.hep_transport = Some("tcp".into());
        t.sampling_percent = Some(0);
        assert_eq!(CaptureSettings::from_file(&t, &names()).expect_err("0 %").0, "capture.sampling_percent");
        t.sampling_percent = Some(25);
        t.interfaces = Some(vec!["dmz".into()]);
        let e = CaptureSettings::from_file(&t, &names()).expect_err("unknown interface");
        assert!(e.0 == "capture.interfaces" && e.1.contains("'dmz'"), "{e:?}");
        t.interfaces = Some(vec!["extern".into()]);
        t.node_name = Some("n".repeat(256));
        assert_eq!(CaptureSettings::from_file(&t, &names()).expect_err("long").0, "capture.node_name");
        t.node_name = None;
        t.password = Some("s3cret".into());
        let s = CaptureSettings::from_file(&t, &names()).expect("valid").hep.expect("hep");
        assert_eq!((s.transport, s.sampling_percent), (Transport::Tcp, 25));
        assert!(!format!("{s:?}").contains("s3cret"), "the password stays out of Debug");
    }

    #[test]
    fn hep_keys_without_hep_are_named() {
        let f = FileCapture { agent_id: Some(7), ..Default::default() };
        let e = CaptureSettings::from_file(&f, &names()).expect_err("agent_id alone");
        assert_eq!(e.0, "capture.agent_id");
    }
}
