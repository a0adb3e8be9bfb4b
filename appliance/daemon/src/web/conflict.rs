//! Extensions handed out twice. Appliances that know each other never hand out the same
//! number (see [`super::join`]), but two halves of a split network, or two groups that had
//! never met, can. When they meet, every view lists the conflict, and one of the appliances
//! involved (the lowest peer id) sends the extension a text, which reaches every phone of it
//! on either side: both users learn that one of them should take a new number.

use super::ApiState;
use super::report::{self, Network};
use crate::driver::sip::TextRequest;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;
use tokio::sync::oneshot;

/// How often the neighbours are looked at (a local question, no traffic).
const POLL: Duration = Duration::from_secs(2);
/// A survey for conflicts at least this often, besides one whenever a neighbour appears.
const SURVEY_EVERY: Duration = Duration::from_secs(300);
/// How long after a neighbour appears the survey waits (anti-entropy brings its records in
/// well under a second on a LAN).
const SETTLE: Duration = Duration::from_secs(3);

/// An extension handed out by more than one appliance.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Conflict {
    pub(crate) extension: String,
    /// The appliances that handed it out, by name.
    pub(crate) nodes: Vec<String>,
    /// The same appliances by peer id (names need not be unique).
    pub(crate) peer_ids: Vec<String>,
}

/// The conflicts among the reports of `network`.
pub(crate) fn conflicts(network: &Network) -> Vec<Conflict> {
    let mut by_extension: BTreeMap<&str, BTreeSet<(String, String)>> = BTreeMap::new();
    for a in &network.appliances {
        let peer = a.peer_id.clone().unwrap_or_default();
        for al in a.report.iter().flat_map(|r| &r.allocations) {
            by_extension
                .entry(&al.extension)
                .or_default()
                .insert((peer.clone(), a.node.clone()));
        }
    }
    by_extension
        .into_iter()
        .filter(|(_, holders)| holders.len() > 1)
        .map(|(extension, holders)| Conflict {
            extension: extension.to_string(),
            peer_ids: holders.iter().map(|(p, _)| p.clone()).collect(),
            nodes: holders.into_iter().map(|(_, n)| n).collect(),
        })
        .collect()
}

/// What the phones of a conflicting extension are told.
fn notice(c: &Conflict) -> String {
    format!(
        "Extension {} was handed out twice while the network was split (on {}): two phones \
         now ring for it. One of you, please take a new extension on the Join page \
         (http://fieldmesh.mesh/join on the appliance's Wi-Fi).",
        c.extension,
        c.nodes.join(" and ")
    )
}

/// Runs until `stop` changes: surveys the network [`SETTLE`] after a neighbour appears (a
/// partition healing) and every [`SURVEY_EVERY`], and tells each new conflict this appliance is first
/// in to the extension's phones, once.
pub(crate) async fn watch(state: ApiState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut connected: BTreeSet<String> = BTreeSet::new();
    let mut told: HashSet<String> = HashSet::new();
    let mut next_survey = tokio::time::Instant::now() + SURVEY_EVERY;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(POLL) => {}
        }
        let mesh = state.mesh.borrow().clone();
        let Some(status) = (match mesh {
            Some(m) => m.status().await,
            None => None,
        }) else {
            continue;
        };
        let now: BTreeSet<String> = status
            .peers
            .into_iter()
            .filter(|p| p.connected)
            .map(|p| p.peer_id)
            .collect();
        if now.difference(&connected).next().is_some() {
            // A neighbour appeared: survey once its records have arrived, so that the notice
            // is routed to its phones too.
            next_survey = next_survey.min(tokio::time::Instant::now() + SETTLE);
        }
        connected = now;
        if connected.is_empty() || tokio::time::Instant::now() < next_survey {
            continue;
        }
        next_survey = tokio::time::Instant::now() + SURVEY_EVERY;
        let Some(network) = report::network(&state).await else {
            continue;
        };
        let me = status.peer_id;
        for c in conflicts(&network) {
            if c.peer_ids.first() != Some(&me) || !told.insert(c.extension.clone()) {
                continue;
            }
            tracing::warn!(extension = %c.extension, nodes = ?c.nodes,
                "extension handed out twice while the network was split: telling its phones");
            let (reply, answer) = oneshot::channel();
            let request = TextRequest {
                text: sip::WebText {
                    to: c.extension.clone(),
                    from_name: "fieldmesh".to_string(),
                    text: notice(&c),
                },
                reply,
            };
            if state.texts.send(request).await.is_err() {
                return;
            }
            if let Ok(Ok((status, reason))) = tokio::time::timeout(super::TEXT_WAIT, answer).await {
                tracing::info!(extension = %c.extension, status, %reason, "conflict notice sent");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::report::{Allocation, ApplianceView, Report};

    fn view(node: &str, peer: &str, extensions: &[&str]) -> ApplianceView {
        ApplianceView {
            peer_id: Some(peer.to_string()),
            node: node.to_string(),
            here: false,
            reachable: true,
            error: None,
            report: Some(Report {
                allocations: extensions
                    .iter()
                    .map(|e| Allocation {
                        extension: e.to_string(),
                        display_name: String::new(),
                        age_s: 1,
                    })
                    .collect(),
                ..Report::default()
            }),
        }
    }

    #[test]
    fn an_extension_handed_out_on_two_appliances_is_a_conflict_named_by_both() {
        let network = Network {
            took_ms: 1,
            appliances: vec![
                view("c", "12D3KooC", &["2000", "2003"]),
                view("fieldmesh", "12D3KooA", &["2000", "2001"]),
                view("fieldmesh", "12D3KooB", &["2002", "2003"]),
            ],
        };
        let found = conflicts(&network);
        assert_eq!(
            found,
            vec![
                Conflict {
                    extension: "2000".into(),
                    nodes: vec!["fieldmesh".into(), "c".into()],
                    peer_ids: vec!["12D3KooA".into(), "12D3KooC".into()],
                },
                Conflict {
                    extension: "2003".into(),
                    nodes: vec!["fieldmesh".into(), "c".into()],
                    peer_ids: vec!["12D3KooB".into(), "12D3KooC".into()],
                },
            ]
        );
        assert!(notice(&found[0]).contains("Extension 2000 was handed out twice"));
    }
}
