//! Replicas of stored data (messages and voicemail): opaque payloads keyed by a unique id and
//! the AOR they wait for. The overlay only moves and checks them; the appliance decides what
//! they mean.

use serde::{Deserialize, Serialize};

/// Largest message payload accepted from a peer: a 64 KiB message body plus its headers.
pub const MAX_PAYLOAD: usize = 80 * 1024;
/// Largest voicemail payload accepted from a peer: 3 minutes of 24 kbit/s Opus is ~560 KB,
/// with room for container overhead and a higher bitrate.
pub const MAX_VOICEMAIL_PAYLOAD: usize = 1024 * 1024;

/// Largest request and response the sync protocol reads. A `StoreReplicas` or a fetch answer
/// carries several replicas, so both must hold a handful of the largest voicemails; anything
/// longer is cut off by the codec and fails to decode as a whole.
pub(crate) const MAX_REQUEST_BYTES: u64 = 8 * 1024 * 1024;
pub(crate) const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

/// What a replica's payload is, so each kind gets its own size limit and the appliance does
/// not try to decode a voicemail as a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ReplicaKind {
    /// Replicas from builds before voicemail carry no kind: they are all messages.
    #[default]
    Message,
    Voicemail,
}

impl ReplicaKind {
    /// The largest payload a peer may send for this kind.
    pub fn max_payload(self) -> usize {
        match self {
            ReplicaKind::Message => MAX_PAYLOAD,
            ReplicaKind::Voicemail => MAX_VOICEMAIL_PAYLOAD,
        }
    }
}

/// One replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub id: String,
    pub aor: String,
    #[serde(default)]
    pub kind: ReplicaKind,
    /// A CBOR byte string on the wire: as a sequence of integers a 1 MiB voicemail would cost
    /// up to twice its size.
    #[serde(
        serialize_with = "serde_bytes::serialize",
        deserialize_with = "bytes_or_integers"
    )]
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
        if self.payload.len() > self.kind.max_payload() {
            return Err("payload too large");
        }
        Ok(())
    }

    /// A generous bound on the replica's encoded size (the id and AOR are at most 64 bytes
    /// each, and CBOR framing adds a few bytes per field).
    pub(crate) fn wire_size(&self) -> u64 {
        self.payload.len() as u64 + 256
    }
}

/// Reads a payload sent as a byte string, or as the array of integers that builds before
/// voicemail sent: cbor4ii will not turn one into the other by itself, and without this an old
/// appliance's `StoreReplicas` would fail to decode as a whole.
fn bytes_or_integers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct Payload;
    impl<'de> serde::de::Visitor<'de> for Payload {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a byte string or an array of bytes")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            // The codec's size limit already bounds the input; the hint is only trusted that far.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_PAYLOAD));
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
    d.deserialize_any(Payload)
}

/// The leading replicas that fit in `budget` encoded bytes, and how many were left out: a
/// request or answer over the codec's limit would be lost whole, so sending fewer is better.
pub(crate) fn fit(replicas: Vec<Replica>, budget: u64) -> (Vec<Replica>, usize) {
    let total = replicas.len();
    let mut used = 0;
    let kept: Vec<Replica> = replicas
        .into_iter()
        .take_while(|r| {
            used += r.wire_size();
            used <= budget
        })
        .collect();
    let left = total - kept.len();
    (kept, left)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Replica {
        Replica {
            id: "abc123".into(),
            aor: "303".into(),
            kind: ReplicaKind::Message,
            payload: vec![1, 2, 3],
        }
    }

    #[test]
    fn replicas_with_bad_ids_or_huge_payloads_are_refused() {
        let good = good();
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

    #[test]
    fn each_kind_has_its_own_size_limit() {
        let message = Replica {
            payload: vec![0; MAX_PAYLOAD + 1],
            ..good()
        };
        assert_eq!(message.check(), Err("payload too large"));
        let voicemail = Replica {
            kind: ReplicaKind::Voicemail,
            ..message
        };
        assert_eq!(
            voicemail.check(),
            Ok(()),
            "a voicemail may exceed a message"
        );
        let at_limit = Replica {
            payload: vec![0; MAX_VOICEMAIL_PAYLOAD],
            ..voicemail.clone()
        };
        assert_eq!(at_limit.check(), Ok(()));
        let over = Replica {
            payload: vec![0; MAX_VOICEMAIL_PAYLOAD + 1],
            ..voicemail
        };
        assert_eq!(over.check(), Err("payload too large"));
    }

    /// What an older build sent: the same fields, without `kind`.
    #[derive(Serialize)]
    struct OldReplica {
        id: String,
        aor: String,
        payload: Vec<u8>,
    }

    #[test]
    fn a_replica_without_a_kind_is_a_message() {
        let json = r#"{"id":"m1","aor":"303","payload":[104,105]}"#;
        let r: Replica = serde_json::from_str(json).expect("json without kind");
        assert_eq!(r.kind, ReplicaKind::Message);
        assert_eq!(r.payload, b"hi");
        // Old builds encoded the payload as an array of integers; serde_bytes still reads it.
        let old = OldReplica {
            id: "m1".into(),
            aor: "303".into(),
            payload: b"hi".to_vec(),
        };
        let cbor = cbor4ii::serde::to_vec(Vec::new(), &old).expect("encode");
        let r: Replica = cbor4ii::serde::from_slice(&cbor).expect("cbor without kind");
        assert_eq!(r.kind, ReplicaKind::Message);
        assert_eq!(r.payload, b"hi");
    }

    #[test]
    fn the_payload_travels_as_a_cbor_byte_string() {
        let r = Replica {
            kind: ReplicaKind::Voicemail,
            payload: vec![0xff; 600_000],
            ..good()
        };
        let cbor = cbor4ii::serde::to_vec(Vec::new(), &r).expect("encode");
        // As integers, 0xff would take two bytes each.
        assert!(cbor.len() < r.payload.len() + 100, "{} bytes", cbor.len());
        assert!(cbor.len() as u64 <= r.wire_size());
        let back: Replica = cbor4ii::serde::from_slice(&cbor).expect("decode");
        assert_eq!(back, r);
    }

    #[test]
    fn only_the_replicas_that_fit_are_kept() {
        let big = Replica {
            kind: ReplicaKind::Voicemail,
            payload: vec![0; MAX_VOICEMAIL_PAYLOAD],
            ..good()
        };
        let (kept, left) = fit(vec![big.clone(); 20], MAX_RESPONSE_BYTES);
        assert_eq!((kept.len(), left), (15, 5));
        let (kept, left) = fit(vec![good(); 3], MAX_RESPONSE_BYTES);
        assert_eq!((kept.len(), left), (3, 0));
    }
}
