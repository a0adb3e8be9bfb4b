//! What one appliance says about itself ([`Report`]), and the views merged from every
//! appliance's report: the network and the directory. Nothing is collected centrally: the
//! appliance answering a page asks every other one over the overlay ([`mesh::Mesh::survey`])
//! and merges what came back within the deadline, naming those that stayed silent.

use super::ApiState;
use crate::driver::sip::{BindingView, StatusRequest, StoredView};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a view waits for the other appliances: the page must answer within 2 s.
pub(crate) const SURVEY_WAIT: Duration = Duration::from_millis(1500);
/// Recent errors and calls kept in a report (it crosses the mesh on every view).
const MAX_ERRORS: usize = 20;
const MAX_CALLS: usize = 20;
/// How long an extension counts as handed out, and as known after its last registration.
pub(crate) const RESERVED_FOR: Duration = Duration::from_secs(7 * 86_400);

/// One appliance's own account, as the overlay carries it (JSON).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Report {
    pub(crate) node: String,
    pub(crate) peer_id: Option<String>,
    pub(crate) version: String,
    pub(crate) uptime_s: u64,
    /// SIP addresses: where it listens, and its mesh side.
    pub(crate) addresses: Vec<String>,
    pub(crate) neighbours: Vec<Neighbour>,
    pub(crate) phones: Vec<Phone>,
    /// Extensions registered here recently but not now (their owners come back).
    #[serde(default)]
    pub(crate) known: Vec<String>,
    /// Extensions something waits for here (messages, voicemail; own or replicas).
    #[serde(default)]
    pub(crate) mailboxes: Vec<String>,
    /// Extensions this appliance handed out recently ("give me a free extension").
    #[serde(default)]
    pub(crate) allocations: Vec<Allocation>,
    pub(crate) active_calls: usize,
    #[serde(default)]
    pub(crate) recent_calls: Vec<CallQuality>,
    #[serde(default)]
    pub(crate) errors: Vec<crate::telemetry::LoggedError>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Neighbour {
    pub(crate) peer_id: String,
    pub(crate) node: String,
    pub(crate) connected: bool,
}

/// A registered phone.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Phone {
    pub(crate) extension: String,
    pub(crate) display_name: Option<String>,
    /// How long it has been registered (relative: appliances' clocks need not agree).
    pub(crate) registered_for_s: u64,
    pub(crate) expires_in: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Allocation {
    pub(crate) extension: String,
    pub(crate) display_name: String,
    /// How long ago it was handed out.
    pub(crate) age_s: u64,
}

/// The quality of one leg of a recent call: "who can hear whom".
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct CallQuality {
    pub(crate) call_id: String,
    pub(crate) media: String,
    pub(crate) leg: String,
    pub(crate) remote: Option<String>,
    pub(crate) duration_s: f64,
    pub(crate) loss_pct: f64,
    pub(crate) jitter_ms: f64,
    pub(crate) rtt_ms: Option<f64>,
    pub(crate) mos: f64,
    pub(crate) live: bool,
}

/// Asks the SIP task for its bindings and stored items (bounded).
pub(crate) async fn sip_snapshot(state: &ApiState) -> Option<(Vec<BindingView>, Vec<StoredView>)> {
    let (reply, answer) = oneshot::channel();
    state
        .status
        .send_timeout(StatusRequest { reply }, Duration::from_secs(2))
        .await
        .ok()?;
    tokio::time::timeout(Duration::from_secs(2), answer)
        .await
        .ok()?
        .ok()
}

/// This appliance's report; `None` if its SIP core does not answer.
pub(crate) async fn local(state: &ApiState) -> Option<Report> {
    let (bindings, stored) = sip_snapshot(state).await?;
    let mesh = state.mesh.borrow().clone();
    let overlay = match &mesh {
        Some(m) => m.status().await,
        None => None,
    };
    let peer_id = overlay
        .as_ref()
        .map(|o| o.peer_id.clone())
        .or_else(|| state.peer_id.clone());
    let neighbours = overlay
        .map(|o| {
            o.peers
                .into_iter()
                .map(|p| Neighbour {
                    peer_id: p.peer_id,
                    node: p.node,
                    connected: p.connected,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut phones: Vec<Phone> = bindings
        .iter()
        .map(|b| Phone {
            extension: b.aor.clone(),
            display_name: b.display_name.clone(),
            registered_for_s: b.registered_for_s,
            expires_in: b.expires_in,
        })
        .collect();
    // One row per extension: its longest-registered phone.
    phones.sort_by(|a, b| {
        a.extension
            .cmp(&b.extension)
            .then(b.registered_for_s.cmp(&a.registered_for_s))
    });
    phones.dedup_by(|a, b| a.extension == b.extension);
    let (known, allocations) = state.records().await;
    let mut mailboxes: Vec<String> = stored.into_iter().map(|s| s.aor).collect();
    mailboxes.sort();
    mailboxes.dedup();
    let (active_calls, recent_calls) = match &state.media {
        Some(plane) => {
            let (live, recent) = plane.reports();
            let mut calls: Vec<CallQuality> = live
                .iter()
                .map(|c| (c, true))
                .chain(recent.iter().rev().map(|c| (c, false)))
                .filter(|(c, _)| c.service == "relay")
                .flat_map(|(c, live)| qualities(c, live))
                .collect();
            calls.truncate(MAX_CALLS);
            (live.len(), calls)
        }
        None => (0, Vec::new()),
    };
    let mut addresses: Vec<String> = state.sip_listen.iter().map(ToString::to_string).collect();
    if let Some(side) = state.mesh_sip() {
        addresses.push(side.to_string());
    }
    let mut errors = state.errors.list();
    errors.truncate(MAX_ERRORS);
    Some(Report {
        node: state.node.clone(),
        peer_id,
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_s: state.started.elapsed().as_secs(),
        addresses,
        neighbours,
        phones,
        known,
        mailboxes,
        allocations,
        active_calls,
        recent_calls,
        errors,
    })
}

fn qualities(c: &media::relay::CallReport, live: bool) -> Vec<CallQuality> {
    c.streams
        .iter()
        .flat_map(|s| {
            s.legs.iter().map(move |l| CallQuality {
                call_id: c.call_id.clone(),
                media: s.media.clone(),
                leg: l.leg.to_string(),
                remote: l.remote.map(|a| a.to_string()),
                duration_s: c.duration.as_secs_f64(),
                loss_pct: l.quality.loss_pct,
                jitter_ms: l.quality.jitter_ms,
                rtt_ms: l.quality.rtt_ms,
                mos: l.quality.mos,
                live,
            })
        })
        .collect()
}

/// One appliance in the network view.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ApplianceView {
    pub(crate) peer_id: Option<String>,
    pub(crate) node: String,
    /// This is the appliance that answered the page.
    pub(crate) here: bool,
    /// It answered in time.
    pub(crate) reachable: bool,
    /// Why not, when it did not.
    pub(crate) error: Option<String>,
    pub(crate) report: Option<Report>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Network {
    /// How long the survey took.
    pub(crate) took_ms: u64,
    pub(crate) appliances: Vec<ApplianceView>,
}

/// This appliance's report and every other one's, asked now.
pub(crate) async fn network(state: &ApiState) -> Option<Network> {
    let t = std::time::Instant::now();
    let mesh = state.mesh.borrow().clone();
    let (own, answers) = match mesh {
        Some(m) => tokio::join!(local(state), m.survey(SURVEY_WAIT)),
        None => (local(state).await, Vec::new()),
    };
    let own = own?;
    let mut appliances = vec![ApplianceView {
        peer_id: own.peer_id.clone(),
        node: own.node.clone(),
        here: true,
        reachable: true,
        error: None,
        report: Some(own),
    }];
    for a in answers {
        let (report, error) = match a.report {
            Ok(json) => match serde_json::from_str::<Report>(&json) {
                Ok(r) => (Some(r), None),
                Err(e) => (None, Some(format!("unreadable report: {e}"))),
            },
            Err(why) => (None, Some(why)),
        };
        appliances.push(ApplianceView {
            node: report.as_ref().map_or(a.node, |r: &Report| r.node.clone()),
            peer_id: Some(a.peer_id),
            here: false,
            reachable: report.is_some(),
            error,
            report,
        });
    }
    Some(Network {
        took_ms: t.elapsed().as_millis() as u64,
        appliances,
    })
}

/// One extension in the directory.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Entry {
    pub(crate) extension: String,
    pub(crate) display_name: Option<String>,
    pub(crate) node: String,
    pub(crate) peer_id: Option<String>,
    pub(crate) here: bool,
    /// Its appliance answered now; `false` for what the overlay's records alone say.
    pub(crate) reachable: bool,
    pub(crate) registered_for_s: Option<u64>,
}

/// Every registered extension on every appliance: from the reports, and for appliances that
/// did not answer, from the location records the overlay holds for them.
pub(crate) async fn directory(state: &ApiState) -> Option<(Network, Vec<Entry>)> {
    let network = network(state).await?;
    let mut entries: BTreeMap<(String, String), Entry> = BTreeMap::new();
    for a in &network.appliances {
        let Some(report) = &a.report else { continue };
        for p in &report.phones {
            entries.insert(
                (p.extension.clone(), a.node.clone()),
                Entry {
                    extension: p.extension.clone(),
                    display_name: p.display_name.clone(),
                    node: a.node.clone(),
                    peer_id: a.peer_id.clone(),
                    here: a.here,
                    reachable: true,
                    registered_for_s: Some(p.registered_for_s),
                },
            );
        }
    }
    let silent: Vec<&str> = network
        .appliances
        .iter()
        .filter(|a| !a.reachable)
        .filter_map(|a| a.peer_id.as_deref())
        .collect();
    let mesh = state.mesh.borrow().clone();
    if let (Some(m), false) = (mesh, silent.is_empty())
        && let Some(status) = m.status().await
    {
        for (r, _) in status.records {
            if r.phones.is_empty() || !silent.contains(&r.peer.as_str()) {
                continue;
            }
            entries
                .entry((r.aor.clone(), r.node.clone()))
                .or_insert(Entry {
                    extension: r.aor,
                    display_name: None,
                    node: r.node,
                    peer_id: Some(r.peer),
                    here: false,
                    reachable: false,
                    registered_for_s: None,
                });
        }
    }
    Some((network, entries.into_values().collect()))
}
