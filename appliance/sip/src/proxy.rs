//! Proxy routing (RFC 3261 §16) as data. [`route`] reads top to bottom like Kamailio's
//! `request_route`: sanity, loops, Proxy-Require, Route pre-processing, in-dialog requests,
//! requests for the appliance itself, then the location service, then `404` or `480`. It only
//! decides; the [`Endpoint`](crate::Endpoint) carries the decision out. Later issues add
//! decisions (an overlay lookup, store-and-forward for MESSAGE) here, not special cases
//! elsewhere.
//!
//! [`Context`] is the response context of one forwarded request (§16.7): which branches are
//! pending, the best final response so far, and when to CANCEL.

use crate::Transport;
use crate::location::{Aor, Location, RemoteRoute, Target};
use crate::message::{MAGIC_COOKIE, Method, Request, Response, host_addr, uri_user};
use crate::reject::Reject;
use ezk_sip_types::Name;
use ezk_sip_types::header::typed::{Routing, Via};
use ezk_sip_types::host::{Host, HostPort};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Instant;

/// Request-URI parameter on requests relayed from one appliance to another.
pub const PEER_PARAM: &str = "fm";

/// Our branch prefix: RFC 3261's magic cookie, then `fm`, then the loop hash (§16.6 step 8).
pub(crate) const BRANCH_PREFIX: &str = "z9hG4bKfm";

/// What to do with a request.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Answer it ourselves with this refusal.
    Reject(Reject),
    /// REGISTER: the registrar handles it.
    Register,
    /// OPTIONS for the appliance: `200` with what we allow.
    Options,
    /// Fork to every binding of the AOR (rewriting the Request-URI to each contact) and to
    /// every other appliance that serves it.
    Fork {
        aor: Aor,
        branches: Vec<(String, Target)>,
        peers: Vec<RemoteRoute>,
    },
    /// Nobody here or in our table serves the AOR: ask the overlay before answering.
    Lookup { aor: Aor },
    /// A MESSAGE nobody can take now: store it and answer `202`.
    Store { aor: Aor },
    /// Forward to one next hop with the Request-URI unchanged (pre-routed and in-dialog).
    Relay { target: Target },
}

/// What [`route`] needs to know about us.
pub struct Us<'a> {
    /// Addresses we listen on or have seen packets arrive on.
    pub addrs: &'a HashSet<SocketAddr>,
    /// Names that mean "this appliance" (configured domains).
    pub domains: &'a [String],
    /// Whether an overlay of other appliances exists to ask.
    pub mesh: bool,
    /// Whether MESSAGEs for unreachable extensions are stored.
    pub store_messages: bool,
}

impl Us<'_> {
    /// Whether a URI host and port name this appliance.
    pub fn is_us(&self, hp: &HostPort) -> bool {
        match &hp.host {
            Host::Name(name) => self.domains.iter().any(|d| d.eq_ignore_ascii_case(name)),
            _ => host_addr(hp, 5060).is_some_and(|a| self.is_our_addr(a)),
        }
    }

    fn is_our_addr(&self, addr: SocketAddr) -> bool {
        self.addrs.contains(&addr)
            || self.addrs.iter().any(|a| {
                a.ip().is_unspecified() && a.port() == addr.port() && addr.ip().is_loopback()
            })
    }
}

/// Decides what to do with `request`, which arrived on `arrival` (`arrival.remote` is the peer).
/// `routes` are the request's Route values after our own entries were popped.
pub fn route(
    now: Instant,
    request: &Request,
    routes: &[Routing],
    arrival: Target,
    us: &Us<'_>,
    location: &Location,
) -> Decision {
    let method = &request.method;
    let for_us = uri_user(&request.uri).is_none() && us.is_us(&request.uri.host_port);

    // Sanity (§16.3): hops, loops, Proxy-Require.
    if request.max_forwards() == Some(0) && !(for_us && method.is(Method::OPTIONS)) {
        return Decision::Reject(Reject::TooManyHops);
    }
    if is_loop(request) {
        return Decision::Reject(Reject::LoopDetected);
    }
    let proxy_require: Vec<String> = option_tags(request, &Name::PROXY_REQUIRE);
    if !proxy_require.is_empty() {
        return Decision::Reject(Reject::BadExtension {
            unsupported: proxy_require,
        });
    }

    // Record-routed next hop of a dialog (§16.4, §16.12). A pre-loaded Route on a request
    // outside a dialog would make us forward to wherever the sender likes (an open relay);
    // the appliance forwards only to its own phones, and later to its known peers.
    if let Some(next) = routes.first() {
        if request.common.to.tag.is_none() {
            return Decision::Reject(Reject::NotRelaying);
        }
        return match next_hop(&next.uri.uri, arrival) {
            Some(target) => Decision::Relay { target },
            None => Decision::Reject(Reject::ForeignDomain),
        };
    }

    // In-dialog without a Route: the Request-URI is the remote target (clients that ignore
    // Record-Route, NOTES pitfall 11, end up here).
    if request.common.to.tag.is_some() && !us.is_us(&request.uri.host_port) {
        return match next_hop(&request.uri, arrival) {
            Some(target) => Decision::Relay { target },
            None => Decision::Reject(Reject::ForeignDomain),
        };
    }

    // Requests for the appliance itself.
    if method.is(Method::REGISTER) {
        return match unsupported_require(request) {
            Some(reject) => Decision::Reject(reject),
            None => Decision::Register,
        };
    }
    let Some(user) = uri_user(&request.uri) else {
        if !us.is_us(&request.uri.host_port) {
            return Decision::Reject(Reject::ForeignDomain);
        }
        if let Some(reject) = unsupported_require(request) {
            return Decision::Reject(reject);
        }
        return match method.as_str() {
            Method::OPTIONS => Decision::Options,
            m if crate::ALLOW.split(", ").any(|a| a == m) => {
                Decision::Reject(Reject::MethodNotAllowed)
            }
            _ => Decision::Reject(Reject::NotImplemented),
        };
    };

    // The location service: an AOR is the extension alone, whatever the host.
    // A request another appliance relayed to us is for our own phones only, so a stale record
    // can never bounce it back into the mesh.
    let from_peer = request.uri.uri_params.get(PEER_PARAM).is_some();
    let aor = Aor(user.to_string());
    let bindings = location.lookup(now, &aor);
    let peers: Vec<RemoteRoute> = if from_peer || !us.mesh {
        Vec::new()
    } else {
        location.remote(&aor).to_vec()
    };
    if !bindings.is_empty() || !peers.is_empty() {
        let branches = bindings
            .iter()
            .map(|b| (b.contact.clone(), b.target))
            .collect();
        return Decision::Fork {
            aor,
            branches,
            peers,
        };
    }
    let message = crate::messaging::is_message(request) && us.store_messages;
    if us.mesh && !from_peer && (message || !location.is_known(now, &aor)) {
        return Decision::Lookup { aor };
    }
    if message && !from_peer {
        return Decision::Store { aor };
    }
    if location.is_known(now, &aor) {
        Decision::Reject(Reject::Unavailable)
    } else {
        Decision::Reject(Reject::NotFound)
    }
}

/// Pops the Route entries that name us (§16.4; two of them after a double Record-Route).
pub fn pop_our_routes(request: &Request, us: &Us<'_>) -> (Vec<Routing>, bool) {
    let mut routes = request.routes();
    let before = routes.len();
    while routes
        .first()
        .is_some_and(|r| us.is_us(&r.uri.uri.host_port))
    {
        routes.remove(0);
    }
    let popped = routes.len() != before;
    (routes, popped)
}

/// The next hop for a URI we do not serve: only IP literals, because the appliance never
/// resolves foreign names (no DNS in the field, and no forwarding to domains not ours).
fn next_hop(uri: &ezk_sip_types::uri::SipUri, arrival: Target) -> Option<Target> {
    let remote = host_addr(&uri.host_port, if uri.sips { 5061 } else { 5060 })?;
    let tcp = uri
        .uri_params
        .get_val("transport")
        .is_some_and(|t| t.eq_ignore_ascii_case("tcp"));
    Some(Target {
        transport: if tcp { Transport::Tcp } else { Transport::Udp },
        local: arrival.local,
        remote,
    })
}

/// A request is looping when one of its Vias carries our branch with the same loop hash as the
/// request has now: it came back unchanged (§16.3 step 4). A spiral changes the hash.
fn is_loop(request: &Request) -> bool {
    let hash = format!("{:016x}", loop_hash(request));
    request.common.vias.iter().any(|via| {
        via.params
            .get_val("branch")
            .and_then(|b| b.strip_prefix(BRANCH_PREFIX))
            .is_some_and(|rest| rest.starts_with(&hash))
    })
}

/// FNV-1a over the fields that decide where a request goes (§16.6 step 8).
pub(crate) fn loop_hash(request: &Request) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |s: &str| {
        for b in s.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    feed(&crate::message::print_uri(&request.uri));
    feed(request.common.from.tag.as_deref().unwrap_or(""));
    feed(request.common.to.tag.as_deref().unwrap_or(""));
    feed(&request.common.call_id);
    feed(&request.common.cseq.to_string());
    for name in [Name::ROUTE, Name::PROXY_REQUIRE, Name::PROXY_AUTHORIZATION] {
        for v in request.headers.get_raw(&name) {
            feed(v);
        }
    }
    h
}

/// A fresh branch for a request we forward: magic cookie, our prefix, loop hash, randomness.
/// `hash` is [`loop_hash`] of the request as we received it, before any rewriting: the next
/// hop compares it with the request as it reaches it, and only a request that came back
/// unchanged matches (§16.6 step 8).
pub(crate) fn branch(hash: u64, random: u64) -> String {
    debug_assert!(BRANCH_PREFIX.starts_with(MAGIC_COOKIE));
    format!("{BRANCH_PREFIX}{hash:016x}.{random:016x}")
}

fn option_tags(request: &Request, name: &Name) -> Vec<String> {
    request
        .headers
        .get_raw(name)
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Require on a request the appliance serves itself: we support no extensions yet (§8.2.2.3).
fn unsupported_require(request: &Request) -> Option<Reject> {
    let tags = option_tags(request, &Name::REQUIRE);
    (!tags.is_empty()).then_some(Reject::BadExtension { unsupported: tags })
}

/// §16.6 steps 3-8 on a copy of the request going to `target`: Max-Forwards, Route clean-up,
/// Record-Route (twice when the two sides differ, RFC 5658) and our Via with a fresh branch.
/// `routes` are the Route values left after ours were popped; `loop_hash` is of the request as
/// received; `random` makes the branch unique.
pub(crate) fn prepare_forward(
    out: &mut Request,
    arrival: Target,
    target: Target,
    routes: &[Routing],
    loop_hash: u64,
    random: u64,
) {
    let branch = branch(loop_hash, random);
    let record_route =
        out.common.to.tag.is_none() && DIALOG_CREATING.contains(&out.method.as_str());
    let mf = out.max_forwards().map_or(70, |m| m.saturating_sub(1));
    out.headers.remove(&Name::MAX_FORWARDS);
    out.headers.insert(Name::MAX_FORWARDS, mf.to_string());
    out.headers.remove(&Name::ROUTE);
    for r in routes {
        out.headers.insert(Name::ROUTE, crate::message::print(r));
    }
    if record_route {
        if arrival.local != target.local || arrival.transport != target.transport {
            crate::message::prepend(
                &mut out.headers,
                Name::RECORD_ROUTE,
                record_route_value(arrival),
            );
        }
        crate::message::prepend(
            &mut out.headers,
            Name::RECORD_ROUTE,
            record_route_value(target),
        );
    }
    let via = format!(
        "SIP/2.0/{} {};branch={branch}",
        transport_name(target.transport),
        target.local
    );
    crate::message::prepend(&mut out.headers, Name::VIA, via);
    if let Some(v) = crate::message::parse_all_header::<Via>(
        out.headers
            .get_raw(&Name::VIA)
            .next()
            .map(|v| v.as_str())
            .unwrap_or(""),
    ) {
        out.common.vias.insert(0, v);
    }
}

/// The Request-URI for a request relayed to another appliance: the extension at that
/// appliance's mesh address, marked so it is delivered to local phones only.
pub(crate) fn peer_uri(user: &str, sip: SocketAddr) -> Option<ezk_sip_types::uri::SipUri> {
    crate::message::parse_all(&format!("sip:{user}@{sip};{PEER_PARAM}=peer"))
}

/// Methods whose requests can create a dialog, so we Record-Route them (RFC 3261 §12, 6665, 3515).
const DIALOG_CREATING: [&str; 4] = ["INVITE", "SUBSCRIBE", "REFER", "NOTIFY"];

fn record_route_value(side: Target) -> String {
    match side.transport {
        Transport::Udp => format!("<sip:{};lr>", side.local),
        Transport::Tcp => format!("<sip:{};transport=tcp;lr>", side.local),
    }
}

fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
    }
}

/// The CANCEL for a forwarded INVITE (§9.1): same Request-URI, Call-ID, From, To, CSeq number
/// and top Via, the same Route set, method CANCEL.
pub(crate) fn cancel_for(invite: &Request) -> Request {
    let mut cancel = invite.clone();
    cancel.method = Method::new(Method::CANCEL).expect("CANCEL is a token");
    let mut headers = ezk_sip_types::Headers::new();
    if let Some(via) = invite.headers.get_raw(&Name::VIA).next() {
        headers.insert(Name::VIA, via.clone());
    }
    for name in [Name::MAX_FORWARDS, Name::FROM, Name::TO, Name::CALL_ID] {
        for v in invite.headers.get_raw(&name) {
            headers.insert(name.clone(), v.clone());
        }
    }
    headers.insert(Name::CSEQ, format!("{} CANCEL", invite.common.cseq));
    for v in invite.headers.get_raw(&Name::ROUTE) {
        headers.insert(Name::ROUTE, v.clone());
    }
    cancel.headers = headers;
    cancel.common.cseq_method = cancel.method.clone();
    cancel.body = bytes::Bytes::new();
    cancel
}

/// Removes the top Via (ours) from a response before it goes upstream (§16.7 step 3).
pub(crate) fn pop_via(response: &mut Response) {
    if response.common.vias.is_empty() {
        return;
    }
    response.common.vias.remove(0);
    rewrite_vias(&mut response.headers, &response.common.vias);
}

/// RFC 3261 §18.2.1 and RFC 3581: note where a request really came from in its top Via, so
/// responses find their way back through NAT.
pub(crate) fn mark_received(request: &mut Request, remote: SocketAddr) {
    let Some(top) = request.common.vias.first_mut() else {
        return;
    };
    let mut changed = false;
    if top.sent_by.ip() != Some(remote.ip()) {
        top.params.push_or_edit("received", remote.ip().to_string());
        changed = true;
    }
    if top.params.get("rport").is_some_and(|p| p.value.is_none()) {
        top.params.push_or_edit("rport", remote.port().to_string());
        top.params.push_or_edit("received", remote.ip().to_string());
        changed = true;
    }
    if changed {
        let vias = request.common.vias.clone();
        rewrite_vias(&mut request.headers, &vias);
    }
}

fn rewrite_vias(headers: &mut ezk_sip_types::Headers, vias: &[Via]) {
    crate::message::replace_all(headers, Name::VIA, vias.iter().map(crate::message::print));
}

/// Where a response goes back to, from the Via below ours (received and rport honoured).
pub(crate) fn upstream_target(via: &Via, local: Option<SocketAddr>) -> Option<Target> {
    let ip = match via.params.get_val("received") {
        Some(r) => r.parse().ok()?,
        None => via.sent_by.ip()?,
    };
    let port = via
        .params
        .get_val("rport")
        .and_then(|p| p.parse().ok())
        .or(via.sent_by.port)
        .unwrap_or(5060);
    let transport = if via.transport.eq_ignore_ascii_case("TCP") {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let local = local.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    Some(Target {
        transport,
        local,
        remote: SocketAddr::new(ip, port),
    })
}

/// The top Via's branch.
pub(crate) fn request_branch(request: &Request) -> &str {
    request
        .top_via()
        .params
        .get_val("branch")
        .map(|b| b.as_str())
        .unwrap_or("")
}

/// FNV-1a of a string: stable across runs, for branches that must repeat (ACK for 2xx).
pub(crate) fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// One branch of a forwarded request.
#[derive(Debug, Clone)]
pub(crate) struct Branch {
    pub(crate) client: u64,
    pub(crate) provisional: bool,
    pub(crate) done: bool,
    /// CANCEL wanted, but no provisional yet (§9.1: wait for one).
    pub(crate) cancel_pending: bool,
    pub(crate) cancel_sent: bool,
}

/// The response context of one stateful forward (§16.7).
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) invite: bool,
    pub(crate) branches: Vec<Branch>,
    best: Option<Response>,
    pub(crate) final_sent: bool,
    pub(crate) cancelled: bool,
}

/// What the endpoint must do after a branch event.
#[derive(Debug, Default)]
pub(crate) struct ContextStep {
    /// Send this response upstream (Via already popped).
    pub(crate) upstream: Option<Response>,
    /// CANCEL these branches now (indexes).
    pub(crate) cancel: Vec<usize>,
}

impl Context {
    pub(crate) fn new(invite: bool) -> Self {
        Context {
            invite,
            branches: Vec::new(),
            best: None,
            final_sent: false,
            cancelled: false,
        }
    }

    /// A response arrived on branch `index`.
    pub(crate) fn handle_response(&mut self, index: usize, response: Response) -> ContextStep {
        let mut step = ContextStep::default();
        let code = response.code;
        let Some(branch) = self.branches.get_mut(index) else {
            return step;
        };
        match code {
            100 => {}
            101..=199 => {
                branch.provisional = true;
                if branch.cancel_pending && !branch.cancel_sent {
                    step.cancel.push(index);
                } else if !self.final_sent {
                    step.upstream = Some(response);
                }
            }
            200..=299 => {
                branch.done = true;
                // Every 2xx goes upstream, even after another one (§16.7 step 5).
                step.upstream = Some(response);
                if !self.final_sent && self.invite {
                    step.cancel = self.pending_indexes();
                }
                self.final_sent = true;
            }
            _ => {
                branch.done = true;
                if !self.final_sent {
                    if code >= 600 && self.invite {
                        step.cancel = self.pending_indexes();
                    }
                    if self.best.as_ref().is_none_or(|b| better(code, b.code)) {
                        self.best = Some(response);
                    }
                }
            }
        }
        if !self.final_sent && self.branches.iter().all(|b| b.done) {
            step.upstream = self.best.take().map(|mut r| {
                if r.code == 503 {
                    // §16.7 step 6: a 503 downstream must not make upstream retry elsewhere.
                    r.code = 500;
                    r.reason = "Server Internal Error".into();
                }
                r
            });
            self.final_sent = step.upstream.is_some();
        }
        step
    }

    /// Branch `index` never answered (Timer B/F): it counts as a 408 (§16.7 step 2... §16.8).
    pub(crate) fn handle_timeout(&mut self, index: usize, synthetic_408: Response) -> ContextStep {
        self.handle_response(index, synthetic_408)
    }

    /// The no-answer time passed: the best final so far (§16.7 treats the silent branches as
    /// 408, which any received final beats), if there is one.
    pub(crate) fn take_best(&mut self) -> Option<Response> {
        self.best.take()
    }

    /// CANCEL from upstream or the no-answer timer: cancel every pending branch.
    pub(crate) fn cancel_all(&mut self) -> Vec<usize> {
        self.cancelled = true;
        self.pending_indexes()
    }

    fn pending_indexes(&mut self) -> Vec<usize> {
        let mut now = Vec::new();
        for (i, b) in self.branches.iter_mut().enumerate() {
            if b.done || b.cancel_sent {
                continue;
            }
            if b.provisional {
                now.push(i);
            } else {
                b.cancel_pending = true;
            }
        }
        now
    }
}

/// §16.7 step 6: 6xx beats everything, else the lowest class wins.
fn better(new: u16, old: u16) -> bool {
    match (new / 100, old / 100) {
        (6, 6) => false,
        (6, _) => true,
        (_, 6) => false,
        (n, o) => n < o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_hundreds_win_then_the_lowest_class() {
        assert!(better(603, 486));
        assert!(!better(486, 603));
        assert!(better(302, 486));
        assert!(better(404, 503));
        assert!(!better(486, 404));
    }
}
