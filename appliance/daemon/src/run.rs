//! Starting and stopping the appliance. `run` takes its shutdown signal as a parameter (the
//! shape of mini-redis' `server::run`): the binary passes SIGINT/SIGTERM, tests their own.

use crate::config::Config;
use crate::driver;
use crate::overlay;
use crate::storage::SqlStorage;
use crate::web;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Why the appliance could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Bind(#[from] driver::sip::BindError),
    #[error("api.listen {addr}: {source}")]
    Api {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Runs the appliance until `shutdown` completes.
pub(crate) async fn run(
    config: Config,
    errors: crate::telemetry::RecentErrors,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let started = Instant::now();
    let db = store::Db::open(&config.state_dir)?;
    tracing::info!(state = %db.path().display(), "state opened");
    let mut storage = SqlStorage::new(db, config.file.store_keep);
    let file = &config.file;
    let registrar = sip::RegistrarConfig {
        min_expires: file.min_expires,
        max_expires: file.max_expires,
        ..sip::RegistrarConfig::default()
    };
    let crate::storage::Restored { bindings, known } = storage.restore(registrar.known_for)?;
    let sockets = driver::sip::Sockets::bind(&file.sip_listen)?;
    let listen = sockets.local_addrs();
    let sip_port = listen.first().map_or(5060, |a| a.port());
    // The overlay starts when the mesh interface has an address (at once in tests; seconds
    // after boot on the Pi); until then the appliance serves its own phones.
    let (late_tx, late_rx) = mpsc::channel(1);
    let (mesh_tx, mesh_rx) = watch::channel::<Option<mesh::Mesh>>(None);
    let mesh_handle = mesh_rx.clone();
    // The identity is the appliance's from the start, whether or not the mesh is up yet.
    let peer_id = if overlay::mesh_interfaces(&config).is_empty() {
        None
    } else {
        mesh::load_or_create_identity(&config.state_dir.join("overlay.key"))
            .ok()
            .map(|k| k.public().to_peer_id().to_base58())
    };
    let overlay_task = tokio::spawn(overlay::start_when_ready(config.clone(), sip_port, late_tx));
    let sip_config = sip::Config {
        mesh: None,
        intervals: sip::Intervals {
            t1: file.t1,
            t2: file.t2,
            t4: file.t4,
        },
        registrar,
        no_answer: file.no_answer,
        max_message_bytes: file.max_message_bytes,
        domains: file.sip_domains.clone(),
        listen: listen.clone(),
        rng_seed: seed(),
        echo: (file.media_enabled && !file.media_echo.is_empty()).then(|| file.media_echo.clone()),
        voicemail: sip::VoicemailConfig {
            enabled: file.media_enabled && file.voicemail_enabled,
            number: file.voicemail_number.clone(),
        },
        ..sip::Config::default()
    };
    let mut endpoint = sip::Endpoint::new(started, sip_config, storage);
    let restored = bindings.len();
    endpoint.restore(started, bindings, known);
    let (stop_tx, stop_rx) = watch::channel(false);
    // What the relay says (silent calls, recordings, mailbox keys) goes to the SIP task.
    let (news_tx, media_news) = mpsc::channel::<driver::media::MediaNews>(64);
    let plane = file.media_enabled.then(|| {
        let (first, last) = file.media_ports;
        let (sockets, ports) = driver::media::MediaSockets::bind(first, last);
        if ports.is_empty() {
            tracing::warn!(
                first,
                last,
                "no relay port could be bound: calls to other appliances get 503"
            );
        }
        tracing::info!(pairs = ports.len(), first, last, "media relay ports bound");
        let relay = media::relay::Relay::new(
            started,
            media::relay::RelayConfig {
                ports,
                media_timeout: file.media_timeout,
                echo_delay: file.media_echo_delay,
                max_recording: file.voicemail_max,
                rng_seed: seed(),
                ..media::relay::RelayConfig::default()
            },
        );
        let plane = crate::media::MediaPlane::new(relay);
        endpoint.set_media(Box::new(plane.clone()));
        tokio::spawn(driver::media::run(
            plane.clone(),
            sockets,
            news_tx.clone(),
            stop_rx.clone(),
        ));
        plane
    });

    let mut apis = Vec::new();
    for addr in &file.api_listen {
        let listener =
            crate::driver::sip::bind_tcp(*addr, true).map_err(|source| StartError::Api {
                addr: *addr,
                source,
            })?;
        apis.push(listener);
    }
    let (status_tx, status_rx) = mpsc::channel(16);
    let (texts_tx, texts_rx) = mpsc::channel(16);
    let (reports_tx, mut reports_rx) = mpsc::channel::<u64>(16);
    let state = web::ApiState {
        mesh: mesh_rx,
        peer_id,
        node: config.node_name.clone(),
        started,
        sip_listen: listen.clone(),
        status: status_tx,
        texts: texts_tx,
        media: plane,
        db: std::sync::Arc::new(std::sync::Mutex::new(store::Db::open(&config.state_dir)?)),
        allocating: std::sync::Arc::new(tokio::sync::Mutex::new(())),
        limits: std::sync::Arc::new(web::Limits::new()),
        errors,
        web: web::WebConfig {
            extensions: file.api_extensions,
            mesh_writes: file.api_mesh_writes,
            mesh_interfaces: overlay::mesh_interfaces(&config),
        },
    };
    let api_addr: Vec<_> = apis.iter().filter_map(|a| a.local_addr().ok()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for listener in apis {
        tasks.spawn(web::serve(listener, state.clone(), stop_rx.clone()));
    }
    tasks.spawn(web::conflict::watch(state.clone(), stop_rx.clone()));
    if let Some(path) = file.mesh_chrony_sources.clone() {
        tasks.spawn(crate::clock::run(
            mesh_handle.clone(),
            path,
            stop_rx.clone(),
        ));
    }
    // Other appliances ask for our report (their network and directory views).
    let reporting = state.clone();
    tasks.spawn(async move {
        while let Some(token) = reports_rx.recv().await {
            let Some(report) = web::report::local(&reporting).await else {
                continue;
            };
            let mesh = reporting.mesh.borrow().clone();
            if let (Some(mesh), Ok(json)) = (mesh, serde_json::to_string(&report)) {
                mesh.answer_status(token, json).await;
            }
        }
    });
    let sip_task = tokio::spawn(driver::sip::run(
        endpoint,
        late_rx,
        mesh_tx,
        sockets,
        driver::sip::Settings {
            max_message_bytes: file.max_message_bytes,
            restore_after: file.store_restore_after,
            delivery_notice: file.store_delivery_notice,
        },
        driver::sip::Inbox {
            status: status_rx,
            media_news,
            texts: texts_rx,
            reports: reports_tx,
        },
        stop_rx,
    ));
    tracing::info!(
        node = %config.node_name,
        sip = ?listen,
        api = ?api_addr,
        restored_bindings = restored,
        "fieldmesh running"
    );

    shutdown.await;
    tracing::info!("shutting down");
    overlay_task.abort();
    let mesh = mesh_handle.borrow().clone();
    if let Some(mesh) = mesh {
        // Close overlay connections first: neighbours withdraw our routes at once.
        mesh.shutdown().await;
    }
    let _ = stop_tx.send(true);
    // Bounded: a stuck task must not keep the appliance from stopping within 2 s.
    let _ = tokio::time::timeout(Duration::from_millis(1500), async {
        let _ = sip_task.await;
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// A seed for tags and branches: they must differ between runs and appliances.
pub(crate) fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    u64::from_le_bytes(bytes) ^ u64::from(std::process::id())
}
