//! `dialogue-ledger`: the server and the operator's commands.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::time::Duration;

use dialogue_ledger::{
    DEFAULT_DATA_DIR, DEFAULT_LISTEN, DEFAULT_SHUTDOWN_GRACE_SECS, ServeOptions,
};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Parser)]
#[command(
    name = "dialogue-ledger",
    version,
    about = "An event-sourced, verifiable ledger of 1on1 dialogues"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the gRPC server until SIGINT or SIGTERM.
    Serve {
        /// The address to listen on.
        #[arg(long, env = "LEDGER_LISTEN", default_value = DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// The directory of the embedded store.
        #[arg(long, env = "LEDGER_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Seconds to wait for open requests after SIGINT/SIGTERM before stopping anyway.
        #[arg(long, env = "LEDGER_SHUTDOWN_GRACE_SECS", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS)]
        shutdown_grace_secs: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs go to stderr, keeping stdout for what a command prints.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match Cli::parse().command {
        Command::Serve {
            listen,
            data_dir,
            shutdown_grace_secs,
        } => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let shutdown = shutdown_signal()?;
            let shutdown_grace = Duration::from_secs(shutdown_grace_secs);
            let options = ServeOptions {
                data_dir,
                shutdown_grace,
            };
            dialogue_ledger::serve(listener, options, shutdown).await
        }
    }
}

/// Completes on the first SIGINT or SIGTERM.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("received SIGINT"),
            _ = terminate.recv() => tracing::info!("received SIGTERM"),
        }
    })
}
