//! The JSON API: the same functions the pages use, for scripts, the CLI and tests. Every input
//! is checked field by field; an error names the field (`{"error": "to: must be 2-8 digits"}`).

use super::conflict::conflicts;
use super::join::{self, Settings, valid_extension, valid_name};
use super::report::{self, Report};
use super::{ApiError, ApiState, TEXT_WAIT, unix_ms};
use crate::driver::sip::{BindingView, StoredView, TextRequest};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use std::collections::HashSet;
use tokio::sync::oneshot;

#[derive(serde::Serialize)]
struct Status {
    version: &'static str,
    node: String,
    uptime_s: u64,
    sip_listen: Vec<String>,
    bindings: Vec<BindingView>,
    /// Our overlay identity (absent without a mesh).
    peer_id: Option<String>,
    /// Neighbour appliances, compatible or not.
    peers: Vec<mesh::PeerInfo>,
    /// What other appliances serve, as learnt from the overlay.
    location: Vec<LocationView>,
    /// Calls whose media this appliance anchors, with live quality figures.
    calls: Vec<CallView>,
    /// The last calls that ended, oldest first, with their final figures.
    recent_calls: Vec<CallView>,
    /// Messages and voicemails kept here for extensions that were away (own or replicas).
    stored: Vec<StoredView>,
}

/// One anchored call as the status API shows it.
#[derive(serde::Serialize)]
struct CallView {
    call_id: String,
    duration_s: f64,
    echo: bool,
    streams: Vec<StreamView>,
}

#[derive(serde::Serialize)]
struct StreamView {
    media: String,
    transcoded: Option<String>,
    legs: Vec<LegView>,
}

#[derive(serde::Serialize)]
struct LegView {
    leg: &'static str,
    remote: Option<String>,
    packets: u64,
    lost: u64,
    loss_pct: f64,
    jitter_ms: f64,
    rtt_ms: Option<f64>,
    mos: f64,
    dropped: u64,
}

fn call_view(r: &media::relay::CallReport) -> CallView {
    CallView {
        call_id: r.call_id.clone(),
        duration_s: r.duration.as_secs_f64(),
        echo: r.echo,
        streams: r
            .streams
            .iter()
            .map(|s| StreamView {
                media: s.media.clone(),
                transcoded: s.transcoded.clone(),
                legs: s
                    .legs
                    .iter()
                    .map(|l| LegView {
                        leg: l.leg,
                        remote: l.remote.map(|a| a.to_string()),
                        packets: l.quality.packets,
                        lost: l.quality.lost,
                        loss_pct: l.quality.loss_pct,
                        jitter_ms: l.quality.jitter_ms,
                        rtt_ms: l.quality.rtt_ms,
                        mos: l.quality.mos,
                        dropped: l.dropped,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// One overlay record as the status API shows it; `phones: 0` is a tombstone.
#[derive(serde::Serialize)]
struct LocationView {
    aor: String,
    peer_id: String,
    node: String,
    sip: String,
    expires_in: u32,
    seq: u64,
    phones: usize,
    reachable: bool,
}

/// `GET /api/status`: version, uptime and every live binding.
pub(crate) async fn status(State(state): State<ApiState>) -> Response {
    let Some((bindings, stored)) = report::sip_snapshot(&state).await else {
        return ApiError::busy().into_response();
    };
    let mesh = state.mesh.borrow().clone();
    let overlay = match &mesh {
        Some(mesh) => mesh.status().await,
        None => None,
    };
    let (peer_id, peers, location) = match overlay {
        Some(o) => (
            Some(o.peer_id),
            o.peers,
            o.records
                .into_iter()
                .map(|(r, suspended)| LocationView {
                    aor: r.aor,
                    peer_id: r.peer,
                    node: r.node,
                    sip: r.sip.to_string(),
                    expires_in: r.ttl_secs,
                    seq: r.seq,
                    phones: r.phones.len(),
                    reachable: !suspended,
                })
                .collect(),
        ),
        None => (
            mesh.as_ref()
                .map(|m| m.peer_id().to_base58())
                .or_else(|| state.peer_id.clone()),
            Vec::new(),
            Vec::new(),
        ),
    };
    let (calls, recent_calls) = match &state.media {
        Some(plane) => {
            let (live, recent) = plane.reports();
            (
                live.iter().map(call_view).collect(),
                recent.iter().map(call_view).collect(),
            )
        }
        None => (Vec::new(), Vec::new()),
    };
    Json(Status {
        calls,
        recent_calls,
        peer_id,
        peers,
        location,
        version: env!("CARGO_PKG_VERSION"),
        node: state.node.clone(),
        uptime_s: state.started.elapsed().as_secs(),
        sip_listen: state.sip_listen.iter().map(ToString::to_string).collect(),
        bindings,
        stored,
    })
    .into_response()
}

/// `GET /api/report`: what this appliance tells the others about itself.
pub(crate) async fn report(State(state): State<ApiState>) -> Result<Json<Report>, ApiError> {
    report::local(&state)
        .await
        .map(Json)
        .ok_or_else(ApiError::busy)
}

/// `GET /api/network`: every appliance's report, asked now (≤ 2 s), the silent ones named.
pub(crate) async fn network(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let network = report::network(&state).await.ok_or_else(ApiError::busy)?;
    let conflicts = conflicts(&network);
    Ok(Json(serde_json::json!({
        "took_ms": network.took_ms,
        "appliances": network.appliances,
        "conflicts": conflicts,
    }))
    .into_response())
}

/// `GET /api/directory`: every registered extension on every appliance.
pub(crate) async fn directory(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let (network, entries) = report::directory(&state).await.ok_or_else(ApiError::busy)?;
    Ok(Json(serde_json::json!({
        "took_ms": network.took_ms,
        "unreachable": network.appliances.iter().filter(|a| !a.reachable).map(|a| &a.node).collect::<Vec<_>>(),
        "phones": entries,
        "conflicts": conflicts(&network),
    }))
    .into_response())
}

/// The settings a phone needs here, as reached by this request.
pub(crate) fn settings(state: &ApiState, headers: &HeaderMap) -> Settings {
    let sip = state.sip_listen.first().copied();
    let port = sip.map_or(5060, |a| a.port());
    // The Host header says how the browser reached us (the AP address on the Pi); checked,
    // since it is the client's word and goes into the provisioning XML.
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.len() <= 100
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .map(str::to_string);
    let server_from_host = host.as_deref().map(|h| match h.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => {
            name.trim_matches(['[', ']']).to_string()
        }
        _ => h.trim_matches(['[', ']']).to_string(),
    });
    let server = match sip.map(|a| a.ip()) {
        Some(ip) if !ip.is_unspecified() => ip.to_string(),
        _ => server_from_host.unwrap_or_else(|| crate::cli::setup::AP_ADDRESS.to_string()),
    };
    let base = match host {
        Some(h) => format!("http://{h}"),
        None => format!("http://{server}"),
    };
    Settings {
        server,
        port,
        transport: "udp",
        base,
    }
}

/// `GET /api/join`: the SIP settings for a phone.
pub(crate) async fn join(State(state): State<ApiState>, headers: HeaderMap) -> Json<Settings> {
    Json(settings(&state, &headers))
}

#[derive(serde::Deserialize, Default)]
struct AllocateBody {
    display_name: Option<serde_json::Value>,
}

/// Parses a JSON body into `T`, with an error that says what was expected.
fn json_body<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    expected: &str,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad(format!("body: expected {expected} ({e})")))
}

/// A string field or an error naming it.
fn text_field(value: Option<serde_json::Value>, field: &str) -> Result<Option<String>, ApiError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad(format!("{field}: must be a string"))),
    }
}

/// `POST /api/extensions` `{"display_name": "Ana"}`: a free extension, 201.
pub(crate) async fn allocate(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: AllocateBody = json_body(&body, r#"a JSON object like {"display_name": "Ana"}"#)?;
    let name = text_field(body.display_name, "display_name")?.unwrap_or_default();
    let name = name.trim().to_string();
    if !valid_name(&name) {
        return Err(ApiError::bad(
            "display_name: at most 40 characters, no control characters",
        ));
    }
    let extension = allocate_extension(&state, &name).await?;
    let settings = settings(&state, &headers);
    let provisioning = settings.provisioning_url(&extension);
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "extension": extension,
            "display_name": name,
            "sip": settings,
            "provisioning_url": provisioning,
        })),
    )
        .into_response())
}

/// Picks and records a free extension: not bound, not waited for, not handed out or seen
/// recently anywhere that answers, and owned by this appliance (see [`join`]).
pub(crate) async fn allocate_extension(state: &ApiState, name: &str) -> Result<String, ApiError> {
    let _one_at_a_time = state.allocating.lock().await;
    let network = report::network(state).await.ok_or_else(ApiError::busy)?;
    let mut used: HashSet<String> = HashSet::new();
    let mut others: Vec<String> = Vec::new();
    for a in &network.appliances {
        others.extend(a.peer_id.clone());
        if let Some(r) = &a.report {
            used.extend(r.phones.iter().map(|p| p.extension.clone()));
            used.extend(r.known.iter().cloned());
            used.extend(r.mailboxes.iter().cloned());
            used.extend(r.allocations.iter().map(|a| a.extension.clone()));
            others.extend(r.neighbours.iter().map(|n| n.peer_id.clone()));
        }
    }
    let mesh = state.mesh.borrow().clone();
    if let Some(m) = mesh
        && let Some(status) = m.status().await
    {
        for (r, _) in status.records {
            others.push(r.peer.clone());
            used.insert(r.aor);
        }
    }
    others.sort();
    others.dedup();
    let me = network
        .appliances
        .first()
        .and_then(|a| a.peer_id.clone())
        .unwrap_or_else(|| state.node.clone());
    let range = state.web.extensions;
    let db = state.db.clone();
    let name = name.to_string();
    tokio::task::spawn_blocking(move || {
        let mut db = db.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let Some(extension) = join::pick(range, &me, &others, &used) else {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "no free extension left in {}-{} (api.extensions)",
                        range.0, range.1
                    ),
                ));
            };
            let now = unix_ms();
            let forget = now - report::RESERVED_FOR.as_millis() as i64;
            match db.allocate(&extension, &name, now, forget) {
                Ok(true) => {
                    tracing::info!(%extension, "extension handed out");
                    return Ok(extension);
                }
                // Handed out here before (longer ago than the survey looks): the next one.
                Ok(false) => {
                    used.insert(extension);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "allocation not stored");
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("the allocation could not be stored: {e}"),
                    ));
                }
            }
        }
    })
    .await
    .map_err(|_| ApiError::busy())?
}

#[derive(serde::Deserialize, Default)]
struct SendBody {
    to: Option<serde_json::Value>,
    text: Option<serde_json::Value>,
    from_name: Option<serde_json::Value>,
}

/// The outcome of a text, for the API and the page.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Sent {
    pub(crate) to: String,
    /// `delivered` (a phone took it), `stored` (kept until the phone registers) or `failed`.
    pub(crate) outcome: &'static str,
    pub(crate) sip_status: u16,
    pub(crate) reason: String,
}

/// Checks a text's fields and sends it; the SIP answer decides the outcome.
pub(crate) async fn send_text(
    state: &ApiState,
    to: Option<String>,
    text: Option<String>,
    from_name: Option<String>,
) -> Result<Sent, ApiError> {
    let to = to.unwrap_or_default().trim().to_string();
    if !valid_extension(&to) {
        return Err(ApiError::bad("to: must be 2-8 digits"));
    }
    let text = text.unwrap_or_default();
    if text.trim().is_empty() || text.chars().count() > 1000 {
        return Err(ApiError::bad("text: must be 1-1000 characters"));
    }
    let from_name = from_name.unwrap_or_default().trim().to_string();
    if !valid_name(&from_name) {
        return Err(ApiError::bad(
            "from_name: at most 40 characters, no control characters",
        ));
    }
    let from_name = if from_name.is_empty() {
        format!("{} (web)", state.node)
    } else {
        format!("{from_name} (web)")
    };
    let (reply, answer) = oneshot::channel();
    let request = TextRequest {
        text: sip::WebText {
            to: to.clone(),
            from_name,
            text,
        },
        reply,
    };
    state
        .texts
        .send_timeout(request, std::time::Duration::from_secs(2))
        .await
        .map_err(|_| ApiError::busy())?;
    let (status, reason) = tokio::time::timeout(TEXT_WAIT, answer)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("to: no answer for {to} within {} s", TEXT_WAIT.as_secs()),
            )
        })?
        .map_err(|_| ApiError::busy())?;
    let outcome = match status {
        202 => "stored",
        200..=299 => "delivered",
        _ => "failed",
    };
    Ok(Sent {
        to,
        outcome,
        sip_status: status,
        reason,
    })
}

/// `POST /api/messages` `{"to": "2001", "text": "...", "from_name": "HQ"}`.
pub(crate) async fn send(
    State(state): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: SendBody = json_body(
        &body,
        r#"a JSON object like {"to": "2001", "text": "hello"}"#,
    )?;
    let to = text_field(body.to, "to")?;
    let text = text_field(body.text, "text")?;
    let from_name = text_field(body.from_name, "from_name")?;
    let sent = send_text(&state, to, text, from_name).await?;
    let status = match sent.outcome {
        "delivered" => StatusCode::OK,
        "stored" => StatusCode::ACCEPTED,
        _ => StatusCode::BAD_GATEWAY,
    };
    Ok((status, Json(sent)).into_response())
}

/// Anything else: 404 in JSON for the API, a short text otherwise.
pub(crate) async fn not_found(uri: axum::http::Uri) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("{}: no such page or endpoint", uri.path()),
    )
    .into_response()
}
