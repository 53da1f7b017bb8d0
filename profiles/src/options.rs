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

const RTP: &str = "transcoding, DTMF detection, RTP mux and hold rewriting";
const REPLACES: &str = "Replaces mapping";
const MISC: &str = "not implemented";

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

/// Every option, in SEMS's order of topics.
pub const OPTIONS: &[OptionDef] = &[
    OptionDef { key: "RURI", status: Active, field: Field::Pattern(|p| &p.ruri, |p| &mut p.ruri) },
    OptionDef { key: "RURI_host", status: Active, field: Field::Pattern(|p| &p.ruri_host, |p| &mut p.ruri_host) },
    OptionDef { key: "From", status: Active, field: Field::Pattern(|p| &p.from, |p| &mut p.from) },
    OptionDef { key: "To", status: Active, field: Field::Pattern(|p| &p.to, |p| &mut p.to) },
    OptionDef { key: "Call-ID", status: Active, field: Field::Pattern(|p| &p.call_id, |p| &mut p.call_id) },
    OptionDef { key: "transparent_dlg_id", status: Active, field: Field::Flag(|p| &mut p.transparent_dlg_id) },
    OptionDef {
        key: "append_headers",
        status: Active,
        field: Field::Pattern(|p| &p.append_headers, |p| &mut p.append_headers),
    },
    OptionDef {
        key: "append_headers_req",
        status: Active,
        field: Field::Pattern(|p| &p.append_headers_req, |p| &mut p.append_headers_req),
    },
    OptionDef {
        key: "aleg_append_headers_req",
        status: Active,
        field: Field::Pattern(|p| &p.aleg_append_headers_req, |p| &mut p.aleg_append_headers_req),
    },
    OptionDef { key: "reply_translations", status: Active, field: Field::Own },
    OptionDef { key: "refuse_with", status: Active, field: Field::Pattern(|p| &p.refuse_with, |p| &mut p.refuse_with) },
    OptionDef { key: "fix_replaces_inv", status: NotYet(REPLACES), field: Field::Own },
    OptionDef { key: "fix_replaces_ref", status: NotYet(REPLACES), field: Field::Own },
    OptionDef {
        key: "outbound_proxy",
        status: Active,
        field: Field::Pattern(|p| &p.outbound_proxy, |p| &mut p.outbound_proxy),
    },
    OptionDef { key: "force_outbound_proxy", status: Active, field: Field::Flag(|p| &mut p.force_outbound_proxy) },
    OptionDef {
        key: "aleg_outbound_proxy",
        status: Active,
        field: Field::Pattern(|p| &p.aleg_outbound_proxy, |p| &mut p.aleg_outbound_proxy),
    },
    OptionDef {
        key: "aleg_force_outbound_proxy",
        status: Active,
        field: Field::Flag(|p| &mut p.aleg_force_outbound_proxy),
    },
    OptionDef { key: "next_hop", status: Active, field: Field::Pattern(|p| &p.next_hop, |p| &mut p.next_hop) },
    OptionDef { key: "next_hop_1st_req", status: Active, field: Field::Flag(|p| &mut p.next_hop_1st_req) },
    OptionDef { key: "patch_ruri_next_hop", status: Active, field: Field::Flag(|p| &mut p.patch_ruri_next_hop) },
    OptionDef { key: "next_hop_fixed", status: Active, field: Field::Flag(|p| &mut p.next_hop_fixed) },
    OptionDef {
        key: "next_hop_replies_from_any",
        status: Active,
        field: Field::Flag(|p| &mut p.next_hop_replies_from_any),
    },
    OptionDef {
        key: "aleg_next_hop",
        status: Active,
        field: Field::Pattern(|p| &p.aleg_next_hop, |p| &mut p.aleg_next_hop),
    },
    OptionDef {
        key: "outbound_interface",
        status: Active,
        field: Field::Pattern(|p| &p.outbound_interface, |p| &mut p.outbound_interface),
    },
    OptionDef {
        key: "aleg_outbound_interface",
        status: Active,
        field: Field::Pattern(|p| &p.aleg_outbound_interface, |p| &mut p.aleg_outbound_interface),
    },
    OptionDef { key: "dlg_nat_handling", status: Active, field: Field::Flag(|p| &mut p.dlg_nat_handling) },
    OptionDef { key: "allow_subless_notify", status: NotYet(MISC), field: Field::Own },
    OptionDef {
        key: "aleg_contact_host",
        status: Active,
        field: Field::Pattern(|p| &p.aleg_contact.host, |p| &mut p.aleg_contact.host),
    },
    OptionDef {
        key: "aleg_contact_port",
        status: Active,
        field: Field::Pattern(|p| &p.aleg_contact.port, |p| &mut p.aleg_contact.port),
    },
    OptionDef {
        key: "aleg_contact_user",
        status: Active,
        field: Field::Pattern(|p| &p.aleg_contact.user, |p| &mut p.aleg_contact.user),
    },
    OptionDef {
        key: "aleg_contact_displayname",
        status: Active,
        field: Field::Pattern(|p| &p.aleg_contact.displayname, |p| &mut p.aleg_contact.displayname),
    },
    OptionDef {
        key: "aleg_contact_uri_params",
        status: Active,
        field: Field::Pattern(|p| &p.aleg_contact.uri_params, |p| &mut p.aleg_contact.uri_params),
    },
    OptionDef {
        key: "aleg_contact_params",
        status: Active,
        field: Field::Pattern(|p| &p.aleg_contact.params, |p| &mut p.aleg_contact.params),
    },
    OptionDef {
        key: "bleg_contact_host",
        status: Active,
        field: Field::Pattern(|p| &p.bleg_contact.host, |p| &mut p.bleg_contact.host),
    },
    OptionDef {
        key: "bleg_contact_port",
        status: Active,
        field: Field::Pattern(|p| &p.bleg_contact.port, |p| &mut p.bleg_contact.port),
    },
    OptionDef {
        key: "bleg_contact_user",
        status: Active,
        field: Field::Pattern(|p| &p.bleg_contact.user, |p| &mut p.bleg_contact.user),
    },
    OptionDef {
        key: "bleg_contact_displayname",
        status: Active,
        field: Field::Pattern(|p| &p.bleg_contact.displayname, |p| &mut p.bleg_contact.displayname),
    },
    OptionDef {
        key: "bleg_contact_uri_params",
        status: Active,
        field: Field::Pattern(|p| &p.bleg_contact.uri_params, |p| &mut p.bleg_contact.uri_params),
    },
    OptionDef {
        key: "bleg_contact_params",
        status: Active,
        field: Field::Pattern(|p| &p.bleg_contact.params, |p| &mut p.bleg_contact.params),
    },
    OptionDef {
        key: "contact_displayname",
        status: Active,
        field: Field::Pattern(|p| &p.register_contact.displayname, |p| &mut p.register_contact.displayname),
    },
    OptionDef {
        key: "contact_user",
        status: Active,
        field: Field::Pattern(|p| &p.register_contact.user, |p| &mut p.register_contact.user),
    },
    OptionDef {
        key: "contact_host",
        status: Active,
        field: Field::Pattern(|p| &p.register_contact.host, |p| &mut p.register_contact.host),
    },
    OptionDef {
        key: "contact_port",
        status: Active,
        field: Field::Pattern(|p| &p.register_contact.port, |p| &mut p.register_contact.port),
    },
    OptionDef { key: "enable_contact_hiding", status: Dead, field: Field::Own },
    OptionDef { key: "contact_hiding_prefix", status: Dead, field: Field::Own },
    OptionDef { key: "contact_hiding_vars", status: Dead, field: Field::Own },
    OptionDef { key: "Contact", status: Dead, field: Field::Own },
    OptionDef { key: "header_filter", status: Active, field: Field::Own },
    OptionDef { key: "header_list", status: Active, field: Field::Own },
    OptionDef { key: "message_filter", status: Active, field: Field::Own },
    OptionDef { key: "message_list", status: Active, field: Field::Own },
    OptionDef { key: "sdp_filter", status: Active, field: Field::Own },
    OptionDef { key: "sdpfilter_list", status: Active, field: Field::Own },
    OptionDef { key: "aleg_sdp_filter", status: Active, field: Field::Own },
    OptionDef { key: "aleg_sdpfilter_list", status: Active, field: Field::Own },
    OptionDef { key: "media_filter", status: Active, field: Field::Own },
    OptionDef { key: "mediafilter_list", status: Active, field: Field::Own },
    OptionDef { key: "sdp_alines_filter", status: Active, field: Field::Own },
    OptionDef { key: "sdp_alinesfilter_list", status: Active, field: Field::Own },
    OptionDef { key: "sdp_anonymize", status: Active, field: Field::Flag(|p| &mut p.sdp_anonymize) },
    OptionDef { key: "codec_preference", status: Active, field: Field::Own },
    OptionDef { key: "codec_preference_aleg", status: Active, field: Field::Own },
    OptionDef { key: "prefer_existing_codecs", status: NotYet(RTP), field: Field::Own },
    OptionDef { key: "prefer_existing_codecs_aleg", status: NotYet(RTP), field: Field::Own },
    OptionDef { key: "enable_transcoder", status: NotYet(RTP), field: Field::Own },
    OptionDef { key: "transcoder_codecs", status: NotYet(RTP), field: Field::Own },
    OptionDef { key: "callee_codeccaps", status: NotYet(RTP), field: Field::Own },
    OptionDef { key: "prefer_transcoding_for_codecs", status: NotYet(RTP), field: Field::Own },
    OptionDef { key: "prefer_transcoding_for_codecs_aleg", status: NotYet(RTP), field: Field::Own },
    OptionDef { key: "dtmf_transcoding", status: NotYet(RTP), field: Field::Own },
    OptionDef { key: "lowfi_codecs", status: NotYet(RTP), field: Field::Own },
    OptionDef { key: "enable_rtprelay", status: Active, field: Field::Flag(|p| &mut p.rtprelay.enabled) },
    OptionDef {
        key: "rtprelay_force_symmetric_rtp",
        status: Active,
        field: Field::Flag(|p| &mut p.rtprelay.force_symmetric),
    },
    OptionDef {
        key: "rtprelay_msgflags_symmetric_rtp",
        status: Active,
        field: Field::Flag(|p| &mut p.rtprelay.msgflags_symmetric),
    },
    OptionDef { key: "rtprelay_interface", status: Active, field: Field::Own },
    OptionDef { key: "aleg_rtprelay_interface", status: Active, field: Field::Own },
    OptionDef { key: "aleg_rtprelay_force_symmetric_rtp", status: Active, field: Field::Own },
    OptionDef { key: "rtprelay_transparent_seqno", status: Active, field: Field::Own },
    OptionDef { key: "rtprelay_transparent_ssrc", status: Active, field: Field::Own },
    OptionDef {
        key: "rtprelay_dtmf_filtering",
        status: Active,
        field: Field::Flag(|p| &mut p.rtprelay.dtmf_filtering),
    },
    OptionDef { key: "rtprelay_dtmf_detection", status: NotYet(RTP), field: Field::Own },
    OptionDef { key: "a_rtp_mux_ip", status: NotYet(RTP), field: Field::Own },
    OptionDef { key: "a_rtp_mux_port", status: NotYet(RTP), field: Field::Own },
    OptionDef { key: "b_rtp_mux_ip", status: NotYet(RTP), field: Field::Own },
    OptionDef { key: "b_rtp_mux_port", status: NotYet(RTP), field: Field::Own },
    OptionDef { key: "hold_alter_b2b_aleg", status: NotYet(RTP), field: Field::Own },
    OptionDef { key: "hold_alter_b2b_bleg", status: NotYet(RTP), field: Field::Own },
    OptionDef { key: "hold_zero_connection_aleg", status: NotYet(RTP), field: Field::Own },
    OptionDef { key: "hold_zero_connection_bleg", status: NotYet(RTP), field: Field::Own },
    OptionDef { key: "hold_activity_aleg", status: NotYet(RTP), field: Field::Own },
    OptionDef { key: "hold_activity_bleg", status: NotYet(RTP), field: Field::Own },
    OptionDef { key: "enable_auth", status: Active, field: Field::Flag(|p| &mut p.auth.enabled) },
    OptionDef { key: "auth_user", status: Active, field: Field::Pattern(|p| &p.auth.user, |p| &mut p.auth.user) },
    OptionDef {
        key: "auth_pwd",
        status: Active,
        field: Field::Pattern(|p| &p.auth.password, |p| &mut p.auth.password),
    },
    OptionDef { key: "enable_aleg_auth", status: Active, field: Field::Flag(|p| &mut p.auth.aleg_enabled) },
    OptionDef {
        key: "auth_aleg_user",
        status: Active,
        field: Field::Pattern(|p| &p.auth.aleg_user, |p| &mut p.auth.aleg_user),
    },
    OptionDef {
        key: "auth_aleg_pwd",
        status: Active,
        field: Field::Pattern(|p| &p.auth.aleg_password, |p| &mut p.auth.aleg_password),
    },
    OptionDef { key: "enable_bleg_uas_auth", status: Active, field: Field::Flag(|p| &mut p.auth.bleg_uas_enabled) },
    OptionDef {
        key: "uas_auth_bleg_realm",
        status: Active,
        field: Field::Pattern(|p| &p.auth.bleg_uas_realm, |p| &mut p.auth.bleg_uas_realm),
    },
    OptionDef {
        key: "uas_auth_bleg_user",
        status: Active,
        field: Field::Pattern(|p| &p.auth.bleg_uas_user, |p| &mut p.auth.bleg_uas_user),
    },
    OptionDef {
        key: "uas_auth_bleg_pwd",
        status: Active,
        field: Field::Pattern(|p| &p.auth.bleg_uas_password, |p| &mut p.auth.bleg_uas_password),
    },
    OptionDef { key: "auth_realm", status: Active, field: Field::Pattern(|p| &p.auth.realms, |p| &mut p.auth.realms) },
    OptionDef {
        key: "auth_aleg_realm",
        status: Active,
        field: Field::Pattern(|p| &p.auth.aleg_realms, |p| &mut p.auth.aleg_realms),
    },
    OptionDef { key: "auth_refuse_md5", status: Active, field: Field::Flag(|p| &mut p.auth.refuse_md5) },
    OptionDef { key: "enable_session_timer", status: Active, field: Field::Own },
    OptionDef { key: "enable_aleg_session_timer", status: Active, field: Field::Own },
    OptionDef { key: "session_expires", status: Active, field: Field::Own },
    OptionDef { key: "minimum_timer", status: Active, field: Field::Own },
    OptionDef { key: "maximum_timer", status: Active, field: Field::Own },
    OptionDef { key: "session_refresh_method", status: Active, field: Field::Own },
    OptionDef { key: "accept_501_reply", status: Active, field: Field::Own },
    OptionDef { key: "aleg_session_expires", status: Active, field: Field::Own },
    OptionDef { key: "aleg_minimum_timer", status: Active, field: Field::Own },
    OptionDef { key: "aleg_maximum_timer", status: Active, field: Field::Own },
    OptionDef { key: "aleg_session_refresh_method", status: Active, field: Field::Own },
    OptionDef { key: "aleg_accept_501_reply", status: Active, field: Field::Own },
    OptionDef { key: "enable_reg_caching", status: Active, field: Field::Flag(|p| &mut p.reg_caching.enabled) },
    OptionDef { key: "min_reg_expires", status: Active, field: Field::Own },
    OptionDef { key: "max_ua_expires", status: Active, field: Field::Own },
    OptionDef { key: "call_control", status: Active, field: Field::Own },
    OptionDef { key: "msg_logger_path", status: NotYet(MISC), field: Field::Own },
    OptionDef { key: "log_sip", status: NotYet(MISC), field: Field::Own },
    OptionDef { key: "log_rtp", status: NotYet(MISC), field: Field::Own },
    OptionDef { key: "max_491_retry_time", status: NotYet(MISC), field: Field::Own },
    OptionDef { key: "enable_call_timer", status: Dead, field: Field::Own },
    OptionDef { key: "call_timer", status: Dead, field: Field::Own },
    OptionDef { key: "enable_prepaid", status: Dead, field: Field::Own },
    OptionDef { key: "prepaid_accmodule", status: Dead, field: Field::Own },
    OptionDef { key: "uas_auth_bleg_enabled", status: Dead, field: Field::Own },
    OptionDef { key: "next_hop_for_replies", status: Dead, field: Field::Own },
    OptionDef { key: "timer_timeout", status: Dead, field: Field::Own },
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
