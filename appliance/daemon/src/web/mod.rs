//! The local HTTP API (JSON): what tests and operators use to look inside a running appliance.
//! Later issues grow it into the operator API and web page.

use crate::driver::sip::{BindingView, StatusRequest, StoredView};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// What the API handlers share.
#[derive(Clone)]
pub(crate) struct ApiState {
    /// The overlay, when this appliance is part of one.
    pub(crate) mesh: tokio::sync::watch::Receiver<Option<mesh::Mesh>>,
    /// Our overlay identity, known from the state directory before the overlay is up.
    pub(crate) peer_id: Option<String>,
    pub(crate) node: String,
    pub(crate) started: Instant,
    pub(crate) sip_listen: Vec<SocketAddr>,
    pub(crate) status: mpsc::Sender<StatusRequest>,
    /// The media relay, when enabled.
    pub(crate) media: Option<crate::media::MediaPlane>,
}

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

pub(crate) fn router(state: ApiState) -> axum::Router {
    axum::Router::new()
        .route("/api/status", get(status))
        .with_state(state)
}

/// `GET /api/status`: version, uptime and every live binding.
async fn status(State(state): State<ApiState>) -> impl IntoResponse {
    let (reply, answer) = oneshot::channel();
    let asked = state
        .status
        .send_timeout(StatusRequest { reply }, Duration::from_secs(2))
        .await;
    let (Ok(()), Ok(Ok((bindings, stored)))) = (
        asked,
        tokio::time::timeout(Duration::from_secs(2), answer).await,
    ) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "SIP core not answering").into_response();
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
