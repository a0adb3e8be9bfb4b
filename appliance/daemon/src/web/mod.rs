//! The local HTTP API (JSON): what tests and operators use to look inside a running appliance.
//! Later issues grow it into the operator API and web page.

use crate::driver::sip::{BindingView, StatusRequest};
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
    pub(crate) node: String,
    pub(crate) started: Instant,
    pub(crate) sip_listen: Vec<SocketAddr>,
    pub(crate) status: mpsc::Sender<StatusRequest>,
}

#[derive(serde::Serialize)]
struct Status {
    version: &'static str,
    node: String,
    uptime_s: u64,
    sip_listen: Vec<String>,
    bindings: Vec<BindingView>,
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
    let (Ok(()), Ok(Ok(bindings))) = (
        asked,
        tokio::time::timeout(Duration::from_secs(2), answer).await,
    ) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "SIP core not answering").into_response();
    };
    Json(Status {
        version: env!("CARGO_PKG_VERSION"),
        node: state.node.clone(),
        uptime_s: state.started.elapsed().as_secs(),
        sip_listen: state.sip_listen.iter().map(ToString::to_string).collect(),
        bindings,
    })
    .into_response()
}
