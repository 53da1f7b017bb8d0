//! Builders for the messages the B2BUA sends. Rows a leg owns are generated; every other row of
//! the message being relayed is copied byte for byte.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use profiles::evaluate::ContactValues;
use profiles::filters::NameFilter;
use profiles::LocalReply;

use super::apply::is_control_header;
use super::call::Leg;
use super::types::{Source, Transport};
use crate::sip::msg::{split_values, trim, Header, HeaderName, Message, MessageWriter, Via};

/// Whether a request came straight from the UA that created it: exactly one Via value.
pub(crate) fn single_via(msg: &Message) -> bool {
    msg.values(HeaderName::Via).flat_map(split_values).take(2).count() == 1
}

/// Rows that belong to one leg and are never copied to the other (topology hiding).
pub(crate) fn leg_owned(name: HeaderName) -> bool {
    matches!(
        name,
        HeaderName::Via
            | HeaderName::Route
            | HeaderName::RecordRoute
            | HeaderName::Contact
            | HeaderName::CallId
            | HeaderName::From
            | HeaderName::To
            | HeaderName::CSeq
            | HeaderName::MaxForwards
            | HeaderName::ContentLength
            | HeaderName::RSeq
            | HeaderName::RAck
            // Proxies of one side (RFC 3327, RFC 3608) and dialogs of one leg (RFC 3891, 3911,
            // 4538): copying them would show one network to the other and point at a dialog
            // the far side does not have. Mapping them for transfers is a profile feature.
            | HeaderName::Path
            | HeaderName::ServiceRoute
            | HeaderName::Replaces
            | HeaderName::Join
            | HeaderName::TargetDialog
    )
}

/// Whether a row of `msg` crosses to the other leg: not leg-owned, not one of the SBC's own
/// control headers (`P-App-Param`, `P-App-Name`), and allowed by the profile's header filter
/// (Content-Type always passes: the body needs it).
fn crosses(msg: &Message, h: &Header, filter: Option<&NameFilter>) -> bool {
    if leg_owned(h.name) || h.name == HeaderName::Other && is_control_header(msg.slice(h.name_span)) {
        return false;
    }
    match filter {
        Some(f) if h.name != HeaderName::ContentType => {
            std::str::from_utf8(msg.slice(h.name_span)).is_ok_and(|name| f.allows(name.trim()))
        }
        _ => true,
    }
}

/// What a copy leaves out besides the leg-owned rows.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Strip {
    /// `100rel` in Supported/Require: re-INVITEs, whose reliable provisionals this SBC does not
    /// map between legs.
    pub(crate) rel100: bool,
    /// Session-Expires, Min-SE and `timer`: legs that run their own session timers.
    pub(crate) timer: bool,
    /// Authorization and Proxy-Authorization: credentials the SBC itself checked.
    pub(crate) credentials: bool,
    /// Refer-To: written mapped by the caller instead (`replaces.rs`).
    pub(crate) refer_to: bool,
    /// Event: written with the subscriber's `id` by the caller instead (`dialog_subs.rs`).
    pub(crate) event: bool,
}

/// Like [`copy_unowned`], without what `strip` names.
pub(crate) fn copy_unowned_stripped(w: &mut MessageWriter, msg: &Message, filter: Option<&NameFilter>, strip: Strip) {
    let drops =
        |o: &[u8]| strip.rel100 && o.eq_ignore_ascii_case(b"100rel") || strip.timer && o.eq_ignore_ascii_case(b"timer");
    for h in msg.headers() {
        if !crosses(msg, h, filter)
            || strip.timer && super::session_timer::is_timer_row(msg, h)
            || strip.credentials && super::auth::is_credentials_row(msg, h)
            || strip.refer_to && is_named(msg, h, b"refer-to", b"r")
            || strip.event && is_named(msg, h, b"event", b"o")
        {
            continue;
        }
        if matches!(h.name, HeaderName::Supported | HeaderName::Require) && split_values(msg.value(h)).any(drops) {
            let kept: Vec<&[u8]> = split_values(msg.value(h)).filter(|o| !drops(o)).collect();
            if !kept.is_empty() {
                let name = if h.name == HeaderName::Supported { "Supported" } else { "Require" };
                w.header(name, &kept.join(&b", "[..]));
            }
            continue;
        }
        w.copy_row(msg, h);
    }
}

/// A row whose name is `long` or its compact form.
fn is_named(msg: &Message, h: &Header, long: &[u8], compact: &[u8]) -> bool {
    let name = msg.slice(h.name_span);
    name.eq_ignore_ascii_case(long) || name.eq_ignore_ascii_case(compact)
}

/// Copies every row of `msg` that is not leg-owned and passes `filter`, in order.
pub(crate) fn copy_unowned(w: &mut MessageWriter, msg: &Message, filter: Option<&NameFilter>) {
    for h in msg.headers() {
        if crosses(msg, h, filter) {
            w.copy_row(msg, h);
        }
    }
}

/// [`copy_unowned`] of the rows `keep` accepts.
pub(crate) fn copy_unowned_if(
    w: &mut MessageWriter,
    msg: &Message,
    filter: Option<&NameFilter>,
    keep: impl Fn(&Message, &Header) -> bool,
) {
    for h in msg.headers() {
        if keep(msg, h) && crosses(msg, h, filter) {
            w.copy_row(msg, h);
        }
    }
}

/// Starts a response to `req`: status line, Via (top one marked with received/rport, RFC 3261
/// §18.2.1 and RFC 3581), From, To (with `to_tag` added when it has none), Call-ID, CSeq.
pub(crate) fn response_head(
    req: &Message,
    src: &Source,
    code: u16,
    reason: &[u8],
    to_tag: Option<&[u8]>,
) -> MessageWriter {
    let mut w = MessageWriter::response(code, reason);
    write_vias(&mut w, req, src.remote);
    for name in [HeaderName::From, HeaderName::To, HeaderName::CallId, HeaderName::CSeq] {
        let Some(h) = req.header(name) else { continue };
        if name == HeaderName::To && req.to_tag().is_none() && code > 100 {
            if let Some(tag) = to_tag {
                let mut v = req.value(h).to_vec();
                v.extend_from_slice(b";tag=");
                v.extend_from_slice(tag);
                w.header("To", &v);
                continue;
            }
        }
        w.copy_row(req, h);
    }
    w
}

fn write_vias(w: &mut MessageWriter, req: &Message, from: SocketAddr) {
    let mut first = true;
    for h in req.headers_named(HeaderName::Via) {
        if !first {
            w.copy_row(req, h);
            continue;
        }
        first = false;
        let mut values = split_values(req.value(h));
        let Some(top) = values.next() else { continue };
        let mut row = Vec::with_capacity(top.len() + 48);
        row.extend_from_slice(&marked_via(top, from));
        for v in values {
            row.extend_from_slice(b", ");
            row.extend_from_slice(v);
        }
        w.header("Via", &row);
    }
}

/// The top Via value with `received` and a filled-in `rport` where they apply.
fn marked_via(top: &[u8], from: SocketAddr) -> Vec<u8> {
    let Some(via) = Via::parse(top) else {
        return top.to_vec();
    };
    let mut out = top[..top.len() - via.params.len()].to_vec();
    let wants_rport = via.has_param(b"rport");
    for p in via.params.split(|&c| c == b';').map(trim).filter(|p| !p.is_empty()) {
        let name = trim(p.split(|&c| c == b'=').next().unwrap_or_default());
        if name.eq_ignore_ascii_case(b"received") || name.eq_ignore_ascii_case(b"rport") {
            continue;
        }
        out.push(b';');
        out.extend_from_slice(p);
    }
    let host_is_source = ip_of_host(via.host) == Some(from.ip());
    if wants_rport || !host_is_source {
        out.extend_from_slice(format!(";received={}", from.ip()).as_bytes());
    }
    if wants_rport {
        out.extend_from_slice(format!(";rport={}", from.port()).as_bytes());
    }
    out
}

/// Parses a host as an IP literal (IPv6 in brackets).
pub(crate) fn ip_of_host(host: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(host).ok()?;
    let s = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')).unwrap_or(s);
    s.parse().ok()
}

/// A complete locally generated response without body.
pub(crate) fn local_response(req: &Message, src: &Source, reply: &LocalReply, to_tag: Option<&[u8]>) -> Bytes {
    let mut w = response_head(req, src, reply.code, reply.reason.as_bytes(), to_tag);
    for (name, value) in reply.headers.iter() {
        w.header(name, value.as_bytes());
    }
    w.finish(b"")
}

/// The To row of a request the SBC sends: a party with its tag (if the dialog has one), or
/// the row a relayed out-of-dialog request came with, byte for byte.
pub(crate) enum ToRow<'a> {
    Party(&'a [u8], Option<&'a [u8]>),
    Copied(&'a Message, &'a Header),
}

/// The rows that open every request the SBC sends, in a dialog or not: the request line, our
/// Via, the routes, Max-Forwards, From (ours, with our tag), To, Call-ID and CSeq. The one
/// place a request is begun; the caller adds the rest and the body.
pub(crate) struct RequestHead<'a, R> {
    pub(crate) method: &'a [u8],
    pub(crate) target: &'a [u8],
    pub(crate) transport: Transport,
    pub(crate) sent_by: &'a str,
    pub(crate) branch: &'a [u8],
    pub(crate) routes: R,
    pub(crate) max_forwards: u8,
    pub(crate) from: &'a [u8],
    pub(crate) from_tag: &'a [u8],
    pub(crate) to: ToRow<'a>,
    pub(crate) call_id: &'a [u8],
    pub(crate) cseq: u32,
}

pub(crate) fn write_request<'a, R: IntoIterator<Item = &'a [u8]>>(head: RequestHead<'a, R>) -> MessageWriter {
    let mut w = MessageWriter::request(head.method, head.target);
    write_via(&mut w, head.transport, head.sent_by, head.branch);
    for r in head.routes {
        w.header("Route", r);
    }
    w.header_fmt("Max-Forwards", format_args!("{}", head.max_forwards));
    write_party(&mut w, "From", head.from, Some(head.from_tag));
    match head.to {
        ToRow::Party(party, tag) => write_party(&mut w, "To", party, tag),
        ToRow::Copied(msg, row) => {
            w.copy_row(msg, row);
        }
    }
    w.header("Call-ID", head.call_id);
    w.header_fmt("CSeq", format_args!("{} {}", head.cseq, String::from_utf8_lossy(head.method)));
    w
}

/// A Route for an outbound proxy (loose routing, RFC 3261 §16.12).
pub(crate) fn proxy_route(uri: &Option<String>) -> Option<Box<[u8]>> {
    uri.as_ref().map(|u| format!("<{u};lr>").into_bytes().into_boxed_slice())
}

/// A request on `leg`: request line to its remote target, our Via, its route set, dialog rows.
pub(crate) fn request_on_leg(leg: &Leg, method: &[u8], cseq: u32, branch: &[u8], max_forwards: u8) -> MessageWriter {
    write_request(RequestHead {
        method,
        target: &leg.remote_target,
        transport: leg.transport,
        sent_by: &leg.via_sent_by,
        branch,
        routes: leg.forced_route.iter().chain(&leg.route_set).map(|r| &**r),
        max_forwards,
        from: &leg.local_party,
        from_tag: &leg.local_tag,
        to: ToRow::Party(&leg.remote_party, leg.remote_tag.as_deref()),
        call_id: &leg.call_id,
        cseq,
    })
}

pub(crate) fn write_via(w: &mut MessageWriter, transport: Transport, sent_by: &str, branch: &[u8]) {
    w.header_fmt(
        "Via",
        format_args!("SIP/2.0/{} {sent_by};branch={};rport", transport.via_name(), String::from_utf8_lossy(branch)),
    );
}

pub(crate) fn write_party(w: &mut MessageWriter, name: &str, party: &[u8], tag: Option<&[u8]>) {
    match tag {
        Some(tag) => {
            let mut v = Vec::with_capacity(party.len() + tag.len() + 5);
            v.extend_from_slice(party);
            v.extend_from_slice(b";tag=");
            v.extend_from_slice(tag);
            w.header(name, &v);
        }
        None => {
            w.header(name, party);
        }
    }
}

/// A From/To value with its tag parameter removed (other parameters kept).
pub(crate) fn without_tag(value: &[u8]) -> Box<[u8]> {
    let value = trim(value);
    let Some(na) = crate::sip::msg::NameAddr::parse(value) else {
        return value.into();
    };
    let mut out = value[..value.len() - na.params.len()].to_vec();
    for p in na.params.split(|&c| c == b';').map(trim).filter(|p| !p.is_empty()) {
        let name = trim(p.split(|&c| c == b'=').next().unwrap_or_default());
        if !name.eq_ignore_ascii_case(b"tag") {
            out.push(b';');
            out.extend_from_slice(p);
        }
    }
    out.into_boxed_slice()
}

/// CANCEL for a request we sent: same Request-URI, top Via, Route, From, To, Call-ID and CSeq
/// number (RFC 3261 §9.1).
pub(crate) fn cancel_for(invite: &Message) -> Bytes {
    let mut w = MessageWriter::request(b"CANCEL", invite.request_uri());
    if let Some(via) = invite.values(HeaderName::Via).next() {
        w.header("Via", via);
    }
    for name in [HeaderName::Route, HeaderName::MaxForwards, HeaderName::From, HeaderName::To, HeaderName::CallId] {
        for h in invite.headers_named(name) {
            w.copy_row(invite, h);
        }
    }
    let num = invite.cseq().map_or(0, |c| c.num);
    w.header_fmt("CSeq", format_args!("{num} CANCEL"));
    w.finish(b"")
}

/// The SBC's Contact on a leg: the profile's parts (`*_contact_*`) over the socket's own
/// address, or plainly [`contact_value`]. On a `sips:` dialog it is `sips:` (RFC 3261
/// §8.1.1.8, §12.1.1), without a transport parameter (TLS is implied, RFC 5630 §5.1).
pub(crate) fn leg_contact(parts: &ContactValues, sent_by: &str, transport: Transport, sips: bool) -> Box<[u8]> {
    if sips {
        let v = if parts.is_default() { format!("<sips:{sent_by}>") } else { parts.render_scheme("sips", sent_by, "") };
        return v.into_bytes().into_boxed_slice();
    }
    if parts.is_default() {
        return contact_value(sent_by, transport);
    }
    parts.render(sent_by, transport_param(transport)).into_bytes().into_boxed_slice()
}

/// The URI parameter that names a stream transport (UDP is the default: none).
pub(crate) fn transport_param(transport: Transport) -> &'static str {
    match transport {
        Transport::Udp => "",
        Transport::Tcp => ";transport=tcp",
        Transport::Tls => ";transport=tls",
    }
}

/// Our Contact on a leg: `<sip:host:port[;transport=tcp|tls]>`.
pub(crate) fn contact_value(sent_by: &str, transport: Transport) -> Box<[u8]> {
    format!("<sip:{sent_by}{}>", transport_param(transport)).into_bytes().into_boxed_slice()
}
