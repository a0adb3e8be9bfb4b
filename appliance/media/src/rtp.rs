//! RTP packet views (RFC 3550 §5.1), in the smoltcp `wire` shape: one length check in
//! [`Packet::new_checked`], after which no accessor can panic.

/// The fixed RTP header is 12 bytes; CSRCs and an extension may follow.
pub const HEADER_LEN: usize = 12;

/// A borrowed, checked RTP packet.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    bytes: &'a [u8],
    payload_start: usize,
    payload_end: usize,
}

/// Why bytes are not an RTP packet we can relay or decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// Fewer bytes than the header, its CSRCs and its extension claim.
    #[error("truncated")]
    Truncated,
    /// The version field is not 2.
    #[error("not RTP version 2")]
    Version,
    /// The padding count is larger than the payload.
    #[error("bad padding")]
    Padding,
}

impl<'a> Packet<'a> {
    /// Checks the version, the CSRC list, the header extension and the padding.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Packet<'a>, RtpError> {
        if bytes.len() < HEADER_LEN {
            return Err(RtpError::Truncated);
        }
        if bytes[0] >> 6 != 2 {
            return Err(RtpError::Version);
        }
        let csrcs = usize::from(bytes[0] & 0x0f);
        let mut start = HEADER_LEN + 4 * csrcs;
        if bytes.len() < start {
            return Err(RtpError::Truncated);
        }
        if bytes[0] & 0x10 != 0 {
            // RFC 3550 §5.3.1: 16-bit profile data, 16-bit length in 32-bit words.
            let Some(ext) = bytes.get(start..start + 4) else {
                return Err(RtpError::Truncated);
            };
            let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
            start += 4 + 4 * words;
            if bytes.len() < start {
                return Err(RtpError::Truncated);
            }
        }
        let mut end = bytes.len();
        if bytes[0] & 0x20 != 0 {
            let pad = usize::from(bytes[bytes.len() - 1]);
            if pad == 0 || end - start < pad {
                return Err(RtpError::Padding);
            }
            end -= pad;
        }
        Ok(Packet {
            bytes,
            payload_start: start,
            payload_end: end,
        })
    }

    pub fn marker(&self) -> bool {
        self.bytes[1] & 0x80 != 0
    }

    pub fn payload_type(&self) -> u8 {
        self.bytes[1] & 0x7f
    }

    pub fn sequence(&self) -> u16 {
        u16::from_be_bytes([self.bytes[2], self.bytes[3]])
    }

    pub fn timestamp(&self) -> u32 {
        u32::from_be_bytes([self.bytes[4], self.bytes[5], self.bytes[6], self.bytes[7]])
    }

    pub fn ssrc(&self) -> u32 {
        u32::from_be_bytes([self.bytes[8], self.bytes[9], self.bytes[10], self.bytes[11]])
    }

    pub fn payload(&self) -> &'a [u8] {
        &self.bytes[self.payload_start..self.payload_end]
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// The fields of an RTP header we write (no CSRCs, no extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

impl Header {
    /// A packet with this header and `payload`.
    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.push(0x80);
        out.push(u8::from(self.marker) << 7 | (self.payload_type & 0x7f));
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }
}

/// Rewrites the payload type of a relayed packet in place (keeps the marker bit).
pub fn set_payload_type(bytes: &mut [u8], payload_type: u8) {
    if bytes.len() >= 2 {
        bytes[1] = (bytes[1] & 0x80) | (payload_type & 0x7f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = Header {
            marker: true,
            payload_type: 96,
            sequence: 65535,
            timestamp: 0xdead_beef,
            ssrc: 7,
        };
        let bytes = h.packet(b"abc");
        let p = Packet::new_checked(&bytes).expect("valid");
        assert!(p.marker());
        assert_eq!(p.payload_type(), 96);
        assert_eq!(p.sequence(), 65535);
        assert_eq!(p.timestamp(), 0xdead_beef);
        assert_eq!(p.ssrc(), 7);
        assert_eq!(p.payload(), b"abc");
    }

    #[test]
    fn every_truncation_is_an_error_or_a_shorter_payload() {
        let mut bytes = Header {
            marker: false,
            payload_type: 0,
            sequence: 1,
            timestamp: 2,
            ssrc: 3,
        }
        .packet(&[0u8; 20]);
        bytes[0] |= 0x10 | 0x02; // extension + 2 CSRCs claimed
        for n in 0..bytes.len() {
            let _ = Packet::new_checked(&bytes[..n]);
        }
        assert_eq!(
            Packet::new_checked(&bytes[..11]).err(),
            Some(RtpError::Truncated)
        );
    }

    #[test]
    fn padding_larger_than_payload_is_refused() {
        let mut bytes = Header {
            marker: false,
            payload_type: 0,
            sequence: 1,
            timestamp: 2,
            ssrc: 3,
        }
        .packet(&[1, 2, 200]);
        bytes[0] |= 0x20;
        assert_eq!(Packet::new_checked(&bytes).err(), Some(RtpError::Padding));
    }
}
