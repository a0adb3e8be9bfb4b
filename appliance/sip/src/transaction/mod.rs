//! The four RFC 3261 §17 transaction machines, one file per figure, plus RFC 6026's Accepted
//! state. Each machine is a value: it is fed inputs with `now`, arms timers in its own
//! [`TimerTable`], and answers with a [`Step`]: bytes to (re)send, something for the
//! transaction user (the proxy), and whether it has ended. Nothing here reads a clock or owns a
//! socket; the [`Endpoint`](crate::Endpoint) keeps the table of live transactions.

pub(crate) mod client;
pub(crate) mod client_invite;
pub(crate) mod server;
pub(crate) mod server_invite;
pub mod timer;

use crate::message::{MAGIC_COOKIE, Request, Response};
use bytes::Bytes;
pub(crate) use timer::TimerTable;
pub use timer::{Intervals, Timer};

/// What a machine asks for after one input.
#[derive(Debug, Default)]
pub(crate) struct Step {
    /// Bytes to send to the transaction's peer (a retransmission, an ACK, a response).
    pub(crate) send: Option<Bytes>,
    /// Something the transaction user must act on.
    pub(crate) tu: Option<TuEvent>,
    /// The machine reached Terminated: forget it.
    pub(crate) terminated: bool,
}

impl Step {
    pub(crate) fn send(bytes: Bytes) -> Step {
        Step {
            send: Some(bytes),
            ..Step::default()
        }
    }

    pub(crate) fn tu(event: TuEvent) -> Step {
        Step {
            tu: Some(event),
            ..Step::default()
        }
    }

    pub(crate) fn terminated() -> Step {
        Step {
            terminated: true,
            ..Step::default()
        }
    }
}

/// Events a client transaction passes up to the proxy.
#[derive(Debug)]
pub(crate) enum TuEvent {
    /// A response (provisional or final) to pass upstream.
    Response(Box<Response>),
    /// Timer B or F fired: the next hop never answered (RFC 3261 §17.1.1.2, §17.1.2.2).
    Timeout,
    /// A server INVITE transaction's Timer H fired: the ACK never came (§17.2.1).
    NoAck,
}

/// The key that matches a request to its server transaction (RFC 3261 §17.2.3): the top Via's
/// branch and sent-by, and the method (ACK and CANCEL matched separately by the caller).
pub(crate) fn server_key(request: &Request, method: &str) -> String {
    let via = request.top_via();
    let branch = via
        .params
        .get_val("branch")
        .map(|b| b.as_str())
        .unwrap_or("");
    let sent_by = crate::message::print(&via.sent_by);
    if branch.starts_with(MAGIC_COOKIE) {
        format!("{branch}|{sent_by}|{method}")
    } else {
        // RFC 2543 peers: no unique branch, so match on the dialog and CSeq (§17.2.3's fallback).
        format!(
            "2543|{}|{}|{}|{}|{sent_by}|{method}",
            request.common.call_id,
            request.common.from.tag.as_deref().unwrap_or(""),
            request.common.cseq,
            branch
        )
    }
}

/// The key that matches a response to its client transaction (§17.1.3): our branch and the
/// CSeq method.
pub(crate) fn client_key(branch: &str, method: &str) -> String {
    format!("{branch}|{method}")
}
