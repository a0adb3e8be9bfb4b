//! RFC 4733 telephone-event payloads (DTMF digits sent as RTP events, not as tones).
//!
//! A relay that transcodes still forwards events untouched except for one field: the duration
//! counts RTP clock ticks (RFC 4733 §2.5.1.3), so an event crossing from an 8 kHz leg to a
//! 48 kHz leg must have it rescaled, or a 100 ms key press becomes 17 ms.

/// One telephone event, the fixed four-byte payload of RFC 4733 §2.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Event {
    /// The event code: 0–9, 10 = `*`, 11 = `#`, 12–15 = A–D for DTMF (RFC 4733 §3.2).
    pub event: u8,
    /// The E bit: this packet ends the event.
    pub end: bool,
    /// Power level in −dBm0, 0–63 (6 bits); larger means quieter.
    pub volume: u8,
    /// How long the event has lasted so far, in RTP clock ticks from the event's timestamp.
    pub duration: u16,
}

impl Event {
    /// The payload length: an event is always four bytes (RFC 4733 §2.3).
    pub const LEN: usize = 4;

    /// Reads an event from an RTP payload. Shorter payloads are `None`; bytes past the first
    /// four are ignored. The reserved R bit is ignored as RFC 4733 §2.3 asks of receivers.
    pub fn parse(payload: &[u8]) -> Option<Event> {
        let [event, flags, high, low] = *payload.first_chunk::<{ Event::LEN }>()?;
        Some(Event {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([high, low]),
        })
    }

    /// The payload for this event; the R bit is written as zero, and a volume above 63 is
    /// capped rather than spilling into the flag bits.
    pub fn write(&self) -> [u8; Event::LEN] {
        let flags = (if self.end { 0x80 } else { 0 }) | self.volume.min(0x3F);
        let [high, low] = self.duration.to_be_bytes();
        [self.event, flags, high, low]
    }

    /// This event with its duration converted from one clock rate to another.
    pub fn rescaled(self, from_rate: u32, to_rate: u32) -> Event {
        Event {
            duration: rescale(self.duration, from_rate, to_rate),
            ..self
        }
    }
}

/// Converts a duration in ticks of `from_rate` to ticks of `to_rate`, rounding to nearest and
/// saturating at `u16::MAX` (RFC 4733 §2.5.2.3 has long events restart rather than wrap). A zero
/// `from_rate` is nonsense and leaves the duration as it is.
pub fn rescale(duration: u16, from_rate: u32, to_rate: u32) -> u16 {
    if from_rate == 0 || from_rate == to_rate {
        return duration;
    }
    let from = u64::from(from_rate);
    let scaled = (u64::from(duration) * u64::from(to_rate) + from / 2) / from;
    u16::try_from(scaled).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_rfc_4733_layout() {
        // Digit 5, end bit set, reserved bit set (ignored), volume 10, duration 800.
        let event = Event::parse(&[5, 0x80 | 0x40 | 10, 0x03, 0x20]).expect("four bytes");
        assert_eq!(
            event,
            Event {
                event: 5,
                end: true,
                volume: 10,
                duration: 800
            }
        );
    }

    #[test]
    fn write_round_trips_and_clears_the_reserved_bit() {
        let event = Event {
            event: 11,
            end: false,
            volume: 63,
            duration: 65535,
        };
        assert_eq!(event.write(), [11, 0x3F, 0xFF, 0xFF]);
        assert_eq!(Event::parse(&event.write()), Some(event));
        let loud = Event {
            volume: 200,
            ..event
        };
        assert_eq!(loud.write()[1], 0x3F, "volume cannot spill into E or R");
        let with_r = Event::parse(&[1, 0x40, 0, 0]).expect("four bytes");
        assert_eq!(with_r.write(), [1, 0, 0, 0]);
    }

    #[test]
    fn truncated_payloads_are_none() {
        for len in 0..Event::LEN {
            assert_eq!(Event::parse(&[1, 2, 3, 4][..len]), None, "{len} bytes");
        }
        assert!(
            Event::parse(&[1, 2, 3, 4, 5, 6]).is_some(),
            "trailing bytes are ignored"
        );
    }

    #[test]
    fn rescale_converts_and_saturates() {
        assert_eq!(rescale(800, 8000, 48000), 4800);
        assert_eq!(rescale(4800, 48000, 8000), 800);
        assert_eq!(rescale(5, 48000, 8000), 1, "rounds to nearest");
        assert_eq!(rescale(20_000, 8000, 48000), u16::MAX);
        assert_eq!(rescale(u16::MAX, 8000, u32::MAX), u16::MAX);
        assert_eq!(rescale(123, 0, 8000), 123);
        assert_eq!(rescale(123, 8000, 0), 0);
        let event = Event {
            event: 0,
            end: true,
            volume: 0,
            duration: 1600,
        };
        assert_eq!(event.rescaled(8000, 48000).duration, 9600);
    }

    #[test]
    fn every_short_payload_parses_without_panicking() {
        let mut state = 0x1234_5678_9ABC_DEF1u64;
        for _ in 0..10_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 8) as usize;
            let bytes = state.to_le_bytes();
            let parsed = Event::parse(&bytes[..len]);
            assert_eq!(parsed.is_some(), len >= Event::LEN);
        }
    }
}
