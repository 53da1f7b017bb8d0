//! Session timers (RFC 4028), each leg on its own (docs/manual/access.md, Session timers). The SBC is the UAS of the
//! caller's leg and the UAC of the callee's: on each it negotiates the interval and who
//! refreshes, refreshes at half the interval when it is the refresher (UPDATE or re-INVITE), and
//! tears the call down when the peer that should refresh does not. Session-Expires and Min-SE
//! never cross the SBC when a leg runs timers: each leg has its own.

use std::time::{Duration, Instant};

use bytes::Bytes;

use profiles::profile::{RefreshMethod, SessionTimerRules};
use profiles::LocalReply;

use super::build::request_on_leg;
use super::call::Side;
use super::record::{self, SessionTimerRecord};
use super::txs::{Purpose, TxRole};
use super::{CallHandle, Counter, Engine, TxId};
use crate::sip::msg::{parse_u32, trim, Header, HeaderName, Message, Method};

/// A refresh that could not be sent (glare, one in flight) or failed is tried again this soon.
const RETRY: Duration = Duration::from_secs(2);
/// SEMS's `max_491_retry_time` default, in ms.
const DEFAULT_MAX_491_RETRY_MS: u32 = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refresher {
    Uac,
    Uas,
}

/// A Session-Expires value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SessionExpires {
    secs: u32,
    refresher: Option<Refresher>,
}

fn header<'m>(msg: &'m Message, long: &str, compact: &str) -> Option<&'m [u8]> {
    msg.other_header(long).or_else(|| msg.other_header(compact))
}

/// `Session-Expires` (or `x`) of a message; `Err` if present but malformed.
fn session_expires(msg: &Message) -> Result<Option<SessionExpires>, ()> {
    let Some(v) = header(msg, "Session-Expires", "x") else { return Ok(None) };
    let mut parts = v.split(|&c| c == b';');
    let secs = parts.next().map(trim).and_then(parse_u32).ok_or(())?;
    let mut refresher = None;
    for p in parts {
        let (name, value) = match p.iter().position(|&c| c == b'=') {
            Some(i) => (trim(&p[..i]), trim(&p[i + 1..])),
            None => (trim(p), &b""[..]),
        };
        if name.eq_ignore_ascii_case(b"refresher") {
            refresher = Some(match value.to_ascii_lowercase().as_slice() {
                b"uac" => Refresher::Uac,
                b"uas" => Refresher::Uas,
                _ => return Err(()),
            });
        }
    }
    Ok(Some(SessionExpires { secs, refresher }))
}

fn min_se(msg: &Message) -> Option<u32> {
    msg.other_header("Min-SE").and_then(|v| parse_u32(trim(v.split(|&c| c == b';').next().unwrap_or_default())))
}

/// Rows that belong to one leg's session timer: never copied to the other leg.
pub(crate) fn is_timer_row(msg: &Message, h: &Header) -> bool {
    h.name == HeaderName::Other && {
        let n = msg.slice(h.name_span);
        n.eq_ignore_ascii_case(b"Session-Expires") || n.eq_ignore_ascii_case(b"x") || n.eq_ignore_ascii_case(b"Min-SE")
    }
}

/// Checks a peer's INVITE or UPDATE against a leg's rules (RFC 4028 §9).
/// `Err` is the reply: 400 for a Session-Expires that does not parse, 422 with our Min-SE.
pub(super) fn check_request(rules: &SessionTimerRules, msg: &Message) -> Result<(), LocalReply> {
    match session_expires(msg) {
        Err(()) => Err(LocalReply::new(400, "Bad Session-Expires")),
        Ok(Some(se)) if se.secs < rules.minimum => {
            Err(LocalReply::new(422, "Session Interval Too Small").with("Min-SE", rules.minimum.to_string()))
        }
        _ => Ok(()),
    }
}

/// One leg's session timer.
#[derive(Debug)]
pub(crate) struct LegTimer {
    pub(crate) rules: SessionTimerRules,
    /// The agreed interval (0 until the first 2xx) and whether the SBC refreshes.
    interval: u32,
    we_refresh: bool,
    /// When the session last got a successful refresh (or started).
    refreshed_at: Option<Instant>,
    /// The next thing to do: refresh (we refresh) or give up (the peer refreshes).
    pub(crate) due: Option<Instant>,
    /// A refresh of ours is in flight.
    in_flight: Option<TxId>,
    /// The peer refused UPDATE: refresh with re-INVITE.
    invite_only: bool,
}

impl LegTimer {
    pub(crate) fn new(rules: SessionTimerRules) -> Self {
        Self {
            rules,
            interval: 0,
            we_refresh: false,
            refreshed_at: None,
            due: None,
            in_flight: None,
            invite_only: false,
        }
    }

    /// A refresh of ours is in flight.
    pub(super) fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The timer as data, times relative to `now` (`record.rs`).
    pub(super) fn record(&self, now: Instant) -> SessionTimerRecord {
        SessionTimerRecord {
            rules: self.rules,
            interval: self.interval,
            we_refresh: self.we_refresh,
            refreshed_ms_ago: self.refreshed_at.map(|t| record::ms_ago(now, t)),
            due_in_ms: self.due.map(|t| record::ms_until(now, t)),
            invite_only: self.invite_only,
        }
    }

    /// A timer taken over from a record, its times counted from `now`.
    pub(super) fn restore(r: &SessionTimerRecord, now: Instant) -> Result<Self, record::AdoptError> {
        Ok(Self {
            rules: r.rules,
            interval: r.interval,
            we_refresh: r.we_refresh,
            refreshed_at: r.refreshed_ms_ago.map(|ms| record::back(now, ms)).transpose()?,
            due: r.due_in_ms.map(|ms| record::ahead(now, ms)).transpose()?,
            in_flight: None,
            invite_only: r.invite_only,
        })
    }

    /// A successful exchange fixed the interval and the refresher: the timer starts over.
    fn agreed(&mut self, now: Instant, interval: u32, we_refresh: bool) {
        self.interval = interval;
        self.we_refresh = we_refresh;
        self.refreshed_at = Some(now);
        let secs = if we_refresh {
            interval / 2
        } else {
            // RFC 4028 §10: BYE before the interval ends, leaving the refresh time to arrive.
            interval - (interval / 3).min(32)
        };
        self.due = Some(now + Duration::from_secs(u64::from(secs)));
    }

    /// The time the session expires without a refresh.
    fn expires_at(&self) -> Option<Instant> {
        self.refreshed_at.map(|t| t + Duration::from_secs(u64::from(self.interval)))
    }

    /// Rows of a request the SBC sends on this leg (initial INVITE or refresh).
    pub(super) fn request_rows(&self) -> Vec<(&'static str, String)> {
        let se = if self.interval == 0 {
            self.rules.session_expires.to_string()
        } else if self.we_refresh {
            format!("{};refresher=uac", self.interval)
        } else {
            format!("{};refresher=uas", self.interval)
        };
        vec![("Session-Expires", se), ("Min-SE", self.rules.minimum.to_string()), ("Supported", "timer".to_string())]
    }
}

impl Engine {
    /// The peer on `side` sent a 2xx-worthy request we answer now (`req`): the leg's interval
    /// and refresher are fixed from it, and the rows of our 2xx returned (RFC 4028 §9).
    pub(super) fn sst_answer_rows(
        &mut self,
        now: Instant,
        h: CallHandle,
        side: Side,
        req: &Message,
    ) -> Vec<(&'static str, String)> {
        let Some(t) = self.calls.get_mut(&h).and_then(|c| c.sst[side.idx()].as_mut()) else {
            return Vec::new();
        };
        let se = session_expires(req).ok().flatten();
        let peer_min = min_se(req).unwrap_or(0);
        // The shorter of what each side wants, not below either Min-SE (docs/manual/access.md, Session timers).
        let interval = se
            .map_or(t.rules.session_expires, |s| s.secs.min(t.rules.session_expires))
            .max(t.rules.minimum)
            .max(peer_min);
        let uac_supports = req.lists_option(HeaderName::Supported, b"timer");
        let refresher =
            se.and_then(|s| s.refresher).unwrap_or(if uac_supports { Refresher::Uac } else { Refresher::Uas });
        t.agreed(now, interval, refresher == Refresher::Uas);
        let mut rows = vec![(
            "Session-Expires",
            format!("{interval};refresher={}", if refresher == Refresher::Uac { "uac" } else { "uas" }),
        )];
        if refresher == Refresher::Uac {
            rows.push(("Require", "timer".into()));
        }
        self.reschedule_call(h);
        rows
    }

    /// A 2xx from the peer on `side` to a request of ours that carried our session timer.
    pub(super) fn sst_answered(&mut self, now: Instant, h: CallHandle, side: Side, resp: &Message) {
        let Some(t) = self.calls.get_mut(&h).and_then(|c| c.sst[side.idx()].as_mut()) else { return };
        let asked = if t.interval == 0 { t.rules.session_expires } else { t.interval };
        let (interval, we_refresh) = match session_expires(resp).ok().flatten() {
            // RFC 4028 §7.2: the answer says who refreshes (uac = us).
            // (An interval below the Min-SE we sent breaks RFC 4028 §7.2: ours holds.)
            Some(se) => (se.secs.max(t.rules.minimum), se.refresher != Some(Refresher::Uas)),
            // The peer does not do timers: we refresh, with what we asked for.
            None => (asked, true),
        };
        t.agreed(now, interval, we_refresh);
        self.reschedule_call(h);
    }

    /// A leg's session timer is due: refresh it, or end the call the peer let expire.
    pub(super) fn sst_due(&mut self, now: Instant, h: CallHandle, side: Side) {
        let Some(call) = self.calls.get_mut(&h) else { return };
        let offer_pending = call.offer_pending.is_some();
        let confirmed = call.state.is_confirmed();
        let Some(t) = call.sst[side.idx()].as_mut() else { return };
        t.due = None;
        if !t.we_refresh {
            let _e = call.span.clone().entered();
            tracing::info!(leg = ?side, interval = t.interval, "session timer expired, ending call");
            self.stats.bump(Counter::SessionTimeouts);
            return self.tear_down(now, h, 408, "session_timeout");
        }
        if t.expires_at().is_some_and(|e| now >= e) {
            // Our own refreshes kept failing until the end of the interval.
            self.stats.bump(Counter::SessionTimeouts);
            return self.tear_down(now, h, 408, "session_timeout");
        }
        if t.in_flight.is_some() || offer_pending || !confirmed {
            // An offer/answer exchange is under way (a refresh needs its own): a little later,
            // unless the session runs out first.
            if t.expires_at().is_some_and(|e| now + RETRY >= e) {
                self.stats.bump(Counter::SessionTimeouts);
                return self.tear_down(now, h, 408, "session_timeout");
            }
            t.due = Some(now + RETRY);
            return self.reschedule_call(h);
        }
        let method = match t.rules.refresh_method {
            RefreshMethod::Invite => Method::Invite,
            RefreshMethod::UpdateFallbackInvite if t.invite_only => Method::Invite,
            _ => Method::Update,
        };
        self.send_refresh(now, h, side, method);
    }

    fn send_refresh(&mut self, now: Instant, h: CallHandle, side: Side, method: Method) {
        let Some(dest) = self.leg_dest(h, side) else {
            // Nowhere to send it (the peer moved to a transport this interface lacks): try
            // again shortly; the session ends if it runs out meanwhile.
            if let Some(t) = self.calls.get_mut(&h).and_then(|c| c.sst[side.idx()].as_mut()) {
                t.due = Some(now + RETRY);
            }
            return self.reschedule_call(h);
        };
        let branch = self.ids.branch();
        let Some(call) = self.calls.get_mut(&h) else { return };
        let rules = call.rules.clone();
        let invite = method == Method::Invite;
        let body: Bytes = if invite { call.leg(side).last_sdp.clone().unwrap_or_default() } else { Bytes::new() };
        if invite {
            // A re-INVITE is an offer/answer exchange: it blocks others until answered.
            call.offer_pending = Some((side.other(), true));
        }
        let rows = call.sst[side.idx()].as_ref().map(LegTimer::request_rows).unwrap_or_default();
        let leg = call.leg_mut(side);
        leg.local_cseq += 1;
        let name = if invite { &b"INVITE"[..] } else { &b"UPDATE"[..] };
        let mut w = request_on_leg(leg, name, leg.local_cseq, &branch, 70);
        w.header("Contact", &leg.contact);
        for (n, v) in rows {
            w.header(n, v.as_bytes());
        }
        if !body.is_empty() {
            w.header("Content-Type", b"application/sdp");
        }
        super::apply::append(&mut w, rules.appended_on(side));
        let Ok(m) = Message::parse(w.finish(&body)) else {
            if invite {
                call.offer_pending = None;
            }
            return;
        };
        self.stats.bump(Counter::SessionRefreshes);
        let id = self.start_client_tx(now, m, dest, TxRole::new(Some(h), side, Purpose::SessionRefresh));
        if let Some(t) = self.calls.get_mut(&h).and_then(|c| c.sst[side.idx()].as_mut()) {
            t.in_flight = Some(id);
        }
    }

    /// The answer to one of our refreshes.
    pub(super) fn on_refresh_response(&mut self, now: Instant, id: TxId, h: CallHandle, side: Side, msg: &Message) {
        let Some(code) = msg.status().filter(|c| *c >= 200) else { return };
        let method = msg.cseq().map(|c| c.method).unwrap_or(Method::Other);
        if method == Method::Invite && (200..300).contains(&code) {
            // Our re-INVITE's 2xx is acknowledged here (it never crosses to the other leg).
            let branch = self.ids.branch();
            let credentials = self.credentials_sent(id);
            if let Some(call) = self.calls.get(&h) {
                let cseq = msg.cseq().map_or(0, |c| c.num);
                let mut w = request_on_leg(call.leg(side), b"ACK", cseq, &branch, 70);
                for (n, v) in &credentials {
                    w.header(n, v);
                }
                let ack = w.finish(b"");
                if let Some(dest) = self.leg_dest(h, side) {
                    self.send_raw(dest, ack);
                }
            }
        }
        // Drawn before the call is borrowed; used if the peer answers 491.
        let jitter = self.ids.next_u64();
        let Some(call) = self.calls.get_mut(&h) else { return };
        if method == Method::Invite && call.offer_pending == Some((side.other(), true)) {
            call.offer_pending = None;
        }
        let max_491_ms = call.rules.profile.max_491_retry_ms.unwrap_or(DEFAULT_MAX_491_RETRY_MS);
        // The answer to our re-INVITE may bring new SRTP keys from that leg.
        if let (Method::Invite, 200..=299, Some(session), Some(book)) =
            (method, code, call.media.as_deref_mut(), self.media.as_mut())
        {
            super::media::refresh_answered(session, book, side, msg.body());
        }
        let Some(t) = call.sst[side.idx()].as_mut() else { return };
        if t.in_flight != Some(id) {
            return; // a retransmitted 2xx of an earlier refresh
        }
        t.in_flight = None;
        let fallback = t.rules.refresh_method == RefreshMethod::UpdateFallbackInvite;
        match code {
            200..=299 => self.sst_answered(now, h, side, msg),
            405 | 501 if method == Method::Update && fallback => {
                t.invite_only = true;
                self.send_refresh(now, h, side, Method::Invite);
            }
            501 if t.rules.accept_501 => {
                let (interval, we) = (t.interval, t.we_refresh);
                t.agreed(now, interval, we);
                self.reschedule_call(h);
            }
            // Glare (RFC 3261 §14.1): again after a random wait, up to max_491_retry_time.
            491 => {
                let wait = Duration::from_millis(jitter % (u64::from(max_491_ms) + 1));
                if t.expires_at().is_some_and(|e| now + wait >= e) {
                    self.stats.bump(Counter::SessionTimeouts);
                    return self.tear_down(now, h, 408, "session_timeout");
                }
                t.due = Some(now + wait);
                self.reschedule_call(h);
            }
            408 | 481 => {
                let _e = call.span.clone().entered();
                tracing::info!(leg = ?side, code, "session refresh says the dialog is gone, ending call");
                self.tear_down(now, h, code, "session_refresh_failed");
            }
            _ => {
                if t.expires_at().is_some_and(|e| now + RETRY >= e) {
                    self.stats.bump(Counter::SessionTimeouts);
                    return self.tear_down(now, h, 408, "session_timeout");
                }
                t.due = Some(now + RETRY);
                self.reschedule_call(h);
            }
        }
    }

    /// A 422 to our INVITE or UPDATE on a timed leg: sent again asking for the peer's Min-SE
    /// (RFC 4028 §7.4), if it is above what we asked and within our maximum. True if resent.
    pub(super) fn retry_after_422(&mut self, now: Instant, id: TxId, msg: &Message) -> bool {
        if msg.status() != Some(422) {
            return false;
        }
        let Some(e) = self.txs.get(&id) else { return false };
        let Some(r) = e.resendable.as_ref().filter(|r| !r.retried_422) else { return false };
        let (Some(h), side, sent) = (e.call, e.side, r.sent.clone()) else { return false };
        let Some(min) = min_se(msg) else { return false };
        let Some(t) = self.calls.get_mut(&h).and_then(|c| c.sst[side.idx()].as_mut()) else { return false };
        let asked = if t.interval == 0 { t.rules.session_expires } else { t.interval };
        if min <= asked || min > t.rules.maximum {
            return false;
        }
        t.rules.session_expires = min;
        t.rules.minimum = t.rules.minimum.max(min);
        if t.interval != 0 {
            t.interval = min;
        }
        let rows = t.request_rows().into_iter().filter(|(n, _)| *n != "Supported").collect::<Vec<_>>();
        tracing::info!(leg = ?side, min_se = min, "422: asking again with the peer's Min-SE");
        let Some(new_id) = self.resend(now, id, &sent, is_timer_row, &rows) else { return false };
        if let Some(r) = self.txs.get_mut(&new_id).and_then(|e| e.resendable.as_mut()) {
            r.retried_422 = true;
        }
        true
    }

    /// A refresh of ours was resent with credentials: the new transaction is the one in flight.
    pub(super) fn refresh_resent(&mut self, call: Option<CallHandle>, side: Side, old: TxId, new: TxId) {
        if let Some(t) = call.and_then(|h| self.calls.get_mut(&h)).and_then(|c| c.sst[side.idx()].as_mut()) {
            if t.in_flight == Some(old) {
                t.in_flight = Some(new);
            }
        }
    }

    /// Our refresh got no answer at all.
    pub(super) fn on_refresh_timeout(&mut self, now: Instant, h: CallHandle, side: Side) {
        if let Some(t) = self.calls.get_mut(&h).and_then(|c| c.sst[side.idx()].as_mut()) {
            t.in_flight = None;
        }
        self.tear_down(now, h, 408, "session_refresh_failed");
    }
}
