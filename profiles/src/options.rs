//! Every profile option SEMS knows, and what this SBC does with it: applied, recognised for a
//! capability that arrives later, or dead in SEMS too. Unknown keys are errors.

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

const RTP: &str = "transcoding, DTMF detection, RTP mux and hold rewriting";
const REPLACES: &str = "Replaces mapping";
const MISC: &str = "not implemented";

/// (key, status). Keys are case-sensitive, as in SEMS.
pub const OPTIONS: &[(&str, OptionStatus)] = &[
    ("RURI", Active),
    ("RURI_host", Active),
    ("From", Active),
    ("To", Active),
    ("Call-ID", Active),
    ("transparent_dlg_id", Active),
    ("append_headers", Active),
    ("append_headers_req", Active),
    ("aleg_append_headers_req", Active),
    ("reply_translations", Active),
    ("refuse_with", Active),
    ("fix_replaces_inv", NotYet(REPLACES)),
    ("fix_replaces_ref", NotYet(REPLACES)),
    ("outbound_proxy", Active),
    ("force_outbound_proxy", Active),
    ("aleg_outbound_proxy", Active),
    ("aleg_force_outbound_proxy", Active),
    ("next_hop", Active),
    ("next_hop_1st_req", Active),
    ("patch_ruri_next_hop", Active),
    ("next_hop_fixed", Active),
    ("next_hop_replies_from_any", Active),
    ("aleg_next_hop", Active),
    ("outbound_interface", Active),
    ("aleg_outbound_interface", Active),
    ("dlg_nat_handling", Active),
    ("allow_subless_notify", NotYet(MISC)),
    ("aleg_contact_host", Active),
    ("aleg_contact_port", Active),
    ("aleg_contact_user", Active),
    ("aleg_contact_displayname", Active),
    ("aleg_contact_uri_params", Active),
    ("aleg_contact_params", Active),
    ("bleg_contact_host", Active),
    ("bleg_contact_port", Active),
    ("bleg_contact_user", Active),
    ("bleg_contact_displayname", Active),
    ("bleg_contact_uri_params", Active),
    ("bleg_contact_params", Active),
    ("contact_displayname", Active),
    ("contact_user", Active),
    ("contact_host", Active),
    ("contact_port", Active),
    ("enable_contact_hiding", Dead),
    ("contact_hiding_prefix", Dead),
    ("contact_hiding_vars", Dead),
    ("Contact", Dead),
    ("header_filter", Active),
    ("header_list", Active),
    ("message_filter", Active),
    ("message_list", Active),
    ("sdp_filter", Active),
    ("sdpfilter_list", Active),
    ("aleg_sdp_filter", Active),
    ("aleg_sdpfilter_list", Active),
    ("media_filter", Active),
    ("mediafilter_list", Active),
    ("sdp_alines_filter", Active),
    ("sdp_alinesfilter_list", Active),
    ("sdp_anonymize", Active),
    ("codec_preference", Active),
    ("codec_preference_aleg", Active),
    ("prefer_existing_codecs", NotYet(RTP)),
    ("prefer_existing_codecs_aleg", NotYet(RTP)),
    ("enable_transcoder", NotYet(RTP)),
    ("transcoder_codecs", NotYet(RTP)),
    ("callee_codeccaps", NotYet(RTP)),
    ("prefer_transcoding_for_codecs", NotYet(RTP)),
    ("prefer_transcoding_for_codecs_aleg", NotYet(RTP)),
    ("dtmf_transcoding", NotYet(RTP)),
    ("lowfi_codecs", NotYet(RTP)),
    ("enable_rtprelay", Active),
    ("rtprelay_force_symmetric_rtp", Active),
    ("rtprelay_msgflags_symmetric_rtp", Active),
    ("rtprelay_interface", Active),
    ("aleg_rtprelay_interface", Active),
    ("aleg_rtprelay_force_symmetric_rtp", Active),
    ("rtprelay_transparent_seqno", Active),
    ("rtprelay_transparent_ssrc", Active),
    ("rtprelay_dtmf_filtering", Active),
    ("rtprelay_dtmf_detection", NotYet(RTP)),
    ("a_rtp_mux_ip", NotYet(RTP)),
    ("a_rtp_mux_port", NotYet(RTP)),
    ("b_rtp_mux_ip", NotYet(RTP)),
    ("b_rtp_mux_port", NotYet(RTP)),
    ("hold_alter_b2b_aleg", NotYet(RTP)),
    ("hold_alter_b2b_bleg", NotYet(RTP)),
    ("hold_zero_connection_aleg", NotYet(RTP)),
    ("hold_zero_connection_bleg", NotYet(RTP)),
    ("hold_activity_aleg", NotYet(RTP)),
    ("hold_activity_bleg", NotYet(RTP)),
    ("enable_auth", Active),
    ("auth_user", Active),
    ("auth_pwd", Active),
    ("enable_aleg_auth", Active),
    ("auth_aleg_user", Active),
    ("auth_aleg_pwd", Active),
    ("enable_bleg_uas_auth", Active),
    ("uas_auth_bleg_realm", Active),
    ("uas_auth_bleg_user", Active),
    ("uas_auth_bleg_pwd", Active),
    ("auth_realm", Active),
    ("auth_aleg_realm", Active),
    ("auth_refuse_md5", Active),
    ("enable_session_timer", Active),
    ("enable_aleg_session_timer", Active),
    ("session_expires", Active),
    ("minimum_timer", Active),
    ("maximum_timer", Active),
    ("session_refresh_method", Active),
    ("accept_501_reply", Active),
    ("aleg_session_expires", Active),
    ("aleg_minimum_timer", Active),
    ("aleg_maximum_timer", Active),
    ("aleg_session_refresh_method", Active),
    ("aleg_accept_501_reply", Active),
    ("enable_reg_caching", Active),
    ("min_reg_expires", Active),
    ("max_ua_expires", Active),
    ("call_control", Active),
    ("msg_logger_path", NotYet(MISC)),
    ("log_sip", NotYet(MISC)),
    ("log_rtp", NotYet(MISC)),
    ("max_491_retry_time", NotYet(MISC)),
    ("enable_call_timer", Dead),
    ("call_timer", Dead),
    ("enable_prepaid", Dead),
    ("prepaid_accmodule", Dead),
    ("uas_auth_bleg_enabled", Dead),
    ("next_hop_for_replies", Dead),
    ("timer_timeout", Dead),
];

/// Options whose values are secrets: never logged, listed or explained.
pub fn is_secret(key: &str) -> bool {
    key.ends_with("_pwd")
}

/// The status of `key`, or `None` for an unknown key. `cc_names` are the static call-control
/// instance names of the profile: `<name>_module` and `<name>_<param>` belong to them.
pub fn status_of(key: &str, cc_names: &[String]) -> Option<OptionStatus> {
    if let Some((_, s)) = OPTIONS.iter().find(|(k, _)| *k == key) {
        return Some(*s);
    }
    cc_names.iter().any(|n| key.strip_prefix(n.as_str()).is_some_and(|r| r.starts_with('_'))).then_some(Active)
}
