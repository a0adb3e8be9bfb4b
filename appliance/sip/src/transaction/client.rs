//! RFC 3261 §17.1.2, Figure 6: the non-INVITE client transaction.
//!
//! Trying (Timer E retransmits over UDP, doubling up to T2; Timer F gives up) → 1xx →
//! Proceeding (Timer E at T2) → final → Completed (Timer K absorbs retransmissions) → Terminated.

use super::{Intervals, Step, Timer, TimerTable, TuEvent};
use crate::message::{Request, Response};
use bytes::Bytes;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

#[derive(Debug)]
pub(crate) struct ClientTransaction {
    pub(crate) state: State,
    pub(crate) timers: TimerTable,
    pub(crate) request: Request,
    bytes: Bytes,
    /// Current Timer E interval.
    e: Duration,
    reliable: bool,
    intervals: Intervals,
}

impl ClientTransaction {
    /// Starts the transaction; the returned step sends the request.
    pub(crate) fn new(
        now: Instant,
        request: Request,
        reliable: bool,
        intervals: Intervals,
    ) -> (Self, Step) {
        let bytes = request.encode();
        let mut timers = TimerTable::default();
        if !reliable {
            timers.set(Timer::E, now + intervals.t1);
        }
        timers.set(Timer::F, now + 64 * intervals.t1);
        let tx = ClientTransaction {
            state: State::Trying,
            timers,
            request,
            bytes: bytes.clone(),
            e: intervals.t1,
            reliable,
            intervals,
        };
        (tx, Step::send(bytes))
    }

    pub(crate) fn handle_response(&mut self, now: Instant, response: Response) -> Step {
        match (self.state, response.code) {
            (State::Trying | State::Proceeding, 100..=199) => {
                self.state = State::Proceeding;
                Step::tu(TuEvent::Response(Box::new(response)))
            }
            (State::Trying | State::Proceeding, _) => {
                self.timers.stop_all();
                if self.reliable {
                    self.state = State::Terminated;
                    return Step {
                        tu: Some(TuEvent::Response(Box::new(response))),
                        terminated: true,
                        ..Step::default()
                    };
                }
                self.state = State::Completed;
                self.timers.set(Timer::K, now + self.intervals.t4);
                Step::tu(TuEvent::Response(Box::new(response)))
            }
            _ => Step::default(),
        }
    }

    pub(crate) fn handle_timer(&mut self, now: Instant, timer: Timer) -> Step {
        match (self.state, timer) {
            (State::Trying | State::Proceeding, Timer::E) => {
                self.e = if self.state == State::Trying {
                    (self.e * 2).min(self.intervals.t2)
                } else {
                    self.intervals.t2
                };
                self.timers.set(Timer::E, now + self.e);
                Step::send(self.bytes.clone())
            }
            (State::Trying | State::Proceeding, Timer::F) => {
                self.state = State::Terminated;
                self.timers.stop_all();
                Step {
                    tu: Some(TuEvent::Timeout),
                    terminated: true,
                    ..Step::default()
                }
            }
            (State::Completed, Timer::K) => {
                self.state = State::Terminated;
                self.timers.stop_all();
                Step::terminated()
            }
            _ => Step::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Message, parse};

    fn request() -> Request {
        let text = "MESSAGE sip:bob@127.0.0.1:5080 SIP/2.0\r\n\
            Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKfm2\r\n\
            From: <sip:alice@x>;tag=a\r\nTo: <sip:bob@x>\r\nCall-ID: m1\r\nCSeq: 1 MESSAGE\r\n\
            Content-Length: 2\r\n\r\nhi";
        match parse(text.as_bytes(), false) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[allow(clippy::disallowed_methods)] // the test's one starting instant
    fn start() -> Instant {
        Instant::now()
    }

    #[test]
    fn timer_e_doubles_up_to_t2_then_timer_f_times_out() {
        let t0 = start();
        let iv = Intervals::default();
        let (mut tx, _) = ClientTransaction::new(t0, request(), false, iv);
        let mut now = t0;
        let mut sends = 0;
        let mut intervals = Vec::new();
        while let Some(at) = tx.timers.get(Timer::E).filter(|at| *at < t0 + 64 * iv.t1) {
            intervals.push(at - now);
            now = at;
            sends += usize::from(tx.handle_timer(now, Timer::E).send.is_some());
        }
        assert_eq!(
            &intervals[..5],
            &[iv.t1, iv.t1 * 2, iv.t1 * 4, iv.t2, iv.t2]
        );
        assert_eq!(
            sends, 10,
            "0.5+1+2+4+4·7 s covers 32 s with 10 retransmissions + 1 pending"
        );
        let step = tx.handle_timer(t0 + 64 * iv.t1, Timer::F);
        assert!(matches!(step.tu, Some(TuEvent::Timeout)) && step.terminated);
    }
}
