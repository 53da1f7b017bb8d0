//! What an attacker on the Internet tries against one engine: identifiers that would be
//! guessed.

use super::*;

/// The next 16 outputs of xorshift64* (the generator sbcd used before ChaCha20) after the one
/// that printed as `tag`: its output is the state times an odd constant, so one output gives
/// the state and with it every later output.
fn xorshift_predictions(tag: u64) -> Vec<u64> {
    const MUL: u64 = 0x2545_f491_4f6c_dd1d;
    // The inverse of MUL modulo 2^64, by Newton's iteration.
    let inv = (0..6).fold(MUL, |x, _| x.wrapping_mul(2u64.wrapping_sub(MUL.wrapping_mul(x))));
    let mut state = tag.wrapping_mul(inv);
    (0..16)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(MUL)
        })
        .collect()
}

/// Every 64-bit hex run in an identifier (tags are one; branches and Call-IDs hold one or two).
fn hex_words(id: &[u8]) -> Vec<u64> {
    let s = String::from_utf8_lossy(id);
    let hex: String = s.chars().rev().take_while(char::is_ascii_hexdigit).collect::<Vec<_>>().into_iter().rev().collect();
    hex.as_bytes().chunks(16).filter(|c| c.len() == 16).filter_map(|c| u64::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok()).collect()
}

/// An outsider who sees one tag of ours cannot compute the identifiers that follow it: the
/// attack that breaks a multiply-output generator finds nothing here (issue 16).
#[test]
fn the_identifiers_after_a_seen_tag_cannot_be_predicted() {
    assert_eq!(xorshift_predictions(0x2545_f491_4f6c_dd1d * 3)[0], {
        // The predictor itself works: state 3 steps to this.
        let mut x = 3u64;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    });
    let mut h = Harness::new();
    let b_inv = one(&h.send(ALICE, &invite("seen", "")), BOB);
    let seen = hex_words(b_inv.from_tag().unwrap_or_default());
    assert_eq!(seen.len(), 1);
    let predicted = xorshift_predictions(seen[0]);
    let mut later = Vec::new();
    for n in 0..5 {
        let b_inv = one(&h.send(ALICE, &invite(&format!("next{n}"), "")), BOB);
        later.extend(hex_words(b_inv.from_tag().unwrap_or_default()));
        later.extend(hex_words(b_inv.call_id().unwrap_or_default()));
        later.extend(hex_words(b_inv.top_via().and_then(|v| v.branch()).unwrap_or_default()));
    }
    assert!(later.len() >= 15, "{later:x?}");
    assert!(later.iter().all(|w| !predicted.contains(w)), "an identifier was predicted");
}
