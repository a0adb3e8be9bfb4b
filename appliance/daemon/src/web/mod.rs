//! The appliance's face: a JSON API and a web page served by the daemon (axum), for phones'
//! browsers over the AP and for the coordinator's laptop. No JavaScript: every page is HTML
//! rendered here, with forms for the two things that change state (a free extension, a text).
//!
//! - [`report`]: what one appliance says about itself, and the network and directory views
//!   merged from every appliance's report (asked over the overlay, bounded per peer).
//! - [`join`]: settings, free extensions (rendezvous hashing), Linphone provisioning, QR.
//! - [`conflict`]: an extension handed out on both sides of a partition, shown in the views and
//!   told to its phones once the halves meet.
//! - [`api`] (JSON) and [`pages`] (HTML) over the same functions; `phonebook` for phones.
//!
//! Guards on every request: bodies ≤ 16 KiB, a token bucket per client address (loopback, the
//! appliance itself, is not limited), and no
//! state-changing request from the mesh side unless `api.mesh_writes` (the API may be
//! configured to listen there for the read-only views).

mod api;
pub(crate) mod conflict;
mod join;
mod pages;
mod phonebook;
pub(crate) mod report;

use crate::driver::sip::{StatusRequest, TextRequest};
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Largest request body: a text message and its form encoding fit many times over.
const MAX_BODY: usize = 16 * 1024;

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
    /// Texts typed on the page, for the SIP task.
    pub(crate) texts: mpsc::Sender<TextRequest>,
    /// The media relay, when enabled.
    pub(crate) media: Option<crate::media::MediaPlane>,
    /// A connection of the API's own to the database (allocations; known extensions).
    pub(crate) db: Arc<Mutex<store::Db>>,
    /// One allocation at a time on this appliance (concurrency across appliances is
    /// handled by the numbers' ownership, see [`join`]).
    pub(crate) allocating: Arc<tokio::sync::Mutex<()>>,
    pub(crate) limits: Arc<Limits>,
    /// The last warnings and errors logged, for the network view.
    pub(crate) errors: crate::telemetry::RecentErrors,
    pub(crate) web: WebConfig,
}

/// The `[api]` settings the handlers need.
#[derive(Clone, Debug)]
pub(crate) struct WebConfig {
    /// Free extensions are handed out from this range.
    pub(crate) extensions: (u32, u32),
    /// Accept state-changing requests that arrive on a mesh-side address.
    pub(crate) mesh_writes: bool,
    /// The mesh interfaces (their addresses are looked up per request: they come late).
    pub(crate) mesh_interfaces: Vec<String>,
}

impl ApiState {
    /// Our mesh-side SIP address, once the mesh interface has one.
    pub(crate) fn mesh_sip(&self) -> Option<SocketAddr> {
        let ip = self
            .web
            .mesh_interfaces
            .iter()
            .find_map(|i| crate::overlay::interface_ipv4(i))?;
        let port = self.sip_listen.first().map_or(5060, SocketAddr::port);
        Some(SocketAddr::from((ip, port)))
    }

    /// Extensions registered here within [`report::RESERVED_FOR`], and recent allocations.
    pub(crate) async fn records(&self) -> (Vec<String>, Vec<report::Allocation>) {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let now = unix_ms();
            let since = now - report::RESERVED_FOR.as_millis() as i64;
            let mut db = db.lock().unwrap_or_else(|e| e.into_inner());
            let known = db
                .known_extensions(since)
                .map(|k| k.into_iter().map(|(aor, _)| aor).collect())
                .unwrap_or_default();
            let allocations = db
                .allocations(since)
                .map(|a| {
                    a.into_iter()
                        .map(|a| report::Allocation {
                            extension: a.extension,
                            display_name: a.name,
                            age_s: (now - a.at_ms).max(0) as u64 / 1000,
                        })
                        .collect()
                })
                .unwrap_or_default();
            (known, allocations)
        })
        .await
        .unwrap_or_default()
    }
}

pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Where a connection came from and arrived: the guard needs the local side to tell the
/// phone side from the mesh side.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer {
    pub(crate) remote: SocketAddr,
    pub(crate) local: Option<SocketAddr>,
}

impl Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Peer {
            remote: *stream.remote_addr(),
            local: stream.io().local_addr().ok(),
        }
    }
}

/// An API error: an HTTP status and one line that names the field at fault.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn busy() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the SIP core is not answering",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

/// Token buckets per client address: reads are cheap but each view asks every appliance, so
/// they are limited too; writes (allocations, texts) more.
pub(crate) struct Limits {
    buckets: Mutex<HashMap<(IpAddr, bool), (f64, Instant)>>,
}

/// (burst, per second) for reads and writes.
const READS: (f64, f64) = (60.0, 10.0);
const WRITES: (f64, f64) = (40.0, 2.0);

impl Limits {
    pub(crate) fn new() -> Limits {
        Limits {
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `ip`; `Err(seconds to wait)` when its bucket is empty.
    fn take(&self, ip: IpAddr, write: bool, now: Instant) -> Result<(), u64> {
        let (burst, rate) = if write { WRITES } else { READS };
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 4096 {
            // A flood of addresses: forget the full buckets rather than grow without bound.
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets.entry((ip, write)).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / rate).ceil() as u64)
        }
    }
}

/// Rate limit, and no writes from the mesh side unless configured.
async fn guard(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: Request,
    next: Next,
) -> Response {
    let write = request.method() == Method::POST;
    // Loopback is the appliance itself (the CLI, health checks): only other hosts are limited.
    let limited = !peer.remote.ip().is_loopback();
    if limited && let Err(wait) = state.limits.take(peer.remote.ip(), write, Instant::now()) {
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many requests from {}: try again in {wait} s",
                peer.remote.ip()
            ),
        )
        .into_response();
        if let Ok(v) = header::HeaderValue::from_str(&wait.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return response;
    }
    if write
        && !state.web.mesh_writes
        && let Some(local) = peer.local
    {
        let mesh_side: HashSet<IpAddr> = state
            .web
            .mesh_interfaces
            .iter()
            .filter_map(|i| crate::overlay::interface_ipv4(i))
            .map(IpAddr::V4)
            .collect();
        if mesh_side.contains(&local.ip()) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "changes are not accepted from the mesh side (api.mesh_writes)",
            )
            .into_response();
        }
    }
    next.run(request).await
}

pub(crate) fn router(state: ApiState) -> axum::Router {
    axum::Router::new()
        .route("/api/status", get(api::status))
        .route("/api/report", get(api::report))
        .route("/api/network", get(api::network))
        .route("/api/directory", get(api::directory))
        .route("/api/join", get(api::join))
        .route("/api/extensions", post(api::allocate))
        .route("/api/messages", post(api::send))
        .route("/", get(pages::home))
        .route("/style.css", get(pages::style))
        .route("/join", get(pages::join).post(pages::allocate))
        .route("/join/{extension}", get(pages::joined))
        .route("/directory", get(pages::directory))
        .route("/directory/{extension}", get(pages::how_to_call))
        .route("/network", get(pages::network))
        .route("/messages", get(pages::messages).post(pages::send))
        .route("/provisioning/{file}", get(pages::provisioning))
        .route("/phonebook.vcf", get(phonebook::vcard))
        .route("/phonebook.xml", get(phonebook::xml))
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Serves the router on `listener` until `stop` changes.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let app = router(state).into_make_service_with_connect_info::<Peer>();
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop.changed().await;
    });
    if let Err(e) = serve.await {
        tracing::error!(error = %e, "web API stopped");
    }
}

/// How long an API call may wait for the SIP task's answer to a text.
pub(crate) const TEXT_WAIT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_limited_after_its_burst_and_refills_over_time() {
        let limits = Limits::new();
        let ip: IpAddr = "10.42.0.77".parse().expect("ip");
        let t = Instant::now();
        for _ in 0..WRITES.0 as usize {
            assert!(limits.take(ip, true, t).is_ok());
        }
        assert!(limits.take(ip, true, t).is_err());
        // Reads have their own bucket; another client is not affected.
        assert!(limits.take(ip, false, t).is_ok());
        assert!(
            limits
                .take("10.42.0.78".parse().expect("ip"), true, t)
                .is_ok()
        );
        assert!(limits.take(ip, true, t + Duration::from_secs(1)).is_ok());
    }
}
