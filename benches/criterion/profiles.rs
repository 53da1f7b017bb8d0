//! What a profile costs per call: running the selection chain and expanding every option of a
//! rewriting profile against a parsed INVITE, next to the transparent profile; and the SDP
//! codec filter. Run: `cargo bench -p sbc-benches --bench profiles`.

use std::cell::Cell;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use profiles::config::Config;
use profiles::filters::NameFilter;
use profiles::pattern::{Env, InterfaceFacts, NoCcVars, NoRegCache, Pattern};
use profiles::sdp::{self, SdpRules};
use profiles::Snapshot;
use sbc_engine::b2bua::MsgView;
use sbc_engine::sip::msg::Message;

const SDP: &str = "v=0\r\no=alice 2890844526 2890844526 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 18 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:18 G729/8000\r\na=fmtp:18 annexb=no\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n";

fn invite() -> Message {
    let text = format!(
        "INVITE sip:+4930123456@gw.example.net;user=phone SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK776asdhds;rport\r\n\
         Max-Forwards: 70\r\n\
         From: \"Alice\" <sip:+4940111@carrier.example;user=phone>;tag=1928301774\r\n\
         To: <sip:+4930123456@gw.example.net;user=phone>\r\n\
         Call-ID: a84b4c76e66710@pc33.atlanta.example\r\n\
         CSeq: 314159 INVITE\r\n\
         Contact: <sip:alice@198.51.100.7:5060>\r\n\
         P-Asserted-Identity: \"Alice\" <sip:+4940111@carrier.example;user=phone>\r\n\
         P-App-Param: u=trunk7;d=core.example\r\n\
         P-SBCProfile: rewrite\r\n\
         User-Agent: bench\r\n\
         Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    );
    Message::parse(Bytes::from(text)).expect("bench INVITE parses")
}

const CONFIG: &str = r#"
active_profile: ["$M($si=>src)", "$H(P-SBCProfile)", transparent]
regex_maps:
  src: ["^10\\.=>internal"]
  prefixes: ["^\\+49(30|40)=>de-\\1", "^\\+(.*)$=>intl"]
profiles:
  transparent: {}
  rewrite:
    RURI: "sip:$rU@$P(d);user=phone"
    From: "\"$fn\" <sip:$fU@$P(d)>"
    To: "<sip:$rU@$P(d)>"
    append_headers:
      - "X-Src: $si:$sp"
      - "X-Route: $M($rU=>prefixes)"
      - "X-Caller: $_l($aU)"
    header_filter: blacklist
    header_list: [P-App-Param, P-SBCProfile, User-Agent]
    outbound_interface: default
"#;

fn run(c: &mut Criterion) {
    let cfg = Config::from_yaml(CONFIG, "bench.yaml").expect("bench config loads");
    let snap: Snapshot = cfg.profiles;
    let msg = invite();
    let rng = Cell::new(1);
    let view = MsgView(&msg);
    let env = Env {
        req: &view,
        source: "198.51.100.7:5060".parse().expect("addr"),
        local: "203.0.113.1:5060".parse().expect("addr"),
        interface: InterfaceFacts { index: 0, name: "default", public_ip: "" },
        next_hop: None,
        peer: None,
        maps: &snap.maps,
        cc_vars: &NoCcVars,
        reg_cache: &NoRegCache,
        rng: &rng,
    };
    c.bench_function("select + evaluate rewriting profile", |b| {
        b.iter(|| {
            let (p, _) = snap.select(black_box(&env)).expect("selected");
            black_box(p.evaluate(&env).expect("evaluates"))
        })
    });
    let transparent = snap.profiles["transparent"].clone();
    c.bench_function("evaluate transparent profile", |b| b.iter(|| black_box(transparent.evaluate(black_box(&env)))));
    let pattern = Pattern::compile("sip:$rU@$P(d);user=phone").expect("compiles");
    c.bench_function("expand one pattern (sip:$rU@$P(d))", |b| b.iter(|| black_box(pattern.expand(black_box(&env)))));
    c.bench_function("compile one pattern", |b| {
        b.iter(|| black_box(Pattern::compile(black_box("sip:$M($_l($fU)=>users)@$rd;x=$H(X-Y)"))))
    });
    let keep = NameFilter::parse("whitelist", "pcma,telephone-event").expect("filter").expect("some");
    let rules = SdpRules { codecs: Some(&keep), ..SdpRules::default() };
    c.bench_function("sdp codec whitelist (2 of 4 kept)", |b| {
        b.iter(|| black_box(sdp::apply(black_box(SDP.as_bytes()), &rules)))
    });
}

criterion_group!(benches, run);
criterion_main!(benches);
