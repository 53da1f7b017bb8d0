//! Subscriptions made inside a call's dialog: an in-dialog SUBSCRIBE (RFC 6665 §4.5.2) or a
//! REFER, whose implicit subscription's `id` is the REFER's CSeq (RFC 3515 §2.4.4). Each leg
//! numbers its requests, so a NOTIFY's `id` is mapped to the CSeq the subscriber used; and a
//! NOTIFY that belongs to no subscription is refused when the profile says so (SEMS's
//! `allow_subless_notify=no`).

use crate::sip::msg::{find_param, trim, Message};

use super::Side;

/// Subscriptions a call keeps (the oldest goes first).
const MAX_SUBSCRIPTIONS: usize = 8;

/// One subscription, as both legs know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DialogSub {
    /// The side that subscribed (its NOTIFYs come from the other one).
    subscriber: Side,
    /// The event package, lowercase (`refer`, `dialog` …).
    event: Box<str>,
    /// Its `id` as the subscriber knows it, and as the notifier does.
    id_subscriber: Option<Box<str>>,
    id_notifier: Option<Box<str>>,
}

/// The package and `id` of an Event header value (`refer;id=93809824`).
fn event_of(value: &[u8]) -> (String, Option<String>) {
    let end = value.iter().position(|&c| c == b';').unwrap_or(value.len());
    let package = String::from_utf8_lossy(trim(&value[..end])).to_ascii_lowercase();
    let id = find_param(&value[end..], b"id").map(|v| String::from_utf8_lossy(v).trim_matches('"').to_string());
    (package, id)
}

fn event_header(msg: &Message) -> Option<&[u8]> {
    msg.other_header("Event").or_else(|| msg.other_header("o")).map(trim)
}

/// Notes the subscription a SUBSCRIBE or REFER relayed from `subscriber` makes; `cseq_in` and
/// `cseq_out` are its CSeq on each leg.
pub(super) fn subscribed(subs: &mut Vec<DialogSub>, subscriber: Side, msg: &Message, cseq_in: u32, cseq_out: u32) {
    let sub = match msg.method() {
        Some(crate::sip::msg::Method::Refer) => DialogSub {
            subscriber,
            event: "refer".into(),
            id_subscriber: Some(cseq_in.to_string().into()),
            id_notifier: Some(cseq_out.to_string().into()),
        },
        Some(crate::sip::msg::Method::Subscribe) => {
            let Some((event, id)) = event_header(msg).map(event_of) else { return };
            let id: Option<Box<str>> = id.map(Into::into);
            DialogSub { subscriber, event: event.into(), id_subscriber: id.clone(), id_notifier: id }
        }
        _ => return,
    };
    subs.retain(|s| !(s.subscriber == sub.subscriber && s.event == sub.event && s.id_notifier == sub.id_notifier));
    if subs.len() >= MAX_SUBSCRIPTIONS {
        subs.remove(0);
    }
    subs.push(sub);
}

/// The subscription a NOTIFY from `notifier` belongs to. A refer NOTIFY without `id` belongs
/// to the dialog's only refer subscription (RFC 3515 §2.4.4 lets the first REFER omit it).
pub(super) fn notify_of(subs: &[DialogSub], notifier: Side, msg: &Message) -> Option<usize> {
    let (event, id) = event_header(msg).map(event_of)?;
    let mine = |s: &&DialogSub| s.subscriber == notifier.other() && *s.event == *event;
    match id {
        Some(id) => subs.iter().position(|s| mine(&s) && s.id_notifier.as_deref() == Some(id.as_str())),
        None => {
            let mut candidates = subs.iter().enumerate().filter(|(_, s)| mine(s));
            match (candidates.next(), candidates.next()) {
                (Some((i, _)), None) => Some(i),
                _ => None,
            }
        }
    }
}

/// The Event value the subscriber gets: its own `id` in place of the notifier's; `None` when
/// they are the same.
pub(super) fn mapped_event(sub: &DialogSub, msg: &Message) -> Option<String> {
    let (from, to) = (sub.id_notifier.as_deref()?, sub.id_subscriber.as_deref()?);
    if from == to {
        return None;
    }
    let value = String::from_utf8_lossy(event_header(msg)?).into_owned();
    let mut parts: Vec<String> = value.split(';').map(str::to_string).collect();
    let mut changed = false;
    for p in parts.iter_mut().skip(1) {
        if p.split_once('=').is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case("id") && v.trim() == from) {
            *p = format!("id={to}");
            changed = true;
        }
    }
    changed.then(|| parts.join(";"))
}

/// Whether a NOTIFY ends its subscription (`Subscription-State: terminated`).
pub(super) fn ends_subscription(msg: &Message) -> bool {
    msg.other_header("Subscription-State").is_some_and(|v| trim(v).to_ascii_lowercase().starts_with(b"terminated"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, cseq: u32, extra: &str) -> Message {
        let text = format!(
            "{method} sip:x@h SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: {cseq} {method}\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        Message::parse(bytes::Bytes::from(text)).expect("parses")
    }

    #[test]
    fn a_refer_notify_gets_the_subscribers_id() {
        let mut subs = Vec::new();
        subscribed(&mut subs, Side::A, &request("REFER", 5, "Refer-To: <sip:c@h>\r\n"), 5, 2);
        let notify = request("NOTIFY", 1, "Event: refer;id=2\r\nSubscription-State: active\r\n");
        let i = notify_of(&subs, Side::B, &notify).expect("its subscription");
        assert_eq!(mapped_event(&subs[i], &notify).as_deref(), Some("refer;id=5"));
        assert_eq!(notify_of(&subs, Side::A, &notify), None, "from the subscriber's side: none");
        let other = request("NOTIFY", 2, "Event: refer;id=7\r\n");
        assert_eq!(notify_of(&subs, Side::B, &other), None);
        let bare = request("NOTIFY", 3, "Event: refer\r\nSubscription-State: terminated;reason=noresource\r\n");
        assert_eq!(notify_of(&subs, Side::B, &bare), Some(0), "the only refer subscription");
        assert!(ends_subscription(&bare));
    }

    #[test]
    fn a_subscribe_in_a_dialog_keeps_its_package_and_id() {
        let mut subs = Vec::new();
        subscribed(&mut subs, Side::B, &request("SUBSCRIBE", 3, "Event: Dialog;id=x1\r\n"), 3, 8);
        let notify = request("NOTIFY", 1, "o: dialog;id=x1\r\n");
        let i = notify_of(&subs, Side::A, &notify).expect("its subscription");
        assert_eq!(mapped_event(&subs[i], &notify), None, "a SUBSCRIBE's id is the subscriber's own");
        assert_eq!(notify_of(&subs, Side::A, &request("NOTIFY", 2, "Event: presence\r\n")), None);
        assert_eq!(notify_of(&subs, Side::A, &request("NOTIFY", 2, "")), None, "no Event: none");
        for n in 0..20 {
            subscribed(&mut subs, Side::A, &request("REFER", n, ""), n, n + 100);
        }
        assert_eq!(subs.len(), MAX_SUBSCRIPTIONS, "bounded");
    }
}
