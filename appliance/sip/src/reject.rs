//! Every way the appliance refuses a request, with its status line in one table (the shape of
//! Kamailio's registrar `rerrno.h` + `reply.c`): malformed input is a 4xx that says what is wrong,
//! well-formed but refused input is the RFC's code for it, and our own failures are 5xx.

/// A request the appliance answers itself instead of processing or forwarding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reject {
    /// The parse edge refused it; the reason says what is wrong.
    Malformed { status: u16, reason: String },
    /// RFC 3261 §10.3 step 7: Expires (header or contact param) is not a number.
    BadExpires,
    /// RFC 3261 §10.3 step 7: asked for less than `min` seconds; the 423 carries Min-Expires.
    IntervalTooBrief { min: u32 },
    /// `Contact: *` with other contacts or a non-zero Expires (§10.3 step 6).
    BadStarContact,
    /// A Contact header we cannot read.
    BadContact,
    /// To header of a REGISTER names no user: there is no extension to bind.
    NoExtension,
    /// Max-Forwards reached zero (§16.3 step 3).
    TooManyHops,
    /// The request came back to us with the same routing state (§16.3 step 4).
    LoopDetected,
    /// Proxy-Require or (for requests we serve) Require names extensions we lack (§8.2.2.3).
    BadExtension { unsupported: Vec<String> },
    /// No such extension: no binding now, none recently and no mailbox.
    NotFound,
    /// The Request-URI names a domain that is not ours and we never forward to foreign domains.
    ForeignDomain,
    /// A request outside a dialog pre-routed to somewhere that is not us.
    NotRelaying,
    /// A known extension with no binding now, or no branch answered in time.
    Unavailable,
    /// A request for the appliance itself with a method it knows but does not serve.
    MethodNotAllowed,
    /// A request for the appliance itself with a method it does not know.
    NotImplemented,
    /// CANCEL or in-dialog request that matches nothing (§9.2, §12.2.2).
    NoTransaction,
    /// A message larger than the configured limit (§16.3 step 1's 513).
    TooLarge,
    /// The durable store refused a write: nothing was acknowledged.
    Storage,
    /// The extension already has as many waiting messages as it may.
    MailboxFull,
    /// The appliance's message store is full (or the disk is): try later.
    StoreFull,
    /// A MESSAGE body larger than the limit.
    BodyTooLarge,
    /// The next hop did not answer (Timer B/F fired on the branch).
    Timeout,
    /// The relay refused the SDP (488 with its reason, or 503 when out of ports).
    Media(crate::media::MediaRefusal),
}

impl Reject {
    /// The status code and reason phrase this refusal is answered with.
    pub fn status(&self) -> (u16, &str) {
        match self {
            Reject::Malformed { status, reason } => (*status, reason.as_str()),
            Reject::BadExpires => (400, "Invalid Expires"),
            Reject::IntervalTooBrief { .. } => (423, "Interval Too Brief"),
            Reject::BadStarContact => (400, "Invalid Contact: * must be alone with Expires 0"),
            Reject::BadContact => (400, "Invalid Contact"),
            Reject::NoExtension => (400, "No Extension In To"),
            Reject::TooManyHops => (483, "Too Many Hops"),
            Reject::LoopDetected => (482, "Loop Detected"),
            Reject::BadExtension { .. } => (420, "Bad Extension"),
            Reject::NotFound => (404, "Not Found"),
            Reject::Media(refusal) => (refusal.code, refusal.reason.as_str()),
            Reject::ForeignDomain => (404, "Not Found: Domain Not Served Here"),
            Reject::NotRelaying => (403, "Forbidden: Not Relaying"),
            Reject::Unavailable => (480, "Temporarily Unavailable"),
            Reject::MethodNotAllowed => (405, "Method Not Allowed"),
            Reject::NotImplemented => (501, "Not Implemented"),
            Reject::NoTransaction => (481, "Call/Transaction Does Not Exist"),
            Reject::TooLarge => (513, "Message Too Large"),
            Reject::Storage => (500, "Server Internal Error: Storage Failed"),
            Reject::MailboxFull => (480, "Mailbox Full"),
            Reject::StoreFull => (503, "Service Unavailable: Message Store Full"),
            Reject::BodyTooLarge => (413, "Request Entity Too Large"),
            Reject::Timeout => (408, "Request Timeout"),
        }
    }

    /// Extra header lines the response must carry (Min-Expires, Unsupported, Allow).
    pub fn extra_headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Reject::IntervalTooBrief { min } => vec![("Min-Expires", min.to_string())],
            Reject::BadExtension { unsupported } => vec![("Unsupported", unsupported.join(", "))],
            Reject::MethodNotAllowed => vec![("Allow", crate::ALLOW.to_string())],
            // Disk full is usually cleared by an operator or by messages expiring.
            Reject::StoreFull => vec![("Retry-After", "300".to_string())],
            Reject::Media(crate::media::MediaRefusal {
                retry_after: Some(secs),
                ..
            }) => vec![("Retry-After", secs.to_string())],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reject_has_its_status_line() {
        let table = [
            (Reject::BadExpires, 400, "Invalid Expires"),
            (
                Reject::IntervalTooBrief { min: 60 },
                423,
                "Interval Too Brief",
            ),
            (Reject::TooManyHops, 483, "Too Many Hops"),
            (Reject::LoopDetected, 482, "Loop Detected"),
            (
                Reject::BadExtension {
                    unsupported: vec!["foo".into()],
                },
                420,
                "Bad Extension",
            ),
            (Reject::NotFound, 404, "Not Found"),
            (
                Reject::ForeignDomain,
                404,
                "Not Found: Domain Not Served Here",
            ),
            (Reject::Unavailable, 480, "Temporarily Unavailable"),
            (Reject::NotRelaying, 403, "Forbidden: Not Relaying"),
            (Reject::MethodNotAllowed, 405, "Method Not Allowed"),
            (Reject::NotImplemented, 501, "Not Implemented"),
            (
                Reject::NoTransaction,
                481,
                "Call/Transaction Does Not Exist",
            ),
            (Reject::TooLarge, 513, "Message Too Large"),
            (
                Reject::Storage,
                500,
                "Server Internal Error: Storage Failed",
            ),
            (Reject::MailboxFull, 480, "Mailbox Full"),
            (
                Reject::StoreFull,
                503,
                "Service Unavailable: Message Store Full",
            ),
            (Reject::BodyTooLarge, 413, "Request Entity Too Large"),
            (Reject::Timeout, 408, "Request Timeout"),
            (Reject::BadContact, 400, "Invalid Contact"),
            (Reject::NoExtension, 400, "No Extension In To"),
        ];
        for (reject, code, reason) in table {
            assert_eq!(reject.status(), (code, reason), "{reject:?}");
        }
        assert_eq!(
            Reject::IntervalTooBrief { min: 60 }.extra_headers(),
            vec![("Min-Expires", "60".to_string())]
        );
    }
}
