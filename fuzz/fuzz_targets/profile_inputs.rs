//! Profile inputs never panic: pattern text (compiled, then expanded against a request whose
//! headers carry fuzz bytes), SEMS `key=value` files, regex-map files, selection chains, and
//! SDP bodies through every filter.
#![no_main]

use std::cell::Cell;
use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use profiles::conf::ConfFile;
use profiles::filters::NameFilter;
use profiles::pattern::{Env, InterfaceFacts, NoCcVars, NoRegCache, Pattern};
use profiles::regex_map::{RegexMap, RegexMaps};
use profiles::sdp::{self, CodecPref, SdpRules};
use profiles::selection::Selection;
use sbc_engine::b2bua::MsgView;
use sbc_engine::sip::msg::Message;

/// The map `$M(...=>m)` expands against, compiled once rather than per input.
fn fixed_maps() -> &'static RegexMaps {
    static MAPS: OnceLock<RegexMaps> = OnceLock::new();
    MAPS.get_or_init(|| {
        let mut maps = RegexMaps::new();
        if let Ok(m) = RegexMap::parse("m", "^(.*)$=>[\\1]") {
            maps.insert("m".into(), std::sync::Arc::new(m));
        }
        maps
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let _ = ConfFile::parse(&text, "fuzz.conf");
    // Each map rule is a regex compile (60 % of the time with the whole input as a map, the regex
    // crate being fuzzed instead of us): the first lines exercise our rule parsing just as well.
    let map_text: String = text.split_inclusive('\n').take(2).collect();
    let _ = RegexMap::parse("fuzz", &map_text);
    let _ = Selection::parse(first);
    let _ = CodecPref::parse_list(first);

    // The request's headers and R-URI user come from the fuzz input.
    let header = rest.replace(['\r', '\n'], " ");
    let req = format!(
        "INVITE sip:{}@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\nFrom: {header};tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nP-App-Param: {header}\r\nP-Asserted-Identity: {header}\r\nX-H: {header}\r\nContent-Length: 0\r\n\r\n",
        first.chars().filter(char::is_ascii_alphanumeric).take(20).collect::<String>()
    );
    if let (Ok(p), Ok(msg)) = (Pattern::compile(first), Message::parse(Bytes::from(req))) {
        let maps = fixed_maps();
        let view = MsgView(&msg);
        let rng = Cell::new(3);
        let env = Env {
            req: &view,
            source: "10.0.0.1:5060".parse().expect("addr"),
            local: "10.0.0.2:5060".parse().expect("addr"),
            interface: InterfaceFacts::default(),
            peer: None,
            next_hop: Some(first),
            maps,
            cc_vars: &NoCcVars,
            reg_cache: &NoRegCache,
            rng: &rng,
        };
        let out = p.expand(&env);
        // Request text never brings a line break of its own (the pattern's own text may).
        if !first.contains(['\\', '\r', '\n']) {
            assert!(!out.contains(['\r', '\n']), "line break from request data: {out:?}");
        }
    }

    let filters =
        [NameFilter::parse("whitelist", "pcma,telephone-event"), NameFilter::parse("blacklist", "audio,ptime")];
    let prefs = CodecPref::parse_list("g729,/8000").unwrap_or_default();
    if let (Ok(Some(w)), Ok(Some(b))) = (&filters[0], &filters[1]) {
        for rules in [
            SdpRules { codecs: Some(w), preference: &prefs, ..SdpRules::default() },
            SdpRules { media: Some(b), attributes: Some(b), anonymize_as: Some("192.0.2.1"), ..SdpRules::default() },
        ] {
            let _ = sdp::apply(data, &rules);
        }
    }
});
