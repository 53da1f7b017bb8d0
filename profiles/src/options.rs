//! Every profile option SEMS knows, in one table: its key, what this SBC does with it (applied,
//! recognised for a capability that arrives later, or dead in SEMS too) and where its value
//! goes. Unknown keys are errors.

/// What happens to an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionStatus {
    /// Applied by this version.
    Active,
    /// Recognised; its capability is not in this version yet, so it is reported at load.
    NotYet(&'static str),
    /// SEMS reads it into nothing (docs/manual/profiles.md, Profile options); accepted, ignored, reported at load.
    Dead,
}

use OptionStatus::{Active, Dead, NotYet};

use crate::pattern::Pattern;
use crate::profile::Profile;

const RTP: &str = "transcoding and DTMF detection";

/// Where an applied option's value goes in the profile.
#[derive(Clone, Copy)]
pub enum Field {
    /// A pattern expanded per call (`Profile::patterns` lists them): reading and writing it.
    Pattern(fn(&Profile) -> &Option<Pattern>, fn(&mut Profile) -> &mut Option<Pattern>),
    /// A yes/no value.
    Flag(fn(&mut Profile) -> &mut bool),
    /// Read by its own code in `Profile::build`: lists, filters, timers, call control,
    /// interface names, or an option only recognised.
    Own,
}

impl std::fmt::Debug for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Pattern(..) => "Pattern",
            Self::Flag(_) => "Flag",
            Self::Own => "Own",
        })
    }
}

/// One profile option: its key (case-sensitive, as in SEMS), what this SBC does with it, and
/// where its value goes.
#[derive(Debug, Clone, Copy)]
pub struct OptionDef {
    pub key: &'static str,
    pub status: OptionStatus,
    pub field: Field,
}

const fn row(key: &'static str, status: OptionStatus, field: Field) -> OptionDef {
    OptionDef { key, status, field }
}

const fn pattern(
    key: &'static str,
    get: fn(&Profile) -> &Option<Pattern>,
    set: fn(&mut Profile) -> &mut Option<Pattern>,
) -> OptionDef {
    row(key, Active, Field::Pattern(get, set))
}

/// The options whose values are patterns expanded per call, by name: evaluation
/// (`evaluate.rs`) reads each through its row, so an option's key and field are written once.
pub const RURI: OptionDef = pattern("RURI", |p| &p.ruri, |p| &mut p.ruri);
pub const RURI_HOST: OptionDef = pattern("RURI_host", |p| &p.ruri_host, |p| &mut p.ruri_host);
pub const FROM: OptionDef = pattern("From", |p| &p.from, |p| &mut p.from);
pub const TO: OptionDef = pattern("To", |p| &p.to, |p| &mut p.to);
pub const CALL_ID: OptionDef = pattern("Call-ID", |p| &p.call_id, |p| &mut p.call_id);
pub const APPEND_HEADERS: OptionDef = pattern("append_headers", |p| &p.append_headers, |p| &mut p.append_headers);
pub const APPEND_HEADERS_REQ: OptionDef =
    pattern("append_headers_req", |p| &p.append_headers_req, |p| &mut p.append_headers_req);
pub const ALEG_APPEND_HEADERS_REQ: OptionDef =
    pattern("aleg_append_headers_req", |p| &p.aleg_append_headers_req, |p| &mut p.aleg_append_headers_req);
pub const REFUSE_WITH: OptionDef = pattern("refuse_with", |p| &p.refuse_with, |p| &mut p.refuse_with);
pub const OUTBOUND_PROXY: OptionDef = pattern("outbound_proxy", |p| &p.outbound_proxy, |p| &mut p.outbound_proxy);
pub const ALEG_OUTBOUND_PROXY: OptionDef =
    pattern("aleg_outbound_proxy", |p| &p.aleg_outbound_proxy, |p| &mut p.aleg_outbound_proxy);
pub const NEXT_HOP: OptionDef = pattern("next_hop", |p| &p.next_hop, |p| &mut p.next_hop);
pub const ALEG_NEXT_HOP: OptionDef = pattern("aleg_next_hop", |p| &p.aleg_next_hop, |p| &mut p.aleg_next_hop);
pub const OUTBOUND_INTERFACE: OptionDef =
    pattern("outbound_interface", |p| &p.outbound_interface, |p| &mut p.outbound_interface);
pub const ALEG_OUTBOUND_INTERFACE: OptionDef =
    pattern("aleg_outbound_interface", |p| &p.aleg_outbound_interface, |p| &mut p.aleg_outbound_interface);
pub const ALEG_CONTACT_HOST: OptionDef =
    pattern("aleg_contact_host", |p| &p.aleg_contact.host, |p| &mut p.aleg_contact.host);
pub const ALEG_CONTACT_PORT: OptionDef =
    pattern("aleg_contact_port", |p| &p.aleg_contact.port, |p| &mut p.aleg_contact.port);
pub const ALEG_CONTACT_USER: OptionDef =
    pattern("aleg_contact_user", |p| &p.aleg_contact.user, |p| &mut p.aleg_contact.user);
pub const ALEG_CONTACT_DISPLAYNAME: OptionDef =
    pattern("aleg_contact_displayname", |p| &p.aleg_contact.displayname, |p| &mut p.aleg_contact.displayname);
pub const ALEG_CONTACT_URI_PARAMS: OptionDef =
    pattern("aleg_contact_uri_params", |p| &p.aleg_contact.uri_params, |p| &mut p.aleg_contact.uri_params);
pub const ALEG_CONTACT_PARAMS: OptionDef =
    pattern("aleg_contact_params", |p| &p.aleg_contact.params, |p| &mut p.aleg_contact.params);
pub const BLEG_CONTACT_HOST: OptionDef =
    pattern("bleg_contact_host", |p| &p.bleg_contact.host, |p| &mut p.bleg_contact.host);
pub const BLEG_CONTACT_PORT: OptionDef =
    pattern("bleg_contact_port", |p| &p.bleg_contact.port, |p| &mut p.bleg_contact.port);
pub const BLEG_CONTACT_USER: OptionDef =
    pattern("bleg_contact_user", |p| &p.bleg_contact.user, |p| &mut p.bleg_contact.user);
pub const BLEG_CONTACT_DISPLAYNAME: OptionDef =
    pattern("bleg_contact_displayname", |p| &p.bleg_contact.displayname, |p| &mut p.bleg_contact.displayname);
pub const BLEG_CONTACT_URI_PARAMS: OptionDef =
    pattern("bleg_contact_uri_params", |p| &p.bleg_contact.uri_params, |p| &mut p.bleg_contact.uri_params);
pub const BLEG_CONTACT_PARAMS: OptionDef =
    pattern("bleg_contact_params", |p| &p.bleg_contact.params, |p| &mut p.bleg_contact.params);
pub const CONTACT_DISPLAYNAME: OptionDef =
    pattern("contact_displayname", |p| &p.register_contact.displayname, |p| &mut p.register_contact.displayname);
pub const CONTACT_USER: OptionDef =
    pattern("contact_user", |p| &p.register_contact.user, |p| &mut p.register_contact.user);
pub const CONTACT_HOST: OptionDef =
    pattern("contact_host", |p| &p.register_contact.host, |p| &mut p.register_contact.host);
pub const CONTACT_PORT: OptionDef =
    pattern("contact_port", |p| &p.register_contact.port, |p| &mut p.register_contact.port);
pub const AUTH_USER: OptionDef = pattern("auth_user", |p| &p.auth.user, |p| &mut p.auth.user);
pub const AUTH_PWD: OptionDef = pattern("auth_pwd", |p| &p.auth.password, |p| &mut p.auth.password);
pub const AUTH_ALEG_USER: OptionDef = pattern("auth_aleg_user", |p| &p.auth.aleg_user, |p| &mut p.auth.aleg_user);
pub const AUTH_ALEG_PWD: OptionDef = pattern("auth_aleg_pwd", |p| &p.auth.aleg_password, |p| &mut p.auth.aleg_password);
pub const UAS_AUTH_BLEG_REALM: OptionDef =
    pattern("uas_auth_bleg_realm", |p| &p.auth.bleg_uas_realm, |p| &mut p.auth.bleg_uas_realm);
pub const UAS_AUTH_BLEG_USER: OptionDef =
    pattern("uas_auth_bleg_user", |p| &p.auth.bleg_uas_user, |p| &mut p.auth.bleg_uas_user);
pub const UAS_AUTH_BLEG_PWD: OptionDef =
    pattern("uas_auth_bleg_pwd", |p| &p.auth.bleg_uas_password, |p| &mut p.auth.bleg_uas_password);
pub const AUTH_REALM: OptionDef = pattern("auth_realm", |p| &p.auth.realms, |p| &mut p.auth.realms);
pub const MSG_LOGGER_PATH: OptionDef = pattern("msg_logger_path", |p| &p.msg_logger_path, |p| &mut p.msg_logger_path);
pub const AUTH_ALEG_REALM: OptionDef = pattern("auth_aleg_realm", |p| &p.auth.aleg_realms, |p| &mut p.auth.aleg_realms);

/// Every option, in SEMS's order of topics.
pub const OPTIONS: &[OptionDef] = &[
    RURI,
    RURI_HOST,
    FROM,
    TO,
    CALL_ID,
    row("transparent_dlg_id", Active, Field::Flag(|p| &mut p.transparent_dlg_id)),
    APPEND_HEADERS,
    APPEND_HEADERS_REQ,
    ALEG_APPEND_HEADERS_REQ,
    row("reply_translations", Active, Field::Own),
    REFUSE_WITH,
    row("fix_replaces_inv", Active, Field::Own),
    row("fix_replaces_ref", Active, Field::Flag(|p| &mut p.fix_replaces_ref)),
    OUTBOUND_PROXY,
    row("force_outbound_proxy", Active, Field::Flag(|p| &mut p.force_outbound_proxy)),
    ALEG_OUTBOUND_PROXY,
    row("aleg_force_outbound_proxy", Active, Field::Flag(|p| &mut p.aleg_force_outbound_proxy)),
    NEXT_HOP,
    row("next_hop_1st_req", Active, Field::Flag(|p| &mut p.next_hop_1st_req)),
    row("patch_ruri_next_hop", Active, Field::Flag(|p| &mut p.patch_ruri_next_hop)),
    row("next_hop_fixed", Active, Field::Flag(|p| &mut p.next_hop_fixed)),
    row("next_hop_replies_from_any", Active, Field::Flag(|p| &mut p.next_hop_replies_from_any)),
    row("sips_downgrade", Active, Field::Flag(|p| &mut p.sips_downgrade)),
    ALEG_NEXT_HOP,
    OUTBOUND_INTERFACE,
    ALEG_OUTBOUND_INTERFACE,
    row("dlg_nat_handling", Active, Field::Flag(|p| &mut p.dlg_nat_handling)),
    row("allow_subless_notify", Active, Field::Own),
    ALEG_CONTACT_HOST,
    ALEG_CONTACT_PORT,
    ALEG_CONTACT_USER,
    ALEG_CONTACT_DISPLAYNAME,
    ALEG_CONTACT_URI_PARAMS,
    ALEG_CONTACT_PARAMS,
    BLEG_CONTACT_HOST,
    BLEG_CONTACT_PORT,
    BLEG_CONTACT_USER,
    BLEG_CONTACT_DISPLAYNAME,
    BLEG_CONTACT_URI_PARAMS,
    BLEG_CONTACT_PARAMS,
    CONTACT_DISPLAYNAME,
    CONTACT_USER,
    CONTACT_HOST,
    CONTACT_PORT,
    row("enable_contact_hiding", Dead, Field::Own),
    row("contact_hiding_prefix", Dead, Field::Own),
    row("contact_hiding_vars", Dead, Field::Own),
    row("Contact", Dead, Field::Own),
    row("header_filter", Active, Field::Own),
    row("header_list", Active, Field::Own),
    row("message_filter", Active, Field::Own),
    row("message_list", Active, Field::Own),
    row("sdp_filter", Active, Field::Own),
    row("sdpfilter_list", Active, Field::Own),
    row("aleg_sdp_filter", Active, Field::Own),
    row("aleg_sdpfilter_list", Active, Field::Own),
    row("media_filter", Active, Field::Own),
    row("mediafilter_list", Active, Field::Own),
    row("sdp_alines_filter", Active, Field::Own),
    row("sdp_alinesfilter_list", Active, Field::Own),
    row("sdp_anonymize", Active, Field::Flag(|p| &mut p.sdp_anonymize)),
    row("codec_preference", Active, Field::Own),
    row("codec_preference_aleg", Active, Field::Own),
    row("prefer_existing_codecs", NotYet(RTP), Field::Own),
    row("prefer_existing_codecs_aleg", NotYet(RTP), Field::Own),
    row("enable_transcoder", NotYet(RTP), Field::Own),
    row("transcoder_codecs", NotYet(RTP), Field::Own),
    row("callee_codeccaps", NotYet(RTP), Field::Own),
    row("prefer_transcoding_for_codecs", NotYet(RTP), Field::Own),
    row("prefer_transcoding_for_codecs_aleg", NotYet(RTP), Field::Own),
    row("dtmf_transcoding", NotYet(RTP), Field::Own),
    row("lowfi_codecs", NotYet(RTP), Field::Own),
    row("enable_rtprelay", Active, Field::Flag(|p| &mut p.rtprelay.enabled)),
    row("rtprelay_force_symmetric_rtp", Active, Field::Flag(|p| &mut p.rtprelay.force_symmetric)),
    row("rtprelay_msgflags_symmetric_rtp", Active, Field::Flag(|p| &mut p.rtprelay.msgflags_symmetric)),
    row("rtprelay_interface", Active, Field::Own),
    row("aleg_rtprelay_interface", Active, Field::Own),
    row("aleg_rtprelay_force_symmetric_rtp", Active, Field::Own),
    row("rtprelay_transparent_seqno", Active, Field::Own),
    row("rtprelay_transparent_ssrc", Active, Field::Own),
    row("rtprelay_dtmf_filtering", Active, Field::Flag(|p| &mut p.rtprelay.dtmf_filtering)),
    row("rtprelay_dtmf_detection", NotYet(RTP), Field::Own),
    // Not SEMS keys: SRTP termination (docs/manual/media.md, SRTP).
    row("aleg_srtp", Active, Field::Own),
    row("bleg_srtp", Active, Field::Own),
    row("sdes_required", Active, Field::Own),
    // Refused when set (`Profile::build`): SEMS's own mux protocol, between SEMS nodes.
    row("a_rtp_mux_ip", Active, Field::Own),
    row("a_rtp_mux_port", Active, Field::Own),
    row("b_rtp_mux_ip", Active, Field::Own),
    row("b_rtp_mux_port", Active, Field::Own),
    row("hold_alter_b2b_aleg", Active, Field::Own),
    row("hold_alter_b2b_bleg", Active, Field::Own),
    row("hold_zero_connection_aleg", Active, Field::Own),
    row("hold_zero_connection_bleg", Active, Field::Own),
    row("hold_activity_aleg", Active, Field::Own),
    row("hold_activity_bleg", Active, Field::Own),
    row("enable_auth", Active, Field::Flag(|p| &mut p.auth.enabled)),
    AUTH_USER,
    AUTH_PWD,
    row("enable_aleg_auth", Active, Field::Flag(|p| &mut p.auth.aleg_enabled)),
    AUTH_ALEG_USER,
    AUTH_ALEG_PWD,
    row("enable_bleg_uas_auth", Active, Field::Flag(|p| &mut p.auth.bleg_uas_enabled)),
    UAS_AUTH_BLEG_REALM,
    UAS_AUTH_BLEG_USER,
    UAS_AUTH_BLEG_PWD,
    AUTH_REALM,
    AUTH_ALEG_REALM,
    row("auth_refuse_md5", Active, Field::Flag(|p| &mut p.auth.refuse_md5)),
    row("enable_session_timer", Active, Field::Own),
    row("enable_aleg_session_timer", Active, Field::Own),
    row("session_expires", Active, Field::Own),
    row("minimum_timer", Active, Field::Own),
    row("maximum_timer", Active, Field::Own),
    row("session_refresh_method", Active, Field::Own),
    row("accept_501_reply", Active, Field::Own),
    row("aleg_session_expires", Active, Field::Own),
    row("aleg_minimum_timer", Active, Field::Own),
    row("aleg_maximum_timer", Active, Field::Own),
    row("aleg_session_refresh_method", Active, Field::Own),
    row("aleg_accept_501_reply", Active, Field::Own),
    row("enable_reg_caching", Active, Field::Flag(|p| &mut p.reg_caching.enabled)),
    row("min_reg_expires", Active, Field::Own),
    row("max_ua_expires", Active, Field::Own),
    row("call_control", Active, Field::Own),
    MSG_LOGGER_PATH,
    row("log_sip", Active, Field::Own),
    row("log_rtp", Active, Field::Own),
    row("max_491_retry_time", Active, Field::Own),
    row("enable_call_timer", Dead, Field::Own),
    row("call_timer", Dead, Field::Own),
    row("enable_prepaid", Dead, Field::Own),
    row("prepaid_accmodule", Dead, Field::Own),
    row("uas_auth_bleg_enabled", Dead, Field::Own),
    row("next_hop_for_replies", Dead, Field::Own),
    row("timer_timeout", Dead, Field::Own),
];

/// The definition of `key`, if it is a fixed option.
pub fn option(key: &str) -> Option<&'static OptionDef> {
    OPTIONS.iter().find(|d| d.key == key)
}

/// Options whose values are secrets: never logged, listed or explained.
pub fn is_secret(key: &str) -> bool {
    key.ends_with("_pwd")
}

/// The status of `key`, or `None` for an unknown key. `cc_names` are the static call-control
/// instance names of the profile: `<name>_module` and `<name>_<param>` belong to them.
pub fn status_of(key: &str, cc_names: &[String]) -> Option<OptionStatus> {
    if let Some(d) = option(key) {
        return Some(d.status);
    }
    cc_names.iter().any(|n| key.strip_prefix(n.as_str()).is_some_and(|r| r.starts_with('_'))).then_some(Active)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::RawOption;

    fn profile(key: &str, value: &str) -> Profile {
        let o = RawOption { key: key.into(), value: value.into(), file: "t.conf".into(), line: Some(1) };
        Profile::build("t", "t.conf", None, vec![o]).unwrap_or_else(|e| panic!("{key}: {e}"))
    }

    fn build(options: &[(&str, &str)]) -> Result<Profile, crate::ConfigError> {
        let options = options
            .iter()
            .enumerate()
            .map(|(n, (k, v))| RawOption {
                key: (*k).into(),
                value: (*v).into(),
                file: "t.conf".into(),
                line: Some(n as u64 + 1),
            })
            .collect();
        Profile::build("t", "t.conf", None, options)
    }

    #[test]
    fn allow_subless_notify_is_read_as_a_flag() {
        assert!(build(&[("allow_subless_notify", "no")]).expect("loads").refuse_subless_notify);
        assert!(!build(&[("allow_subless_notify", "yes")]).expect("loads").refuse_subless_notify);
    }

    #[test]
    fn max_491_retry_time_is_a_number_of_ms_above_0() {
        assert_eq!(build(&[("max_491_retry_time", "500")]).expect("loads").max_491_retry_ms, Some(500));
        let e = build(&[("max_491_retry_time", "0")]).expect_err("SEMS divides by it").to_string();
        assert!(e.contains("max_491_retry_time") && e.contains("above 0"), "{e}");
    }

    #[test]
    fn hold_options_make_a_legs_rules_and_say_when_they_do_nothing() {
        use crate::sdp::media::Direction;
        let p = build(&[("hold_alter_b2b_aleg", "yes"), ("hold_activity_aleg", "inactive")]).expect("loads");
        assert_eq!(p.hold[0].map(|h| (h.activity, h.zero_connection)), Some((Direction::Inactive, false)));
        assert_eq!(p.hold[1], None);
        let p = build(&[("hold_zero_connection_bleg", "yes")]).expect("loads");
        assert!(p.hold[1].is_none() && p.not_applied.iter().any(|w| w.contains("hold_alter_b2b_bleg")));
        let e = build(&[("hold_activity_bleg", "muted")]).expect_err("not a direction").to_string();
        assert!(e.contains("hold_activity_bleg") && e.contains("'muted'"), "{e}");
    }

    #[test]
    fn rtp_mux_options_set_are_refused_saying_why() {
        let e = build(&[("a_rtp_mux_ip", "10.0.0.1"), ("a_rtp_mux_port", "5000")]).expect_err("refused").to_string();
        assert!(e.contains("t.conf:1: a_rtp_mux_ip") && e.contains("SEMS's own protocol"), "{e}");
        assert!(build(&[("b_rtp_mux_port", "0"), ("b_rtp_mux_ip", "")]).is_ok(), "off is fine");
    }

    #[test]
    fn srtp_options_need_the_relay_and_say_which_key_is_wrong() {
        use crate::profile::SrtpMode;
        let p =
            build(&[("enable_rtprelay", "yes"), ("aleg_srtp", "sdes"), ("bleg_srtp", "RTP"), ("sdes_required", "yes")])
                .expect("loads");
        assert_eq!(p.rtprelay.srtp, [SrtpMode::Sdes, SrtpMode::Rtp]);
        assert!(p.rtprelay.sdes_required);
        assert_eq!(build(&[]).expect("loads").rtprelay.srtp, [SrtpMode::Passthrough; 2], "SEMS's behaviour by default");
        let e = build(&[("aleg_srtp", "passthrough"), ("bleg_srtp", "sdes")]).expect_err("no relay").to_string();
        assert!(e.contains("t.conf:2") && e.contains("bleg_srtp") && e.contains("enable_rtprelay"), "{e}");
        let e = build(&[("enable_rtprelay", "yes"), ("bleg_srtp", "zrtp")]).expect_err("bad value").to_string();
        assert!(e.contains("bleg_srtp") && e.contains("'zrtp' is not passthrough, rtp or sdes"), "{e}");
        let e = build(&[("enable_rtprelay", "yes"), ("sdes_required", "yes")]).expect_err("no sdes leg").to_string();
        assert!(e.contains("sdes_required") && e.contains("has no effect"), "{e}");
    }

    /// Each key once; only applied options have a field; and each field is the option's own:
    /// setting one option sets its slot and no other option's.
    #[test]
    fn every_option_has_one_key_and_its_own_field() {
        let mut keys: Vec<&str> = OPTIONS.iter().map(|d| d.key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), OPTIONS.len(), "a key is listed twice");
        for d in OPTIONS {
            if !matches!(d.field, Field::Own) {
                assert_eq!(d.status, Active, "{}", d.key);
            }
            match d.field {
                Field::Pattern(..) => {
                    let value = match d.key {
                        k if k.contains("next_hop") => "10.0.0.1:5060",
                        k if k.contains("append_headers") => "X-A: 1",
                        "refuse_with" => "403 Forbidden",
                        _ => "x",
                    };
                    let p = profile(d.key, value);
                    let set: Vec<&str> = p.patterns().into_iter().map(|(k, _)| k).collect();
                    assert_eq!(set, [d.key], "{}", d.key);
                }
                Field::Flag(slot) => {
                    let mut p = profile(d.key, "yes");
                    assert!(*slot(&mut p), "{}", d.key);
                    let others = OPTIONS.iter().filter(|o| o.key != d.key);
                    for o in others {
                        if let Field::Flag(other) = o.field {
                            assert!(!*other(&mut p), "{} also set {}", d.key, o.key);
                        }
                    }
                }
                Field::Own => {}
            }
        }
    }
}
