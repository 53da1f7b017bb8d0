//! A call profile: its options validated and compiled at load (patterns, filters, lists), ready
//! to be evaluated per call by [`crate::evaluate`].

use crate::error::ConfigError;
use crate::filters::{parse_reply_translations, NameFilter, ReplyTranslation};
use crate::options::{option, status_of, Field, OptionStatus, OPTIONS};
use crate::pattern::Pattern;
use crate::sdp::hold::HoldRules;
use crate::sdp::media::Direction;
use crate::sdp::CodecPref;
use crate::session_timer::session_timers;
pub use crate::session_timer::{RefreshMethod, SessionTimerRules};

/// One option as written in a profile file, with its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawOption {
    pub key: String,
    pub value: String,
    pub file: String,
    pub line: Option<u64>,
}

/// One call-control instance of a profile: `call_control=name`, `name_module=cc_x`,
/// `name_<param>=value` (module and values are patterns, expanded per call).
#[derive(Debug, Clone)]
pub struct CcInstanceSpec {
    pub name: String,
    pub module: Pattern,
    pub params: Vec<(String, Pattern)>,
    /// An entry with a variable (`$H(P-Call-Control)`): `module` expands per call to specs
    /// (`cc_spec.rs`), for requests from trusted sources only.
    pub dynamic: bool,
}

/// The parts of the Contact the SBC sends on one leg (`aleg_contact_*`, `bleg_contact_*`).
#[derive(Debug, Clone, Default)]
pub struct ContactRule {
    pub user: Option<Pattern>,
    pub host: Option<Pattern>,
    pub port: Option<Pattern>,
    pub displayname: Option<Pattern>,
    pub uri_params: Option<Pattern>,
    pub params: Option<Pattern>,
}

impl ContactRule {
    pub fn is_empty(&self) -> bool {
        [&self.user, &self.host, &self.port, &self.displayname, &self.uri_params, &self.params]
            .iter()
            .all(|p| p.is_none())
    }
}

#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub name: String,
    /// The file it came from (or the YAML config) and, for a file of its own, its MD5.
    pub file: String,
    pub md5: Option<String>,

    pub ruri: Option<Pattern>,
    pub ruri_host: Option<Pattern>,
    pub from: Option<Pattern>,
    pub to: Option<Pattern>,
    pub call_id: Option<Pattern>,
    pub append_headers: Option<Pattern>,
    pub append_headers_req: Option<Pattern>,
    pub aleg_append_headers_req: Option<Pattern>,
    pub reply_translations: Vec<ReplyTranslation>,
    pub refuse_with: Option<Pattern>,
    /// The B leg reuses the caller's Call-ID, From tag and CSeq; the callee's To tag is
    /// given back to the caller.
    pub transparent_dlg_id: bool,

    pub outbound_proxy: Option<Pattern>,
    pub force_outbound_proxy: bool,
    pub aleg_outbound_proxy: Option<Pattern>,
    pub aleg_force_outbound_proxy: bool,
    pub next_hop: Option<Pattern>,
    pub next_hop_1st_req: bool,
    /// A relayed REFER's Refer-To has its Replaces mapped to the other leg (SEMS option).
    pub fix_replaces_ref: bool,
    pub next_hop_fixed: bool,
    /// Responses to requests this profile sends are taken from any address, not only the one
    /// the request went to (carriers that answer from another address; not a SEMS key).
    pub next_hop_replies_from_any: bool,
    /// A `sips:` call may leave over a hop that is not TLS, its Request-URI turned `sip:`
    /// (RFC 5630 §5.3 forbids it unless configured; not a SEMS key).
    pub sips_downgrade: bool,
    pub patch_ruri_next_hop: bool,
    pub aleg_next_hop: Option<Pattern>,
    pub outbound_interface: Option<Pattern>,
    pub aleg_outbound_interface: Option<Pattern>,
    /// `dlg_nat_handling`: requests to a UA that sent directly (one Via) go back to its source
    /// address, not to its Contact (docs/manual/access.md, NAT handling).
    pub dlg_nat_handling: bool,
    /// `allow_subless_notify=no`: a NOTIFY inside a call that belongs to no subscription made
    /// in it is answered 481 (`dialog_subs.rs` in the engine); SEMS's default relays it.
    pub refuse_subless_notify: bool,
    /// `max_491_retry_time` (ms): a refresh of ours met by glare (491) is sent again after a
    /// random delay up to this; `None` = SEMS's 2000.
    pub max_491_retry_ms: Option<u32>,

    pub aleg_contact: ContactRule,
    pub bleg_contact: ContactRule,
    /// `contact_*`: parts of each contact of a REGISTER relayed without caching.
    pub register_contact: ContactRule,

    pub header_filter: Option<NameFilter>,
    pub message_filter: Option<NameFilter>,
    pub sdp_filter: Option<NameFilter>,
    pub aleg_sdp_filter: Option<NameFilter>,
    pub media_filter: Option<NameFilter>,
    pub sdp_alines_filter: Option<NameFilter>,
    pub sdp_anonymize: bool,
    pub codec_preference: Vec<CodecPref>,
    pub codec_preference_aleg: Vec<CodecPref>,

    /// RTP relay (docs/manual/media.md, RTP relay).
    pub rtprelay: RtpRelayRules,
    /// `msg_logger_path`: a pcap file of each call's SIP messages (`log_sip`, on by default)
    /// and relayed RTP and RTCP (`log_rtp`, off by default).
    pub msg_logger_path: Option<Pattern>,
    pub no_log_sip: bool,
    pub log_rtp: bool,
    /// Hold re-offers relayed towards the caller's leg and the callee's (`hold_*`).
    pub hold: [Option<HoldRules>; 2],

    /// Registration caching (docs/manual/access.md, Registration caching).
    pub reg_caching: RegCaching,

    /// Digest credentials for challenges on the B leg (`enable_auth`) and the A leg
    /// (`enable_aleg_auth`), and the challenge of requests from the callee
    /// (`enable_bleg_uas_auth`).
    pub auth: AuthRules,

    /// Session timers (RFC 4028) of the B leg and the A leg; `None` = off on that leg.
    pub session_timer: Option<SessionTimerRules>,
    pub aleg_session_timer: Option<SessionTimerRules>,

    /// `call_control`: the instances, in order.
    pub call_control: Vec<CcInstanceSpec>,

    /// Options SEMS expands per call that are fixed values here, written with a variable: the
    /// profile is built again for each call with their expansions (`per_call.rs`).
    pub per_call: crate::per_call::PerCall,
    /// Every option as written, for `explain` and the management API.
    pub options: Vec<RawOption>,
    /// Recognised options this version does not apply, with why (reported at load).
    pub not_applied: Vec<String>,
}

/// The RTP relay options of a profile. Interface names are fixed text (checked against the
/// configured media interfaces at load and reload).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RtpRelayRules {
    /// `enable_rtprelay`: anchor the call's media.
    pub enabled: bool,
    /// `rtprelay_interface` (B leg) / `aleg_rtprelay_interface`; `None` or `default` = the
    /// interface the leg's signalling uses.
    pub interface: Option<String>,
    pub aleg_interface: Option<String>,
    /// `rtprelay_force_symmetric_rtp`: latch on both legs (the A leg unless
    /// `aleg_rtprelay_force_symmetric_rtp` says otherwise).
    pub force_symmetric: bool,
    pub aleg_force_symmetric: Option<bool>,
    /// `rtprelay_msgflags_symmetric_rtp`: a `P-MsgFlags` with bit 2 forces symmetric RTP.
    pub msgflags_symmetric: bool,
    /// `rtprelay_dtmf_filtering`: drop RFC 4733 event packets.
    pub dtmf_filtering: bool,
    /// `aleg_srtp` / `bleg_srtp`: how the relay speaks to each leg (A, B).
    pub srtp: [SrtpMode; 2],
    /// `sdes_required`: a leg set to `sdes` that offers or answers plain RTP is refused.
    pub sdes_required: bool,
}

/// `aleg_srtp` / `bleg_srtp`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SrtpMode {
    /// Packets and `a=crypto` lines as they come (SEMS's behaviour).
    #[default]
    Passthrough,
    /// Plain RTP on this leg; SRTP from the other leg is decrypted.
    Rtp,
    /// SRTP keyed by SDES with the SBC's own keys on this leg.
    Sdes,
}

impl SrtpMode {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "passthrough" => Ok(Self::Passthrough),
            "rtp" => Ok(Self::Rtp),
            "sdes" => Ok(Self::Sdes),
            other => Err(format!("'{other}' is not passthrough, rtp or sdes")),
        }
    }
}

/// `enable_reg_caching`, `min_reg_expires`, `max_ua_expires` (seconds; 0 = no bound).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegCaching {
    pub enabled: bool,
    /// Lower bound of the expiry asked of the registrar.
    pub min_reg_expires: u32,
    /// Upper bound of the expiry given to the UA; re-registrations inside the registrar's
    /// longer binding are answered by the SBC.
    pub max_ua_expires: u32,
}

/// Digest authentication options (patterns, expanded per call).
#[derive(Debug, Clone, Default)]
pub struct AuthRules {
    pub enabled: bool,
    pub user: Option<Pattern>,
    pub password: Option<Pattern>,
    pub aleg_enabled: bool,
    pub aleg_user: Option<Pattern>,
    pub aleg_password: Option<Pattern>,
    pub bleg_uas_enabled: bool,
    pub bleg_uas_realm: Option<Pattern>,
    pub bleg_uas_user: Option<Pattern>,
    pub bleg_uas_password: Option<Pattern>,
    /// Realms whose challenges get `auth_user`/`auth_pwd` (`auth_realm`, comma list); unset:
    /// only challenges to requests sent to the profile's configured next hop or proxy.
    pub realms: Option<Pattern>,
    /// The same for `auth_aleg_user`/`auth_aleg_pwd` (`auth_aleg_realm`); unset: any realm
    /// (the A leg's peer is the caller the profile was chosen for).
    pub aleg_realms: Option<Pattern>,
    /// Challenges that offer only MD5 are relayed, not answered (`auth_refuse_md5`).
    pub refuse_md5: bool,
}

/// The `hold_*` options as read, per leg (A, B).
#[derive(Default)]
struct HoldOptions {
    alter: [bool; 2],
    zero: [bool; 2],
    activity: [Option<Direction>; 2],
}

/// `_aleg` is the caller's leg (0), `_bleg` the callee's (1).
fn leg_of(key: &str) -> usize {
    usize::from(key.ends_with("_bleg"))
}

impl HoldOptions {
    /// Each leg's rules when `hold_alter_b2b_<leg>` is on. Without it the others only shape
    /// hold offers SEMS makes itself, which sbcd does not: said at load.
    fn rules(&self, warnings: &mut Vec<String>) -> [Option<HoldRules>; 2] {
        [0, 1].map(|leg| {
            let name = ["aleg", "bleg"][leg];
            if !self.alter[leg] && (self.zero[leg] || self.activity[leg].is_some()) {
                warnings.push(format!("hold_*_{name}: has no effect without hold_alter_b2b_{name}=yes"));
            }
            self.alter[leg].then(|| HoldRules {
                activity: self.activity[leg].unwrap_or(Direction::SendOnly),
                zero_connection: self.zero[leg],
            })
        })
    }
}

/// Accepted spellings of a boolean (one set everywhere, unlike SEMS's `=yes` and `bool*`).
pub fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" | "on" => Ok(true),
        "" | "no" | "false" | "0" | "off" => Ok(false),
        other => Err(format!("'{other}' is not yes or no")),
    }
}

/// `host[:port][/transport][;priority=N][;weight=N]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NextHop {
    pub host: String,
    pub port: Option<u16>,
    /// `udp`, `tcp` or `tls`; `None` = as the Request-URI says, else UDP.
    pub transport: Option<String>,
    /// Lower first (as SRV, RFC 2782); `None`: the entry before it plus one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u16>,
    /// Share of calls among entries of one priority; `None`: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u16>,
}

impl NextHop {
    /// Parses a comma list (`next_hop`); later entries are failover alternatives.
    pub fn parse_list(s: &str) -> Result<Vec<Self>, String> {
        s.split(',').map(str::trim).filter(|h| !h.is_empty()).map(Self::parse).collect()
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let mut params = s.split(';');
        let target = params.next().unwrap_or_default();
        let (mut priority, mut weight) = (None, None);
        for p in params {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let slot = match k.trim().to_ascii_lowercase().as_str() {
                "priority" => &mut priority,
                "weight" => &mut weight,
                other => return Err(format!("'{s}': unknown parameter '{other}' (priority or weight)")),
            };
            *slot = Some(v.trim().parse::<u16>().map_err(|_| format!("'{s}': {} is not 0-65535", k.trim()))?);
        }
        let mut hop = Self::parse_target(target)?;
        (hop.priority, hop.weight) = (priority, weight);
        Ok(hop)
    }

    fn parse_target(s: &str) -> Result<Self, String> {
        let (hostport, transport) = match s.split_once('/') {
            Some((h, t)) => {
                let t = t.trim().to_ascii_lowercase();
                if !matches!(t.as_str(), "udp" | "tcp" | "tls") {
                    return Err(format!("'{s}': transport '{t}' is not udp, tcp or tls"));
                }
                (h.trim(), Some(t))
            }
            None => (s.trim(), None),
        };
        let (host, port) = crate::uri::split_hostport(hostport);
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(format!("'{s}' is not host[:port][/transport]"));
        }
        let port = match port {
            "" => None,
            p => Some(p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("'{s}': bad port '{p}'"))?),
        };
        Ok(Self { host: host.to_string(), port, transport, priority: None, weight: None })
    }

    /// Whether any entry of `hops` names a priority or a weight (their order is then drawn
    /// per call, see [`Self::ordered`]).
    pub fn weighted(hops: &[Self]) -> bool {
        hops.iter().any(|h| h.priority.is_some() || h.weight.is_some())
    }

    /// `hops` in the order one call tries them: by priority, and by a weighted draw among
    /// equal priorities (`weighted.rs`). An entry without a priority follows the one before
    /// it, so a plain list keeps its order.
    pub fn ordered(hops: Vec<Self>, random: impl FnMut() -> u64) -> Vec<Self> {
        let mut last: Option<u16> = None;
        let items = hops
            .into_iter()
            .map(|h| {
                let p = h.priority.unwrap_or_else(|| last.map_or(0, |l| l.saturating_add(1)));
                last = Some(p);
                let w = h.weight.unwrap_or(1);
                (h, p, w)
            })
            .collect();
        crate::weighted::weighted_order(items, random)
    }

    /// `host[:port]`.
    pub fn hostport(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }
}

/// A number of seconds (empty = 0).
pub fn seconds(v: &str) -> Result<u32, String> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(0);
    }
    v.parse::<u32>().map_err(|_| format!("'{v}' is not a number of seconds"))
}

/// Checks the literal structure of an `append_headers` pattern: every line `Name: value`.
fn check_header_lines(source: &str) -> Result<(), String> {
    for piece in source.split("\\r\\n").flat_map(|p| p.split("\\n")) {
        let piece = piece.trim();
        if piece.is_empty() || piece.starts_with('$') {
            continue;
        }
        let name = piece.split(':').next().unwrap_or_default();
        if !piece.contains(':') || !crate::evaluate::is_token(name.trim()) {
            return Err(format!("'{piece}' is not 'Name: value' (separate headers with \\r\\n)"));
        }
    }
    Ok(())
}

/// `code reason` of `refuse_with`.
pub fn parse_refuse(s: &str) -> Result<(u16, String), String> {
    let s = s.trim();
    let (code, reason) = s.split_once(' ').ok_or_else(|| format!("'{s}' is not 'code reason'"))?;
    let code: u16 = code
        .parse()
        .ok()
        .filter(|c| (300..=699).contains(c))
        .ok_or_else(|| format!("'{code}' is not a 3xx-6xx code"))?;
    Ok((code, reason.trim().to_string()))
}

impl Profile {
    /// Validates and compiles `options`. Errors name the option's file, line and key.
    pub fn build(name: &str, file: &str, md5: Option<String>, options: Vec<RawOption>) -> Result<Self, ConfigError> {
        let (per_call, fixed) = crate::per_call::split(options.clone())?;
        let mut p = Self::build_for_call(name, file, md5, fixed)?;
        p.per_call = per_call;
        if p.log_rtp && p.msg_logger_path.is_none() {
            p.not_applied.push("log_rtp: has no effect without msg_logger_path".into());
        } else if p.log_rtp && !p.rtprelay.enabled && !p.per_call.iter().any(|(k, _)| k == "enable_rtprelay") {
            p.not_applied
                .push("log_rtp: writes nothing without enable_rtprelay (sbcd sees no RTP it does not relay)".into());
        }
        p.options = options;
        Ok(p)
    }

    /// Why its `enable_auth` answers no challenge unless a global next hop is set, if so:
    /// credentials go only to hops the configuration names or realms in `auth_realm`
    /// (docs/manual/access.md), and this profile's calls go where the request says. SEMS
    /// answers every challenger, so a SEMS profile relying on that is told at load.
    pub fn credentials_go_nowhere(&self) -> Option<&'static str> {
        let fixed = |h: &Option<Pattern>| h.as_ref().is_some_and(Pattern::is_literal);
        let realm_per_call = self.per_call.iter().any(|(k, _)| k == "auth_realm");
        (self.auth.enabled
            && self.auth.realms.is_none()
            && !realm_per_call
            && !fixed(&self.next_hop)
            && !fixed(&self.outbound_proxy))
        .then_some(
            "enable_auth: challenges are answered only from a next_hop or outbound_proxy written as \
             fixed text, the global next hop, or a realm in auth_realm; this profile has none (SEMS \
             answers every challenger): list the realms in auth_realm",
        )
    }

    /// A profile whose every value is taken literally: the fixed part of one being loaded, or
    /// a call's, its per-call options expanded (`per_call.rs`).
    pub(crate) fn build_for_call(
        name: &str,
        file: &str,
        md5: Option<String>,
        options: Vec<RawOption>,
    ) -> Result<Self, ConfigError> {
        let mut p = Self { name: name.to_string(), file: file.to_string(), md5, ..Self::default() };
        let cc_names: Vec<String> = options
            .iter()
            .filter(|o| o.key == "call_control")
            .flat_map(|o| {
                o.value.split(',').map(str::trim).filter(|n| !n.is_empty() && !n.starts_with('$')).map(str::to_string)
            })
            .collect();
        let mut lists: Vec<(&str, &RawOption)> = Vec::new();
        let mut cc_keys: Vec<&RawOption> = Vec::new();
        let mut hold = HoldOptions::default();
        for o in &options {
            let e = |m: String| ConfigError::new(&o.file, o.line, &o.key, m);
            let status =
                status_of(&o.key, &cc_names).ok_or_else(|| e(format!("unknown profile option (profile '{name}')")))?;
            match status {
                OptionStatus::Active => {}
                OptionStatus::NotYet(what) => {
                    if !o.value.trim().is_empty() && parse_bool(&o.value) != Ok(false) {
                        p.not_applied.push(format!("{}: not applied by this version ({what})", o.key));
                    }
                    continue;
                }
                OptionStatus::Dead => {
                    p.not_applied.push(format!("{}: has no effect (SEMS does not read it either)", o.key));
                    continue;
                }
            }
            let pat = || -> Result<Option<Pattern>, ConfigError> {
                if o.value.is_empty() {
                    return Ok(None);
                }
                Pattern::compile(&o.value).map(Some).map_err(|pe| e(format!("pattern '{}': {pe}", o.value)))
            };
            let flag = || parse_bool(&o.value).map_err(&e);
            match option(&o.key).map(|d| d.field) {
                Some(Field::Pattern(_, slot)) => {
                    let v = pat()?;
                    check_pattern_option(&o.key, &o.value, v.as_ref()).map_err(&e)?;
                    *slot(&mut p) = v;
                    continue;
                }
                Some(Field::Flag(slot)) => {
                    *slot(&mut p) = flag()?;
                    continue;
                }
                Some(Field::Own) | None => {}
            }
            match o.key.as_str() {
                "reply_translations" => p.reply_translations = parse_reply_translations(&o.value).map_err(e)?,
                "min_reg_expires" | "max_ua_expires" => {
                    let secs = seconds(&o.value).map_err(&e)?;
                    if o.key == "min_reg_expires" {
                        p.reg_caching.min_reg_expires = secs;
                    } else {
                        p.reg_caching.max_ua_expires = secs;
                    }
                }
                "aleg_rtprelay_force_symmetric_rtp" => p.rtprelay.aleg_force_symmetric = Some(flag()?),
                "allow_subless_notify" => p.refuse_subless_notify = !flag()?,
                "log_sip" => p.no_log_sip = !flag()?,
                "log_rtp" => p.log_rtp = flag()?,
                "hold_alter_b2b_aleg" | "hold_alter_b2b_bleg" => hold.alter[leg_of(&o.key)] = flag()?,
                "hold_zero_connection_aleg" | "hold_zero_connection_bleg" => hold.zero[leg_of(&o.key)] = flag()?,
                "hold_activity_aleg" | "hold_activity_bleg" => {
                    hold.activity[leg_of(&o.key)] = Some(Direction::parse_activity(&o.value).map_err(&e)?);
                }
                "a_rtp_mux_ip" | "a_rtp_mux_port" | "b_rtp_mux_ip" | "b_rtp_mux_port" => {
                    let v = o.value.trim();
                    if !v.is_empty() && v != "0" {
                        return Err(e("RTP multiplexing is SEMS's own protocol towards another SEMS, which \
                                      sbcd does not speak: the leg's media would reach the peer unmuxed, \
                                      so the profile is refused (remove the option)"
                            .into()));
                    }
                }
                "max_491_retry_time" => {
                    // SEMS divides by it: 0 crashes SEMS (docs/sems.md).
                    let ms = o.value.trim().parse::<u32>().ok().filter(|ms| *ms > 0);
                    p.max_491_retry_ms =
                        Some(ms.ok_or_else(|| e(format!("'{}' is not a number of ms above 0", o.value)))?);
                }
                "sdes_required" => p.rtprelay.sdes_required = flag()?,
                "aleg_srtp" | "bleg_srtp" => {
                    let leg = usize::from(o.key == "bleg_srtp");
                    p.rtprelay.srtp[leg] = SrtpMode::parse(&o.value).map_err(&e)?;
                }
                "rtprelay_interface" | "aleg_rtprelay_interface" => {
                    let name = o.value.trim();
                    if name.contains('$') {
                        return Err(e(format!("'{name}' is not an interface name")));
                    }
                    let v = (!name.is_empty() && name != "default").then(|| name.to_string());
                    if o.key == "rtprelay_interface" {
                        p.rtprelay.interface = v;
                    } else {
                        p.rtprelay.aleg_interface = v;
                    }
                }
                // Replaces and Join naming a dialog of ours are always mapped (`replaces.rs`):
                // SEMS's `no` passed them on naming a dialog the far side does not have.
                "fix_replaces_inv" => {
                    if !flag()? {
                        p.not_applied.push(
                            "fix_replaces_inv=no: Replaces and Join in INVITEs are mapped to the other leg anyway"
                                .to_string(),
                        );
                    }
                }
                "rtprelay_transparent_seqno" | "rtprelay_transparent_ssrc" => {
                    if !flag()? {
                        p.not_applied
                            .push(format!("{}: renumbering is not implemented; RTP is relayed unchanged", o.key));
                    }
                }
                "codec_preference" | "codec_preference_aleg" => {
                    if o.value.contains('$') {
                        return Err(e(format!("'{}' is not a codec list", o.value)));
                    }
                    let list = CodecPref::parse_list(&o.value).map_err(&e)?;
                    if o.key == "codec_preference" {
                        p.codec_preference = list;
                    } else {
                        p.codec_preference_aleg = list;
                    }
                }
                "call_control" => {
                    for entry in o.value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                        let dynamic = entry.contains('$');
                        if dynamic {
                            p.not_applied.push(format!(
                                "call_control: '{entry}': expanded per call for requests from trusted sources only \
                                 (limits.admission.trusted); SEMS takes it from anyone"
                            ));
                        }
                        if !p.call_control.iter().any(|c| c.name == entry) {
                            let module = Pattern::compile(entry).map_err(|pe| e(format!("'{entry}': {pe}")))?;
                            let name = entry.to_string();
                            p.call_control.push(CcInstanceSpec { name, module, params: Vec::new(), dynamic });
                        }
                    }
                }
                key if cc_names.iter().any(|n| key.starts_with(n.as_str()) && key[n.len()..].starts_with('_')) => {
                    cc_keys.push(o);
                }
                // Filter modes and their lists are read together below.
                _ => lists.push((o.key.as_str(), o)),
            }
        }
        let filter = |mode_key: &str, list_key: &str| -> Result<Option<NameFilter>, ConfigError> {
            let mode = lists.iter().find(|(k, _)| *k == mode_key).map(|(_, o)| *o);
            let list = lists.iter().find(|(k, _)| *k == list_key).map(|(_, o)| *o);
            let Some(mode) = mode else {
                return match list {
                    Some(l) if !l.value.trim().is_empty() => {
                        Err(ConfigError::new(&l.file, l.line, &l.key, format!("has no effect without {mode_key}")))
                    }
                    _ => Ok(None),
                };
            };
            NameFilter::parse(&mode.value, list.map_or("", |l| l.value.as_str()))
                .map_err(|m| ConfigError::new(&mode.file, mode.line, &mode.key, m))
        };
        (p.session_timer, p.aleg_session_timer) = session_timers(&options, &mut p.not_applied)?;
        p.hold = hold.rules(&mut p.not_applied);
        p.header_filter = filter("header_filter", "header_list")?;
        p.message_filter = filter("message_filter", "message_list")?;
        p.sdp_filter = filter("sdp_filter", "sdpfilter_list")?;
        p.aleg_sdp_filter = filter("aleg_sdp_filter", "aleg_sdpfilter_list")?;
        p.media_filter = filter("media_filter", "mediafilter_list")?;
        p.sdp_alines_filter = filter("sdp_alines_filter", "sdp_alinesfilter_list")?;
        // `<instance>_module` and `<instance>_<param>`: the longest instance name that prefixes
        // the key owns it (instances `a` and `a_b` both exist in some profiles).
        for o in cc_keys {
            let Some(inst) = p
                .call_control
                .iter_mut()
                .filter(|c| o.key.starts_with(c.name.as_str()) && o.key[c.name.len()..].starts_with('_'))
                .max_by_key(|c| c.name.len())
            else {
                continue;
            };
            let key = &o.key[inst.name.len() + 1..];
            let pat = Pattern::compile(&o.value)
                .map_err(|pe| ConfigError::new(&o.file, o.line, &o.key, format!("pattern '{}': {pe}", o.value)))?;
            if key == "module" {
                inst.module = pat;
            } else {
                inst.params.retain(|(k, _)| k != key);
                inst.params.push((key.to_string(), pat));
            }
        }
        // cc_pcalls' max_calls=0: SEMS's own code refuses every call with it; ours reads it as
        // "no limit" (docs/sems.md). A migration must not change that silently.
        for inst in &p.call_control {
            let literal = |pat: &Pattern| pat.is_literal().then(|| pat.source().trim().to_string());
            let is_pcalls = literal(&inst.module).is_some_and(|m| m == "cc_pcalls");
            let zero = inst.params.iter().any(|(k, v)| k == "max_calls" && literal(v).as_deref() == Some("0"));
            if is_pcalls && zero {
                p.not_applied
                    .push(format!("{}_max_calls=0: SEMS would refuse every call; sbcd takes 0 as no limit", inst.name));
            }
        }
        // The option that asks for SRTP termination, named in the error.
        let srtp_key = options.iter().rev().find(|o| match o.key.as_str() {
            "aleg_srtp" | "bleg_srtp" => SrtpMode::parse(&o.value).is_ok_and(|m| m != SrtpMode::Passthrough),
            "sdes_required" => parse_bool(&o.value) == Ok(true),
            _ => false,
        });
        if let Some(o) = srtp_key.filter(|_| !p.rtprelay.enabled) {
            return Err(ConfigError::new(&o.file, o.line, &o.key, "SRTP termination needs enable_rtprelay=yes"));
        }
        if p.rtprelay.sdes_required && !p.rtprelay.srtp.contains(&SrtpMode::Sdes) {
            let o = options.iter().rev().find(|o| o.key == "sdes_required");
            return Err(ConfigError::new(
                o.map_or(file, |o| o.file.as_str()),
                o.and_then(|o| o.line),
                "sdes_required",
                "has no effect unless aleg_srtp or bleg_srtp is sdes",
            ));
        }
        if p.next_hop_1st_req && p.next_hop_fixed {
            let o = options.iter().rev().find(|o| o.key == "next_hop_fixed");
            return Err(ConfigError::new(
                o.map_or(file, |o| o.file.as_str()),
                o.and_then(|o| o.line),
                "next_hop_fixed",
                "contradicts next_hop_1st_req",
            ));
        }
        p.options = options;
        Ok(p)
    }

    /// Option value as written (for explain).
    pub fn option(&self, key: &str) -> Option<&RawOption> {
        self.options.iter().find(|o| o.key == key)
    }

    /// Every regex map the profile's patterns use.
    pub fn map_names(&self) -> Vec<(&str, &str)> {
        let mut out = Vec::new();
        for (key, p) in self.patterns() {
            for m in p.map_names() {
                out.push((key, m));
            }
        }
        out
    }

    /// Whether a request handled with this profile may read the registration cache: it
    /// caches registrations, may run the local registrar (a call-control module named by a
    /// pattern may be it), or a pattern reads the cache.
    pub fn uses_registrations(&self) -> bool {
        self.reg_caching.enabled
            || self.call_control.iter().any(|c| {
                c.module.literal().is_none_or(|m| m == "cc_registrar")
                    || c.params.iter().any(|(_, p)| p.uses_registrations())
            })
            || self.patterns().iter().any(|(_, p)| p.uses_registrations())
    }

    /// (option key, pattern) for every pattern option that is set.
    pub fn patterns(&self) -> Vec<(&'static str, &Pattern)> {
        OPTIONS
            .iter()
            .filter_map(|d| match d.field {
                Field::Pattern(get, _) => get(self).as_ref().map(|p| (d.key, p)),
                _ => None,
            })
            .collect()
    }
}

/// Checks a pattern option's value needs beyond compiling: header lines that are lines, and
/// a `refuse_with` or next hop written as fixed text that parses.
fn check_pattern_option(key: &str, raw: &str, pattern: Option<&Pattern>) -> Result<(), String> {
    use crate::options::{ALEG_APPEND_HEADERS_REQ, ALEG_NEXT_HOP, APPEND_HEADERS, APPEND_HEADERS_REQ};
    use crate::options::{NEXT_HOP, REFUSE_WITH};
    let literal = pattern.and_then(Pattern::literal);
    let is = |def: &crate::options::OptionDef| def.key == key;
    if is(&APPEND_HEADERS) || is(&APPEND_HEADERS_REQ) || is(&ALEG_APPEND_HEADERS_REQ) {
        return check_header_lines(raw);
    }
    if is(&REFUSE_WITH) {
        return literal.map_or(Ok(()), |lit| parse_refuse(&lit).map(|_| ()));
    }
    if is(&NEXT_HOP) || is(&ALEG_NEXT_HOP) {
        let Some(lit) = literal else { return Ok(()) };
        let hops = NextHop::parse_list(&lit)?;
        if is(&ALEG_NEXT_HOP) && hops.len() > 1 {
            return Err(format!("{} takes one address", ALEG_NEXT_HOP.key));
        }
    }
    Ok(())
}
