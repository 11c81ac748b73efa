//! The dialogue ledger server: the gRPC services over an event store, and how the binary runs them.
//! `main.rs` only parses the command line; everything it runs lives here so tests can run it too.

pub mod access;
pub mod auth;
pub mod commands;
pub mod ledger;
pub mod limits;
pub mod operator;
pub mod privacy;
pub mod proto_json;
pub mod read_models;
pub mod services;
pub mod serving;
pub mod settings;
pub mod states;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod verify;
#[cfg(test)]
mod watched_store;

use std::future::Future;
use std::path::{Path, PathBuf};

use std::time::Duration;

use std::sync::Arc;

use anyhow::Context;
use ledger_audit::NoteSigner;
use ledger_domain::Policy;
use ledger_projections::development::DevelopmentReviews;
use ledger_projections::evaluation::EvaluationBriefs;
use ledger_projections::health::DialogueHealth;
use ledger_projections::staffing::Staffing;
use ledger_projections::{Projection, ProjectionRunner, SharedLog};
use ledger_proto::v1::goals_server::GoalsServer;
use ledger_proto::v1::insights_server::InsightsServer;
use ledger_proto::v1::ledger_server::LedgerServer;
use ledger_proto::v1::org_directory_server::OrgDirectoryServer;
use ledger_proto::v1::privacy_server::PrivacyServer;
use ledger_proto::v1::read_models_server::ReadModelsServer;
use ledger_proto::v1::sessions_server::SessionsServer;
use ledger_proto::v1::surveys_server::SurveysServer;
use ledger_store::EventStore;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::access::AccessLog;
use crate::auth::Authenticator;
use crate::commands::CommandHandler;
use crate::ledger::{AuditTrees, LedgerService};
use crate::limits::{Gate, Limits, RequestCap};
use crate::privacy::{PrivacyOptions, PrivacyService};
use crate::read_models::{ReadModelRunners, ReadModelSettings, ReadModelsService};
use crate::services::CommandService;
use crate::store::{Backend, StoreOptions};
use crate::telemetry::RpcTelemetry;

/// The ledger's own services, by their full gRPC names (for health checks).
pub const SERVICES: [&str; 8] = [
    "dialogue.ledger.v1.OrgDirectory",
    "dialogue.ledger.v1.Sessions",
    "dialogue.ledger.v1.Insights",
    "dialogue.ledger.v1.Goals",
    "dialogue.ledger.v1.Surveys",
    "dialogue.ledger.v1.Ledger",
    "dialogue.ledger.v1.ReadModels",
    "dialogue.ledger.v1.Privacy",
];

/// The checkpoint origin prefix and signing key name unless configured.
pub const DEFAULT_LOG_ORIGIN: &str = "dialogue-ledger";

/// The signer of checkpoints: the key at `key`, or the data directory's own (created on first
/// use), named `origin_prefix`.
pub fn checkpoint_signer(
    data_dir: &Path,
    key: Option<&Path>,
    origin_prefix: &str,
) -> anyhow::Result<NoteSigner> {
    let default = data_dir.join("audit").join("checkpoint-signing-key.pem");
    let key = auth::load_or_create_signing_key(key.unwrap_or(&default))?;
    Ok(NoteSigner::new(origin_prefix, key))
}

/// The address `serve` listens on unless configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// The data directory `serve` uses unless configured.
pub const DEFAULT_DATA_DIR: &str = "./data";

/// Vertical sessions a month above which a manager is flagged, unless configured: about one each
/// working day.
pub const DEFAULT_MANAGER_OVERLOAD_SESSIONS: u32 = 20;

/// How long shutdown waits for open requests unless configured, in seconds.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;

/// How callers are authenticated.
#[derive(Debug, Clone)]
pub struct AuthOptions {
    /// The Ed25519 public key (PEM) that verifies tokens; `None`: the data directory's own key
    /// pair, created on first start (the quick start).
    pub public_key: Option<PathBuf>,
    pub issuer: String,
    pub audience: String,
}

/// What `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub auth: AuthOptions,
    /// Survey results with fewer respondents are refused, and insight themes standing on fewer
    /// distinct people withheld (at least 3).
    pub anonymity_threshold: u32,
    /// Dialogue health flags a manager holding more vertical sessions a month than this.
    pub manager_overload_sessions: u32,
    /// The checkpoint signing key (PKCS#8 PEM); `None`: the data directory's own.
    pub checkpoint_key: Option<PathBuf>,
    /// Checkpoints name the log `<log_origin>/<tenant>`; also the signing key's name.
    pub log_origin: String,
    /// The event store.
    pub store: StoreOptions,
    /// Where the embedded store, the read models, the audit trees and the quick start's keys live.
    pub data_dir: PathBuf,
    /// How long shutdown waits for open requests and connections before it closes the store
    /// anyway.
    pub shutdown_grace: Duration,
    pub limits: Limits,
    /// The health check says NOT_SERVING while a projection is further behind the log than this.
    pub ready_max_lag: Duration,
    /// While catching up, each projection commits every this many events (or each second).
    pub projection_commit_events: usize,
    pub privacy: PrivacyOptions,
    /// TLS for the listener; `None`: plaintext (on localhost, or behind a mesh that terminates TLS).
    pub tls: Option<TlsOptions>,
}

/// The listener's TLS: its certificate and key, and for mutual TLS the CA client certificates
/// must be signed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// The certificate chain, PEM.
    pub cert: PathBuf,
    /// The certificate's private key, PEM.
    pub key: PathBuf,
    /// With it, a client must present a certificate signed by this CA (PEM).
    pub client_ca: Option<PathBuf>,
}

impl TlsOptions {
    /// The server's TLS configuration, read from the files now.
    pub fn server_config(&self) -> anyhow::Result<ServerTlsConfig> {
        let read = |path: &Path, what: &str| {
            std::fs::read(path)
                .with_context(|| format!("cannot read the TLS {what} {}", path.display()))
        };
        let identity =
            Identity::from_pem(read(&self.cert, "certificate")?, read(&self.key, "key")?);
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read(ca, "client CA")?));
        }
        Ok(config)
    }
}

/// The projections the service runs, in the order of [`ReadModelRunners::named`].
pub fn projections() -> [Arc<dyn Projection>; 4] {
    [
        Arc::new(EvaluationBriefs),
        Arc::new(Staffing),
        Arc::new(DevelopmentReviews),
        Arc::new(DialogueHealth),
    ]
}

/// The listener's connections with Nagle's algorithm off, as tonic sets it only on listeners it
/// binds itself: a response is several small writes, and one held back until the client has
/// acknowledged the last waits out the client's delayed ACK (measured: 7–15% more commands/s).
fn without_delay(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Serves on `listener` until `shutdown` completes, then stops taking requests, lets in-flight
/// requests finish, and closes the store after its last append is durable.
pub async fn serve(
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if options.anonymity_threshold < Policy::MIN_ANONYMITY {
        anyhow::bail!(
            "the anonymity threshold must be at least {}",
            Policy::MIN_ANONYMITY
        );
    }
    // TLS and keys first: a bad certificate or a wrong or missing master key stops start-up
    // before anything is opened.
    let mut server = Server::builder();
    if let Some(tls) = &options.tls {
        server = (server.tls_config(tls.server_config()?))
            .context("the TLS certificate, key or client CA is not usable")?;
    }
    let keys = privacy::open_key_ring(&options.privacy, &options.store, &options.data_dir).await?;
    let store = Backend::open(&options.store, &options.data_dir).await?;
    if let Backend::Embedded(embedded) = &store {
        telemetry::observe_writer(embedded.clone());
    }

    let public_key = match &options.auth.public_key {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token public key {}", path.display()))?,
        None => auth::LocalKeys::new(&options.data_dir).ensure()?,
    };
    let authenticator =
        Authenticator::new(&public_key, &options.auth.issuer, &options.auth.audience)?;
    let policy = Policy {
        anonymity_threshold: options.anonymity_threshold,
    };
    let shared_store: Arc<dyn EventStore> = store.shared();
    // The embedded log has one writer, this process: states kept between commands stay true.
    let one_writer = matches!(store, Backend::Embedded(_));
    let handler = Arc::new(CommandHandler::new(
        shared_store.clone(),
        policy,
        keys.clone(),
        one_writer,
    ));
    // Replicas share the PostgreSQL key store: each must hear of the others' erasures.
    let evictions = matches!(store, Backend::Postgres(_))
        .then(|| privacy::spawn_eviction_follower(shared_store.clone(), keys.clone()));
    let commands = CommandService::new(handler.clone());
    let trees = AuditTrees::open(&options.data_dir).context("cannot open the audit trees")?;
    let follower = trees.spawn_follower(shared_store.clone());
    let signer = checkpoint_signer(
        &options.data_dir,
        options.checkpoint_key.as_deref(),
        &options.log_origin,
    )?;
    let (access, access_writer) = AccessLog::start(shared_store.clone(), access::GATHER);
    let privacy = PrivacyService::new(
        shared_store.clone(),
        keys.clone(),
        access.clone(),
        options.privacy.allow_self_erasure,
    );
    let ledger = LedgerService::new(
        shared_store.clone(),
        trees,
        signer,
        options.log_origin.clone(),
        access.clone(),
    );
    let folds = projections();
    let documents = store::open_documents(&options.store, &options.data_dir, &folds).await?;
    let log = SharedLog::new(shared_store.clone());
    let runner = || {
        ProjectionRunner::new(log.clone(), documents.clone())
            .committing_every(options.projection_commit_events)
    };
    let runners = ReadModelRunners {
        briefs: runner(),
        staffing: runner(),
        development: runner(),
        health: runner(),
    };
    let [evaluation, staffing, development, health] = folds;
    // Each until the store closes, resumed after a failure.
    let projections = [
        tokio::spawn(runners.briefs.clone().keep_running(evaluation)),
        tokio::spawn(runners.staffing.clone().keep_running(staffing)),
        tokio::spawn(runners.development.clone().keep_running(development)),
        tokio::spawn(runners.health.clone().keep_running(health)),
    ];
    let settings = ReadModelSettings {
        anonymity_threshold: options.anonymity_threshold,
        manager_overload_sessions: options.manager_overload_sessions,
        max_subscriptions: options.limits.max_subscriptions,
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    let mut readiness = serving::Readiness::new(
        health.clone(),
        shared_store.clone(),
        runners
            .named()
            .map(|(name, runner)| (name, runner.clone()))
            .into(),
        options.ready_max_lag,
    );
    readiness.update().await;
    let readiness = tokio::spawn(readiness.run());
    let read_models = ReadModelsService::new(
        shared_store,
        documents,
        runners,
        settings,
        handler,
        access,
        keys,
    );

    // Both reflection versions: grpcurl and older tools still ask v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ledger_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let addr = listener.local_addr()?;
    tracing::info!(%addr, data_dir = %options.data_dir.display(), "dialogue ledger listening");
    let (draining_started, draining) = oneshot::channel();
    let drain = async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        readiness.abort();
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        for service in SERVICES {
            health
                .set_service_status(service, ServingStatus::NotServing)
                .await;
        }
        let _ = draining_started.send(());
    };
    let gate = Gate::new(authenticator, &options.limits);
    let max_message = options.limits.max_message_bytes;
    // Each service behind the gate, with the message size limit both ways.
    macro_rules! guarded {
        ($server:ident, $service:expr) => {
            InterceptedService::new(
                $server::new($service)
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(max_message),
                gate.clone(),
            )
        };
    }
    let server = server
        // Outermost, so a request refused for the cap is measured and traced too.
        .layer(
            tower::ServiceBuilder::new()
                .layer(RpcTelemetry::new())
                .layer(RequestCap::new(options.limits.max_concurrent_requests)),
        )
        .add_service(health_service)
        .add_service(guarded!(OrgDirectoryServer, commands.clone()))
        .add_service(guarded!(SessionsServer, commands.clone()))
        .add_service(guarded!(InsightsServer, commands.clone()))
        .add_service(guarded!(GoalsServer, commands.clone()))
        .add_service(guarded!(SurveysServer, commands))
        .add_service(guarded!(LedgerServer, ledger))
        .add_service(guarded!(ReadModelsServer, read_models))
        .add_service(guarded!(PrivacyServer, privacy))
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(without_delay(listener), drain);
    // A client that never finishes its stream must not keep the process alive forever.
    let grace_over = async move {
        match draining.await {
            Ok(()) => tokio::time::sleep(options.shutdown_grace).await,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        served = server => served.context("the gRPC server failed")?,
        () = grace_over => tracing::warn!(
            grace = ?options.shutdown_grace,
            "requests still open after the shutdown grace period; stopping anyway"
        ),
    }

    // The services are gone: the access log writes what is queued, then the store closes. A
    // stream cut off by the grace period may still hold the log for a moment: wait only so long.
    if tokio::time::timeout(options.shutdown_grace, access_writer)
        .await
        .is_err()
    {
        tracing::warn!("access records still queued at shutdown were not written");
    }
    store
        .close()
        .await
        .context("cannot close the event store")?;
    // The follower ends with the store's log; a projection may be standing by for its lease.
    let _ = follower.await;
    if let Some(evictions) = evictions {
        evictions.abort();
    }
    for projection in projections {
        projection.abort();
        if let Err(error) = projection.await
            && error.is_panic()
        {
            tracing::error!(%error, "a projection panicked");
        }
    }
    tracing::info!("dialogue ledger stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    use super::*;

    #[tokio::test]
    async fn accepted_connections_send_without_delay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut incoming = without_delay(listener);
        let _client = tokio::net::TcpStream::connect(address).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
