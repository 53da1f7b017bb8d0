//! A CDR line as SEMS's cc_syslog_cdr writes it (`syslog_format: sems`), for billing parsers
//! written for SEMS: `cdr_format`'s fields in order, or SEMS's default (`$ltag`, the start,
//! connect and end timestamps, then every value by name), each in double quotes when
//! `quoting` is on. Values are the instance's own (`cdr_<key>=...`) and the call's outcome
//! (`disposition`, `invite_code`, `invite_reason`, `destination_ip`, `hangup_cause`,
//! `hangup_initiator`).
//!
//! Differences on purpose (docs/sems.md): microseconds are zero-padded, and CR/LF in a value
//! become spaces (a caller must not be able to write a second syslog line).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use profiles::config::SemsCdrLine;

use super::cdr::{bounded, disposition};
use crate::{CallEnd, EndedBy, Hook, Times};

/// `sec.usec`, as SEMS prints a `timeval` (0.000000 for a time not reached).
fn ts(t: Option<SystemTime>) -> String {
    let d = t.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).unwrap_or_default();
    format!("{}.{:06}", d.as_secs(), d.subsec_micros())
}

/// `YYYY-MM-DD HH:MM:SS` in the system's time zone; empty for a time not reached.
fn tm(t: Option<SystemTime>) -> String {
    let Some(t) = t else { return String::new() };
    let Ok(ts) = jiff::Timestamp::try_from(t) else { return String::new() };
    ts.to_zoned(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S").to_string()
}

fn span(a: Option<SystemTime>, b: Option<SystemTime>) -> Duration {
    match (a, b) {
        (Some(a), Some(b)) => b.duration_since(a).unwrap_or_default(),
        _ => Duration::ZERO,
    }
}

/// `s.mmm`, and whole seconds rounded to nearest (SEMS's `_sec` forms).
fn both(d: Duration) -> (String, String) {
    (format!("{}.{:03}", d.as_secs(), d.subsec_millis()), d.as_secs_f64().round().to_string())
}

/// SEMS's `hangup_cause` words for sbcd's end reasons.
fn hangup_cause(end: &CallEnd) -> &str {
    match end.reason.as_str() {
        "bye" => "BYE",
        "rejected" | "cancelled" => "reply",
        "media_timeout" => "RTP timeout",
        "session_timeout" => "session timeout",
        "no_ack" => "no ACK",
        other => other,
    }
}

/// The call's values: the instance's, then its outcome (an instance value of the same name
/// wins, as a profile's value would in SEMS).
fn values(hook: &Hook<'_>, end: &CallEnd) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    v.insert("disposition".to_string(), disposition(end).to_string());
    v.insert("invite_code".to_string(), end.code.to_string());
    v.insert("invite_reason".to_string(), end.phrase.clone());
    if let Some(ip) = end.destination_ip {
        v.insert("destination_ip".to_string(), ip.to_string());
    }
    if end.answered {
        v.insert("hangup_cause".to_string(), hangup_cause(end).to_string());
        let by = match end.by {
            EndedBy::Caller => "caller",
            EndedBy::Callee => "callee",
            EndedBy::Sbc => "local",
        };
        v.insert("hangup_initiator".to_string(), by.to_string());
    }
    v.extend(hook.params.iter().map(|(k, val)| (k.clone(), val.clone())));
    v
}

/// One field of `cdr_format`.
fn field(item: &str, hook: &Hook<'_>, times: &Times, values: &BTreeMap<String, String>) -> String {
    let Some(var) = item.strip_prefix('$') else {
        return values.get(item).cloned().unwrap_or_default();
    };
    let setup_end = times.connect.or(times.end);
    let call = hook.call.call;
    match var {
        "ltag" => format!("{}-{}", call >> 56, call & ((1 << 56) - 1)),
        "start_ts" => ts(Some(times.start)),
        "connect_ts" => ts(times.connect),
        "end_ts" => ts(times.end),
        "start_tm" => tm(Some(times.start)),
        "connect_tm" => tm(times.connect),
        "end_tm" => tm(times.end),
        "duration" => both(span(Some(times.start), times.end)).0,
        "duration_sec" => both(span(Some(times.start), times.end)).1,
        "bill_duration" => both(span(times.connect, times.end)).0,
        "bill_duration_sec" => both(span(times.connect, times.end)).1,
        "setup_duration" => both(span(Some(times.start), setup_end)).0,
        "setup_duration_sec" => both(span(Some(times.start), setup_end)).1,
        other => values.get(other).cloned().unwrap_or_default(),
    }
}

/// The line, without the prefix.
pub(super) fn line(fmt: &SemsCdrLine, hook: &Hook<'_>, times: &Times, end: &CallEnd) -> String {
    let values = values(hook, end);
    let fields: Vec<String> = if fmt.fields.is_empty() {
        let head = ["$ltag", "$start_ts", "$connect_ts", "$end_ts"].map(|f| field(f, hook, times, &values));
        head.into_iter().chain(values.values().cloned()).collect()
    } else {
        fmt.fields.iter().map(|f| field(f, hook, times, &values)).collect()
    };
    fields
        .iter()
        .map(|f| {
            let f = bounded(f).replace(['\r', '\n'], " ");
            if fmt.quoting {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CallFacts;

    fn facts() -> CallFacts {
        CallFacts {
            call: (1 << 56) | 42,
            profile: "p".into(),
            source: "192.0.2.1:5060".parse().expect("addr"),
            from: "<sip:alice@a>".into(),
            to: "<sip:bob@b>".into(),
            ruri: "sip:bob@b".into(),
            call_id: "c1".into(),
        }
    }

    fn at(s: u64, us: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(s, us * 1000)
    }

    #[test]
    fn the_default_line_is_semss_with_values_by_name() {
        let params: BTreeMap<String, String> = [("Calling-Station-Id", "alice"), ("Called-Station-Id", "say \"hi\"")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        let call = facts();
        let hook = Hook { instance: "cdr", params: &params, call: &call };
        let times = Times { start: at(100, 5), connect: Some(at(102, 250_000)), end: Some(at(163, 749_000)) };
        let destination_ip = Some("198.51.100.9".parse().expect("ip"));
        let end = CallEnd {
            by: EndedBy::Callee,
            code: 200,
            phrase: "OK".into(),
            reason: "bye".into(),
            answered: true,
            destination_ip,
        };
        let fmt = SemsCdrLine { fields: Vec::new(), quoting: true };
        assert_eq!(
            line(&fmt, &hook, &times, &end),
            "\"1-42\",\"100.000005\",\"102.250000\",\"163.749000\",\"say \"\"hi\"\"\",\"alice\",\"198.51.100.9\",\"answered\",\"BYE\",\"callee\",\"200\",\"OK\""
        );
        let fmt = SemsCdrLine {
            fields: ["$ltag", "$bill_duration", "$bill_duration_sec", "$setup_duration", "Calling-Station-Id", "$nope"]
                .map(String::from)
                .into(),
            quoting: false,
        };
        assert_eq!(line(&fmt, &hook, &times, &end), "1-42,61.499,61,2.249,alice,");
    }

    #[test]
    fn an_unanswered_call_has_no_bill_and_no_times_not_reached() {
        let params = BTreeMap::new();
        let call = facts();
        let hook = Hook { instance: "cdr", params: &params, call: &call };
        let times = Times { start: at(100, 0), connect: None, end: Some(at(104, 0)) };
        let end = CallEnd {
            by: EndedBy::Callee,
            code: 486,
            phrase: "Busy\r\nX: y".into(),
            reason: "rejected".into(),
            answered: false,
            destination_ip: None,
        };
        let fmt = SemsCdrLine {
            fields: [
                "$connect_ts",
                "$connect_tm",
                "$bill_duration_sec",
                "$setup_duration_sec",
                "disposition",
                "invite_reason",
            ]
            .map(String::from)
            .into(),
            quoting: false,
        };
        assert_eq!(line(&fmt, &hook, &times, &end), "0.000000,,0,4,failed,Busy  X: y");
        assert_eq!(tm(Some(at(0, 0))).len(), 19, "a local time is YYYY-MM-DD HH:MM:SS");
    }
}
