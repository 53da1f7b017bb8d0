use std::cell::Cell;
use std::sync::Arc;

use super::*;
use crate::regex_map::{RegexMap, RegexMaps};

/// A request for pattern tests: fixed parts plus generic headers.
pub(crate) struct TestRequest {
    pub(crate) method: &'static str,
    pub(crate) ruri: &'static str,
    pub(crate) from: &'static str,
    pub(crate) to: &'static str,
    pub(crate) call_id: &'static str,
    pub(crate) headers: Vec<(&'static str, &'static str)>,
}

impl RequestView for TestRequest {
    fn method(&self) -> &[u8] {
        self.method.as_bytes()
    }
    fn request_uri(&self) -> &[u8] {
        self.ruri.as_bytes()
    }
    fn caller(&self) -> &[u8] {
        self.from.as_bytes()
    }
    fn callee(&self) -> &[u8] {
        self.to.as_bytes()
    }
    fn call_id(&self) -> &[u8] {
        self.call_id.as_bytes()
    }
    fn for_each_header(&self, name: &str, each: &mut dyn FnMut(&[u8])) {
        for (n, v) in &self.headers {
            if n.eq_ignore_ascii_case(name) {
                each(v.as_bytes());
            }
        }
    }
}

pub(crate) fn invite() -> TestRequest {
    TestRequest {
        method: "INVITE",
        ruri: "sip:+4930555@gw.example.net:5070;user=phone;transport=udp?X-H=1",
        from: "\"Alice A\" <sip:alice@a.example.com;lr>;tag=f00;x=y",
        to: "<sip:+4930555@gw.example.net>",
        call_id: "abc123@10.0.0.1",
        headers: vec![
            ("P-Asserted-Identity", "\"Alice\" <sip:alice@pai.example.com:5062;user=phone>"),
            ("P-Asserted-Identity", "<tel:+4930111>"),
            ("P-App-Param", "u=bob;d=\"sip.example.org\";p=\"se;cret\",profile=internal"),
            ("X-Multi", "a"),
            ("X-Multi", "b, c"),
            ("X-Evil", "ok\r\nInjected: yes"),
            ("P-Preferred-Identity", "<sip:pref@ppi.example.com>"),
        ],
    }
}

struct Vars;
impl CcVars for Vars {
    fn get(&self, name: &str, member: Option<&str>) -> Option<String> {
        match (name, member) {
            ("credit", None) => Some("42".into()),
            ("acct", Some("id")) => Some("A-7".into()),
            _ => None,
        }
    }
}

fn maps() -> RegexMaps {
    let mut m = RegexMaps::new();
    m.insert("users".into(), Arc::new(RegexMap::parse("users", "^alice$=>vip\n^(.*)$=>std-\\1").unwrap()));
    m.insert("gw".into(), Arc::new(RegexMap::parse("gw", "^127\\.0\\.0\\.(.*)$=>gw\\1").unwrap()));
    m
}

fn expand_with(pattern: &str, req: &TestRequest, next_hop: Option<&str>) -> String {
    let maps = maps();
    let rng = Cell::new(7);
    let env = Env {
        req,
        source: "127.0.0.2:5099".parse().unwrap(),
        local: "[::1]:5060".parse().unwrap(),
        interface: InterfaceFacts { index: 1, name: "extern", public_ip: "203.0.113.9" },
        next_hop,
        peer: None,
        maps: &maps,
        cc_vars: &Vars,
        reg_cache: &NoRegCache,
        rng: &rng,
    };
    Pattern::compile(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}")).expand(&env)
}

fn x(pattern: &str) -> String {
    expand_with(pattern, &invite(), None)
}

#[test]
fn request_uri_family() {
    assert_eq!(x("$r"), "sip:+4930555@gw.example.net:5070;user=phone;transport=udp?X-H=1");
    assert_eq!(x("$r."), x("$r"));
    assert_eq!(x("$ru"), "+4930555@gw.example.net:5070");
    assert_eq!(x("$rU"), "+4930555");
    assert_eq!(x("$rd"), "gw.example.net:5070");
    assert_eq!(x("$rh"), "gw.example.net");
    assert_eq!(x("$rp"), "5070");
    assert_eq!(x("$rH"), "X-H=1");
    assert_eq!(x("$rP"), "user=phone;transport=udp");
    assert_eq!(x("$rP()"), "user=phone;transport=udp");
    assert_eq!(x("$rP(Transport)"), "udp");
    assert_eq!(x("$rP(missing)"), "");
    assert_eq!(x("$rn"), "");
}

#[test]
fn from_to_family() {
    assert_eq!(x("$f"), "\"Alice A\" <sip:alice@a.example.com;lr>");
    assert_eq!(x("$fu"), "alice@a.example.com");
    assert_eq!(x("$fU"), "alice");
    assert_eq!(x("$fd"), "a.example.com");
    assert_eq!(x("$fh"), "a.example.com");
    assert_eq!(x("$fp"), "");
    assert_eq!(x("$fP"), "lr");
    assert_eq!(x("$fn"), "Alice A");
    assert_eq!(x("$ft"), "f00");
    assert_eq!(x("$t"), "<sip:+4930555@gw.example.net>");
    assert_eq!(x("$tU"), "+4930555");
    assert_eq!(x("$tt"), "");
    assert_eq!(x("$th"), "gw.example.net");
}

#[test]
fn identity_family() {
    assert_eq!(x("$a"), "\"Alice\" <sip:alice@pai.example.com:5062;user=phone>, <tel:+4930111>");
    assert_eq!(x("$ai"), "alice@pai.example.com:5062");
    assert_eq!(x("$au"), x("$ai"));
    assert_eq!(x("$aU"), "alice");
    assert_eq!(x("$ad"), "pai.example.com:5062");
    assert_eq!(x("$ap"), "5062");
    assert_eq!(x("$an"), "Alice");
    assert_eq!(x("$aP(user)"), "phone");
    assert_eq!(x("$p"), "<sip:pref@ppi.example.com>");
    assert_eq!(x("$pi"), "pref@ppi.example.com");
    assert_eq!(x("$ph"), "ppi.example.com");
}

#[test]
fn addresses_and_interface() {
    assert_eq!(x("$si:$sp"), "127.0.0.2:5099");
    assert_eq!(x("$Ri:$Rp"), "::1:5060");
    assert_eq!(x("$Rf/$Rn/$RI"), "1/extern/203.0.113.9");
    assert_eq!(x("$ci"), "abc123@10.0.0.1");
    assert_eq!(x("$ci_leg2"), "abc123@10.0.0.1_leg2");
    assert_eq!(x("x$c"), "xabc123@10.0.0.1");
    // $m swallows the character after it, as in SEMS.
    assert_eq!(x("$m."), "INVITE");
    assert_eq!(x("$m"), "INVITE");
    assert_eq!(x("<$m_>"), "<INVITE>");
    assert_eq!(x("$mé!"), "INVITE!");
}

#[test]
fn destination_from_next_hop_or_ruri() {
    assert_eq!(x("$di:$dp"), "gw.example.net:5070");
    assert_eq!(expand_with("$di:$dp", &invite(), Some("10.1.1.1:5080/tcp,10.1.1.2")), "10.1.1.1:5080");
    assert_eq!(expand_with("$dp", &invite(), Some("[2001:db8::5]")), "0");
    assert_eq!(expand_with("$di", &invite(), Some("[2001:db8::5]")), "[2001:db8::5]");
}

#[test]
fn headers_and_app_params() {
    assert_eq!(x("$H(x-multi)"), "a, b, c");
    assert_eq!(x("$H(X-Missing)"), "");
    assert_eq!(x("$HU(P-Preferred-Identity)"), "pref");
    assert_eq!(x("$Hh(P-Asserted-Identity)"), "pai.example.com");
    assert_eq!(x("$HP(P-Asserted-Identity)(user)"), "phone");
    assert_eq!(x("$HP(P-Asserted-Identity)"), "user=phone");
    assert_eq!(x("$Hn(P-Asserted-Identity)"), "Alice");
    assert_eq!(x("$P(u)@$P(D)"), "bob@sip.example.org");
    assert_eq!(x("$P(p)"), "se;cret");
    assert_eq!(x("$P(profile)"), "internal");
    assert_eq!(x("$P(none)"), "");
}

#[test]
fn call_control_variables() {
    assert_eq!(x("$V(credit)"), "42");
    assert_eq!(x("$V(acct.id)"), "A-7");
    assert_eq!(x("$V(acct.$fU)"), "");
    assert_eq!(x("$V(none)"), "");
}

#[test]
fn maps_nesting_and_functions() {
    assert_eq!(x("$M($fU=>users)"), "vip");
    assert_eq!(x("$M($_u($fU)=>users)"), "std-ALICE");
    assert_eq!(x("$M($si=>gw)"), "gw2");
    assert_eq!(x("$M(zzz=>gw)"), "");
    assert_eq!(x("$_u($fU)$_l(ABC)"), "ALICEabc");
    assert_eq!(x("$_s($fU)"), "5");
    assert_eq!(x("$_5(abc)"), "900150983cd24fb0d6963f7d28e17f72");
    assert_eq!(x("$_t(udp)/$_t(transport)"), "udp/ort");
    assert_eq!(x("$#(a b&c/é)"), "a+b%26c%2f%c3%a9");
    assert_eq!(x("$_r(0)"), "0");
    assert_eq!(x("$_r(x)"), "0");
    let r: u32 = x("$_r(10)").parse().unwrap();
    assert!(r < 10);
}

#[test]
fn escapes() {
    assert_eq!(x("a\\r\\n\\tb"), "a\r\n\tb");
    assert_eq!(x("\\$rU \\\\ \\\" \\*"), "$rU \\ \" *");
    assert_eq!(x("end\\"), "end\\");
    assert_eq!(x("$M(\\(x\\)=>users)"), "std-(x)");
}

#[test]
fn request_text_cannot_inject_headers() {
    // Line breaks in request-supplied text become spaces; the operator's \r\n stays.
    assert_eq!(x("X-A: $H(X-Evil)\\r\\nX-B: 1"), "X-A: ok  Injected: yes\r\nX-B: 1");
}

#[test]
fn output_is_never_expanded_again() {
    let mut req = invite();
    req.headers.push(("X-Pattern", "$_r(0)$ci"));
    assert_eq!(expand_with("$H(X-Pattern)", &req, None), "$_r(0)$ci");
}

#[test]
fn reg_cache_variables_compile_and_are_empty_without_a_cache() {
    assert_eq!(x("[$uc|$us|$ui|$Ua|$UA]"), "[||||]");
}

#[test]
fn errors_at_load() {
    for bad in [
        "$",
        "$Zx",
        "$rX",
        "$c.",
        "$sx",
        "$H(x",
        "$M(a)",
        "$M(a=>)",
        "$_U(x)",
        "$_u(x",
        "$P()",
        "$(paramhdr)",
        "$Hq(x)",
        "$#x",
        "$V()",
    ] {
        assert!(Pattern::compile(bad).is_err(), "{bad} should not compile");
    }
    let e = Pattern::compile("sip:$rU@$Qx").unwrap_err();
    assert_eq!(e.offset, 8, "{e}");
}

#[test]
fn introspection() {
    let p = Pattern::compile("$M($M($si=>a)=>b)").unwrap();
    assert_eq!(p.map_names(), vec!["b", "a"]);
    assert!(Pattern::compile("static").unwrap().is_literal());
    assert_eq!(Pattern::compile("a\\,b").unwrap().literal().as_deref(), Some("a,b"));
    assert!(Pattern::compile("$V(x)").unwrap().uses_cc_vars());
    assert!(Pattern::compile("$_u($di)").unwrap().uses_destination());
}

#[test]
fn certificate_variables_read_the_verified_client_certificate() {
    let maps = maps();
    let rng = Cell::new(7);
    let who = PeerIdentity {
        common_name: "trunk-a.example".into(),
        alt_names: vec!["sbc1.trunk-a.example".into(), "sip:trunk@a.example".into()],
    };
    let req = invite();
    let env = |peer| Env {
        req: &req,
        source: "127.0.0.2:5099".parse().unwrap(),
        local: "[::1]:5060".parse().unwrap(),
        interface: InterfaceFacts::default(),
        next_hop: None,
        peer,
        maps: &maps,
        cc_vars: &Vars,
        reg_cache: &NoRegCache,
        rng: &rng,
    };
    let p = Pattern::compile("$M($Tc=>gw)|$Tc|$Ts").unwrap();
    assert_eq!(p.expand(&env(Some(&who))), "|trunk-a.example|sbc1.trunk-a.example, sip:trunk@a.example");
    assert_eq!(p.expand(&env(None)), "||", "no certificate: empty");
    assert!(Pattern::compile("$Tx").is_err());
    let odd = PeerIdentity { common_name: "a.example>;x=\"y\"\r\nX-Evil: 1".into(), alt_names: vec!["b <c>".into()] };
    let p = Pattern::compile("$Tc|$Ts").unwrap();
    assert_eq!(p.expand(&env(Some(&odd))), "a.examplex=yX-Evil:1|bc", "only name characters cross");
}
