//! `ledger-load`: drives a dialogue ledger server over gRPC with a realistic command mix from C
//! concurrent clients for D seconds, with queries, a subscription and projection-status samples
//! running at the same time, and prints commands/s, latency per command type, errors by code,
//! projection lag, and of a server it started its start-up time and memory (optionally as JSON).
//!
//! `ledger-load fill` writes a long history into a data directory, and `--server-data-dir`
//! starts the server on it: the same run then measures the server with that history.
//!
//! `ledger-load pg-baseline` runs the comparison: a plain PostgreSQL table, one INSERT per event
//! with a version check, at the same concurrency. `ledger-load grpc-baseline` measures what the
//! gRPC transport alone allows: health checks through the same server stack, no command work.

mod baseline;
mod fill;
mod grpc_baseline;
mod mix;
mod report;
mod server;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "ledger-load", about = "Load generator for the dialogue ledger")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunOptions,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A plain PostgreSQL table, one INSERT per event with a version check, for comparison.
    PgBaseline {
        /// postgres://user@host/db
        #[arg(long, env = "LEDGER_LOAD_PG_URL")]
        url: String,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Bytes of payload per event.
        #[arg(long, default_value_t = 256)]
        payload: usize,
        /// Writes the figures as JSON here too.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Health checks through the server's whole gRPC stack from the same clients, no command
    /// work: what the transport alone allows on this machine.
    GrpcBaseline {
        #[command(flatten)]
        server: ServerOptions,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Writes the figures as JSON here too.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Writes a synthetic history straight into a data directory's embedded event store (no
    /// server may run on it), for a run with `--server-data-dir`.
    Fill {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 10_000_000)]
        events: usize,
        /// Members the history's 1on1 stories are spread over.
        #[arg(long, default_value_t = 10_000)]
        members: usize,
        #[arg(long, default_value = "history")]
        tenant: String,
    },
}

/// The server under load: one the run starts, or one already running.
#[derive(Debug, clap::Args)]
pub(crate) struct ServerOptions {
    /// A running server (`http://127.0.0.1:50051`); without it a fresh server is started on an
    /// embedded store in a temporary directory, and its peak memory reported.
    #[arg(long)]
    target: Option<String>,
    /// The running server's data directory, whose quick-start key signs the clients' tokens
    /// (with --target).
    #[arg(long, requires = "target")]
    data_dir: Option<PathBuf>,
    /// Starts the server on this data directory (kept; e.g. one `fill` wrote a history into)
    /// instead of a temporary one, and waits for its projections to catch up before the load.
    #[arg(long, conflicts_with = "target")]
    server_data_dir: Option<PathBuf>,
    /// The server binary to start (default: `dialogue-ledger` beside this one).
    #[arg(long, conflicts_with = "target")]
    server_binary: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RunOptions {
    #[command(flatten)]
    server: ServerOptions,
    /// Concurrent command clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// How long to drive the load.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Members in the organisation (one manager for every 8).
    #[arg(long, default_value_t = 512)]
    members: usize,
    /// Evaluation-brief queries per second beside the commands (0: none).
    #[arg(long, default_value_t = 1000)]
    queries_per_second: u32,
    /// Queries ask for the read model as it stands (`x-ledger-freshness: current`) instead of
    /// waiting for the projection to reach the log's head.
    #[arg(long)]
    queries_current: bool,
    /// The tenant; a fresh one per run by default, so runs against one server do not meet.
    #[arg(long)]
    tenant: Option<String>,
    /// Writes the figures as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::PgBaseline {
            url,
            clients,
            seconds,
            payload,
            json,
        }) => {
            let figures =
                baseline::run(&url, clients, Duration::from_secs(seconds), payload).await?;
            report::print_baseline(&figures);
            if let Some(path) = json {
                std::fs::write(path, serde_json::to_vec_pretty(&figures)?)?;
            }
        }
        Some(Command::GrpcBaseline {
            server,
            clients,
            seconds,
            json,
        }) => {
            let figures =
                grpc_baseline::run(&server, clients, Duration::from_secs(seconds)).await?;
            report::print_grpc_baseline(&figures);
            if let Some(path) = json {
                std::fs::write(path, serde_json::to_vec_pretty(&figures)?)?;
            }
        }
        Some(Command::Fill {
            data_dir,
            events,
            members,
            tenant,
        }) => fill::run(&data_dir, events, members, &tenant).await?,
        None => {
            let figures = mix::run(&cli.run).await?;
            report::print(&figures);
            if let Some(path) = &cli.run.json {
                std::fs::write(path, serde_json::to_vec_pretty(&figures)?)?;
            }
        }
    }
    Ok(())
}
