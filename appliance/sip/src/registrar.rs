//! The registrar (RFC 3261 §10.3): checks a REGISTER, computes the AOR's new bindings, saves
//! them durably, and only then updates the location service and lets the caller answer `200`.
//!
//! Open mode: anyone may register any extension. A refresh from the same phone (same contact,
//! same `+sip.instance`, else same REGISTER Call-ID) replaces its old binding instead of adding
//! one, so a phone whose address changed does not leave a stale branch behind.
//!
//! For the operator's directory each binding keeps the display name of the REGISTER's To
//! (else From), cleaned, and `since`: when the phone first registered, carried over from the
//! binding a refresh replaces.

use crate::location::{Aor, Binding, Location, Target};
use crate::message::{ContactList, Party, Request, print_uri, single};
use crate::reject::Reject;
use crate::storage::Storage;
use ezk_sip_types::Name;
use std::time::{Duration, Instant};

/// The longest display name kept for a binding, in characters (longer ones are cut).
pub const DISPLAY_NAME_MAX: usize = 64;

/// How the registrar treats Expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// Below this a REGISTER gets `423` with Min-Expires (RFC 3261 §10.3 step 7).
    pub min_expires: u32,
    /// Longer requests are cut to this, so a phone carried to another appliance is found again
    /// within one refresh (phones like baresip ask for 3600).
    pub max_expires: u32,
    /// How long an extension stays known (a `480` rather than `404`) after its last binding.
    pub known_for: Duration,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 300,
            known_for: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Processes one REGISTER that arrived from `target.remote` on `target.local`. On success the
/// AOR's live bindings (after the change) are returned for the `200`'s Contact list.
pub fn register(
    now: Instant,
    request: &Request,
    target: Target,
    config: &RegistrarConfig,
    location: &mut Location,
    storage: &mut dyn Storage,
) -> Result<(Aor, Vec<Binding>), Reject> {
    let aor = request
        .common
        .to
        .user()
        .filter(|u| !u.is_empty())
        .map(|u| Aor(u.to_string()))
        .ok_or(Reject::NoExtension)?;
    let header_expires = match single(&request.headers, &Name::EXPIRES) {
        Some(v) => Some(parse_expires(v)?),
        None => None,
    };
    let contacts = request.contacts().map_err(|why| {
        if why.contains('*') {
            Reject::BadStarContact
        } else {
            Reject::BadContact
        }
    })?;
    let old: Vec<Binding> = location.lookup(now, &aor).into_iter().cloned().collect();
    let call_id = request.common.call_id.to_string();
    let cseq = request.common.cseq;

    let new = match contacts {
        ContactList::Addresses(list) if list.is_empty() => return Ok((aor, old)),
        ContactList::Star => {
            if header_expires != Some(0) {
                return Err(Reject::BadStarContact);
            }
            // §10.3 step 6: keep only bindings this REGISTER is out of order for.
            old.iter()
                .filter(|b| b.call_id == call_id && b.cseq > cseq)
                .cloned()
                .collect()
        }
        ContactList::Addresses(list) => {
            let display =
                display_name(&request.common.to).or_else(|| display_name(&request.common.from));
            let mut next = old.clone();
            for contact in list {
                let expires = match contact.params.get_val("expires") {
                    Some(v) => parse_expires(v)?,
                    None => header_expires.unwrap_or(3600),
                };
                if expires > 0 && expires < config.min_expires {
                    return Err(Reject::IntervalTooBrief {
                        min: config.min_expires,
                    });
                }
                let q = match contact.params.get_val("q") {
                    Some(v) => parse_q(v).ok_or(Reject::BadContact)?,
                    None => 1000,
                };
                let instance = contact
                    .params
                    .get_val("+sip.instance")
                    .map(|v| v.trim_matches('"').to_string());
                let mut binding = Binding {
                    aor: aor.clone(),
                    contact: print_uri(&contact.uri.uri),
                    q,
                    expires_at: now
                        + Duration::from_secs(u64::from(expires.min(config.max_expires))),
                    call_id: call_id.clone(),
                    cseq,
                    instance,
                    target: target_for(&contact.uri.uri, target),
                    source: target.remote,
                    registered_at: now,
                    display_name: display.clone(),
                    since: now,
                };
                // A REGISTER older than the one that made a binding does not touch it.
                if next
                    .iter()
                    .any(|b| b.call_id == call_id && b.cseq > cseq && b.same_phone(&binding))
                {
                    continue;
                }
                // What this binding replaces: the same phone's earlier bindings (not those this
                // very REGISTER made), and any binding of the same contact.
                let replaces = |b: &Binding| {
                    (b.same_phone(&binding) && !(b.call_id == call_id && b.cseq == cseq))
                        || b.contact == binding.contact
                };
                let first = next.iter().filter(|b| replaces(b)).map(|b| b.since).min();
                next.retain(|b| !replaces(b));
                if let Some(first) = first {
                    binding.since = first;
                }
                if expires > 0 {
                    next.push(binding);
                }
            }
            next
        }
    };

    let removed: Vec<String> = old
        .iter()
        .filter(|b| !new.iter().any(|n| n.contact == b.contact))
        .map(|b| b.contact.clone())
        .collect();
    let saved: Vec<_> = new.iter().map(|b| b.record(now)).collect();
    storage
        .save_registration(&aor.0, &removed, &saved)
        .map_err(|e| {
            tracing::error!(aor = %aor, error = %e, "binding not saved");
            Reject::Storage
        })?;
    location.set(&aor, new.clone(), now + config.known_for);
    Ok((aor, new))
}

/// The display name of To or From, fit for the directory: control characters removed, quotes
/// and whitespace trimmed from both ends, cut to [`DISPLAY_NAME_MAX`] characters; `None` if
/// nothing is left.
fn display_name(party: &Party) -> Option<String> {
    let edge = |c: char| c.is_whitespace() || c == '"';
    let kept: String = party
        .display
        .as_deref()?
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let mut name: String = kept
        .trim_matches(edge)
        .chars()
        .take(DISPLAY_NAME_MAX)
        .collect();
    name.truncate(name.trim_end_matches(edge).len());
    (!name.is_empty()).then_some(name)
}

/// Where requests for a contact go: to the contact's own address when it is an IP literal
/// (the RFC way, and what sipp's separate register/uas processes need), else back to where the
/// REGISTER came from. Over TCP the driver reuses a live connection to that address and opens
/// one otherwise; a phone that can only be reached over its own connection says `;ob`.
fn target_for(contact: &ezk_sip_types::uri::SipUri, arrival: Target) -> Target {
    // RFC 5626 `ob`: the phone wants requests back over the connection it registered on.
    if arrival.transport == crate::Transport::Tcp && contact.uri_params.get("ob").is_some() {
        return arrival;
    }
    let wants_tcp = arrival.transport == crate::Transport::Tcp
        || contact
            .uri_params
            .get_val("transport")
            .is_some_and(|t| t.eq_ignore_ascii_case("tcp"));
    match crate::message::host_addr(&contact.host_port, 5060) {
        Some(remote) if !remote.ip().is_unspecified() => Target {
            transport: if wants_tcp {
                crate::Transport::Tcp
            } else {
                crate::Transport::Udp
            },
            local: arrival.local,
            remote,
        },
        _ => arrival,
    }
}

/// RFC 3261 §20.19: delta-seconds; larger than 2**32-1 is taken as that.
fn parse_expires(value: &str) -> Result<u32, Reject> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Reject::BadExpires);
    }
    Ok(v.parse::<u64>()
        .map(|n| n.min(u64::from(u32::MAX)) as u32)
        .unwrap_or(u32::MAX))
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn parse_q(value: &str) -> Option<u16> {
    let (int, frac) = value.trim().split_once('.').unwrap_or((value.trim(), ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac: u16 = format!("{frac:0<3}").parse().ok()?;
    match int {
        "0" => Some(frac),
        "1" if frac == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_values_parse_in_thousandths() {
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("0.7"), Some(700));
        assert_eq!(parse_q("0.125"), Some(125));
        assert_eq!(parse_q("1.5"), None);
        assert_eq!(parse_q("0.1234"), None);
        assert_eq!(parse_q("x"), None);
    }

    #[test]
    fn display_names_are_cleaned_for_the_directory() {
        let clean =
            |header: &str| display_name(&crate::message::parse_party(header).expect("parses"));
        assert_eq!(
            clean(r#""Ana Lima" <sip:201@h>"#).as_deref(),
            Some("Ana Lima")
        );
        assert_eq!(clean("Ana  Lima <sip:201@h>").as_deref(), Some("Ana  Lima"));
        assert_eq!(clean(r#"" \"Ana\" " <sip:201@h>"#).as_deref(), Some("Ana"));
        assert_eq!(
            clean("\"A\u{7}na\u{1b}[2J\u{7f}\" <sip:201@h>").as_deref(),
            Some("Ana[2J")
        );
        assert_eq!(clean("\"\u{1}\t \" <sip:201@h>"), None);
        assert_eq!(clean("<sip:201@h>"), None);
        let long = format!("\"{}\" <sip:201@h>", "é".repeat(200));
        assert_eq!(clean(&long), Some("é".repeat(DISPLAY_NAME_MAX)));
        let cut_at_space = format!("\"{} b\" <sip:201@h>", "a".repeat(DISPLAY_NAME_MAX - 1));
        assert_eq!(clean(&cut_at_space), Some("a".repeat(DISPLAY_NAME_MAX - 1)));
    }

    #[test]
    fn expires_must_be_digits() {
        assert_eq!(parse_expires("3600"), Ok(3600));
        assert_eq!(parse_expires(" 0 "), Ok(0));
        assert_eq!(parse_expires("99999999999"), Ok(u32::MAX));
        assert_eq!(parse_expires("abc"), Err(Reject::BadExpires));
        assert_eq!(parse_expires("-1"), Err(Reject::BadExpires));
        assert_eq!(parse_expires(""), Err(Reject::BadExpires));
    }
}
