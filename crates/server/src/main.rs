//! `dialogue-ledger`: the server and the operator's commands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use dialogue_ledger::TlsOptions;
use dialogue_ledger::auth::{Claims, DEFAULT_AUDIENCE, DEFAULT_ISSUER, LocalKeys};
use dialogue_ledger::limits::{
    DEFAULT_MAX_CONCURRENT_REQUESTS, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_SUBSCRIPTIONS, Limits,
};
use dialogue_ledger::operator::ClientTls;
use dialogue_ledger::privacy::{KeySource, PrivacyOptions};
use dialogue_ledger::serving::DEFAULT_READY_MAX_LAG_SECS;
use dialogue_ledger::store::{DEFAULT_STORE_NAMESPACE, StoreOptions};
use dialogue_ledger::telemetry::Telemetry;
use dialogue_ledger::verify::{OfflineOptions, Verdict, VerifyOptions};
use dialogue_ledger::{
    AuthOptions, DEFAULT_DATA_DIR, DEFAULT_LISTEN, DEFAULT_LOG_ORIGIN,
    DEFAULT_MANAGER_OVERLOAD_SESSIONS, DEFAULT_SHUTDOWN_GRACE_SECS, ServeOptions,
};
use dialogue_ledger::{operator, settings};
use ledger_domain::{Policy, Role, TenantId};
use ledger_projections::DEFAULT_COMMIT_EVENTS;
use tokio::signal::unix::{SignalKind, signal};

/// Folding read models and group commits allocate and free across threads all the time; mimalloc
/// does that with less contention than the system allocator (measured: catch-up of all
/// projections about a fifth faster).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreKind {
    Embedded,
    Postgres,
    Eventstoredb,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the gRPC server until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Prints the configuration `serve` would run with (same options, config file and
    /// environment) and where each value comes from; secrets are redacted.
    Config(ServeArgs),
    /// Where a running server's log and projections stand (lag in events and seconds).
    Status {
        #[command(flatten)]
        remote: Remote,
        /// Prints JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Replays a tenant's whole log from a server, recomputes every leaf and the root, checks the
    /// signed checkpoint and consistency with a saved one; exits non-zero on any mismatch.
    Verify {
        /// The server's gRPC URL.
        #[arg(
            long,
            default_value = "http://127.0.0.1:50051",
            conflicts_with = "data_dir"
        )]
        server: String,
        #[command(flatten)]
        tls: ClientTlsArgs,
        /// A bearer token of an auditor of the tenant (with --server).
        #[arg(long, env = "LEDGER_TOKEN", required_unless_present = "data_dir")]
        token: Option<String>,
        /// Verifies a stopped server's data directory instead of asking a server.
        #[arg(long, requires = "tenant")]
        data_dir: Option<PathBuf>,
        /// The tenant whose log to verify (with --data-dir).
        #[arg(long)]
        tenant: Option<String>,
        /// The checkpoint verifier key, as `checkpoint-key` prints it.
        #[arg(long, env = "LEDGER_CHECKPOINT_VERIFIER_KEY")]
        key: String,
        /// A checkpoint saved by an earlier run, which the log must extend.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Saves the newly verified checkpoint here.
        #[arg(long)]
        save_checkpoint: Option<PathBuf>,
    },
    /// Rebuilds a projection from position zero, offline: stop the server first on the embedded
    /// store; on PostgreSQL a running replica holding the projection rebuilds it after the reset.
    Rebuild {
        /// evaluation-briefs, staffing, development-reviews or dialogue-health.
        projection: String,
        #[arg(long, env = "LEDGER_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        /// Prints JSON instead of a sentence.
        #[arg(long)]
        json: bool,
    },
    /// Writes a tenant's ledger from a server, up to its signed checkpoint, as JSON Lines (one
    /// event a line, metadata and payload in proto3 JSON, personal text still sealed).
    Export {
        #[command(flatten)]
        remote: Remote,
        /// The file to write; without it, standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Prints the summary as JSON (on standard error when the events go to standard output).
        #[arg(long)]
        json: bool,
    },
    /// Prints the verifier key of the checkpoint signing key, for `verify --key`.
    CheckpointKey {
        #[arg(long, env = "LEDGER_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        #[command(flatten)]
        log: LogKey,
    },
    /// Prints a token signed with the data directory's key (for the quick start and tests),
    /// alone on the last line.
    Token {
        #[arg(long, env = "LEDGER_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// The organisation.
        #[arg(long)]
        tenant: String,
        /// The acting person's id, or the service's name.
        #[arg(long)]
        subject: String,
        /// member, hr, auditor, admin or service; repeat for several.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// How long the token is valid.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
        #[arg(long, default_value = DEFAULT_ISSUER)]
        issuer: String,
        #[arg(long, default_value = DEFAULT_AUDIENCE)]
        audience: String,
    },
}

/// A master key given as a file or as its value (clap lets only one of them through).
fn key_source(file: Option<PathBuf>, value: Option<String>) -> Option<KeySource> {
    file.map(KeySource::File).or(value.map(KeySource::Value))
}

/// The server's options: defaults, then the config file (`--config`), then `LEDGER_*`
/// environment variables, then flags, each overriding the one before.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// A TOML file of settings, keyed by these flags' names (`rate-limit = 100`); the
    /// environment and flags override it.
    #[arg(long, env = "LEDGER_CONFIG")]
    config: Option<PathBuf>,
    /// The address to listen on.
    #[arg(long, env = "LEDGER_LISTEN", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// The directory of the embedded store, the read models, the audit trees and the quick
    /// start's token keys.
    #[arg(long, env = "LEDGER_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
    /// Seconds to wait for open requests after SIGINT/SIGTERM before stopping anyway.
    #[arg(long, env = "LEDGER_SHUTDOWN_GRACE_SECS", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS)]
    shutdown_grace_secs: u64,
    /// The Ed25519 public key (PEM) that verifies tokens; without it, the data directory's own
    /// key pair (created on first start).
    #[arg(long, env = "LEDGER_JWT_PUBLIC_KEY")]
    jwt_public_key: Option<PathBuf>,
    /// The `iss` tokens must carry.
    #[arg(long, env = "LEDGER_JWT_ISSUER", default_value = DEFAULT_ISSUER)]
    jwt_issuer: String,
    /// The `aud` tokens must carry.
    #[arg(long, env = "LEDGER_JWT_AUDIENCE", default_value = DEFAULT_AUDIENCE)]
    jwt_audience: String,
    /// Survey results with fewer respondents are refused, and insight themes standing on
    /// fewer distinct people withheld (at least 3).
    #[arg(long, env = "LEDGER_ANONYMITY_THRESHOLD", default_value_t = Policy::DEFAULT_ANONYMITY)]
    anonymity_threshold: u32,
    /// Dialogue health flags a manager holding more vertical sessions a month than this.
    #[arg(long, env = "LEDGER_MANAGER_OVERLOAD_SESSIONS", default_value_t = DEFAULT_MANAGER_OVERLOAD_SESSIONS)]
    manager_overload_sessions: u32,
    /// The largest request or response message, in bytes (larger ones are refused with
    /// OUT_OF_RANGE).
    #[arg(long, env = "LEDGER_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// Read-model subscriptions open at once, across all callers (more are refused with
    /// RESOURCE_EXHAUSTED).
    #[arg(long, env = "LEDGER_MAX_SUBSCRIPTIONS", default_value_t = DEFAULT_MAX_SUBSCRIPTIONS)]
    max_subscriptions: usize,
    /// Serve TLS with this certificate chain (PEM); needs --tls-key. Without: plaintext.
    #[arg(long, env = "LEDGER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM).
    #[arg(long, env = "LEDGER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: require client certificates signed by this CA (PEM).
    #[arg(long, env = "LEDGER_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Requests in flight at once, across all callers (more are refused at once with
    /// RESOURCE_EXHAUSTED and a RetryInfo; health checks never are).
    #[arg(long, env = "LEDGER_MAX_CONCURRENT_REQUESTS", default_value_t = DEFAULT_MAX_CONCURRENT_REQUESTS as u64, value_parser = clap::value_parser!(u64).range(1..))]
    max_concurrent_requests: u64,
    /// Requests per second each caller (tenant and token subject) may make, sustained;
    /// 0: no limit. Over it, RESOURCE_EXHAUSTED with a RetryInfo.
    #[arg(long, env = "LEDGER_RATE_LIMIT", default_value_t = 0)]
    rate_limit: u32,
    /// Requests a caller may make at once beyond the sustained rate.
    #[arg(long, env = "LEDGER_RATE_LIMIT_BURST", default_value_t = 100)]
    rate_limit_burst: u32,
    /// The health check (readiness) says NOT_SERVING while a projection is further behind
    /// the log than this many seconds (rebuilding), or the event store does not answer.
    #[arg(long, env = "LEDGER_READY_MAX_LAG_SECS", default_value_t = DEFAULT_READY_MAX_LAG_SECS)]
    ready_max_lag_secs: u64,
    /// While catching up, each projection commits its read model every this many events (or
    /// each second): lower, a crash costs less folding again; higher, catching up writes less.
    #[arg(long, env = "LEDGER_PROJECTION_COMMIT_EVENTS", default_value_t = DEFAULT_COMMIT_EVENTS as u64, value_parser = clap::value_parser!(u64).range(1..))]
    projection_commit_events: u64,
    /// A file holding the master key (32 random bytes, base64) that wraps every person's data
    /// key. Without it or --master-key: DATA_DIR/master.key, created with a new key store.
    #[arg(long, env = "LEDGER_MASTER_KEY_FILE", conflicts_with = "master_key")]
    master_key_file: Option<PathBuf>,
    /// The master key itself, base64 (set it in the environment, not on a command line).
    #[arg(long, env = "LEDGER_MASTER_KEY", hide_env_values = true)]
    master_key: Option<String>,
    /// While rotating the master key: a file holding the previous one. Data keys it still
    /// wraps are re-wrapped under the new key at start-up (events are not touched).
    #[arg(
        long,
        env = "LEDGER_PREVIOUS_MASTER_KEY_FILE",
        conflicts_with = "previous_master_key"
    )]
    previous_master_key_file: Option<PathBuf>,
    /// The previous master key itself, base64 (see --previous-master-key-file).
    #[arg(long, env = "LEDGER_PREVIOUS_MASTER_KEY", hide_env_values = true)]
    previous_master_key: Option<String>,
    /// Whether a person may erase their own data with ForgetPerson (hr and admin always may).
    #[arg(long, env = "LEDGER_ALLOW_SELF_ERASURE", default_value_t = true, action = clap::ArgAction::Set)]
    allow_self_erasure: bool,
    #[command(flatten)]
    log: LogKey,
}

/// Which event store, where.
#[derive(Debug, clap::Args)]
struct StoreArgs {
    /// The event store: embedded (in the data directory), postgres or eventstoredb.
    #[arg(long, env = "LEDGER_STORE", value_enum, default_value_t = StoreKind::Embedded)]
    store: StoreKind,
    /// The server's URL: postgres://user:password@host/db, or esdb://host:2113 (for
    /// postgres and eventstoredb).
    #[arg(long, env = "LEDGER_STORE_URL", hide_env_values = true)]
    store_url: Option<String>,
    /// The PostgreSQL schema, or the EventStoreDB stream prefix, of the event store.
    #[arg(long, env = "LEDGER_STORE_NAMESPACE", default_value = DEFAULT_STORE_NAMESPACE)]
    store_namespace: String,
}

impl StoreArgs {
    fn options(self) -> anyhow::Result<StoreOptions> {
        let url = || (self.store_url.clone()).context("this --store needs --store-url");
        Ok(match self.store {
            StoreKind::Embedded => StoreOptions::Embedded,
            StoreKind::Postgres => StoreOptions::Postgres {
                url: url()?,
                schema: self.store_namespace,
            },
            StoreKind::Eventstoredb => StoreOptions::EventStoreDb {
                url: url()?,
                namespace: self.store_namespace,
            },
        })
    }
}

/// Which running server an operator's command asks, and as whom.
#[derive(Debug, clap::Args)]
struct Remote {
    /// The server's gRPC URL (`https://` for TLS).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    server: String,
    #[command(flatten)]
    tls: ClientTlsArgs,
    /// A bearer token of the server's: any role for `status`, an auditor's or admin's of the
    /// tenant for `export`.
    #[arg(long, env = "LEDGER_TOKEN")]
    token: String,
}

/// How the operator's commands meet a server at an `https://` URL.
#[derive(Debug, clap::Args)]
struct ClientTlsArgs {
    /// The CA that signed the server's TLS certificate (PEM).
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// This client's certificate (PEM), for a server that requires one (mutual TLS).
    #[arg(long, requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// This client's certificate key (PEM).
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
}

impl From<ClientTlsArgs> for ClientTls {
    fn from(args: ClientTlsArgs) -> Self {
        Self {
            ca: args.ca_cert,
            identity: args.client_cert.zip(args.client_key),
        }
    }
}

/// Which key signs checkpoints, under which name.
#[derive(Debug, clap::Args)]
struct LogKey {
    /// The checkpoint signing key (Ed25519, PKCS#8 PEM); without it, the data directory's own
    /// (created on first start).
    #[arg(long, env = "LEDGER_CHECKPOINT_KEY")]
    checkpoint_key: Option<PathBuf>,
    /// Checkpoints name each tenant's log `<origin>/<tenant>`; the key is named `<origin>`.
    #[arg(long, env = "LEDGER_LOG_ORIGIN", default_value = DEFAULT_LOG_ORIGIN)]
    log_origin: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Two TLS crypto providers are linked in (through dependencies): name the one to use.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let telemetry = Telemetry::install()?;
    let outcome = run().await;
    telemetry.shutdown().await;
    outcome
}

async fn run() -> anyhow::Result<()> {
    let interface = Cli::command();
    let layered = settings::layer(std::env::args_os().collect(), &interface, |name| {
        std::env::var(name).ok()
    })?;
    let matches = interface.clone().get_matches_from(&layered.args);
    let cli = Cli::from_arg_matches(&matches)?;
    match cli.command {
        Command::Config(_) => {
            let subcommand = interface.find_subcommand("config").expect("defined");
            let config = matches.subcommand_matches("config").expect("parsed");
            print!(
                "{}",
                settings::describe(subcommand, config, &layered.from_file)
            );
            Ok(())
        }
        Command::Serve(ServeArgs {
            config: _,
            listen,
            data_dir,
            store,
            shutdown_grace_secs,
            jwt_public_key,
            jwt_issuer,
            jwt_audience,
            anonymity_threshold,
            manager_overload_sessions,
            max_message_bytes,
            max_subscriptions,
            max_concurrent_requests,
            tls_cert,
            tls_key,
            tls_client_ca,
            rate_limit,
            rate_limit_burst,
            ready_max_lag_secs,
            projection_commit_events,
            master_key_file,
            master_key,
            previous_master_key_file,
            previous_master_key,
            allow_self_erasure,
            log,
        }) => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let shutdown = shutdown_signal()?;
            let store = store.options()?;
            let options = ServeOptions {
                store,
                auth: AuthOptions {
                    public_key: jwt_public_key,
                    issuer: jwt_issuer,
                    audience: jwt_audience,
                },
                anonymity_threshold,
                manager_overload_sessions,
                checkpoint_key: log.checkpoint_key,
                log_origin: log.log_origin,
                data_dir,
                shutdown_grace: Duration::from_secs(shutdown_grace_secs),
                limits: Limits {
                    max_message_bytes,
                    max_subscriptions,
                    max_concurrent_requests: usize::try_from(max_concurrent_requests)?,
                    rate_per_second: rate_limit,
                    rate_burst: rate_limit_burst,
                },
                ready_max_lag: Duration::from_secs(ready_max_lag_secs),
                projection_commit_events: usize::try_from(projection_commit_events)?,
                privacy: PrivacyOptions {
                    master_key: key_source(master_key_file, master_key),
                    previous_master_key: key_source(previous_master_key_file, previous_master_key),
                    allow_self_erasure,
                },
                tls: tls_cert.zip(tls_key).map(|(cert, key)| TlsOptions {
                    cert,
                    key,
                    client_ca: tls_client_ca,
                }),
            };
            dialogue_ledger::serve(listener, options, shutdown).await
        }
        Command::Rebuild {
            projection,
            data_dir,
            store,
            json,
        } => {
            let rebuilt =
                operator::rebuild(&store.options()?, &data_dir, &projection, !json).await?;
            if json {
                println!("{}", operator::rebuilt_json(&rebuilt));
            } else if rebuilt.left_to_replica {
                println!(
                    "{} reset; the replica that runs it rebuilds it from position zero",
                    rebuilt.projection
                );
            } else {
                println!(
                    "{} rebuilt up to log position {} in {:.1} s",
                    rebuilt.projection,
                    rebuilt.position.unwrap_or(0),
                    rebuilt.seconds
                );
            }
            Ok(())
        }
        Command::Export {
            remote: Remote { server, tls, token },
            out,
            json,
        } => {
            let tls = tls.into();
            let mut events: Box<dyn std::io::Write> = match &out {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let exported = operator::export(&server, &tls, &token, &mut events, true).await?;
            let summary = if json {
                operator::exported_json(&exported).to_string()
            } else {
                format!(
                    "exported {} events of {}, root {}",
                    exported.events, exported.origin, exported.root
                )
            };
            // The summary never mixes with events written to standard output.
            if out.is_some() {
                println!("{summary}");
            } else {
                eprintln!("{summary}");
            }
            Ok(())
        }
        Command::Status {
            remote: Remote { server, tls, token },
            json,
        } => {
            let status = operator::status(&server, &tls.into(), &token).await?;
            if json {
                println!("{}", operator::as_json(&status));
            } else {
                print!("{}", operator::as_table(&status));
            }
            Ok(())
        }
        Command::Verify {
            server,
            tls,
            token,
            data_dir,
            tenant,
            key,
            checkpoint,
            save_checkpoint,
        } => {
            let verdict = match (data_dir, tenant, token) {
                (Some(data_dir), Some(tenant), _) => {
                    let options = OfflineOptions {
                        data_dir,
                        tenant,
                        key,
                        saved: checkpoint,
                    };
                    dialogue_ledger::verify::verify_data_dir(&options).await?
                }
                (None, _, Some(token)) => {
                    let saved = checkpoint;
                    let save = save_checkpoint;
                    let options = VerifyOptions {
                        server,
                        tls: tls.into(),
                        token,
                        key,
                        saved,
                        save,
                        progress: true,
                    };
                    dialogue_ledger::verify::verify(&options).await?
                }
                _ => anyhow::bail!("give --server and --token, or --data-dir and --tenant"),
            };
            println!("{verdict}");
            if matches!(verdict, Verdict::Failed { .. }) {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::CheckpointKey { data_dir, log } => {
            let signer = dialogue_ledger::checkpoint_signer(
                &data_dir,
                log.checkpoint_key.as_deref(),
                &log.log_origin,
            )?;
            println!("{}", signer.verifier_key());
            Ok(())
        }
        Command::Token {
            data_dir,
            tenant,
            subject,
            roles,
            ttl_secs,
            issuer,
            audience,
        } => {
            TenantId::parse(&tenant)
                .context("the tenant must be 1-63 characters of a-z, 0-9 and -")?;
            if let Some(unknown) = roles.iter().find(|role| Role::parse(role).is_none()) {
                anyhow::bail!(
                    "unknown role {unknown:?}: use member, hr, auditor, admin or service"
                );
            }
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
            let claims = Claims {
                iss: issuer,
                aud: audience,
                sub: subject,
                tenant,
                roles,
                iat: now,
                exp: now + ttl_secs,
            };
            println!("{}", LocalKeys::new(&data_dir).issue(&claims)?);
            Ok(())
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
