//! RFC 3261 §17.2.1, Figure 7, with RFC 6026's Accepted state: the INVITE server transaction.
//!
//! Proceeding → (3xx-6xx from TU) Completed → ACK → Confirmed → Timer I → Terminated, and
//! Proceeding → (2xx from TU) Accepted → Timer L → Terminated. In Accepted, retransmitted
//! INVITEs are absorbed and every further 2xx from the TU is still sent (RFC 6026 §7.1), which a
//! forking proxy needs when several branches answer.

use super::{Intervals, Step, Timer, TimerTable, TuEvent};
use bytes::Bytes;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
    Terminated,
}

#[derive(Debug)]
pub(crate) struct ServerInviteTransaction {
    pub(crate) state: State,
    pub(crate) timers: TimerTable,
    last_response: Option<Bytes>,
    /// Current Timer G interval (doubles up to T2).
    g: Duration,
    reliable: bool,
    intervals: Intervals,
}

impl ServerInviteTransaction {
    pub(crate) fn new(reliable: bool, intervals: Intervals) -> Self {
        ServerInviteTransaction {
            state: State::Proceeding,
            timers: TimerTable::default(),
            last_response: None,
            g: intervals.t1,
            reliable,
            intervals,
        }
    }

    /// The INVITE arrived again.
    pub(crate) fn handle_retransmission(&mut self) -> Step {
        match self.state {
            State::Proceeding | State::Completed => self
                .last_response
                .clone()
                .map(Step::send)
                .unwrap_or_default(),
            State::Confirmed | State::Accepted | State::Terminated => Step::default(),
        }
    }

    /// An ACK with this transaction's branch: the one for a non-2xx final response.
    pub(crate) fn handle_ack(&mut self, now: Instant) -> Step {
        if self.state != State::Completed {
            return Step::default();
        }
        self.timers.stop(Timer::G);
        self.timers.stop(Timer::H);
        if self.reliable {
            self.state = State::Terminated;
            return Step::terminated();
        }
        self.state = State::Confirmed;
        self.timers.set(Timer::I, now + self.intervals.t4);
        Step::default()
    }

    /// The transaction user answers with `code`.
    pub(crate) fn handle_response(&mut self, now: Instant, code: u16, bytes: Bytes) -> Step {
        match (self.state, code) {
            (State::Proceeding, 100..=199) => {
                self.last_response = Some(bytes.clone());
                Step::send(bytes)
            }
            (State::Proceeding | State::Accepted, 200..=299) => {
                if self.state == State::Proceeding {
                    self.state = State::Accepted;
                    self.timers.set(Timer::L, now + 64 * self.intervals.t1);
                }
                // 2xx retransmissions belong to the UAS core, end to end (§13.3.1.4), not to us.
                self.last_response = None;
                Step::send(bytes)
            }
            (State::Proceeding, _) => {
                self.state = State::Completed;
                self.last_response = Some(bytes.clone());
                if !self.reliable {
                    self.timers.set(Timer::G, now + self.g);
                }
                self.timers.set(Timer::H, now + 64 * self.intervals.t1);
                Step::send(bytes)
            }
            _ => Step::default(),
        }
    }

    pub(crate) fn handle_timer(&mut self, now: Instant, timer: Timer) -> Step {
        match (self.state, timer) {
            (State::Completed, Timer::G) => {
                self.g = (self.g * 2).min(self.intervals.t2);
                self.timers.set(Timer::G, now + self.g);
                self.last_response
                    .clone()
                    .map(Step::send)
                    .unwrap_or_default()
            }
            (State::Completed, Timer::H) => {
                self.state = State::Terminated;
                self.timers.stop_all();
                Step {
                    tu: Some(TuEvent::NoAck),
                    terminated: true,
                    ..Step::default()
                }
            }
            (State::Confirmed, Timer::I) | (State::Accepted, Timer::L) => {
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

    #[allow(clippy::disallowed_methods)] // the test's one starting instant
    fn start() -> Instant {
        Instant::now()
    }

    #[test]
    fn a_non_2xx_final_is_retransmitted_on_timer_g_until_the_ack() {
        let t0 = start();
        let iv = Intervals::default();
        let mut tx = ServerInviteTransaction::new(false, iv);
        let busy = Bytes::from_static(b"SIP/2.0 486 Busy Here\r\n\r\n");
        tx.handle_response(t0, 486, busy.clone());
        assert_eq!(tx.timers.get(Timer::G), Some(t0 + iv.t1));
        assert_eq!(
            tx.handle_timer(t0 + iv.t1, Timer::G).send,
            Some(busy.clone())
        );
        assert_eq!(tx.timers.get(Timer::G), Some(t0 + iv.t1 + 2 * iv.t1));
        assert_eq!(tx.handle_retransmission().send, Some(busy));
        tx.handle_ack(t0 + iv.t1 * 2);
        assert_eq!(tx.state, State::Confirmed);
        assert!(tx.timers.get(Timer::G).is_none());
        assert!(tx.handle_timer(t0 + iv.t4 * 2, Timer::I).terminated);
    }

    #[test]
    fn no_ack_within_timer_h_tells_the_tu() {
        let t0 = start();
        let mut tx = ServerInviteTransaction::new(false, Intervals::default());
        tx.handle_response(t0, 480, Bytes::from_static(b"x"));
        let step = tx.handle_timer(t0 + std::time::Duration::from_secs(32), Timer::H);
        assert!(matches!(step.tu, Some(TuEvent::NoAck)) && step.terminated);
    }

    #[test]
    fn accepted_passes_every_2xx_and_absorbs_retransmitted_invites() {
        let t0 = start();
        let mut tx = ServerInviteTransaction::new(false, Intervals::default());
        let ok1 = Bytes::from_static(b"200 one");
        let ok2 = Bytes::from_static(b"200 two");
        assert_eq!(
            tx.handle_response(t0, 200, ok1).send.as_deref(),
            Some(&b"200 one"[..])
        );
        assert_eq!(tx.state, State::Accepted);
        assert_eq!(
            tx.handle_response(t0, 200, ok2).send.as_deref(),
            Some(&b"200 two"[..])
        );
        assert!(tx.handle_retransmission().send.is_none());
        assert!(
            tx.handle_response(t0, 486, Bytes::from_static(b"late"))
                .send
                .is_none()
        );
        assert!(
            tx.handle_timer(t0 + std::time::Duration::from_secs(32), Timer::L)
                .terminated
        );
    }
}
