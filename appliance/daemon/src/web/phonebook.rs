//! The directory as phone books at stable URLs: vCard 3.0 (`/phonebook.vcf`, which phones and
//! address books import) and the XML remote phone book many desk phones read
//! (`/phonebook.xml`, Yealink's `YealinkIPPhoneDirectory` form, which Fanvil and others accept).

use super::join::escape;
use super::report;
use super::{ApiError, ApiState};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::fmt::Write as _;

fn name_of(e: &report::Entry) -> String {
    match &e.display_name {
        Some(n) if !n.is_empty() => n.clone(),
        _ => format!("Extension {}", e.extension),
    }
}

/// vCard text values escape `\`, `,`, `;` and line breaks (RFC 2426 §4).
fn vcard_text(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace(';', "\\;")
        .replace(['\r', '\n'], " ")
}

pub(crate) async fn vcard(State(state): State<ApiState>) -> Response {
    let Some((_, entries)) = report::directory(&state).await else {
        return ApiError::busy().into_response();
    };
    let mut out = String::new();
    for e in entries {
        let _ = write!(
            out,
            "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:{}\r\nN:{};;;;\r\nTEL;TYPE=work,voice:{}\r\nNOTE:on {}\r\nEND:VCARD\r\n",
            vcard_text(&name_of(&e)),
            vcard_text(&name_of(&e)),
            e.extension,
            vcard_text(&e.node),
        );
    }
    (
        [
            (header::CONTENT_TYPE, "text/vcard; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "inline; filename=\"fieldmesh.vcf\"",
            ),
        ],
        out,
    )
        .into_response()
}

pub(crate) async fn xml(State(state): State<ApiState>) -> Response {
    let Some((_, entries)) = report::directory(&state).await else {
        return ApiError::busy().into_response();
    };
    let mut out =
        String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<YealinkIPPhoneDirectory>\n");
    for e in entries {
        let _ = writeln!(
            out,
            "  <DirectoryEntry><Name>{}</Name><Telephone>{}</Telephone></DirectoryEntry>",
            escape(&name_of(&e)),
            escape(&e.extension),
        );
    }
    out.push_str("</YealinkIPPhoneDirectory>\n");
    (
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        out,
    )
        .into_response()
}
