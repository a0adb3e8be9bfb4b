//! The little dialog state a proxy keeps for calls whose media it anchors (RFC 3261 §12), so
//! it can end them itself: when the relay hears nothing for the media timeout, both phones
//! get a BYE, as if the other side had hung up. A proxy is not a party to the dialog; it
//! borrows each side's identity (tags, Contact, route set) from the INVITE and its 2xx.

use crate::location::Target;
use crate::message::{self, ContactList, Message, Request, Response};
use crate::proxy::BRANCH_PREFIX;
use crate::{Transport, message::host_addr};
use ezk_sip_types::Name;
use ezk_sip_types::header::typed::Routing;
use std::net::SocketAddr;

/// One side of an anchored call, seen from us: where a BYE to it goes and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Side {
    /// The first hop (the next proxy in the route set, or the phone itself).
    pub(crate) target: Target,
    /// Request-URI: the side's Contact.
    pub(crate) uri: String,
    /// Route headers, in order.
    pub(crate) route: Vec<String>,
    /// From and To of a request sent to this side (the other side's identity in From).
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) cseq: u32,
}

impl Side {
    /// The caller of a call the appliance answered itself (it came straight from the phone,
    /// so there is no route set), seen from us with our To tag `tag`.
    pub(crate) fn caller_of(invite: &Request, from_phone: Target, tag: &str) -> Option<Side> {
        let uri = first_contact(invite.contacts().ok()?)?;
        let to = invite.header(&Name::TO).next()?;
        Some(Side {
            target: from_phone,
            uri,
            route: Vec::new(),
            from: format!("{to};tag={tag}"),
            to: invite.header(&Name::FROM).next()?.to_string(),
            cseq: CSEQ_JUMP,
        })
    }
}

/// A call whose media crosses this appliance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AnchoredCall {
    pub(crate) call_id: String,
    pub(crate) caller: Side,
    pub(crate) callee: Side,
}

/// CSeq numbers we use in each side's space: far above what a phone uses in one call, so the
/// BYE is never "out of order" (§12.2.2).
const CSEQ_JUMP: u32 = 100_000;

impl AnchoredCall {
    /// Reads both sides from the INVITE as it reached us (`invite`, from `upstream`) and the 2xx
    /// that answered it (`ok`, from `downstream`). `ours` tells our Record-Route entries.
    pub(crate) fn capture(
        invite: &Request,
        upstream: Target,
        ok: &Response,
        downstream: Target,
        ours: impl Fn(SocketAddr) -> bool,
    ) -> Option<AnchoredCall> {
        let record_route: Vec<Routing> =
            message::decode_list(&ok.headers, &Name::RECORD_ROUTE).ok()?;
        let is_ours = |r: &Routing| host_addr(&r.uri.uri.host_port, 5060).is_some_and(&ours);
        let first_ours = record_route.iter().position(is_ours)?;
        let last_ours = record_route.iter().rposition(is_ours)?;
        // Record-Route lists the callee's side first: what precedes our entries is towards
        // the callee (used in reverse), what follows is towards the caller.
        let towards_callee: Vec<&Routing> = record_route[..first_ours].iter().rev().collect();
        let towards_caller: Vec<&Routing> = record_route[last_ours + 1..].iter().collect();
        let caller_uri = first_contact(invite.contacts().ok()?)?;
        let callee_uri = first_contact(ok.contacts().ok()?)?;
        let invite_from = invite.header(&Name::FROM).next()?.to_string();
        let ok_to = ok.headers.get_raw(&Name::TO).next()?.to_string();
        let first_hop = |route: &[&Routing], fallback: Target| match route.first() {
            Some(r) => {
                host_addr(&r.uri.uri.host_port, 5060).map(|remote| Target { remote, ..fallback })
            }
            None => Some(fallback),
        };
        Some(AnchoredCall {
            call_id: invite.common.call_id.to_string(),
            caller: Side {
                target: first_hop(&towards_caller, upstream)?,
                uri: caller_uri,
                route: towards_caller.iter().map(|r| message::print(*r)).collect(),
                from: ok_to.clone(),
                to: invite_from.clone(),
                cseq: CSEQ_JUMP,
            },
            callee: Side {
                target: first_hop(&towards_callee, downstream)?,
                uri: callee_uri,
                route: towards_callee.iter().map(|r| message::print(*r)).collect(),
                from: invite_from,
                to: ok_to,
                cseq: invite.common.cseq.saturating_add(CSEQ_JUMP),
            },
        })
    }

    /// The BYE for one side, leaving from `target.local`, with Via branch `random`.
    pub(crate) fn bye(&self, side: &Side, random: u64, reason: &str) -> Option<Request> {
        let transport = match side.target.transport {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        };
        let route: String = side
            .route
            .iter()
            .map(|r| format!("Route: {r}\r\n"))
            .collect();
        let text = format!(
            "BYE {uri} SIP/2.0\r\nVia: SIP/2.0/{transport} {local};branch={BRANCH_PREFIX}bye.{random:016x}\r\n\
             Max-Forwards: 70\r\n{route}From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} BYE\r\nReason: {reason}\r\nContent-Length: 0\r\n\r\n",
            uri = side.uri,
            local = side.target.local,
            from = side.from,
            to = side.to,
            call_id = self.call_id,
            cseq = side.cseq,
        );
        match message::parse(text.as_bytes(), false) {
            Ok(Message::Request(r)) => Some(r),
            _ => None,
        }
    }
}

fn first_contact(list: ContactList) -> Option<String> {
    match list {
        ContactList::Addresses(list) => list.first().map(|c| message::print(&c.uri.uri)),
        ContactList::Star => None,
    }
}
