//! The profile's SDP pipeline (SEMS `filterSdp`, docs/manual/profiles.md, Profile options): media filter, codec
//! preference, codec filter, attribute filter, anonymisation — on a lossless line model.

pub mod hold;
pub mod media;
mod model;
pub mod security;

use std::collections::HashSet;

#[cfg(test)]
mod tests;

use model::{MediaLine, Sdp};

use crate::filters::NameFilter;

/// `name[/rate]`; an empty name (`/48000`) matches any codec at that rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecPref {
    pub name: String,
    pub rate: Option<u32>,
}

impl CodecPref {
    /// Parses a `codec_preference` list.
    pub fn parse_list(s: &str) -> Result<Vec<Self>, String> {
        let mut out = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, rate) = match item.split_once('/') {
                Some((n, r)) => (n, Some(r.parse().map_err(|_| format!("'{item}': rate is not a number"))?)),
                None => (item, None),
            };
            if name.is_empty() && rate.is_none() {
                return Err(format!("'{item}' names no codec"));
            }
            out.push(Self { name: name.to_string(), rate });
        }
        Ok(out)
    }

    fn matches(&self, name: &str, rate: u32) -> bool {
        (self.name.is_empty() || self.name.eq_ignore_ascii_case(name)) && self.rate.is_none_or(|r| r == rate)
    }
}

/// What the pipeline does to SDP going in one direction (towards the callee or the caller).
#[derive(Debug, Clone, Copy, Default)]
pub struct SdpRules<'a> {
    pub codecs: Option<&'a NameFilter>,
    pub preference: &'a [CodecPref],
    pub media: Option<&'a NameFilter>,
    pub attributes: Option<&'a NameFilter>,
    /// `sdp_anonymize`: the address to put in `o=` (the SBC's address on that leg).
    pub anonymize_as: Option<&'a str>,
}

impl SdpRules<'_> {
    pub fn is_empty(&self) -> bool {
        self.codecs.is_none()
            && self.preference.is_empty()
            && self.media.is_none()
            && self.attributes.is_none()
            && self.anonymize_as.is_none()
    }
}

/// Every media stream was filtered away: the offer is answered `488 Not Acceptable Here`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no media left after filtering")]
pub struct NothingLeft;

/// Attributes the attribute filter never removes (they are the media description itself).
const PROTECTED_ATTRIBUTES: [&str; 6] = ["rtpmap", "fmtp", "sendrecv", "sendonly", "recvonly", "inactive"];

/// Runs the pipeline. `Ok(None)`: nothing to do or not SDP (passed through untouched);
/// `Ok(Some(body))`: the rewritten body.
pub fn apply(body: &[u8], rules: &SdpRules<'_>) -> Result<Option<Vec<u8>>, NothingLeft> {
    if rules.is_empty() || body.is_empty() {
        return Ok(None);
    }
    let Some(mut sdp) = Sdp::parse(body) else {
        return Ok(None);
    };
    let mut changed = false;
    if let Some(f) = rules.media {
        changed |= filter_media(&mut sdp, f)?;
    }
    if !rules.preference.is_empty() {
        changed |= reorder(&mut sdp, rules.preference);
    }
    if let Some(f) = rules.codecs {
        changed |= filter_codecs(&mut sdp, f)?;
    }
    if let Some(f) = rules.attributes {
        let before = sdp.lines.len();
        sdp.lines.retain(|l| {
            l.attr_name().is_none_or(|n| PROTECTED_ATTRIBUTES.iter().any(|p| p.eq_ignore_ascii_case(n)) || f.allows(n))
        });
        changed |= sdp.lines.len() != before;
    }
    if let Some(ip) = rules.anonymize_as {
        anonymize(&mut sdp, ip);
        changed = true;
    }
    Ok(changed.then(|| sdp.render()))
}

fn each_media(sdp: &Sdp) -> Vec<(usize, usize, MediaLine)> {
    sdp.media_sections()
        .into_iter()
        .filter_map(|(s, e)| MediaLine::parse(&sdp.lines[s].text).map(|m| (s, e, m)))
        .collect()
}

/// `media_filter`: streams whose type does not pass get port 0.
fn filter_media(sdp: &mut Sdp, f: &NameFilter) -> Result<bool, NothingLeft> {
    let mut changed = false;
    let all = each_media(sdp);
    for (s, _, mut m) in all.iter().cloned() {
        if !m.is_disabled() && !f.allows(&m.media) {
            m.port = "0".into();
            sdp.lines[s].text = m.render();
            changed = true;
        }
    }
    if changed && each_media(sdp).iter().all(|(_, _, m)| m.is_disabled()) {
        return Err(NothingLeft);
    }
    Ok(changed)
}

/// `codec_preference`: listed codecs move to the front in list order; the rest keep theirs.
fn reorder(sdp: &mut Sdp, prefs: &[CodecPref]) -> bool {
    let mut changed = false;
    for (s, e, mut m) in each_media(sdp) {
        if !m.is_rtp() {
            continue;
        }
        let codecs = sdp.codecs(s, e);
        let mut placed = vec![false; m.formats.len()];
        let mut ordered: Vec<String> = Vec::with_capacity(m.formats.len());
        for p in prefs {
            for (k, pt) in m.formats.iter().enumerate() {
                if !placed[k] && codecs.get(pt.as_str()).is_some_and(|(n, r)| p.matches(n, r)) {
                    placed[k] = true;
                    ordered.push(pt.clone());
                }
            }
        }
        ordered.extend(m.formats.iter().zip(&placed).filter(|(_, p)| !**p).map(|(pt, _)| pt.clone()));
        if ordered != m.formats {
            m.formats = ordered;
            sdp.lines[s].text = m.render();
            changed = true;
        }
    }
    changed
}

/// `sdp_filter`: payloads whose encoding name does not pass are removed with their rtpmap,
/// fmtp and rtcp-fb lines. A stream left with none keeps its first payload and is rejected
/// with port 0 (RFC 3264 §6); when no stream is left active the offer fails. Linear in the
/// size of the SDP (a body may be large: every lookup goes through one map per section).
fn filter_codecs(sdp: &mut Sdp, f: &NameFilter) -> Result<bool, NothingLeft> {
    let mut changed = false;
    let mut removed_lines: HashSet<usize> = HashSet::new();
    let mut any_active = false;
    let mut any_rtp = false;
    for (s, e, mut m) in each_media(sdp) {
        if !m.is_rtp() {
            any_active |= !m.is_disabled();
            continue;
        }
        any_rtp = true;
        let codecs = sdp.codecs(s, e);
        let (keep, drop): (Vec<String>, Vec<String>) =
            m.formats.iter().cloned().partition(|pt| codecs.get(pt.as_str()).is_none_or(|(name, _)| f.allows(name)));
        if drop.is_empty() {
            any_active |= !m.is_disabled();
            continue;
        }
        changed = true;
        let mut dropped: HashSet<&str> = drop.iter().map(String::as_str).collect();
        if keep.is_empty() {
            m.formats.truncate(1);
            m.port = "0".into();
            if let Some(first) = m.formats.first() {
                dropped.remove(first.as_str());
            }
        } else {
            m.formats = keep;
            any_active |= !m.is_disabled();
        }
        removed_lines.extend(payload_lines(sdp, s, e, &dropped));
        sdp.lines[s].text = m.render();
    }
    if changed && any_rtp && !any_active {
        return Err(NothingLeft);
    }
    let mut i = 0;
    sdp.lines.retain(|_| {
        let keep = !removed_lines.contains(&i);
        i += 1;
        keep
    });
    Ok(changed)
}

/// Indexes of the rtpmap, fmtp and rtcp-fb lines in `[s, e)` about the payload types `which`.
fn payload_lines(sdp: &Sdp, s: usize, e: usize, which: &HashSet<&str>) -> Vec<usize> {
    (s + 1..e)
        .filter(|&i| {
            sdp.lines[i]
                .payload_attr()
                .is_some_and(|(name, pt)| matches!(name, "rtpmap" | "fmtp" | "rtcp-fb") && which.contains(pt))
        })
        .collect()
}

/// `sdp_anonymize`: `s=-`, no `u=`, `o=- <id> <version> IN IP4|IP6 <our address>`.
fn anonymize(sdp: &mut Sdp, ip: &str) {
    let family = if ip.contains(':') { "IP6" } else { "IP4" };
    sdp.lines.retain(|l| l.kind() != b'u');
    for l in &mut sdp.lines {
        match l.kind() {
            b's' => l.text = "s=-".into(),
            b'o' => {
                let f: Vec<&str> = l.text.get(2..).unwrap_or_default().split_whitespace().collect();
                if let [_, id, version, net, ..] = f[..] {
                    l.text = format!("o=- {id} {version} {net} {family} {ip}");
                }
            }
            _ => {}
        }
    }
}
