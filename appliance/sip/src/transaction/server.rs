//! RFC 3261 §17.2.2, Figure 8: the non-INVITE server transaction.
//!
//! Trying → (1xx from TU) Proceeding → (final from TU) Completed → Timer J → Terminated.
//! Retransmitted requests are absorbed in Trying and answered with the last response after.

use super::{Intervals, Step, Timer, TimerTable};
use bytes::Bytes;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

#[derive(Debug)]
pub(crate) struct ServerTransaction {
    pub(crate) state: State,
    pub(crate) timers: TimerTable,
    last_response: Option<Bytes>,
    reliable: bool,
    intervals: Intervals,
}

impl ServerTransaction {
    pub(crate) fn new(reliable: bool, intervals: Intervals) -> Self {
        ServerTransaction {
            state: State::Trying,
            timers: TimerTable::default(),
            last_response: None,
            reliable,
            intervals,
        }
    }

    /// The same request arrived again.
    pub(crate) fn handle_retransmission(&mut self) -> Step {
        match self.state {
            State::Trying | State::Terminated => Step::default(),
            State::Proceeding | State::Completed => self
                .last_response
                .clone()
                .map(Step::send)
                .unwrap_or_default(),
        }
    }

    /// The transaction user answers with `code`; returns what to send.
    pub(crate) fn handle_response(&mut self, now: Instant, code: u16, bytes: Bytes) -> Step {
        match (self.state, code) {
            (State::Trying | State::Proceeding, 100..=199) => {
                self.state = State::Proceeding;
                self.last_response = Some(bytes.clone());
                Step::send(bytes)
            }
            (State::Trying | State::Proceeding, _) => {
                self.last_response = Some(bytes.clone());
                if self.reliable {
                    self.state = State::Terminated;
                    Step {
                        send: Some(bytes),
                        terminated: true,
                        ..Step::default()
                    }
                } else {
                    self.state = State::Completed;
                    self.timers.set(Timer::J, now + 64 * self.intervals.t1);
                    Step::send(bytes)
                }
            }
            // A TU response after the final one is a bug upstream; RFC 3261 says nothing goes.
            (State::Completed | State::Terminated, _) => Step::default(),
        }
    }

    pub(crate) fn handle_timer(&mut self, timer: Timer) -> Step {
        match (self.state, timer) {
            (State::Completed, Timer::J) => {
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
    use std::time::Duration;

    #[allow(clippy::disallowed_methods)] // the test's one starting instant
    fn start() -> Instant {
        Instant::now()
    }

    #[test]
    fn retransmissions_get_the_last_response_until_timer_j() {
        let now = start();
        let mut tx = ServerTransaction::new(false, Intervals::default());
        assert!(
            tx.handle_retransmission().send.is_none(),
            "nothing to resend while Trying"
        );
        let ok = Bytes::from_static(b"SIP/2.0 200 OK\r\n\r\n");
        assert_eq!(
            tx.handle_response(now, 200, ok.clone()).send,
            Some(ok.clone())
        );
        assert_eq!(tx.state, State::Completed);
        assert_eq!(tx.handle_retransmission().send, Some(ok));
        assert_eq!(tx.timers.get(Timer::J), Some(now + Duration::from_secs(32)));
        assert!(tx.handle_timer(Timer::J).terminated);
    }

    #[test]
    fn over_tcp_a_final_response_ends_the_transaction_at_once() {
        let mut tx = ServerTransaction::new(true, Intervals::default());
        let step = tx.handle_response(start(), 404, Bytes::from_static(b"x"));
        assert!(step.terminated && step.send.is_some());
    }
}
