//! The `fieldmesh` binary: `fieldmesh run` starts the appliance.

mod cli;
mod clock;
mod config;
mod driver;
mod media;
mod overlay;
mod run;
mod storage;
mod telemetry;
mod web;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fieldmesh",
    version,
    about = "A self-organising SIP phone and messaging node"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the appliance (registrar, proxy, status API) until SIGINT or SIGTERM.
    Run {
        /// TOML configuration; every key is optional over the embedded default.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Directory for durable state (created if missing).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// SIP listen address, UDP and TCP; may be repeated. Replaces sip.listen.
        #[arg(long, value_name = "ADDR:PORT")]
        sip_listen: Vec<String>,
        /// Web page and API listen address; may be repeated. Replaces api.listen.
        #[arg(long, value_name = "ADDR:PORT")]
        api_listen: Vec<String>,
        /// Mesh-side interface for discovery and the overlay; repeat for an appliance on
        /// several mesh links (the first gives the SIP address). Replaces mesh.interface.
        #[arg(long, value_name = "IFNAME")]
        mesh_interface: Vec<String>,
        /// Overlay TCP listen address. Replaces mesh.listen.
        #[arg(long, value_name = "ADDR:PORT")]
        mesh_listen: Option<String>,
        /// Serve this appliance's phones alone, without joining an overlay.
        #[arg(long)]
        no_mesh: bool,
        /// RTP relay port range, FIRST-LAST. Replaces media.ports.
        #[arg(long, value_name = "FIRST-LAST")]
        media_ports: Option<String>,
    },
    /// Print the embedded default configuration.
    DefaultConfig,
    /// Copy the durable state (bindings, messages, voicemails) to a new SQLite file, safely
    /// while the appliance runs: the backup command.
    Export {
        /// The configuration the appliance runs with (for state.dir).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The state directory; default: state.dir of the configuration.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Where to write the copy; must not exist.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// This appliance at a glance: name, version, uptime, overlay identity, phones, neighbours.
    Status {
        #[command(flatten)]
        view: ViewArgs,
    },
    /// Neighbour appliances in the overlay.
    Peers {
        #[command(flatten)]
        view: ViewArgs,
    },
    /// Every phone this appliance can reach: its own and those on other appliances.
    Phones {
        #[command(flatten)]
        view: ViewArgs,
    },
    /// Calls whose media this appliance anchors, live and recently ended, with their quality
    /// figures (loss, jitter, round trip, MOS) per leg.
    Calls {
        #[command(flatten)]
        view: ViewArgs,
    },
    /// Read the operator's settings file leniently and write the derived hostapd, dnsmasq,
    /// mesh and daemon configurations (the image runs this once at boot).
    Setup {
        /// The operator's settings; a bad value is reported and falls back to its default.
        #[arg(
            long,
            value_name = "FILE",
            default_value = "/boot/firmware/fieldmesh.toml"
        )]
        settings: PathBuf,
        /// Output directory; default $RUNTIME_DIRECTORY, else /run/fieldmesh.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// Options shared by the views of a running daemon.
#[derive(clap::Args)]
struct ViewArgs {
    /// The daemon's status API.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    api: std::net::SocketAddr,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::DefaultConfig => {
            print!("{}", config::DEFAULT_TOML);
            ExitCode::SUCCESS
        }
        Command::Export {
            config,
            state_dir,
            out,
        } => cli::export::run(config, state_dir, &out),
        Command::Setup { settings, out } => cli::setup::run(&settings, out.as_deref()),
        Command::Status { view } => {
            cli::status::run(cli::status::View::Status, view.api, view.json)
        }
        Command::Peers { view } => cli::status::run(cli::status::View::Peers, view.api, view.json),
        Command::Phones { view } => {
            cli::status::run(cli::status::View::Phones, view.api, view.json)
        }
        Command::Calls { view } => cli::status::run(cli::status::View::Calls, view.api, view.json),
        Command::Run {
            config,
            state_dir,
            sip_listen,
            api_listen,
            mesh_interface,
            mesh_listen,
            no_mesh,
            media_ports,
        } => {
            let flags = config::Flags {
                config,
                state_dir,
                sip_listen,
                api_listen,
                mesh_interface,
                mesh_listen,
                no_mesh,
                media_ports,
            };
            let config = match config::ConfigFile::load(&flags) {
                Ok(c) => c.resolve(),
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let errors = telemetry::init();
            raise_open_file_limit();
            match run_until_signal(config, errors) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("fieldmesh: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Raises the soft limit on open files to the hard one: the relay binds a socket per port
/// (1000 by default), and with the overlay, the phones' TCP connections and SQLite's files the
/// usual soft limit of 1024 runs out (an `open` then fails, and SQLite cannot open its database).
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(soft, hard, error = %e, "open-file limit not raised");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "open-file limit unknown"),
    }
}

fn run_until_signal(config: config::Config, errors: telemetry::RecentErrors) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        run::run(config, errors, shutdown).await?;
        anyhow::Ok(())
    })?;
    // Tasks that ignored the stop signal must not delay exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    Ok(())
}
