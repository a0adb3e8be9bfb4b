//! Replicas of stored data (messages now, voicemail later): opaque payloads keyed by a unique
//! id and the AOR they wait for. The overlay only moves and checks them; the appliance decides
//! what they mean.

use serde::{Deserialize, Serialize};

/// Largest payload accepted from a peer: a 64 KiB message body plus its headers.
pub const MAX_PAYLOAD: usize = 80 * 1024;

/// One replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub id: String,
    pub aor: String,
    pub payload: Vec<u8>,
}

impl Replica {
    /// Why a replica from a peer must be refused, if it must.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.id.is_empty()
            || self.id.len() > 64
            || !self.id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err("bad id");
        }
        if self.aor.is_empty() || self.aor.len() > 64 {
            return Err("bad aor");
        }
        if self.payload.len() > MAX_PAYLOAD {
            return Err("payload too large");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_with_bad_ids_or_huge_payloads_are_refused() {
        let good = Replica {
            id: "abc123".into(),
            aor: "303".into(),
            payload: vec![1, 2, 3],
        };
        assert_eq!(good.check(), Ok(()));
        assert_eq!(
            Replica {
                id: "../x".into(),
                ..good.clone()
            }
            .check(),
            Err("bad id")
        );
        assert_eq!(
            Replica {
                payload: vec![0; MAX_PAYLOAD + 1],
                ..good
            }
            .check(),
            Err("payload too large")
        );
    }
}
