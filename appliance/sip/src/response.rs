//! Generating responses (RFC 3261 §8.2.6): copy Via, From, To, Call-ID and CSeq from the
//! request, add a To tag to anything but 100, and say who answered.

use crate::message::{Echo, Request};
use bytes::Bytes;
use ezk_sip_types::Name;
use std::fmt::Write as _;

/// A response to `request`. `to_tag` is added to To when the request's To has none.
pub fn build_response(
    request: &Request,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &[(&'static str, String)],
    body: Option<(&str, Bytes)>,
    server: &str,
) -> Bytes {
    let mut lines: Vec<(String, String)> = Vec::new();
    for name in [Name::VIA, Name::FROM, Name::TO, Name::CALL_ID, Name::CSEQ] {
        for value in request.headers.get_raw(&name) {
            let mut value = value.to_string();
            if name == Name::TO
                && request.common.to.tag.is_none()
                && let Some(tag) = to_tag
            {
                value.push_str(";tag=");
                value.push_str(tag);
            }
            lines.push((name.as_print_str().to_string(), value));
        }
    }
    assemble(code, reason, lines, extra, body, server)
}

/// A response built from the raw lines of a request that failed to parse.
pub fn echo_response(echo: &Echo, code: u16, reason: &str, server: &str) -> Bytes {
    let lines = echo
        .lines
        .iter()
        .map(|(name, value)| {
            let mut value = value.clone();
            if name == Name::TO.as_print_str() && !echo.has_to_tag {
                value.push_str(";tag=fm-err");
            }
            (name.clone(), value)
        })
        .collect();
    assemble(code, reason, lines, &[], None, server)
}

/// The echo lines of raw bytes, for answering a message we would not parse (too large).
pub fn echo_of(bytes: &[u8]) -> Option<Echo> {
    crate::message::echo_of(bytes)
}

fn assemble(
    code: u16,
    reason: &str,
    lines: Vec<(String, String)>,
    extra: &[(&'static str, String)],
    body: Option<(&str, Bytes)>,
    server: &str,
) -> Bytes {
    let mut out = String::with_capacity(512);
    // A reason phrase may not contain CR or LF (RFC 3261 §25.1); ours come from our own
    // tables and parse errors, but never trust a string to be one line.
    let reason: String = reason
        .chars()
        .filter(|c| *c != '\r' && *c != '\n')
        .collect();
    let _ = write!(out, "SIP/2.0 {code} {reason}\r\n");
    for (name, value) in &lines {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    for (name, value) in extra {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    let _ = write!(out, "Server: {server}\r\n");
    let body = match body {
        Some((content_type, bytes)) => {
            let _ = write!(out, "Content-Type: {content_type}\r\n");
            bytes
        }
        None => Bytes::new(),
    };
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&body);
    Bytes::from(bytes)
}
