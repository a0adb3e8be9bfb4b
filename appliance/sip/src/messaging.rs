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

/// A new id for a message or voicemail waiting for `aor`: 8 hex digits naming the AOR, then
/// 16 random ones. The AOR part lets any appliance refuse a replica whose id belongs to another
/// extension (a confused or hostile peer cannot file one extension's item under another).
pub fn item_id(aor: &str, random: u64) -> String {
    format!("{:08x}{random:016x}", aor_tag(aor))
}

/// Whether `id` may belong to `aor`: ids made by [`item_id`] must name it; ids from builds
/// before the AOR part (16 hex digits for messages, 32 for voicemail) are taken as they are.
pub fn id_belongs_to(id: &str, aor: &str) -> bool {
    match id.len() {
        16 | 32 => true,
        24 => id[..8] == format!("{:08x}", aor_tag(aor)),
        _ => false,
    }
}

/// FNV-1a (32 bit) of the AOR.
fn aor_tag(aor: &str) -> u32 {
    aor.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The user part the appliance's own text notices come from; a message from it never gets a
/// notice of its own (a notice stored for an absent sender would otherwise beget another).
pub const NOTICE_USER: &str = "fieldmesh";

/// The user part of the URI that texts typed on the appliance's web page come from. Nobody
/// can answer it, so such a text begets no delivery notice either.
pub const WEB_USER: &str = "web";

/// A text typed on the appliance's web page for an extension (the coordinator's laptop).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebText {
    /// The extension it is for (its user part).
    pub to: String,
    /// Who typed it, shown as the From display name.
    pub from_name: String,
    pub text: String,
}

impl WebText {
    /// The MESSAGE, as if a phone at `local` had sent it; `None` if the fields cannot make a
    /// valid one (the web API validates them first, so this is a last line).
    pub(crate) fn request(&self, local: std::net::SocketAddr, ids: [u64; 3]) -> Option<Request> {
        let host = local.ip();
        let name: String = self
            .from_name
            .chars()
            .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
            .take(64)
            .collect();
        let to = format!("sip:{}@{host}", self.to);
        own_message(OwnMessage {
            uri: &to,
            from: &format!("\"{name}\" <sip:{WEB_USER}@{host}>"),
            local,
            ids,
            content_type: "text/plain;charset=utf-8",
            body: &self.text,
        })
    }
}

/// What the sender of a stored message is told once a phone took it: an RFC 5438 IMDN when
/// the message asked for `positive-delivery`, else one line of text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryNotice {
    /// The sender's URI (from the message's From): where the notice goes.
    pub sender: String,
    /// The URI the message was written to (its To).
    pub recipient: String,
    /// The extension whose phone took it.
    pub aor: String,
    /// The start of a text message, so the sender knows which one arrived.
    pub excerpt: Option<String>,
    /// The `Message-ID` of an IMDN request.
    pub imdn: Option<String>,
}

impl StoredMessage {
    /// The notice its sender gets on delivery; `None` for notices themselves (ours, or IMDNs
    /// from phones) and for senders without a SIP URI.
    pub fn notice(&self) -> Option<DeliveryNotice> {
        let sender = uri_in(&self.from)?;
        let user = sender
            .split_once(':')
            .and_then(|(_, rest)| rest.split_once('@'))
            .map(|(user, _)| user);
        if matches!(user, Some(NOTICE_USER | WEB_USER))
            || self.content_type.starts_with("message/imdn")
        {
            return None;
        }
        let cpim = self.content_type.starts_with("message/cpim");
        let imdn = if cpim {
            let head = cpim_head(&self.body);
            if head.is_notification {
                return None;
            }
            head.wants_delivery.then_some(head.message_id).flatten()
        } else {
            None
        };
        let excerpt = self
            .content_type
            .starts_with("text/plain")
            .then(|| std::str::from_utf8(&self.body).ok())
            .flatten()
            .map(|text| {
                let line = text.lines().next().unwrap_or("").trim();
                match line.char_indices().nth(40) {
                    Some((cut, _)) => format!("{}…", &line[..cut]),
                    None => line.to_string(),
                }
            })
            .filter(|line| !line.is_empty());
        Some(DeliveryNotice {
            sender: sender.to_string(),
            recipient: uri_in(&self.to).unwrap_or(sender).to_string(),
            aor: self.aor.clone(),
            excerpt,
            imdn,
        })
    }
}

impl DeliveryNotice {
    /// The MESSAGE that carries the notice, as the appliance sends it from `local`: `at` is the
    /// local time of delivery for people ("14:02"), `datetime` the same in RFC 3339 for IMDN.
    pub(crate) fn request(
        &self,
        local: std::net::SocketAddr,
        at: &str,
        datetime: &str,
        ids: [u64; 3],
    ) -> Option<Request> {
        let host = self
            .sender
            .split_once('@')
            .map_or("fieldmesh.invalid", |(_, host)| host);
        let (from, content_type, body) = match &self.imdn {
            Some(message_id) => (
                format!("<{}>", self.recipient),
                "message/cpim",
                self.imdn_body(message_id, datetime, ids[2]),
            ),
            None => {
                let what = match &self.excerpt {
                    Some(text) => format!(" (\"{text}\")"),
                    None => String::new(),
                };
                (
                    format!("\"fieldmesh\" <sip:{NOTICE_USER}@{host}>"),
                    "text/plain;charset=utf-8",
                    format!("Delivered to {} at {at}{what}", self.aor),
                )
            }
        };
        own_message(OwnMessage {
            uri: &self.sender,
            from: &from,
            local,
            ids,
            content_type,
            body: &body,
        })
    }

    /// RFC 5438 §7.2.1.1: a CPIM-wrapped `message/imdn+xml` saying "delivered".
    fn imdn_body(&self, message_id: &str, datetime: &str, own_id: u64) -> String {
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
             <imdn xmlns=\"urn:ietf:params:xml:ns:imdn\">\r\n\
             <message-id>{}</message-id>\r\n\
             <datetime>{}</datetime>\r\n\
             <recipient-uri>{}</recipient-uri>\r\n\
             <original-recipient-uri>{}</original-recipient-uri>\r\n\
             <delivery-notification><status><delivered/></status></delivery-notification>\r\n\
             </imdn>\r\n",
            xml_escape(message_id),
            xml_escape(datetime),
            xml_escape(&self.recipient),
            xml_escape(&self.recipient),
        );
        format!(
            "From: <{}>\r\nTo: <{}>\r\nNS: imdn <urn:ietf:params:imdn>\r\n\
             imdn.Message-ID: {own_id:016x}\r\nDateTime: {datetime}\r\n\r\n\
             Content-Type: message/imdn+xml\r\nContent-Disposition: notification\r\n\
             Content-Length: {}\r\n\r\n{xml}",
            self.recipient,
            self.sender,
            xml.len()
        )
    }
}

/// The URI inside a From or To value (`"name" <uri>;tag=x`, or a bare `uri;tag=x`).
fn uri_in(header: &str) -> Option<&str> {
    let uri = match (header.find('<'), header.find('>')) {
        (Some(open), Some(close)) if open < close => &header[open + 1..close],
        _ => header.split(';').next()?.trim(),
    };
    (uri.starts_with("sip:") || uri.starts_with("sips:")).then_some(uri)
}

/// What the CPIM header block of a message says about IMDN (RFC 5438 §6, RFC 3862).
struct CpimHead {
    message_id: Option<String>,
    wants_delivery: bool,
    is_notification: bool,
}

fn cpim_head(body: &[u8]) -> CpimHead {
    let text = String::from_utf8_lossy(body);
    let mut head = CpimHead {
        message_id: None,
        wants_delivery: false,
        is_notification: false,
    };
    // The namespace prefix is the sender's choice (`NS: imdn <urn:ietf:params:imdn>`).
    let mut prefix = None;
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .take_while(|l| !l.is_empty())
        .collect();
    for line in &lines {
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("NS")
            && value.contains("urn:ietf:params:imdn")
        {
            prefix = value.split_whitespace().next().map(str::to_string);
        }
    }
    // The MIME headers of the wrapped content follow the first blank line.
    let inner: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .skip_while(|l| !l.is_empty())
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    head.is_notification = inner.iter().chain(&lines).any(|l| {
        l.split_once(':').is_some_and(|(n, v)| {
            n.trim().eq_ignore_ascii_case("Content-Disposition") && v.contains("notification")
        })
    });
    let Some(prefix) = prefix else {
        return head;
    };
    for line in &lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let Some(field) = name
            .trim()
            .strip_prefix(prefix.as_str())
            .and_then(|n| n.strip_prefix('.'))
        else {
            continue;
        };
        if field.eq_ignore_ascii_case("Message-ID") {
            head.message_id = Some(value.trim().to_string()).filter(|v| !v.is_empty());
        } else if field.eq_ignore_ascii_case("Disposition-Notification") {
            head.wants_delivery = value
                .split(',')
                .any(|v| v.trim().eq_ignore_ascii_case("positive-delivery"));
        }
    }
    head
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Whether a request is a MESSAGE (the only method stored and forwarded).
pub(crate) fn is_message(request: &Request) -> bool {
    request.method.is(message::Method::MESSAGE)
}

/// A MESSAGE the appliance sends itself (a delivery notice, a text from the web page).
struct OwnMessage<'a> {
    /// Request-URI and To.
    uri: &'a str,
    /// The From header's value, without its tag.
    from: &'a str,
    local: std::net::SocketAddr,
    /// Branch, tag and Call-ID.
    ids: [u64; 3],
    content_type: &'a str,
    body: &'a str,
}

/// The request for `m`, through the same parse edge as the network's (`None`, logged, if the
/// fields cannot make a valid one).
fn own_message(m: OwnMessage<'_>) -> Option<Request> {
    let [branch, tag, call_id] = m.ids;
    let text = format!(
        "MESSAGE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKown{branch:016x}\r\n\
         Max-Forwards: 70\r\nFrom: {from};tag={tag:016x}\r\nTo: <{uri}>\r\n\
         Call-ID: {call_id:016x}@fieldmesh\r\nCSeq: 1 MESSAGE\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        m.body.len(),
        uri = m.uri,
        local = m.local,
        from = m.from,
        content_type = m.content_type,
        body = m.body,
    );
    match parse(text.as_bytes(), false) {
        Ok(Message::Request(r)) => Some(r),
        _ => {
            tracing::warn!(uri = %m.uri, "a message of our own does not make a valid MESSAGE");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_names_its_extension_and_no_other() {
        let id = item_id("303", 0x0123_4567_89ab_cdef);
        assert_eq!(id.len(), 24);
        assert!(id.ends_with("0123456789abcdef"));
        assert!(id_belongs_to(&id, "303"));
        assert!(!id_belongs_to(&id, "404"));
        assert!(
            id_belongs_to("0123456789abcdef", "404"),
            "an older message id"
        );
        assert!(!id_belongs_to("abc", "303"));
    }
}
