//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`). Under systemd, stderr
//! goes to the journal. The last warnings and errors are also kept in memory for the network
//! view ("recent errors"), so an operator sees them without a shell on the appliance.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;
use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

const KEPT: usize = 20;

static RECENT: Mutex<VecDeque<(Instant, &'static str, String)>> = Mutex::new(VecDeque::new());

/// A warning or error as the network view shows it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct LoggedError {
    pub(crate) age_s: u64,
    pub(crate) level: String,
    pub(crate) message: String,
}

/// The last warnings and errors, newest first.
pub(crate) fn recent_errors() -> Vec<LoggedError> {
    let recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
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

/// Keeps WARN and ERROR events: the message and its fields, as one line.
struct Recent;

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
        let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
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

pub(crate) fn init() {
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
        .with(Recent.with_filter(tracing_subscriber::filter::LevelFilter::WARN))
        .init();
}
