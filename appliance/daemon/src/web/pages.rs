//! The web page: plain HTML rendered here, a small stylesheet, forms for the two actions. It
//! reads well on a 360-px phone (one column, tables that scroll sideways) and on a laptop.

use super::api::{self, settings};
use super::conflict::conflicts;
use super::join::{escape as e, provisioning_xml, qr_svg, valid_extension};
use super::report::{self, ApplianceView};
use super::{ApiError, ApiState};
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use std::fmt::Write as _;

const STYLE: &str = include_str!("style.css");

/// The page around `body`: title, navigation, stylesheet.
fn page(title: &str, node: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · fieldmesh {node}</title><link rel=\"stylesheet\" href=\"/style.css\"></head>\
         <body><header><strong>fieldmesh</strong> <span class=\"node\">{node}</span>\
         <nav><a href=\"/join\">Join</a><a href=\"/directory\">Directory</a>\
         <a href=\"/network\">Network</a><a href=\"/messages\">Messages</a></nav></header>\
         <main>{body}</main></body></html>\n",
        title = e(title),
        node = e(node),
    ))
}

/// An error as a page (the same words the API would say).
fn error_page(state: &ApiState, err: ApiError) -> Response {
    let body = format!(
        "<h1>Sorry</h1><p class=\"error\" id=\"error\">{}</p><p><a href=\"javascript:history.back()\">Back</a></p>",
        e(&err.message)
    );
    (err.status, page("Error", &state.node, &body)).into_response()
}

pub(crate) async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

pub(crate) async fn home() -> Redirect {
    Redirect::to("/join")
}

fn settings_table(s: &super::join::Settings, extension: Option<&str>) -> String {
    format!(
        "<table class=\"settings\"><tr><th>Username / extension</th><td id=\"username\">{}</td></tr>\
         <tr><th>Domain and SIP server</th><td id=\"server\">{}</td></tr>\
         <tr><th>Port</th><td>{}</td></tr><tr><th>Transport</th><td>UDP (TCP works too)</td></tr>\
         <tr><th>Password</th><td>none</td></tr></table>",
        extension.map_or_else(|| "<em>your extension</em>".to_string(), e),
        e(&s.server),
        s.port
    )
}

/// `GET /join`: the settings, and the button for a free extension.
pub(crate) async fn join(State(state): State<ApiState>, headers: HeaderMap) -> Html<String> {
    let s = settings(&state, &headers);
    let body = format!(
        "<h1>Join this network</h1>\
         <p>Any SIP phone or softphone works. Get a number of your own, then scan its code with \
         Linphone, or type the settings below into any phone.</p>\
         <form id=\"allocate\" method=\"post\" action=\"/join\">\
         <label for=\"name\">Your name (shown to the people you call)</label>\
         <input id=\"name\" name=\"name\" maxlength=\"40\" autocomplete=\"name\">\
         <button type=\"submit\">Give me a free extension</button></form>\
         <h2>Settings</h2>{}\
         <p class=\"hint\">Already have an extension? Use it: any 2–8 digit number nobody else uses.</p>",
        settings_table(&s, None)
    );
    page("Join", &state.node, &body)
}

#[derive(serde::Deserialize)]
pub(crate) struct AllocateForm {
    #[serde(default)]
    name: String,
}

/// `POST /join` (the form): allocate, then show the new extension's page.
pub(crate) async fn allocate(
    State(state): State<ApiState>,
    Form(form): Form<AllocateForm>,
) -> Response {
    let name = form.name.trim().to_string();
    if !super::join::valid_name(&name) {
        return error_page(
            &state,
            ApiError::bad("name: at most 40 characters, no control characters"),
        );
    }
    match api::allocate_extension(&state, &name).await {
        Ok(extension) => Redirect::to(&format!("/join/{extension}")).into_response(),
        Err(err) => error_page(&state, err),
    }
}

/// `GET /join/{extension}`: its settings and the QR code of its provisioning URL.
pub(crate) async fn joined(
    State(state): State<ApiState>,
    Path(extension): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !valid_extension(&extension) {
        return error_page(&state, ApiError::bad("extension: must be 2-8 digits"));
    }
    let s = settings(&state, &headers);
    let url = s.provisioning_url(&extension);
    let qr = qr_svg(&url).unwrap_or_default();
    let body = format!(
        "<h1>Your extension: <span id=\"extension\">{ext}</span></h1>\
         <p>Others call you by dialling <strong>{ext}</strong> from any phone on any appliance.</p>\
         <h2>Linphone: scan this</h2>\
         <p>Linphone → Assistant → <em>Fetch remote configuration</em> → scan the code.</p>\
         <div class=\"qr\" id=\"qr\">{qr}</div>\
         <p>It points at <code id=\"provisioning-url\">{url}</code></p>\
         <h2>Any other phone</h2>{table}",
        ext = e(&extension),
        url = e(&url),
        table = settings_table(&s, Some(&extension)),
    );
    page(&format!("Extension {extension}"), &state.node, &body).into_response()
}

/// `GET /provisioning/{extension}.xml`: Linphone's remote provisioning for one extension.
pub(crate) async fn provisioning(
    State(state): State<ApiState>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(extension) = file.strip_suffix(".xml").filter(|x| valid_extension(x)) else {
        return ApiError::bad("extension: must be 2-8 digits, as /provisioning/2001.xml")
            .into_response();
    };
    let (_, allocations) = state.records().await;
    let name = allocations
        .iter()
        .find(|a| a.extension == extension)
        .map(|a| a.display_name.clone())
        .unwrap_or_default();
    let xml = provisioning_xml(&settings(&state, &headers), extension, &name);
    (
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        xml,
    )
        .into_response()
}

fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86_400, secs % 86_400 / 3600),
    }
}

fn conflict_banner(network: &report::Network) -> String {
    let mut out = String::new();
    for c in conflicts(network) {
        let _ = write!(
            out,
            "<p class=\"error conflict\">Extension <strong>{}</strong> was handed out on {} \
             while the network was split: both phones ring for it. One of you, please \
             <a href=\"/join\">take a new extension</a>.</p>",
            e(&c.extension),
            e(&c.nodes.join(" and "))
        );
    }
    out
}

fn unreachable_note(network: &report::Network) -> String {
    let silent: Vec<String> = network
        .appliances
        .iter()
        .filter(|a| !a.reachable)
        .map(|a| {
            if a.node.is_empty() {
                a.peer_id.clone().unwrap_or_default()
            } else {
                a.node.clone()
            }
        })
        .collect();
    if silent.is_empty() {
        String::new()
    } else {
        format!(
            "<p class=\"warn\">Not answering now: {}. Their phones are shown from the last news.</p>",
            e(&silent.join(", "))
        )
    }
}

/// `GET /directory`: every registered extension on every appliance.
pub(crate) async fn directory(State(state): State<ApiState>) -> Response {
    let Some((network, entries)) = report::directory(&state).await else {
        return error_page(&state, ApiError::busy());
    };
    let mut rows = String::new();
    for p in &entries {
        let _ = write!(
            rows,
            "<tr data-extension=\"{ext}\" class=\"{class}\"><td><a href=\"/directory/{ext}\">{ext}</a></td>\
             <td>{name}</td><td>{node}{here}</td><td>{since}</td></tr>",
            ext = e(&p.extension),
            class = if p.reachable { "" } else { "unreachable" },
            name = e(p.display_name.as_deref().unwrap_or("")),
            node = e(&p.node),
            here = if p.here { " (here)" } else { "" },
            since = p.registered_for_s.map_or_else(
                || "not answering".to_string(),
                |s| format!("for {}", duration(s))
            ),
        );
    }
    if entries.is_empty() {
        rows.push_str("<tr><td colspan=\"4\">No phone is registered yet.</td></tr>");
    }
    let body = format!(
        "<h1>Directory</h1>{}{}<div class=\"scroll\"><table id=\"directory\"><thead><tr><th>Extension</th>\
         <th>Name</th><th>Appliance</th><th>Registered</th></tr></thead><tbody>{rows}</tbody></table></div>\
         <p class=\"hint\">Phone books: <a href=\"/phonebook.vcf\">vCard</a> · \
         <a href=\"/phonebook.xml\">XML</a></p>",
        conflict_banner(&network),
        unreachable_note(&network),
    );
    page("Directory", &state.node, &body).into_response()
}

/// `GET /directory/{extension}`: how to reach it.
pub(crate) async fn how_to_call(
    State(state): State<ApiState>,
    Path(extension): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !valid_extension(&extension) {
        return error_page(&state, ApiError::bad("extension: must be 2-8 digits"));
    }
    let s = settings(&state, &headers);
    let body = format!(
        "<h1>Call {ext}</h1><ul><li>From any phone on any appliance: dial <strong>{ext}</strong>.</li>\
         <li>From a softphone by URI: <code>sip:{ext}@{server}</code></li>\
         <li>Not there? Your call goes to voicemail, and texts wait for the phone.</li></ul>\
         <h2>Send a text</h2>{form}",
        ext = e(&extension),
        server = e(&s.server),
        form = message_form(&extension),
    );
    page(&format!("Call {extension}"), &state.node, &body).into_response()
}

fn appliance_card(a: &ApplianceView) -> String {
    let mut out = format!(
        "<section class=\"appliance {}\" data-node=\"{}\"><h2>{}{}</h2>",
        if a.reachable { "up" } else { "down" },
        e(&a.node),
        e(if a.node.is_empty() {
            "(unnamed)"
        } else {
            &a.node
        }),
        if a.here { " (this one)" } else { "" },
    );
    match &a.report {
        None => {
            let _ = write!(
                out,
                "<p class=\"error\">Unreachable: {}</p><p class=\"id\">{}</p>",
                e(a.error.as_deref().unwrap_or("no answer")),
                e(a.peer_id.as_deref().unwrap_or("")),
            );
        }
        Some(r) => {
            let neighbours: Vec<String> = r
                .neighbours
                .iter()
                .map(|n| {
                    let name = if n.node.is_empty() {
                        &n.peer_id
                    } else {
                        &n.node
                    };
                    format!("{}{}", e(name), if n.connected { "" } else { " (gone)" })
                })
                .collect();
            let _ = write!(
                out,
                "<table><tr><th>Peer id</th><td class=\"id\">{}</td></tr>\
                 <tr><th>Addresses</th><td>{}</td></tr><tr><th>Version</th><td>{}</td></tr>\
                 <tr><th>Up for</th><td>{}</td></tr><tr><th>Neighbours</th><td>{}</td></tr>\
                 <tr><th>Phones</th><td>{}</td></tr><tr><th>Active calls</th><td>{}</td></tr></table>",
                e(r.peer_id.as_deref().unwrap_or("-")),
                e(&r.addresses.join(" ")),
                e(&r.version),
                duration(r.uptime_s),
                if neighbours.is_empty() {
                    "none".to_string()
                } else {
                    neighbours.join(", ")
                },
                r.phones.len(),
                r.active_calls,
            );
            if !r.errors.is_empty() {
                out.push_str("<details><summary>Recent errors</summary><ul>");
                for err in &r.errors {
                    let _ = write!(
                        out,
                        "<li>{} ago, {}: {}</li>",
                        duration(err.age_s),
                        e(&err.level),
                        e(&err.message)
                    );
                }
                out.push_str("</ul></details>");
            }
        }
    }
    out.push_str("</section>");
    out
}

/// `GET /network`: every appliance, and who can hear whom.
pub(crate) async fn network(State(state): State<ApiState>) -> Response {
    let Some(network) = report::network(&state).await else {
        return error_page(&state, ApiError::busy());
    };
    let mut body = format!(
        "<h1>Network</h1><p>{} appliance{}, asked in {} ms.</p>{}",
        network.appliances.len(),
        if network.appliances.len() == 1 {
            ""
        } else {
            "s"
        },
        network.took_ms,
        conflict_banner(&network)
    );
    for a in &network.appliances {
        body.push_str(&appliance_card(a));
    }
    body.push_str(
        "<h2>Call quality</h2><div class=\"scroll\"><table id=\"quality\"><thead><tr><th>Appliance</th>\
         <th>Leg</th><th>Far end</th><th>Loss</th><th>Jitter</th><th>RTT</th><th>MOS</th></tr></thead><tbody>",
    );
    let mut any = false;
    for a in &network.appliances {
        for c in a.report.iter().flat_map(|r| &r.recent_calls) {
            any = true;
            let _ = write!(
                body,
                "<tr class=\"{}\"><td>{}</td><td>{} {}{}</td><td>{}</td><td>{:.1} %</td><td>{:.1} ms</td><td>{}</td><td>{:.2}</td></tr>",
                if c.mos < 3.1 { "poor" } else { "" },
                e(&a.node),
                e(&c.media),
                e(&c.leg),
                if c.live { " (live)" } else { "" },
                e(c.remote.as_deref().unwrap_or("-")),
                c.loss_pct,
                c.jitter_ms,
                c.rtt_ms
                    .map_or_else(|| "-".to_string(), |r| format!("{r:.1} ms")),
                c.mos,
            );
        }
    }
    if !any {
        body.push_str("<tr><td colspan=\"7\">No calls between appliances yet.</td></tr>");
    }
    body.push_str("</tbody></table></div>");
    page("Network", &state.node, &body).into_response()
}

fn message_form(to: &str) -> String {
    format!(
        "<form id=\"send\" method=\"post\" action=\"/messages\">\
         <label for=\"to\">To extension</label><input id=\"to\" name=\"to\" inputmode=\"numeric\" \
         maxlength=\"8\" value=\"{}\" required>\
         <label for=\"from_name\">From (your name)</label><input id=\"from_name\" name=\"from_name\" maxlength=\"40\">\
         <label for=\"text\">Text</label><textarea id=\"text\" name=\"text\" maxlength=\"1000\" rows=\"4\" required></textarea>\
         <button type=\"submit\">Send</button></form>",
        e(to)
    )
}

/// `GET /messages`: the form.
pub(crate) async fn messages(State(state): State<ApiState>) -> Html<String> {
    let body = format!(
        "<h1>Send a text</h1><p>It reaches the phone now, or waits in the network until the \
         phone is back.</p>{}",
        message_form("")
    );
    page("Messages", &state.node, &body)
}

#[derive(serde::Deserialize)]
pub(crate) struct SendForm {
    #[serde(default)]
    to: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    from_name: String,
}

/// `POST /messages` (the form): send, and say what became of it.
pub(crate) async fn send(State(state): State<ApiState>, Form(form): Form<SendForm>) -> Response {
    match api::send_text(&state, Some(form.to), Some(form.text), Some(form.from_name)).await {
        Ok(sent) => {
            let what = match sent.outcome {
                "delivered" => format!("Delivered to {}.", sent.to),
                "stored" => format!(
                    "{} is not reachable now: the text waits and is delivered when the phone is back.",
                    sent.to
                ),
                _ => format!("Not delivered: {} {}.", sent.sip_status, sent.reason),
            };
            let status = if sent.outcome == "failed" {
                StatusCode::BAD_GATEWAY
            } else {
                StatusCode::OK
            };
            let body = format!(
                "<h1>Send a text</h1><p id=\"outcome\" class=\"{}\" data-outcome=\"{}\">{}</p>{}",
                if sent.outcome == "failed" {
                    "error"
                } else {
                    "ok"
                },
                sent.outcome,
                e(&what),
                message_form(&sent.to)
            );
            (status, page("Messages", &state.node, &body)).into_response()
        }
        Err(err) => error_page(&state, err),
    }
}
