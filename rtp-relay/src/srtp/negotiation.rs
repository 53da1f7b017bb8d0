//! SDES offer/answer for one stream, pure: the relay terminates SRTP on each side it
//! encrypts with, so each side gets the relay's own keys and never sees the other side's
//! (RFC 4568 §7.1-7.2, applied once per side).
//!
//! Per SDP from side `from` (an offer or an answer) and one m-line:
//! - what `from` sends is read ([`StreamSdes::learn`]): the line chosen from its offer (the
//!   first usable one), or the line of its answer whose tag and suite the relay offered it;
//! - what goes to the other side is written: plain `RTP/AVP`, or `RTP/SAVP` with the relay's
//!   key for each suite (an offer) or for the suite that side chose (an answer, under its tag).
//!
//! A side's offer is staged and takes effect when the relay answers it, so an offer that fails
//! (488, 491, a timeout) leaves the call as it was; its new key is accepted at once beside the
//! old one (`contexts.rs`). A side the relay offers SRTP to for the first time gets nothing
//! until it answers: plain media never goes where SRTP was offered.
//!
//! The relay's keys are made once per side and suite and kept while in use, so a re-INVITE
//! does not restart the peer's replay window or rollover count. A key the relay stops sending
//! with is forgotten: sending with it again from a fresh context would reuse packet indexes.

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
    /// Not an RTP profile (`udptl` for T.38 ...): SRTP does not apply, the stream is left
    /// alone.
    pub other_transport: bool,
    /// `a=rtcp-mux`.
    pub rtcp_mux: bool,
    pub lines: Vec<CryptoLine>,
}

/// What to write for one m-line in the SDP going to the other side.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Rewrite {
    /// Transport and `a=crypto` lines as they came (both sides passthrough, or not RTP).
    #[default]
    Keep,
    /// `RTP/AVP(F)`, no `a=crypto`.
    Plain,
    /// `RTP/SAVP(F)` with these `a=crypto` lines (tag, key), replacing any that came.
    Sdes(Vec<(u32, MasterKey)>),
}

/// What a side's offer asks of the relay, until the relay answers it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Staged {
    srtp: bool,
    /// The offer's line the relay took: its tag and the side's key.
    line: Option<(u32, MasterKey)>,
}

/// One side of a stream, as negotiated so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Leg {
    /// The relay speaks SRTP with this side.
    srtp: bool,
    /// The key this side encrypts with (from its SDP).
    theirs: Option<MasterKey>,
    /// The suite the relay encrypts towards this side with.
    chosen: Option<Suite>,
    /// The relay's key per suite towards this side (made when first needed).
    ours: [Option<MasterKey>; 3],
    /// What the relay last offered this side: (tag, suite).
    offered: Vec<(u32, Suite)>,
    /// The tag of the side's offered line the relay answered.
    answer_tag: Option<u32>,
    /// The side's offer awaiting the relay's answer.
    staged: Option<Staged>,
    /// The side has finished an offer/answer exchange with the relay.
    settled: bool,
    mux: bool,
}

impl Leg {
    fn our_key(&mut self, suite: Suite, fresh: &mut dyn FnMut() -> [u8; MAX_MATERIAL]) -> Option<MasterKey> {
        let slot = &mut self.ours[suite.index()];
        if slot.is_none() {
            *slot = MasterKey::new(suite, &fresh()[..suite.material_len()]);
        }
        *slot
    }

    /// The relay now sends with `suite` (or nothing): the key it stops sending with is
    /// forgotten for good.
    fn send_with(&mut self, suite: Option<Suite>) {
        if self.chosen != suite {
            if let Some(old) = self.chosen {
                self.ours[old.index()] = None;
            }
            self.chosen = suite;
        }
    }

    /// Takes an exchange's outcome for this side.
    fn settle(&mut self, srtp: bool, line: Option<(u32, MasterKey)>) {
        self.settled = true;
        self.srtp = srtp;
        self.theirs = line.map(|(_, k)| k).filter(|_| srtp);
        self.send_with(line.map(|(_, k)| k.suite).filter(|_| srtp));
    }
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
        if security.other_transport {
            // Not RTP: plain both ways, and any keys of an earlier RTP stream are forgotten.
            *self = Self::default();
            return Ok(Rewrite::Keep);
        }
        let (from, to) = (from.min(1), 1 - from.min(1));
        self.learn(policies[from], from, role, security)?;
        self.write(policies[to], to, role, security.savp, fresh)
    }

    /// Whether [`step`](Self::step) would refuse this SDP, without changing anything.
    pub fn check(
        &self,
        policies: [Policy; 2],
        from: usize,
        role: Role,
        security: &Security,
    ) -> Result<(), &'static str> {
        if policies == [Policy::Passthrough; 2] || security.other_transport {
            return Ok(());
        }
        self.clone().learn(policies[from.min(1)], from.min(1), role, security)
    }

    /// What `from` says it sends with. An offer is staged until the relay answers it; an
    /// answer settles the exchange the relay offered (or refreshed with the line it answered).
    pub fn learn(&mut self, policy: Policy, from: usize, role: Role, security: &Security) -> Result<(), &'static str> {
        let leg = &mut self.legs[from.min(1)];
        leg.mux = security.rtcp_mux;
        let (srtp, line) = match policy {
            Policy::Plain if security.savp => return Err("SRTP offered on a side set to plain RTP"),
            Policy::Sdes { .. } | Policy::Passthrough if security.savp => {
                let mut usable = security.lines.iter().filter_map(|l| l.key.ok().map(|k| (l.tag, k)));
                let pick = match role {
                    Role::Offer => usable.next(),
                    Role::Answer => usable.find(|&(t, k)| {
                        leg.offered.contains(&(t, k.suite))
                            || (Some(t) == leg.answer_tag && Some(k.suite) == leg.chosen)
                    }),
                };
                let Some(line) = pick else {
                    return Err(match security.lines.iter().find_map(|l| l.key.err()) {
                        Some(why) => why,
                        None if security.lines.is_empty() => "no a=crypto line (DTLS-SRTP is not supported)",
                        None => "no a=crypto line the relay offered",
                    });
                };
                (true, Some(line))
            }
            Policy::Sdes { required: true } => return Err("plain RTP on a side that requires SRTP"),
            Policy::Plain | Policy::Sdes { required: false } | Policy::Passthrough => (false, None),
        };
        match role {
            Role::Offer => {
                // Its new key is taken at once (the old one stays accepted beside it); the rest
                // waits for the relay's answer.
                if let Some((_, k)) = line.filter(|_| leg.srtp) {
                    leg.theirs = Some(k);
                }
                leg.staged = Some(Staged { srtp, line });
            }
            Role::Answer => leg.settle(srtp, line),
        }
        Ok(())
    }

    fn write(
        &mut self,
        policy: Policy,
        to: usize,
        role: Role,
        offered_savp: bool,
        fresh: &mut dyn FnMut() -> [u8; MAX_MATERIAL],
    ) -> Result<Rewrite, &'static str> {
        let leg = &mut self.legs[to];
        match role {
            Role::Offer => {
                let secure = match policy {
                    Policy::Plain => false,
                    Policy::Sdes { .. } => true,
                    Policy::Passthrough => offered_savp,
                };
                if !leg.settled {
                    // Nothing goes to it before its answer brings the keys.
                    leg.srtp = secure;
                }
                if !secure {
                    leg.offered.clear();
                    return Ok(Rewrite::Plain);
                }
                leg.offered = (1..).zip(Suite::ALL).collect();
                let mut lines = Vec::with_capacity(Suite::ALL.len());
                for (tag, suite) in leg.offered.clone() {
                    lines.push((tag, leg.our_key(suite, fresh).ok_or("no key material")?));
                }
                Ok(Rewrite::Sdes(lines))
            }
            Role::Answer => {
                if let Some(st) = leg.staged.take() {
                    leg.answer_tag = st.line.map(|(t, _)| t).or(leg.answer_tag);
                    leg.settle(st.srtp, st.line);
                }
                // Without a staged offer: a repeated answer (a 200 after the 183), the same again.
                match (leg.srtp, leg.answer_tag, leg.chosen) {
                    (false, ..) => Ok(Rewrite::Plain),
                    (true, Some(tag), Some(suite)) => {
                        Ok(Rewrite::Sdes(vec![(tag, leg.our_key(suite, fresh).ok_or("no key material")?)]))
                    }
                    (true, ..) => Err("an SRTP answer without an offer to answer"),
                }
            }
        }
    }

    /// What the data path needs of side `side` now.
    pub fn side_crypto(&self, side: usize) -> SideCrypto {
        let leg = &self.legs[side.min(1)];
        if !leg.srtp {
            return SideCrypto { mux: leg.mux, ..SideCrypto::default() };
        }
        let send = leg.chosen.and_then(|s| leg.ours[s.index()]);
        SideCrypto { srtp: true, recv: leg.theirs, send, mux: leg.mux }
    }

    /// SRTP is terminated on either side.
    pub fn terminated(&self) -> bool {
        self.legs.iter().any(|l| l.srtp)
    }
}

/// Tells offers from answers where the message does not (a PRACK): the SDP answers an offer
/// the other side made, repeats this side's last SDP (the same `o=` line), or else offers.
/// Messages that say what they carry (an INVITE or UPDATE offers, a response to one answers
/// it, an ACK answers) are taken as they say and keep this state right.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Roles {
    /// The side whose offer awaits its answer.
    pending: Option<usize>,
    /// Per side: the `o=` line of its last SDP and the role it had.
    last: [Option<(String, Role)>; 2],
}

impl Roles {
    /// The role of an SDP from `from`: `known` when the message says, else inferred.
    pub fn role(&mut self, from: usize, known: Option<Role>, origin: Option<&str>) -> Role {
        let from = from.min(1);
        let role = known.unwrap_or_else(|| {
            let repeat = match (&self.last[from], origin) {
                (Some((o, r)), Some(now)) if o == now => Some(*r),
                _ => None,
            };
            match repeat {
                Some(r) => r,
                None if self.pending == Some(1 - from) => Role::Answer,
                None => Role::Offer,
            }
        });
        match role {
            Role::Offer => self.pending = Some(from),
            Role::Answer => self.pending = None,
        }
        self.last[from] = origin.map(|o| (o.to_string(), role));
        role
    }
}
