//! Call-control specs as SEMS writes them, `module;key=value;key="value; with ;"`: the
//! values of `cc_ctl`'s header, and the instances a dynamic `call_control` entry expands to
//! (`evaluate.rs`).

/// `key=value` pairs of a spec (`;`-separated, values may be double-quoted; a
/// leading `ctl;` is skipped).
pub fn pairs(spec: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = spec.trim();
    if let Some(r) = rest.strip_prefix("ctl;").or_else(|| (rest == "ctl").then_some("")) {
        rest = r;
    }
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').unwrap_or((rest, ""));
        let key = key.trim().trim_start_matches(';').trim();
        let (value, next) = if let Some(q) = after.trim_start().strip_prefix('"') {
            // A quoted value: `\"` and `\\` stand for themselves.
            let mut value = String::new();
            let mut end = q.len();
            let mut chars = q.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, q[end.min(q.len())..].trim_start().trim_start_matches(';'))
        } else {
            let (v, n) = after.split_once(';').unwrap_or((after, ""));
            (v.to_string(), n)
        };
        if !key.is_empty() {
            out.push((key.to_string(), value.trim().to_string()));
        }
        if after.is_empty() {
            break;
        }
        rest = next.trim();
    }
    out
}

/// SEMS's DI names of modules whose name here is another.
const ALIASES: &[(&str, &str)] = &[("ctl", "cc_ctl")];

/// A dynamic spec's module and values: `ctl;RURI=sip:x@y` is `cc_ctl` with `RURI`.
pub fn instance(spec: &str) -> (String, Vec<(String, String)>) {
    let (module, rest) = spec.split_once(';').unwrap_or((spec, ""));
    let module = module.trim();
    let module = ALIASES.iter().find(|(sems, _)| *sems == module).map_or(module, |(_, ours)| ours);
    (module.to_string(), pairs(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_pairs() {
        assert_eq!(
            pairs("ctl;RURI=sip:a@b;From=\"\\\"X\\\" <sip:x@y>\";next_hop=10.0.0.1:5060"),
            vec![
                ("RURI".to_string(), "sip:a@b".to_string()),
                ("From".to_string(), "\"X\" <sip:x@y>".to_string()),
                ("next_hop".to_string(), "10.0.0.1:5060".to_string()),
            ]
        );
        assert_eq!(
            pairs("RURI=sip:a@b; To = <sip:t@u>"),
            vec![("RURI".into(), "sip:a@b".into()), ("To".into(), "<sip:t@u>".into())]
        );
        assert!(pairs("").is_empty());
        assert!(pairs("ctl").is_empty());
    }

    #[test]
    fn instances_name_their_module() {
        assert_eq!(
            instance("ctl;RURI=sip:x@y"),
            ("cc_ctl".to_string(), vec![("RURI".to_string(), "sip:x@y".to_string())])
        );
        assert_eq!(instance(" cc_pcalls;uuid=joe;max_calls=10").0, "cc_pcalls");
        assert_eq!(instance("cc_call_timer"), ("cc_call_timer".to_string(), Vec::new()));
    }
}
