//! The `fieldmesh` binary: `fieldmesh run` starts the appliance.

mod config;
mod driver;
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
        /// Status API listen address. Replaces api.listen.
        #[arg(long, value_name = "ADDR:PORT")]
        api_listen: Option<String>,
    },
    /// Print the embedded default configuration.
    DefaultConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::DefaultConfig => {
            print!("{}", config::DEFAULT_TOML);
            ExitCode::SUCCESS
        }
        Command::Run {
            config,
            state_dir,
            sip_listen,
            api_listen,
        } => {
            let flags = config::Flags {
                config,
                state_dir,
                sip_listen,
                api_listen,
            };
            let config = match config::ConfigFile::load(&flags) {
                Ok(c) => c.resolve(),
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            telemetry::init();
            match run_until_signal(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("fieldmesh: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run_until_signal(config: config::Config) -> anyhow::Result<()> {
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
        run::run(config, shutdown).await?;
        anyhow::Ok(())
    })?;
    // Tasks that ignored the stop signal must not delay exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    Ok(())
}
