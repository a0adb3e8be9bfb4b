//! Store-and-forward for MESSAGE (RFC 3428): a message for an extension nobody can take now is
//! stored durably and answered `202 Accepted`; when a phone of that extension registers, the
//! stored messages are delivered to it one at a time, in the order they arrived, with their
//! original From and Date. A message leaves the store only when a phone answered 2xx.

use crate::location::Target;
use crate::message::{Message, Request, parse};
use crate::{Transport, message};
use bytes::Bytes;
use ezk_sip_types::Name;

/// A message waiting for its extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// Unique id: deduplicates deliveries (and, later, replicas).
    pub id: String,
    pub aor: String,
    /// From and To exactly as the sender wrote them.
    pub from: String,
    pub to: String,
    pub content_type: String,
    pub body: Bytes,
    /// The sender's Date header, if it sent one; the store dates the rest.
    pub date: Option<String>,
}

/// Limits on what the appliance keeps for phones that are away.
#[derive(Clone, Debug)]
pub struct MessagingConfig {
    /// Store MESSAGEs for unreachable extensions (else they get `404`/`480` as before).
    pub store: bool,
    /// At most this many waiting messages per extension (`480 Mailbox Full` beyond).
    pub per_aor_cap: u64,
    /// At most this many in all (`503` with Retry-After beyond).
    pub total_cap: u64,
    /// Larger bodies get `413`.
    pub max_body: usize,
    /// A phone that gives no final answer within this time: store the message and answer
    /// `202` (a late 2xx then marks it delivered). Well before Timer F's 32 s.
    pub answer_within: std::time::Duration,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        MessagingConfig {
            store: true,
            per_aor_cap: 500,
            total_cap: 10_000,
            max_body: 65_536,
            answer_within: std::time::Duration::from_secs(5),
        }
    }
}

impl StoredMessage {
    /// The message a MESSAGE request becomes, under `id`.
    pub fn from_request(id: String, aor: &str, request: &Request) -> StoredMessage {
        let header = |name: &Name| request.headers.get_raw(name).next().map(|v| v.to_string());
        StoredMessage {
            id,
            aor: aor.to_string(),
            from: header(&Name::FROM).unwrap_or_default(),
            to: header(&Name::TO).unwrap_or_default(),
            content_type: header(&Name::CONTENT_TYPE).unwrap_or_else(|| "text/plain".into()),
            body: request.body.clone(),
            date: header(&Name::DATE),
        }
    }

    /// The MESSAGE that delivers it to `contact`, leaving from `from` with our `branch`.
    pub(crate) fn delivery(
        &self,
        contact: &str,
        from: Target,
        branch: &str,
        call_id: &str,
    ) -> Option<Request> {
        let transport = match from.transport {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        };
        let date = self
            .date
            .as_ref()
            .map(|d| format!("Date: {d}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "MESSAGE {contact} SIP/2.0\r\nVia: SIP/2.0/{transport} {};branch={branch}\r\nMax-Forwards: 70\r\n\
             From: {}\r\nTo: {}\r\nCall-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\n{date}Content-Type: {}\r\n\
             Content-Length: {}\r\n\r\n",
            from.local,
            self.from,
            self.to,
            self.content_type,
            self.body.len()
        );
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        match parse(&bytes, false) {
            Ok(Message::Request(r)) => Some(r),
            _ => {
                tracing::warn!(id = %self.id, "stored message does not make a valid MESSAGE; kept");
                None
            }
        }
    }
}

/// Whether a request is a MESSAGE (the only method stored and forwarded).
pub(crate) fn is_message(request: &Request) -> bool {
    request.method.is(message::Method::MESSAGE)
}
