//! The RFC 3261 transaction timers (Appendix A, Table 4) and RFC 6026's L and M, as one enum and
//! a small table of deadlines per transaction (the shape of quinn-proto's `connection/timer.rs`).

use std::time::{Duration, Instant};

/// A named transaction timer. Defaults assume T1 = 500 ms, T2 = 4 s, T4 = 5 s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// INVITE request retransmit interval over UDP; starts at T1 and doubles.
    A,
    /// INVITE client transaction timeout, 64·T1.
    B,
    /// Wait time for response retransmits after a non-2xx final, 32 s over UDP, 0 over TCP.
    D,
    /// Non-INVITE request retransmit interval over UDP; T1 doubling up to T2.
    E,
    /// Non-INVITE client transaction timeout, 64·T1.
    F,
    /// INVITE final response retransmit interval over UDP; T1 doubling up to T2.
    G,
    /// Wait time for ACK receipt after a non-2xx final, 64·T1.
    H,
    /// Wait time for ACK retransmits, T4 over UDP, 0 over TCP.
    I,
    /// Wait time for non-INVITE request retransmits, 64·T1 over UDP, 0 over TCP.
    J,
    /// Wait time for response retransmits (non-INVITE client), T4 over UDP, 0 over TCP.
    K,
    /// RFC 6026: wait time for accepted INVITE request retransmits, 64·T1.
    L,
    /// RFC 6026: wait time for retransmission of 2xx to INVITE or additional 2xx, 64·T1.
    M,
}

const ALL: [Timer; 12] = [
    Timer::A,
    Timer::B,
    Timer::D,
    Timer::E,
    Timer::F,
    Timer::G,
    Timer::H,
    Timer::I,
    Timer::J,
    Timer::K,
    Timer::L,
    Timer::M,
];

/// T1, T2 and T4 of RFC 3261 §17.1.1.1; configurable so tests and lossy links can change them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intervals {
    /// RTT estimate, 500 ms by default.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses, 4 s.
    pub t2: Duration,
    /// Maximum duration a message remains in the network, 5 s.
    pub t4: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        Intervals {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// Which timers of one transaction are armed, and when they fire.
#[derive(Clone, Debug, Default)]
pub(crate) struct TimerTable {
    deadlines: [Option<Instant>; 12],
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer as usize] = Some(at);
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.deadlines[timer as usize] = None;
    }

    pub(crate) fn stop_all(&mut self) {
        self.deadlines = [None; 12];
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.deadlines[timer as usize]
    }

    /// Every armed timer with its deadline.
    pub(crate) fn armed(&self) -> impl Iterator<Item = (Timer, Instant)> + '_ {
        ALL.iter().filter_map(|t| Some((*t, self.get(*t)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_keeps_one_deadline_per_timer() {
        #[allow(clippy::disallowed_methods)] // the test's one starting instant
        let now = Instant::now();
        let mut table = TimerTable::default();
        table.set(Timer::A, now);
        table.set(Timer::B, now + Duration::from_secs(32));
        table.set(Timer::A, now + Duration::from_secs(1));
        assert_eq!(table.armed().count(), 2);
        table.stop(Timer::A);
        assert_eq!(
            table.armed().collect::<Vec<_>>(),
            vec![(Timer::B, now + Duration::from_secs(32))]
        );
        table.stop_all();
        assert_eq!(table.armed().count(), 0);
    }
}
