//! Per-call evaluation: a profile's patterns expanded once against the request that starts the
//! call (or the out-of-dialog transaction), checked, and handed to the B2BUA as plain values.

use crate::options::{self as opt, Field, OptionDef};
use crate::pattern::{Env, Pattern};
use crate::profile::{parse_refuse, NextHop, Profile};
use crate::uri::{NameAddrParts, UriParts};
use crate::LocalReply;

/// An option whose expansion is unusable; the request is answered 500 and this is logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{option}: {message}")]
pub struct EvalError {
    pub option: &'static str,
    pub message: String,
}

/// The expanded parts of one leg's Contact.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContactValues {
    pub user: String,
    pub host: String,
    pub port: String,
    pub displayname: String,
    pub uri_params: String,
    pub params: String,
}

impl ContactValues {
    pub fn is_default(&self) -> bool {
        self == &Self::default()
    }

    /// The Contact value: parts left empty take the SBC's own (`default_hostport` of the leg's
    /// socket); as in SEMS, a port alone does not replace the socket's host and port.
    pub fn render(&self, default_hostport: &str, uri_tail: &str) -> String {
        self.render_scheme("sip", default_hostport, uri_tail)
    }

    /// [`render`](Self::render) with the URI scheme `scheme` (`sips` on a SIPS dialog).
    pub fn render_scheme(&self, scheme: &str, default_hostport: &str, uri_tail: &str) -> String {
        let mut s = String::new();
        if !self.displayname.is_empty() {
            s.push('"');
            for c in self.displayname.chars() {
                if c == '"' || c == '\\' {
                    s.push('\\');
                }
                s.push(c);
            }
            s.push_str("\" ");
        }
        s.push('<');
        s.push_str(scheme);
        s.push(':');
        if !self.user.is_empty() {
            s.push_str(&self.user);
            s.push('@');
        }
        if self.host.is_empty() {
            s.push_str(default_hostport);
        } else {
            s.push_str(&self.host);
            if !self.port.is_empty() {
                s.push(':');
                s.push_str(&self.port);
            }
        }
        for p in self.uri_params.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            s.push(';');
            s.push_str(p);
        }
        s.push_str(uri_tail);
        s.push('>');
        for p in self.params.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            s.push(';');
            s.push_str(p);
        }
        s
    }
}

/// A user name and password, expanded for one call. The password never shows in `Debug`;
/// it is in the serialised form (a call's record carries what its legs must answer with).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credentials {
    pub user: String,
    pub password: String,
    /// The realm a challenge of ours names (`uas_auth_bleg_realm`); empty for client use.
    pub realm: String,
    /// Client use: the realms whose challenges these answer (`auth_realm`); `None`: no list.
    pub answer_realms: Option<Vec<String>>,
    /// Client use: challenges offering only MD5 are not answered.
    pub refuse_md5: bool,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("realm", &self.realm).finish_non_exhaustive()
    }
}

/// Call-control instances one call may run (dynamic entries included).
const MAX_CC_INSTANCES: usize = 16;

/// A call-control instance expanded for one call: which module runs it, with which values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CcInstance {
    pub name: String,
    pub module: String,
    pub params: std::collections::BTreeMap<String, String>,
}

/// What a profile says about one call, expanded. Serialisable, for a call's record
/// (`sbc-core/engine/src/b2bua/record.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CallPlan {
    /// The B leg's Request-URI (`RURI`, `RURI_host`, `patch_ruri_next_hop`); `None` keeps the
    /// incoming one.
    pub ruri: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub call_id: Option<String>,
    pub append_headers: Vec<(String, String)>,
    pub append_headers_req: Vec<(String, String)>,
    pub aleg_append_headers_req: Vec<(String, String)>,
    pub outbound_proxy: Option<String>,
    pub aleg_outbound_proxy: Option<String>,
    pub next_hops: Vec<NextHop>,
    pub aleg_next_hop: Option<NextHop>,
    pub outbound_interface: Option<String>,
    pub aleg_outbound_interface: Option<String>,
    pub aleg_contact: ContactValues,
    pub bleg_contact: ContactValues,
    /// Parts of a relayed REGISTER's contacts (`contact_*`; URI/header params unused).
    pub register_contact: ContactValues,
    /// Credentials for challenges on the B leg and on the A leg; what requests from the callee
    /// must prove.
    pub auth: Option<Credentials>,
    pub aleg_auth: Option<Credentials>,
    pub bleg_uas_auth: Option<Credentials>,
    /// The alias of a phone another cluster node holds: the request goes through that node,
    /// naming the binding in a signed header (sbc-core/engine/src/b2bua/peer_relay.rs).
    #[serde(default)]
    pub peer_relay: Option<String>,
    /// The values of the per-call options and of the fixed options call control set that the
    /// call's own profile was built with (`per_call.rs`): a node adopting the call builds it
    /// again from them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_call: Vec<(String, String)>,
    /// The pcap file the call's SIP messages go to (`msg_logger_path`, checked by
    /// [`pcap_path`]; `log_sip=no`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcap: Option<String>,
    /// The pcap file its relayed RTP and RTCP go to (`log_rtp`); the same file as SIP's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcap_rtp: Option<String>,
    /// Every pattern option that was set, with its expansion (for `explain` and debug logs;
    /// not in the serialised form).
    #[serde(skip)]
    pub expanded: Vec<(&'static str, String)>,
}

/// A `msg_logger_path` expansion of `template` the SBC writes to: an absolute path without
/// `..` and with the template's folder levels (text from the request adds no `/`), whose file
/// name is made of letters, digits and `._-+@=` (text from the request cannot reach another
/// folder or make a name the shell or a glob would read otherwise). `None` (logged)
/// otherwise: the call goes on without its pcap.
pub fn pcap_path(template: &str, path: &str) -> Option<String> {
    let p = std::path::Path::new(path);
    let name_ok = |n: &str| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || "._-+@=".contains(c));
    let ok = p.is_absolute()
        && !p.components().any(|c| matches!(c, std::path::Component::ParentDir))
        && path.matches('/').count() == template.matches('/').count()
        && p.file_name().and_then(|n| n.to_str()).is_some_and(name_ok)
        && !path.chars().any(char::is_control);
    if !ok {
        tracing::warn!(path, "msg_logger_path: not a file name the SBC writes to; no pcap for this call");
    }
    ok.then(|| path.to_string())
}

/// RFC 3261 token characters (header names).
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c))
}

/// Splits expanded `append_headers` text into headers. Lines that are not `Name: value` are
/// dropped (and counted in `bad`); headers with an empty value are left out, as in SEMS.
pub fn header_lines(text: &str, bad: &mut usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.split('\n').map(|l| l.trim_end_matches('\r')) {
        if line.trim().is_empty() {
            continue;
        }
        match line.split_once(':') {
            Some((name, value)) if is_token(name.trim()) && !value.contains('\r') => {
                if !value.trim().is_empty() {
                    out.push((name.trim().to_string(), value.trim().to_string()));
                }
            }
            _ => *bad += 1,
        }
    }
    out
}

/// A URI as written, or `sip:` + a bare host.
fn as_uri(s: &str) -> String {
    let s = s.trim();
    let s = s.strip_prefix('<').and_then(|s| s.strip_suffix('>')).unwrap_or(s);
    if s.contains(':') && !s.starts_with('[') && UriParts::parse(s).scheme.chars().all(|c| c.is_ascii_alphabetic()) {
        s.to_string()
    } else {
        format!("sip:{s}")
    }
}

/// `uri` with its host and port replaced by `hostport` (scheme, user, params kept).
pub fn with_hostport(uri: &str, hostport: &str) -> String {
    let u = UriParts::parse(uri);
    let scheme = if u.scheme.is_empty() { "sip" } else { u.scheme };
    let mut s = format!("{scheme}:");
    if !u.user.is_empty() {
        s.push_str(u.user);
        s.push('@');
    }
    s.push_str(hostport);
    if !u.params.is_empty() {
        s.push(';');
        s.push_str(u.params);
    }
    if !u.headers.is_empty() {
        s.push('?');
        s.push_str(u.headers);
    }
    s
}

fn no_space(option: &'static str, v: &str) -> Result<(), EvalError> {
    if v.contains(char::is_whitespace) {
        return Err(EvalError { option, message: format!("'{v}' contains blanks") });
    }
    Ok(())
}

/// A URI part that is written inside `<...>` of a header: no blanks, and none of the
/// characters that would end the URI or start another value (`<`, `>`, `"`, `,`).
fn uri_part(option: &'static str, v: &str) -> Result<(), EvalError> {
    no_space(option, v)?;
    if v.contains(['<', '>', '"', ',']) {
        return Err(EvalError { option, message: format!("'{v}' contains <, >, \" or ,") });
    }
    Ok(())
}

/// A From/To value for the B leg: a name-addr without a tag (the leg adds its own).
fn party(option: &'static str, v: &str) -> Result<String, EvalError> {
    let na = NameAddrParts::parse(v);
    if na.uri.is_empty() || !na.uri.contains(':') {
        return Err(EvalError { option, message: format!("'{v}' is not a name-addr") });
    }
    let mut s = String::new();
    na.display_and_uri(&mut s);
    for p in na.params.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        if !p.split('=').next().unwrap_or_default().trim().eq_ignore_ascii_case("tag") {
            s.push(';');
            s.push_str(p);
        }
    }
    Ok(s)
}

impl Profile {
    /// The call-control chain expanded against the request (before any module runs, as in
    /// SEMS: values cannot see `$V()` set by earlier modules). A dynamic entry expands to
    /// `module;key=value,...` specs (SEMS's `cc_dyn_<n>` instances, their values taken
    /// literally) when the request comes from a `trusted` source, and to nothing otherwise.
    pub fn call_control_chain(&self, env: &Env<'_>, trusted: bool) -> Result<Vec<CcInstance>, EvalError> {
        let mut out = Vec::with_capacity(self.call_control.len());
        let mut dynamic = 0;
        for spec in &self.call_control {
            if spec.dynamic {
                if !trusted {
                    // Every call from such a source takes this path: a warning each would let
                    // any caller flood the log (the load already said it).
                    tracing::debug!(entry = %spec.name, source = %env.source, "call control from an untrusted source ignored");
                    continue;
                }
                let text = spec.module.expand(env);
                for one in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if out.len() >= MAX_CC_INSTANCES {
                        return Err(EvalError {
                            option: "call_control",
                            message: format!("more than {MAX_CC_INSTANCES} instances"),
                        });
                    }
                    let (module, params) = crate::cc_spec::instance(one);
                    out.push(CcInstance {
                        name: format!("cc_dyn_{dynamic}"),
                        module,
                        params: params.into_iter().collect(),
                    });
                    dynamic += 1;
                }
                continue;
            }
            let module = spec.module.expand(env).trim().to_string();
            if module.is_empty() {
                return Err(EvalError { option: "call_control", message: format!("'{}': no module", spec.name) });
            }
            let params = spec.params.iter().map(|(k, p)| (k.clone(), p.expand(env))).collect();
            out.push(CcInstance { name: spec.name.clone(), module, params });
        }
        Ok(out)
    }

    /// The `refuse_with` reply if the profile has one (`None` otherwise). Only `append_headers`
    /// is evaluated with it, as in SEMS.
    pub fn refusal(&self, env: &Env<'_>) -> Option<Result<LocalReply, EvalError>> {
        let p = self.refuse_with.as_ref()?;
        let text = p.expand(env);
        let refused = parse_refuse(&text).map_err(|m| EvalError { option: opt::REFUSE_WITH.key, message: m });
        Some(refused.map(|(code, reason)| {
            let mut bad = 0;
            let headers =
                self.append_headers.as_ref().map(|h| header_lines(&h.expand(env), &mut bad)).unwrap_or_default();
            let mut reply = LocalReply::owned(code, reason);
            reply.headers = headers.into_iter().map(|(n, v)| (n.into(), v.into())).collect::<Vec<_>>().into();
            reply
        }))
    }

    /// Expands every option for one call.
    pub fn evaluate(&self, env: &Env<'_>) -> Result<CallPlan, EvalError> {
        self.evaluate_with(env, &std::collections::BTreeMap::new())
    }

    /// [`Self::evaluate`] with some options replaced by fixed values (set by call control, e.g.
    /// `cc_ctl`): these are taken as they are, never expanded, and checked like the others.
    pub fn evaluate_with(
        &self,
        env: &Env<'_>,
        overrides: &std::collections::BTreeMap<String, String>,
    ) -> Result<CallPlan, EvalError> {
        let mut plan = CallPlan::default();
        // An option's value for this call: its override, or its pattern expanded.
        let mut x = |def: &OptionDef| -> Option<String> {
            let Field::Pattern(get, _) = def.field else { return None };
            let v = match overrides.get(def.key) {
                Some(v) => v.clone(),
                None => get(self).as_ref()?.expand(env),
            };
            let shown = if opt::is_secret(def.key) { "(hidden)".to_string() } else { v.clone() };
            plan.expanded.push((def.key, shown));
            (!v.trim().is_empty()).then(|| v.trim().to_string())
        };
        let ruri = x(&opt::RURI);
        let ruri_host = x(&opt::RURI_HOST);
        let from = x(&opt::FROM);
        let to = x(&opt::TO);
        let call_id = x(&opt::CALL_ID);
        let append = x(&opt::APPEND_HEADERS);
        let append_req = x(&opt::APPEND_HEADERS_REQ);
        let aleg_append_req = x(&opt::ALEG_APPEND_HEADERS_REQ);
        let outbound_proxy = x(&opt::OUTBOUND_PROXY);
        let aleg_outbound_proxy = x(&opt::ALEG_OUTBOUND_PROXY);
        let next_hop = x(&opt::NEXT_HOP);
        let aleg_next_hop = x(&opt::ALEG_NEXT_HOP);
        plan.outbound_interface = x(&opt::OUTBOUND_INTERFACE);
        plan.aleg_outbound_interface = x(&opt::ALEG_OUTBOUND_INTERFACE);
        let template = self.msg_logger_path.as_ref().map_or("", Pattern::source);
        let pcap =
            x(&opt::MSG_LOGGER_PATH).filter(|_| self.log_rtp || !self.no_log_sip).and_then(|p| pcap_path(template, &p));
        plan.pcap_rtp = pcap.clone().filter(|_| self.log_rtp);
        plan.pcap = pcap.filter(|_| !self.no_log_sip);
        // (user, host, port, displayname, uri_params, params)
        let mut contact = |defs: [&OptionDef; 6]| ContactValues {
            user: x(defs[0]).unwrap_or_default(),
            host: x(defs[1]).unwrap_or_default(),
            port: x(defs[2]).unwrap_or_default(),
            displayname: x(defs[3]).unwrap_or_default(),
            uri_params: x(defs[4]).unwrap_or_default(),
            params: x(defs[5]).unwrap_or_default(),
        };
        plan.aleg_contact = contact([
            &opt::ALEG_CONTACT_USER,
            &opt::ALEG_CONTACT_HOST,
            &opt::ALEG_CONTACT_PORT,
            &opt::ALEG_CONTACT_DISPLAYNAME,
            &opt::ALEG_CONTACT_URI_PARAMS,
            &opt::ALEG_CONTACT_PARAMS,
        ]);
        plan.bleg_contact = contact([
            &opt::BLEG_CONTACT_USER,
            &opt::BLEG_CONTACT_HOST,
            &opt::BLEG_CONTACT_PORT,
            &opt::BLEG_CONTACT_DISPLAYNAME,
            &opt::BLEG_CONTACT_URI_PARAMS,
            &opt::BLEG_CONTACT_PARAMS,
        ]);
        plan.register_contact = ContactValues {
            displayname: x(&opt::CONTACT_DISPLAYNAME).unwrap_or_default(),
            user: x(&opt::CONTACT_USER).unwrap_or_default(),
            host: x(&opt::CONTACT_HOST).unwrap_or_default(),
            port: x(&opt::CONTACT_PORT).unwrap_or_default(),
            ..ContactValues::default()
        };
        let a = &self.auth;
        // A set of credentials: user and password, and the realm it challenges with or the
        // realms it answers, where it has them.
        let mut creds =
            |on: bool, user: &OptionDef, pwd: &OptionDef, realm: Option<&OptionDef>, realms: Option<&OptionDef>| {
                on.then(|| Credentials {
                    realm: realm.and_then(&mut x).unwrap_or_default(),
                    user: x(user).unwrap_or_default(),
                    password: x(pwd).unwrap_or_default(),
                    answer_realms: realms.and_then(&mut x).map(|list| {
                        list.split(',').map(str::trim).filter(|r| !r.is_empty()).map(str::to_string).collect()
                    }),
                    refuse_md5: a.refuse_md5,
                })
            };
        plan.auth = creds(a.enabled, &opt::AUTH_USER, &opt::AUTH_PWD, None, Some(&opt::AUTH_REALM));
        plan.aleg_auth =
            creds(a.aleg_enabled, &opt::AUTH_ALEG_USER, &opt::AUTH_ALEG_PWD, None, Some(&opt::AUTH_ALEG_REALM));
        let (user, pwd, realm) = (&opt::UAS_AUTH_BLEG_USER, &opt::UAS_AUTH_BLEG_PWD, &opt::UAS_AUTH_BLEG_REALM);
        plan.bleg_uas_auth = creds(a.bleg_uas_enabled, user, pwd, Some(realm), None);
        for (option, c) in [
            (opt::AUTH_USER.key, &plan.auth),
            (opt::AUTH_ALEG_USER.key, &plan.aleg_auth),
            (opt::UAS_AUTH_BLEG_USER.key, &plan.bleg_uas_auth),
        ] {
            if c.as_ref().is_some_and(|c| c.user.is_empty()) {
                return Err(EvalError { option, message: "is empty for this call".into() });
            }
        }

        if let Some(r) = &ruri {
            uri_part(opt::RURI.key, r)?;
            if UriParts::parse(r).scheme.is_empty() {
                return Err(EvalError { option: opt::RURI.key, message: format!("'{r}' is not a URI") });
            }
        }
        plan.ruri = ruri;
        if let Some(h) = ruri_host {
            uri_part(opt::RURI_HOST.key, &h)?;
            let base = plan.ruri.clone().unwrap_or_else(|| String::from_utf8_lossy(env.req.request_uri()).into_owned());
            plan.ruri = Some(with_hostport(&base, &h));
        }
        plan.from = from.map(|f| party(opt::FROM.key, &f)).transpose()?;
        plan.to = to.map(|t| party(opt::TO.key, &t)).transpose()?;
        if let Some(c) = &call_id {
            no_space(opt::CALL_ID.key, c)?;
        }
        plan.call_id = call_id;
        let mut bad = 0;
        plan.append_headers = append.map(|t| header_lines(&t, &mut bad)).unwrap_or_default();
        plan.append_headers_req = append_req.map(|t| header_lines(&t, &mut bad)).unwrap_or_default();
        plan.aleg_append_headers_req = aleg_append_req.map(|t| header_lines(&t, &mut bad)).unwrap_or_default();
        if bad > 0 {
            tracing::warn!(lines = bad, profile = %self.name, "append_headers lines that are not 'Name: value' were left out");
        }
        plan.outbound_proxy = outbound_proxy.map(|p| as_uri(&p));
        plan.aleg_outbound_proxy = aleg_outbound_proxy.map(|p| as_uri(&p));
        for (option, p) in
            [(opt::OUTBOUND_PROXY.key, &plan.outbound_proxy), (opt::ALEG_OUTBOUND_PROXY.key, &plan.aleg_outbound_proxy)]
        {
            if let Some(p) = p {
                uri_part(option, p)?;
            }
        }
        if let Some(nh) = next_hop {
            let hops = NextHop::parse_list(&nh).map_err(|message| EvalError { option: opt::NEXT_HOP.key, message })?;
            // Drawn per call (before patch_ruri_next_hop reads the first).
            plan.next_hops = if NextHop::weighted(&hops) {
                NextHop::ordered(hops, || crate::pattern::next_random(env.rng))
            } else {
                hops
            };
        }
        if let Some(nh) = aleg_next_hop {
            plan.aleg_next_hop =
                Some(NextHop::parse(&nh).map_err(|message| EvalError { option: opt::ALEG_NEXT_HOP.key, message })?);
        }
        if self.patch_ruri_next_hop {
            if let Some(first) = plan.next_hops.first() {
                let base =
                    plan.ruri.clone().unwrap_or_else(|| String::from_utf8_lossy(env.req.request_uri()).into_owned());
                plan.ruri = Some(with_hostport(&base, &first.hostport()));
            }
        }
        for c in [&plan.aleg_contact, &plan.bleg_contact, &plan.register_contact] {
            if !c.port.is_empty() && c.port.parse::<u16>().is_err() {
                let option = opt::CONTACT_PORT.key;
                return Err(EvalError { option, message: format!("'{}' is not a port", c.port) });
            }
            for v in [&c.user, &c.host, &c.uri_params, &c.params] {
                uri_part("contact", v)?;
            }
        }
        Ok(plan)
    }
}
