//! The simulated clock both relay test files drive the relay with: drain what it asks for,
//! and jump from deadline to deadline.

use fieldmesh_media::relay::{Datagram, Event, Input, Output, Relay};
use std::time::{Duration, Instant};

/// Everything the relay wants sent, and every event, since the last input.
pub(crate) fn drain(relay: &mut Relay) -> (Vec<Datagram>, Vec<Event>) {
    let mut sent = Vec::new();
    let mut events = Vec::new();
    while let Some(o) = relay.poll_output() {
        match o {
            Output::Transmit(d) => sent.push(d),
            Output::Event(e) => events.push(e),
        }
    }
    (sent, events)
}

/// Moves `now` forward by `by`, feeding `Timeout` at every deadline on the way.
pub(crate) fn advance(
    relay: &mut Relay,
    now: &mut Instant,
    by: Duration,
) -> (Vec<Datagram>, Vec<Event>) {
    let end = *now + by;
    let mut sent = Vec::new();
    let mut events = Vec::new();
    while let Some(at) = relay.poll_timeout().filter(|at| *at <= end) {
        *now = at.max(*now);
        relay.handle_input(*now, Input::Timeout);
        let (s, e) = drain(relay);
        sent.extend(s);
        events.extend(e);
    }
    *now = end;
    (sent, events)
}
