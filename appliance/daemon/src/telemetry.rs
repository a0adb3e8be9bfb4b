//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`). Under systemd, stderr
//! goes to the journal. The last warnings and errors are also kept in memory for the network
//! view ("recent errors"), so an operator sees them without a shell on the appliance.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

const KEPT: usize = 20;

/// The last warnings and errors, shared by the logging layer that fills it and the network
/// view that shows it. Cloning shares.
#[derive(Clone, Default)]
pub(crate) struct RecentErrors(Arc<Mutex<VecDeque<Logged>>>);

/// When, at which level, and the line.
type Logged = (Instant, &'static str, String);

/// A warning or error as the network view shows it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct LoggedError {
    pub(crate) age_s: u64,
    pub(crate) level: String,
    pub(crate) message: String,
}

impl RecentErrors {
    /// The kept warnings and errors, newest first.
    pub(crate) fn list(&self) -> Vec<LoggedError> {
        let recent = self.0.lock().unwrap_or_else(|e| e.into_inner());
        recent
            .iter()
            .rev()
            .map(|(at, level, message)| LoggedError {
                age_s: at.elapsed().as_secs(),
                level: (*level).to_string(),
                message: message.clone(),
            })
            .collect()
    }
}

/// Keeps WARN and ERROR events: the message and its fields, as one line.
struct Recent(RecentErrors);

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Recent {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > tracing::Level::WARN {
            return;
        }
        let mut line = Line(String::new());
        event.record(&mut line);
        let mut text = line.0;
        text.truncate(300);
        let mut recent = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == KEPT {
            recent.pop_front();
        }
        recent.push_back((
            Instant::now(),
            if level == tracing::Level::ERROR {
                "error"
            } else {
                "warn"
            },
            text,
        ));
    }
}

/// Installs the subscriber; returns where the last warnings and errors are kept.
pub(crate) fn init() -> RecentErrors {
    let recent = RecentErrors::default();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_ansi(ansi)
                .with_filter(filter),
        )
        .with(Recent(recent.clone()).with_filter(tracing_subscriber::filter::LevelFilter::WARN))
        .init();
    recent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_and_errors_are_kept_newest_first_and_bounded() {
        let recent = RecentErrors::default();
        let subscriber = tracing_subscriber::registry().with(
            Recent(recent.clone()).with_filter(tracing_subscriber::filter::LevelFilter::WARN),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not kept");
            tracing::warn!(peer_id = "12D3KooWx", "sync request failed");
            for i in 0..KEPT {
                tracing::error!(i, "store full");
            }
        });
        let list = recent.list();
        assert_eq!(list.len(), KEPT, "bounded");
        assert_eq!(list[0].level, "error");
        assert_eq!(list[0].message, format!("store full i={}", KEPT - 1));
        recent.0.lock().expect("lock").truncate(0);
        tracing::subscriber::with_default(
            tracing_subscriber::registry().with(Recent(recent.clone())),
            || tracing::warn!(peer_id = "12D3KooWx", "sync request failed"),
        );
        assert_eq!(
            recent.list()[0].message,
            "sync request failed peer_id=\"12D3KooWx\""
        );
    }
}
