//! Per-call evaluation: a profile's patterns expanded once against the request that starts the
//! call (or the out-of-dialog transaction), checked, and handed to the B2BUA as plain values.

use crate::pattern::{Env, Pattern};
use crate::profile::{parse_refuse, ContactRule, NextHop, Profile, ALEG_CONTACT_KEYS, BLEG_CONTACT_KEYS};
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
        s.push_str("<sip:");
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
    /// Every pattern option that was set, with its expansion (for `explain` and debug logs;
    /// not in the serialised form).
    #[serde(skip)]
    pub expanded: Vec<(&'static str, String)>,
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
    /// SEMS: values cannot see `$V()` set by earlier modules).
    pub fn call_control_chain(&self, env: &Env<'_>) -> Result<Vec<CcInstance>, EvalError> {
        let mut out = Vec::with_capacity(self.call_control.len());
        for spec in &self.call_control {
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
        Some(parse_refuse(&text).map_err(|m| EvalError { option: "refuse_with", message: m }).map(|(code, reason)| {
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
        let mut x = |key: &'static str, p: &Option<Pattern>| -> Option<String> {
            let v = match overrides.get(key) {
                Some(v) => v.clone(),
                None => p.as_ref()?.expand(env),
            };
            let shown = if crate::options::is_secret(key) { "(hidden)".to_string() } else { v.clone() };
            plan.expanded.push((key, shown));
            (!v.trim().is_empty()).then(|| v.trim().to_string())
        };
        let ruri = x("RURI", &self.ruri);
        let ruri_host = x("RURI_host", &self.ruri_host);
        let from = x("From", &self.from);
        let to = x("To", &self.to);
        let call_id = x("Call-ID", &self.call_id);
        let append = x("append_headers", &self.append_headers);
        let append_req = x("append_headers_req", &self.append_headers_req);
        let aleg_append_req = x("aleg_append_headers_req", &self.aleg_append_headers_req);
        let outbound_proxy = x("outbound_proxy", &self.outbound_proxy);
        let aleg_outbound_proxy = x("aleg_outbound_proxy", &self.aleg_outbound_proxy);
        let next_hop = x("next_hop", &self.next_hop);
        let aleg_next_hop = x("aleg_next_hop", &self.aleg_next_hop);
        plan.outbound_interface = x("outbound_interface", &self.outbound_interface);
        plan.aleg_outbound_interface = x("aleg_outbound_interface", &self.aleg_outbound_interface);
        let mut contact = |rule: &ContactRule, keys: &[&'static str; 6]| ContactValues {
            user: x(keys[0], &rule.user).unwrap_or_default(),
            host: x(keys[1], &rule.host).unwrap_or_default(),
            port: x(keys[2], &rule.port).unwrap_or_default(),
            displayname: x(keys[3], &rule.displayname).unwrap_or_default(),
            uri_params: x(keys[4], &rule.uri_params).unwrap_or_default(),
            params: x(keys[5], &rule.params).unwrap_or_default(),
        };
        plan.aleg_contact = contact(&self.aleg_contact, &ALEG_CONTACT_KEYS.0);
        plan.bleg_contact = contact(&self.bleg_contact, &BLEG_CONTACT_KEYS.0);
        plan.register_contact = ContactValues {
            displayname: x("contact_displayname", &self.register_contact.displayname).unwrap_or_default(),
            user: x("contact_user", &self.register_contact.user).unwrap_or_default(),
            host: x("contact_host", &self.register_contact.host).unwrap_or_default(),
            port: x("contact_port", &self.register_contact.port).unwrap_or_default(),
            ..ContactValues::default()
        };
        let a = &self.auth;
        let mut creds = |on: bool, keys: [&'static str; 4], pats: [&Option<Pattern>; 4]| -> Option<Credentials> {
            on.then(|| Credentials {
                realm: x(keys[0], pats[0]).unwrap_or_default(),
                user: x(keys[1], pats[1]).unwrap_or_default(),
                password: x(keys[2], pats[2]).unwrap_or_default(),
                answer_realms: x(keys[3], pats[3])
                    .map(|list| list.split(',').map(str::trim).filter(|r| !r.is_empty()).map(str::to_string).collect()),
                refuse_md5: a.refuse_md5,
            })
        };
        plan.auth =
            creds(a.enabled, ["", "auth_user", "auth_pwd", "auth_realm"], [&None, &a.user, &a.password, &a.realms]);
        plan.aleg_auth = creds(
            a.aleg_enabled,
            ["", "auth_aleg_user", "auth_aleg_pwd", "auth_aleg_realm"],
            [&None, &a.aleg_user, &a.aleg_password, &a.aleg_realms],
        );
        plan.bleg_uas_auth = creds(
            a.bleg_uas_enabled,
            ["uas_auth_bleg_realm", "uas_auth_bleg_user", "uas_auth_bleg_pwd", ""],
            [&a.bleg_uas_realm, &a.bleg_uas_user, &a.bleg_uas_password, &None],
        );
        for (option, c) in [
            ("auth_user", &plan.auth),
            ("auth_aleg_user", &plan.aleg_auth),
            ("uas_auth_bleg_user", &plan.bleg_uas_auth),
        ] {
            if c.as_ref().is_some_and(|c| c.user.is_empty()) {
                return Err(EvalError { option, message: "is empty for this call".into() });
            }
        }

        if let Some(r) = &ruri {
            uri_part("RURI", r)?;
            if UriParts::parse(r).scheme.is_empty() {
                return Err(EvalError { option: "RURI", message: format!("'{r}' is not a URI") });
            }
        }
        plan.ruri = ruri;
        if let Some(h) = ruri_host {
            uri_part("RURI_host", &h)?;
            let base = plan.ruri.clone().unwrap_or_else(|| String::from_utf8_lossy(env.req.request_uri()).into_owned());
            plan.ruri = Some(with_hostport(&base, &h));
        }
        plan.from = from.map(|f| party("From", &f)).transpose()?;
        plan.to = to.map(|t| party("To", &t)).transpose()?;
        if let Some(c) = &call_id {
            no_space("Call-ID", c)?;
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
            [("outbound_proxy", &plan.outbound_proxy), ("aleg_outbound_proxy", &plan.aleg_outbound_proxy)]
        {
            if let Some(p) = p {
                uri_part(option, p)?;
            }
        }
        if let Some(nh) = next_hop {
            plan.next_hops = NextHop::parse_list(&nh).map_err(|message| EvalError { option: "next_hop", message })?;
        }
        if let Some(nh) = aleg_next_hop {
            plan.aleg_next_hop =
                Some(NextHop::parse(&nh).map_err(|message| EvalError { option: "aleg_next_hop", message })?);
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
                return Err(EvalError { option: "contact_port", message: format!("'{}' is not a port", c.port) });
            }
            for v in [&c.user, &c.host, &c.uri_params, &c.params] {
                uri_part("contact", v)?;
            }
        }
        Ok(plan)
    }
}
