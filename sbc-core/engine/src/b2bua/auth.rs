//! Digest authentication at the SBC (docs/manual/access.md, Digest authentication). As a client: a 401/407
//! to a request the SBC sent on a leg with credentials (`enable_auth` on B, `enable_aleg_auth`
//! on A, out-of-dialog relays too) is answered once — the request is resent with a new CSeq and
//! the relay follows the new transaction; a second challenge is relayed, never looped. As a
//! server (`enable_bleg_uas_auth`): requests from the callee must prove the configured
//! credentials.

use std::time::Instant;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use profiles::evaluate::Credentials;
use profiles::pattern::Pattern;

use super::apply::{hop_target, CallRules};
use super::call::Side;
use super::routing;
use super::txs::Purpose;
use super::types::{Peer, Transport};
use super::{CallHandle, Counter, Engine, TxId};
use crate::sip::digest::{self, Answer, Challenge};
use crate::sip::msg::{HeaderName, Message, Method};

/// Challenges answered for one request at most (a proxy's and the UAS's): a peer inventing
/// realms cannot make the SBC resend for ever.
const MAX_REALMS: usize = 2;

/// How long a nonce of ours is accepted.
const NONCE_LIFETIME_S: u64 = 300;

fn named<'m>(msg: &'m Message, name: &'m str) -> impl Iterator<Item = &'m [u8]> + 'm {
    msg.headers()
        .iter()
        .filter(move |h| h.name == HeaderName::Other && msg.slice(h.name_span).eq_ignore_ascii_case(name.as_bytes()))
        .map(|h| msg.value(h))
}

pub(crate) fn is_credentials_row(msg: &Message, h: &crate::sip::msg::Header) -> bool {
    h.name == HeaderName::Other && {
        let n = msg.slice(h.name_span);
        n.eq_ignore_ascii_case(b"Authorization") || n.eq_ignore_ascii_case(b"Proxy-Authorization")
    }
}

impl Engine {
    /// The rules of a call or relay, for what the SBC sends in it.
    pub(super) fn rules_for(&self, call: Option<CallHandle>, purpose: Purpose) -> Option<&std::sync::Arc<CallRules>> {
        match call.and_then(|h| self.calls.get(&h)) {
            Some(c) => Some(&c.rules),
            None => match purpose {
                Purpose::RelayClient { peer } => self.txs.get(&peer)?.rules.as_ref(),
                _ => None,
            },
        }
    }

    /// Credentials for challenges to what the SBC sends on `side` for a call or relay.
    pub(super) fn credentials_for(
        &self,
        call: Option<CallHandle>,
        side: Side,
        purpose: Purpose,
    ) -> Option<&Credentials> {
        let rules = self.rules_for(call, purpose)?;
        match side {
            Side::B => rules.plan.auth.as_ref(),
            Side::A => rules.plan.aleg_auth.as_ref(),
        }
    }

    /// Whether a request of `call` on `side` to `peer` goes where credentials may follow: a
    /// configured hop, or the callee's dialog set up through one (its route set and Contact
    /// are that hop's). Decided when the request is sent, kept with it (`Resendable`).
    pub(super) fn to_configured_hop(
        &self,
        call: Option<CallHandle>,
        side: Side,
        peer: &Peer,
        rules: Option<&CallRules>,
    ) -> bool {
        let through_configured =
            side == Side::B && call.and_then(|h| self.calls.get(&h)).is_some_and(|c| c.b_via_configured_hop);
        through_configured || self.is_configured_hop(peer, rules)
    }

    /// Whether `peer` is a destination the configuration names (the profile's next hops or
    /// outbound proxy, written as fixed text, or the global next hop), not one a Request-URI,
    /// a Contact or a pattern over the request (`$rd`, `$H(...)`) pointed to.
    pub(super) fn is_configured_hop(&self, peer: &Peer, rules: Option<&CallRules>) -> bool {
        let fixed = |p: &Option<Pattern>| p.as_ref().is_some_and(Pattern::is_literal);
        self.cfg.next_hop.as_ref().is_some_and(|(_, p)| p == peer)
            || rules.is_some_and(|r| {
                (fixed(&r.profile.next_hop) && r.plan.next_hops.iter().any(|h| names(&hop_target(h).1, peer)))
                    || (fixed(&r.profile.outbound_proxy)
                        && r.plan.outbound_proxy.as_ref().is_some_and(|proxy| {
                            routing::target_of_uri(proxy.as_bytes(), Transport::Udp).is_ok_and(|(_, p)| names(&p, peer))
                        }))
            })
    }

    /// A 401/407 to request `id`: resent with credentials if the leg has them and the
    /// challenge's realm was not answered already in this request's chain (one attempt per
    /// challenge; a proxy's 407 and then the UAS's 401 are two). True if resent.
    pub(super) fn answer_challenge(&mut self, now: Instant, id: TxId, msg: &Message) -> bool {
        let Some(code) = msg.status().filter(|c| matches!(c, 401 | 407)) else { return false };
        let Some(r) = self.txs.get(&id).and_then(|e| e.resendable.as_ref()) else { return false };
        let (Some(creds), sent) = (r.credentials.clone(), r.sent.clone()) else { return false };
        if r.answered_realms.len() >= MAX_REALMS {
            tracing::info!(code, "challenged for more realms than the SBC answers; relayed");
            return false;
        }
        let mut answered = r.answered_realms.clone();
        let (challenge_name, answer_name) = if code == 401 {
            ("WWW-Authenticate", "Authorization")
        } else {
            ("Proxy-Authenticate", "Proxy-Authorization")
        };
        let Some(ch) = Challenge::best(named(msg, challenge_name)) else {
            tracing::info!(code, "challenge without a Digest we can answer; relayed");
            return false;
        };
        if answered.contains(&ch.realm) {
            tracing::info!(code, realm = %ch.realm, "challenged again for credentials already given; relayed");
            return false;
        }
        if let Err(why) = self.may_answer(id, &creds, &ch) {
            tracing::info!(code, realm = %ch.realm, algorithm = ch.algorithm.name(), why, "challenge relayed, not answered");
            return false;
        }
        let method = String::from_utf8_lossy(sent.method_bytes()).into_owned();
        let uri = String::from_utf8_lossy(sent.request_uri()).into_owned();
        let cnonce = self.ids.cnonce();
        let answer = digest::authorization(&ch, &creds.user, &creds.password, &method, &uri, &cnonce);
        tracing::info!(code, realm = %ch.realm, algorithm = ch.algorithm.name(), %method, "answering digest challenge");
        // Credentials for other realms stay; an older answer for this realm is replaced.
        let realm = ch.realm.clone();
        let same_realm = move |m: &Message, h: &crate::sip::msg::Header| {
            is_credentials_row(m, h)
                && m.slice(h.name_span).eq_ignore_ascii_case(answer_name.as_bytes())
                && Answer::parse(m.value(h)).is_none_or(|a| a.realm == realm)
        };
        let Some(new_id) = self.resend(now, id, &sent, same_realm, &[(answer_name, answer)]) else {
            return false;
        };
        self.stats.bump(Counter::AuthAnswered);
        answered.push(ch.realm);
        if let Some(r) = self.txs.get_mut(&new_id).and_then(|e| e.resendable.as_mut()) {
            r.answered_realms = answered;
        }
        true
    }

    /// Whether credentials go to this challenger (issue 16: a caller who routes a call to its
    /// own server must not get a digest of the operator's password to crack offline). A
    /// challenge is answered when its realm is in the leg's `auth_realm` list (`*`: any, for
    /// credentials that are the caller's own, as in `auth_b2b`); without a list,
    /// on the B leg only when the request went to a destination the configuration names
    /// (the profile's next hops or outbound proxy, or the global next hop), not to wherever a
    /// Request-URI pointed. `auth_refuse_md5` relays challenges that offer only MD5.
    fn may_answer(&self, id: TxId, creds: &Credentials, ch: &Challenge) -> Result<(), &'static str> {
        if creds.refuse_md5 && matches!(ch.algorithm, digest::Algorithm::Md5 | digest::Algorithm::Md5Sess) {
            return Err("auth_refuse_md5: the challenge offers only MD5");
        }
        if let Some(realms) = &creds.answer_realms {
            return if realms.iter().any(|r| r == "*" || *r == ch.realm) {
                Ok(())
            } else {
                Err("realm not in auth_realm")
            };
        }
        let Some(e) = self.txs.get(&id) else { return Err("transaction gone") };
        if e.side == Side::A || e.resendable.as_ref().is_some_and(|r| r.to_configured_hop) {
            Ok(())
        } else {
            Err("no auth_realm, and the request did not go to a configured next hop or proxy")
        }
    }

    /// The Authorization / Proxy-Authorization rows client transaction `id` sent (for its ACK).
    pub(super) fn credentials_sent(&self, id: TxId) -> Vec<(String, Vec<u8>)> {
        let Some(r) = self.txs.get(&id).and_then(|e| e.resendable.as_ref()) else { return Vec::new() };
        let m = &r.sent;
        m.headers()
            .iter()
            .filter(|h| is_credentials_row(m, h))
            .map(|h| (String::from_utf8_lossy(m.slice(h.name_span)).into_owned(), m.value(h).to_vec()))
            .collect()
    }

    /// `enable_bleg_uas_auth`: whether a request from the callee carries valid credentials:
    /// our realm and user, a nonce of ours for this dialog and still fresh, the request's own
    /// URI, never seen before (nonce, nc, cnonce), and the right response. `Err` holds the
    /// challenge to answer with 401 (`stale=true` when only the nonce's age failed).
    pub(super) fn check_uas_auth(&mut self, now: Instant, creds: &Credentials, msg: &Message) -> Result<(), String> {
        if matches!(msg.method(), Some(Method::Ack | Method::Cancel)) {
            return Ok(()); // cannot be challenged (RFC 3261 §22.1)
        }
        let method = String::from_utf8_lossy(msg.method_bytes()).into_owned();
        let call_id = msg.call_id().unwrap_or_default().to_vec();
        self.forget_old_nonce_uses(now);
        let mut stale = false;
        let mut proven = None;
        for a in named(msg, "Authorization").filter_map(Answer::parse) {
            if a.realm != creds.realm || a.username != creds.user || a.uri.as_bytes() != msg.request_uri() {
                continue;
            }
            match self.nonce_state(now, &a.nonce, &call_id) {
                NonceState::Fresh => {}
                NonceState::Expired => {
                    stale |= a.verify(&creds.password, &method);
                    continue;
                }
                NonceState::Foreign => continue,
            }
            let used = format!("{}/{}/{}", a.nonce, a.nc, a.cnonce);
            if !self.nonce_uses.contains(&used) && a.verify(&creds.password, &method) {
                proven = Some(used);
                break;
            }
        }
        if let Some(used) = proven {
            self.nonce_uses.insert(used.clone());
            self.nonce_use_order.push_back((now, used));
            return Ok(());
        }
        self.stats.bump(Counter::AuthChallenged);
        let nonce = self.new_nonce(now, &call_id);
        let stale = if stale { ", stale=true" } else { "" };
        Err(format!("Digest realm=\"{}\", nonce=\"{nonce}\", qop=\"auth\", algorithm=MD5{stale}", creds.realm))
    }

    /// Used answers are remembered as long as their nonce could be accepted.
    fn forget_old_nonce_uses(&mut self, now: Instant) {
        while let Some((at, key)) = self.nonce_use_order.front() {
            if now.saturating_duration_since(*at).as_secs() <= NONCE_LIFETIME_S {
                break;
            }
            self.nonce_uses.remove(key);
            self.nonce_use_order.pop_front();
        }
    }

    fn nonce_hmac(&self, stamp: u64, call_id: &[u8]) -> Option<Hmac<Sha256>> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.cfg.nonce_key).ok()?;
        mac.update(&stamp.to_le_bytes());
        mac.update(call_id);
        Some(mac)
    }

    fn nonce_mac(&self, stamp: u64, call_id: &[u8]) -> String {
        let Some(mac) = self.nonce_hmac(stamp, call_id) else { return String::new() };
        mac.finalize().into_bytes().iter().take(NONCE_MAC_BYTES).map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `mac_hex` is the MAC of this stamp and dialog, compared in constant time so
    /// the time of a refusal tells nothing about how many leading bytes were right.
    fn nonce_mac_matches(&self, stamp: u64, call_id: &[u8], mac_hex: &str) -> bool {
        let Some(given) = decode_hex::<NONCE_MAC_BYTES>(mac_hex) else { return false };
        self.nonce_hmac(stamp, call_id).is_some_and(|mac| mac.verify_truncated_left(&given).is_ok())
    }

    /// A nonce for a dialog: the second it was made (since this engine's first nonce) and an
    /// HMAC of that and the dialog's Call-ID, under a key from the OS.
    fn new_nonce(&mut self, now: Instant, call_id: &[u8]) -> String {
        let epoch = *self.nonce_epoch.get_or_insert(now);
        let stamp = now.saturating_duration_since(epoch).as_secs();
        format!("{stamp:x}.{}", self.nonce_mac(stamp, call_id))
    }

    fn nonce_state(&self, now: Instant, nonce: &str, call_id: &[u8]) -> NonceState {
        let (Some(epoch), Some((stamp, mac))) = (self.nonce_epoch, nonce.split_once('.')) else {
            return NonceState::Foreign;
        };
        let Ok(stamp) = u64::from_str_radix(stamp, 16) else { return NonceState::Foreign };
        if !self.nonce_mac_matches(stamp, call_id, mac) {
            return NonceState::Foreign;
        }
        let age = now.saturating_duration_since(epoch).as_secs().saturating_sub(stamp);
        if age <= NONCE_LIFETIME_S {
            NonceState::Fresh
        } else {
            NonceState::Expired
        }
    }
}

/// Bytes of HMAC in a nonce (128 bits).
const NONCE_MAC_BYTES: usize = 16;

/// Exactly `N` bytes written as `2N` hex digits.
pub(super) fn decode_hex<const N: usize>(hex: &str) -> Option<[u8; N]> {
    let hex = hex.as_bytes();
    if hex.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *o = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

enum NonceState {
    Fresh,
    Expired,
    /// Not ours, or not for this dialog.
    Foreign,
}

/// Whether `actual` is where `configured` leads: the same peer, or a target resolved for the
/// configured name (RFC 3263 picks its address and port).
fn names(configured: &Peer, actual: &Peer) -> bool {
    match (configured, actual) {
        (Peer::Host(name, _), Peer::Named { host, .. }) => name.eq_ignore_ascii_case(host),
        _ => configured == actual,
    }
}
