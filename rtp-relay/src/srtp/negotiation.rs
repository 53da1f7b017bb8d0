//! SDES offer/answer for one stream, pure: the relay terminates SRTP on each side it
//! encrypts with, so each side gets the relay's own keys and never sees the other side's
//! (RFC 4568 §7.1-7.2, applied once per side).
//!
//! Per SDP from side `from` (an offer or an answer) and one m-line:
//! - what `from` sends is read: the line chosen from its offer (the first usable one), or
//!   the line of its answer whose tag and suite the relay offered it;
//! - what goes to the other side is decided: plain `RTP/AVP`, or `RTP/SAVP` with the relay's
//!   key for each suite (an offer) or for the suite that side chose (an answer, under its tag).
//!
//! Keys the relay sends with are made once per side and suite and kept across re-offers, so
//! a re-INVITE does not restart the peer's replay window or rollover count.

use super::sdes::CryptoLine;
use super::{MasterKey, Policy, SideCrypto, Suite, MAX_MATERIAL};

/// Whether an SDP is an offer or an answer (RFC 3264).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Role {
    Offer,
    Answer,
}

/// What one m-line of a side's SDP says about its security.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    /// The transport is a secure RTP profile (`RTP/SAVP`, `RTP/SAVPF`).
    pub savp: bool,
    pub lines: Vec<CryptoLine>,
}

/// What to write for one m-line in the SDP going to the other side.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Rewrite {
    /// Transport and `a=crypto` lines as they came (both sides passthrough).
    #[default]
    Keep,
    /// `RTP/AVP(F)`, no `a=crypto`.
    Plain,
    /// `RTP/SAVP(F)` with these `a=crypto` lines (tag, key), replacing any that came.
    Sdes(Vec<(u32, MasterKey)>),
}

/// One side of a stream, as negotiated so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Leg {
    /// The relay speaks SRTP with this side.
    srtp: bool,
    /// The key this side encrypts with (from its SDP).
    theirs: Option<MasterKey>,
    /// The suite the relay encrypts towards this side with (settled by the side's offer or
    /// answer).
    chosen: Option<Suite>,
    /// The relay's key per suite towards this side (made when first needed).
    ours: [Option<MasterKey>; 3],
    /// What the relay last offered this side: (tag, suite).
    offered: Vec<(u32, Suite)>,
    /// The tag of the side's offered line the relay took (echoed in the answer).
    answer_tag: Option<u32>,
}

impl Leg {
    fn our_key(&mut self, suite: Suite, fresh: &mut dyn FnMut() -> [u8; MAX_MATERIAL]) -> MasterKey {
        let slot = &mut self.ours[suite.index()];
        *slot.get_or_insert_with(|| {
            let material = fresh();
            MasterKey::new(suite, &material[..suite.material_len()]).unwrap_or_else(|| unreachable_key(suite))
        })
    }

    fn plain(&mut self) {
        self.srtp = false;
        self.theirs = None;
        self.chosen = None;
    }
}

/// `MasterKey::new` with a slice of the suite's own length cannot fail; this keeps the hot
/// path free of panics anyway.
fn unreachable_key(suite: Suite) -> MasterKey {
    let zero = [0u8; MAX_MATERIAL];
    MasterKey::new(suite, &zero[..suite.material_len()]).unwrap_or(MasterKey { suite, material: zero })
}

/// The SDES state of one stream (one m-line), both sides.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamSdes {
    legs: [Leg; 2],
}

impl StreamSdes {
    /// An SDP from `from` in `role` with this m-line's `security`: what to write towards the
    /// other side, or why the stream is refused. `fresh` makes key material.
    pub fn step(
        &mut self,
        policies: [Policy; 2],
        from: usize,
        role: Role,
        security: &Security,
        fresh: &mut dyn FnMut() -> [u8; MAX_MATERIAL],
    ) -> Result<Rewrite, &'static str> {
        if policies == [Policy::Passthrough; 2] {
            return Ok(Rewrite::Keep);
        }
        let (from, to) = (from.min(1), 1 - from.min(1));
        let leg = &mut self.legs[from];
        match policies[from] {
            Policy::Plain if security.savp => return Err("SRTP offered on a side set to plain RTP"),
            Policy::Plain => leg.plain(),
            Policy::Sdes { .. } | Policy::Passthrough if security.savp => {
                let usable = security.lines.iter().filter_map(|l| l.key.ok().map(|k| (l.tag, k)));
                let pick = match role {
                    Role::Offer => usable.into_iter().next(),
                    Role::Answer => {
                        usable.into_iter().find(|(t, k)| leg.offered.iter().any(|&(ot, os)| ot == *t && os == k.suite))
                    }
                };
                let Some((tag, key)) = pick else {
                    return Err(match security.lines.iter().find_map(|l| l.key.err()) {
                        Some(why) => why,
                        None => "no a=crypto line the relay offered",
                    });
                };
                leg.srtp = true;
                leg.theirs = Some(key);
                leg.chosen = Some(key.suite);
                if role == Role::Offer {
                    leg.answer_tag = Some(tag);
                }
            }
            Policy::Sdes { required: true } => return Err("plain RTP on a side that requires SRTP"),
            Policy::Sdes { required: false } | Policy::Passthrough => leg.plain(),
        }
        let secure_to = match (role, policies[to]) {
            (_, Policy::Plain) => false,
            (Role::Offer, Policy::Sdes { .. }) => true,
            (Role::Offer, Policy::Passthrough) => security.savp,
            (Role::Answer, _) => self.legs[to].srtp,
        };
        let leg = &mut self.legs[to];
        if !secure_to {
            if role == Role::Offer {
                leg.plain();
                leg.offered.clear();
            }
            return Ok(Rewrite::Plain);
        }
        match role {
            Role::Offer => {
                // The suite chosen before stays in use until the side answers this offer.
                leg.srtp = true;
                leg.offered = (1..).zip(Suite::ALL).collect();
                let lines = leg.offered.clone().into_iter().map(|(tag, s)| (tag, leg.our_key(s, fresh))).collect();
                Ok(Rewrite::Sdes(lines))
            }
            Role::Answer => {
                let (Some(tag), Some(suite)) = (leg.answer_tag, leg.chosen) else {
                    return Err("an SRTP answer without the offer's line");
                };
                Ok(Rewrite::Sdes(vec![(tag, leg.our_key(suite, fresh))]))
            }
        }
    }

    /// What the data path needs of side `side` now.
    pub fn side_crypto(&self, side: usize) -> SideCrypto {
        let leg = &self.legs[side.min(1)];
        if !leg.srtp {
            return SideCrypto::default();
        }
        let send = leg.chosen.and_then(|s| leg.ours[s.index()]);
        SideCrypto { srtp: true, recv: leg.theirs, send }
    }
}

/// Tells offers from answers where the message does not (responses, ACK, PRACK): the SDP
/// answers an offer the other side made, repeats this side's last SDP (the same `o=` version,
/// RFC 3264 §8: a 200 repeating a 183's answer), or else offers (a 200 to an INVITE without
/// SDP). A request that can only offer (INVITE, UPDATE) says so and clears a stale offer.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Roles {
    /// The side whose offer awaits its answer.
    pending: Option<usize>,
    /// Per side: the `o=` line of its last SDP and the role it had.
    last: [Option<(String, Role)>; 2],
}

impl Roles {
    pub fn role(&mut self, from: usize, offer: bool, origin: Option<&str>) -> Role {
        let from = from.min(1);
        let repeat = match (&self.last[from], origin) {
            (Some((o, r)), Some(now)) if o == now && !offer => Some(*r),
            _ => None,
        };
        let role = match repeat {
            Some(r) => r,
            None if !offer && self.pending == Some(1 - from) => Role::Answer,
            None => Role::Offer,
        };
        match role {
            Role::Offer => self.pending = Some(from),
            Role::Answer => self.pending = None,
        }
        self.last[from] = origin.map(|o| (o.to_string(), role));
        role
    }
}
