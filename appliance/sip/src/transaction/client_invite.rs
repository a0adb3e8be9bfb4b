//! RFC 3261 §17.1.1, Figure 5, with RFC 6026's Accepted state: the INVITE client transaction.
//!
//! Calling (Timer A retransmits over UDP, Timer B gives up) → 1xx → Proceeding;
//! 3xx-6xx → Completed (the transaction sends the ACK itself, Timer D absorbs retransmissions);
//! 2xx → Accepted (Timer M): every 2xx, from any fork downstream, goes to the TU.

use super::{Intervals, Step, Timer, TimerTable, TuEvent};
use crate::message::{Request, Response};
use bytes::Bytes;
use ezk_sip_types::Name;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Calling,
    Proceeding,
    Completed,
    Accepted,
    Terminated,
}

#[derive(Debug)]
pub(crate) struct ClientInviteTransaction {
    pub(crate) state: State,
    pub(crate) timers: TimerTable,
    /// The INVITE as sent: retransmitted on Timer A, and the model for ACK and CANCEL.
    pub(crate) request: Request,
    bytes: Bytes,
    ack: Option<Bytes>,
    /// Current Timer A interval (doubles, no cap: Timer B ends it).
    a: Duration,
    reliable: bool,
}

impl ClientInviteTransaction {
    /// Starts the transaction; the returned step sends the INVITE.
    pub(crate) fn new(
        now: Instant,
        request: Request,
        reliable: bool,
        intervals: Intervals,
    ) -> (Self, Step) {
        let bytes = request.encode();
        let mut timers = TimerTable::default();
        if !reliable {
            timers.set(Timer::A, now + intervals.t1);
        }
        timers.set(Timer::B, now + 64 * intervals.t1);
        let tx = ClientInviteTransaction {
            state: State::Calling,
            timers,
            request,
            bytes: bytes.clone(),
            ack: None,
            a: intervals.t1,
            reliable,
        };
        (tx, Step::send(bytes))
    }

    pub(crate) fn handle_response(
        &mut self,
        now: Instant,
        response: Response,
        intervals: Intervals,
    ) -> Step {
        let code = response.code;
        match (self.state, code) {
            (State::Calling | State::Proceeding, 100..=199) => {
                self.state = State::Proceeding;
                self.timers.stop(Timer::A);
                // Timer B stays armed in Proceeding only as the proxy's safety net: RFC 3261
                // lets a proceeding INVITE wait forever, and the proxy's no-answer timer decides.
                self.timers.stop(Timer::B);
                Step::tu(TuEvent::Response(Box::new(response)))
            }
            (State::Calling | State::Proceeding, 200..=299) => {
                self.state = State::Accepted;
                self.timers.stop_all();
                self.timers.set(Timer::M, now + 64 * intervals.t1);
                Step::tu(TuEvent::Response(Box::new(response)))
            }
            (State::Accepted, 200..=299) => Step::tu(TuEvent::Response(Box::new(response))),
            (State::Calling | State::Proceeding, _) => {
                self.state = State::Completed;
                self.timers.stop_all();
                let ack = ack_for(&self.request, &response);
                self.ack = Some(ack.clone());
                if self.reliable {
                    self.state = State::Terminated;
                    return Step {
                        send: Some(ack),
                        tu: Some(TuEvent::Response(Box::new(response))),
                        terminated: true,
                    };
                }
                self.timers.set(
                    Timer::D,
                    now + Duration::from_secs(32).max(intervals.t1 * 64 / 2),
                );
                Step {
                    send: Some(ack),
                    tu: Some(TuEvent::Response(Box::new(response))),
                    terminated: false,
                }
            }
            (State::Completed, 300..) => self.ack.clone().map(Step::send).unwrap_or_default(),
            _ => Step::default(),
        }
    }

    pub(crate) fn handle_timer(&mut self, now: Instant, timer: Timer) -> Step {
        match (self.state, timer) {
            (State::Calling, Timer::A) => {
                self.a *= 2;
                self.timers.set(Timer::A, now + self.a);
                Step::send(self.bytes.clone())
            }
            (State::Calling | State::Proceeding, Timer::B) => {
                self.state = State::Terminated;
                self.timers.stop_all();
                Step {
                    tu: Some(TuEvent::Timeout),
                    terminated: true,
                    ..Step::default()
                }
            }
            (State::Completed, Timer::D) | (State::Accepted, Timer::M) => {
                self.state = State::Terminated;
                self.timers.stop_all();
                Step::terminated()
            }
            _ => Step::default(),
        }
    }
}

/// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3): same Request-URI, Call-ID, From,
/// CSeq number and top Via as the INVITE, the To of the response, and the INVITE's Route set.
pub(crate) fn ack_for(invite: &Request, response: &Response) -> Bytes {
    let mut ack = invite.clone();
    ack.method = crate::message::Method::new("ACK").expect("ACK is a token");
    let mut headers = ezk_sip_types::Headers::new();
    if let Some(via) = invite.headers.get_raw(&Name::VIA).next() {
        headers.insert(Name::VIA, via.clone());
    }
    for name in [Name::MAX_FORWARDS, Name::FROM] {
        for v in invite.headers.get_raw(&name) {
            headers.insert(name.clone(), v.clone());
        }
    }
    for v in response.headers.get_raw(&Name::TO) {
        headers.insert(Name::TO, v.clone());
    }
    headers.insert(Name::CALL_ID, invite.common.call_id.clone());
    headers.insert(Name::CSEQ, format!("{} ACK", invite.common.cseq));
    for v in invite.headers.get_raw(&Name::ROUTE) {
        headers.insert(Name::ROUTE, v.clone());
    }
    ack.headers = headers;
    ack.body = Bytes::new();
    ack.encode()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Message, parse};

    const INVITE: &str = "INVITE sip:bob@127.0.0.1:5080 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKfm1\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKa\r\n\
        From: <sip:alice@x>;tag=a\r\nTo: <sip:bob@x>\r\nCall-ID: c1\r\nCSeq: 7 INVITE\r\n\
        Content-Length: 0\r\n\r\n";

    fn invite() -> Request {
        match parse(INVITE.as_bytes(), false) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn response(code: u16) -> Response {
        let text = format!(
            "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKfm1\r\n\
             From: <sip:alice@x>;tag=a\r\nTo: <sip:bob@x>;tag=b\r\nCall-ID: c1\r\nCSeq: 7 INVITE\r\n\
             Content-Length: 0\r\n\r\n"
        );
        match parse(text.as_bytes(), false) {
            Ok(Message::Response(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[allow(clippy::disallowed_methods)] // the test's one starting instant
    fn start() -> Instant {
        Instant::now()
    }

    #[test]
    fn timer_a_doubles_until_a_provisional_then_timer_b_is_off() {
        let t0 = start();
        let iv = Intervals::default();
        let (mut tx, first) = ClientInviteTransaction::new(t0, invite(), false, iv);
        assert!(first.send.is_some());
        let resend = tx.handle_timer(t0 + iv.t1, Timer::A);
        assert!(resend.send.is_some());
        assert_eq!(tx.timers.get(Timer::A), Some(t0 + iv.t1 + 2 * iv.t1));
        tx.handle_response(t0 + iv.t1 * 2, response(180), iv);
        assert_eq!(tx.state, State::Proceeding);
        assert_eq!(tx.timers.armed().count(), 0);
    }

    #[test]
    fn a_486_is_acked_by_the_transaction_with_the_response_to_tag() {
        let t0 = start();
        let iv = Intervals::default();
        let (mut tx, _) = ClientInviteTransaction::new(t0, invite(), false, iv);
        let step = tx.handle_response(t0, response(486), iv);
        let ack = String::from_utf8(step.send.expect("ack").to_vec()).expect("utf8");
        assert!(
            ack.starts_with("ACK sip:bob@127.0.0.1:5080 SIP/2.0\r\n"),
            "{ack}"
        );
        assert!(
            ack.contains("CSeq: 7 ACK") && ack.contains(";tag=b") && ack.contains("z9hG4bKfm1")
        );
        assert!(!ack.contains("z9hG4bKa"), "only the top Via: {ack}");
        // A retransmitted 486 gets the same ACK again.
        assert!(tx.handle_response(t0, response(486), iv).send.is_some());
    }

    #[test]
    fn timer_b_reports_a_timeout() {
        let t0 = start();
        let iv = Intervals::default();
        let (mut tx, _) = ClientInviteTransaction::new(t0, invite(), false, iv);
        let step = tx.handle_timer(t0 + 64 * iv.t1, Timer::B);
        assert!(matches!(step.tu, Some(TuEvent::Timeout)) && step.terminated);
    }
}
