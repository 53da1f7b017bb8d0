//! The order in which to try targets that have a priority and a weight, as RFC 2782 orders
//! SRV records: lower priority first; among equal priorities a weighted random draw, one at a
//! time, so that over many calls each target leads in proportion to its weight. Used for SRV
//! answers (RFC 3263 §4.4) and for a profile's `next_hop` entries with `priority`/`weight`.

/// `items` as (item, priority, weight), in the order to try them. `random` gives uniformly
/// distributed numbers (each draw takes one).
pub fn weighted_order<T>(mut items: Vec<(T, u16, u16)>, mut random: impl FnMut() -> u64) -> Vec<T> {
    // Stable: equal priorities keep their given order before the draw (RFC 2782 puts
    // zero-weight entries first so they keep a small chance; the draw below does the same).
    items.sort_by_key(|(_, p, w)| (*p, *w != 0));
    let mut out = Vec::with_capacity(items.len());
    let mut rest = items.into_iter().peekable();
    while let Some((first, priority, weight)) = rest.next() {
        let mut group = vec![(first, weight)];
        while let Some(next) = rest.next_if(|(_, p, _)| *p == priority) {
            group.push((next.0, next.2));
        }
        while !group.is_empty() {
            let total: u64 = group.iter().map(|(_, w)| u64::from(*w)).sum();
            // RFC 2782: a number in 0..=total; the first entry whose running sum reaches it.
            let pick = random() % (total + 1);
            let mut sum = 0;
            let at = group
                .iter()
                .position(|(_, w)| {
                    sum += u64::from(*w);
                    sum >= pick
                })
                .unwrap_or(group.len() - 1);
            out.push(group.remove(at).0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic spread of numbers (splitmix64).
    fn numbers(seed: u64) -> impl FnMut() -> u64 {
        let mut s = seed;
        move || {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
    }

    #[test]
    fn lower_priorities_come_first_whatever_their_weight() {
        let items = vec![("b", 20, 100), ("a", 10, 1), ("c", 30, 0), ("a2", 10, 1)];
        for seed in 0..50 {
            let order = weighted_order(items.clone(), numbers(seed));
            assert_eq!(order.len(), 4);
            assert!(order[..2].contains(&"a") && order[..2].contains(&"a2"), "{order:?}");
            assert_eq!(&order[2..], ["b", "c"]);
        }
    }

    #[test]
    fn weights_split_the_lead_in_proportion() {
        let mut next = numbers(7);
        let mut first = std::collections::HashMap::new();
        for _ in 0..10_000 {
            let order = weighted_order(vec![("x", 1, 60), ("y", 1, 30), ("z", 1, 10)], &mut next);
            *first.entry(order[0]).or_insert(0) += 1;
        }
        let share = |k| f64::from(first.get(k).copied().unwrap_or(0)) / 10_000.0;
        assert!((share("x") - 0.6).abs() < 0.02, "{first:?}");
        assert!((share("y") - 0.3).abs() < 0.02, "{first:?}");
        assert!((share("z") - 0.1).abs() < 0.02, "{first:?}");
    }

    #[test]
    fn zero_weights_are_rarely_first_but_always_tried() {
        let mut next = numbers(3);
        let mut zero_first = 0;
        for _ in 0..1000 {
            let order = weighted_order(vec![("zero", 0, 0), ("heavy", 0, 100)], &mut next);
            assert_eq!(order.len(), 2);
            zero_first += usize::from(order[0] == "zero");
        }
        assert!(zero_first < 30, "{zero_first}");
        let all_zero = weighted_order(vec![(1, 0, 0), (2, 0, 0)], numbers(1));
        assert_eq!(all_zero.len(), 2);
    }
}
