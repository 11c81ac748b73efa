//! The operator's commands beside `serve` and `verify`: `status` (where a running server's log
//! and projections stand, as a table for people or as JSON for scripts), `rebuild` (a projection
//! from position zero, offline) and `export` (a tenant's ledger as JSON Lines); and how they reach
//! a server.

use std::path::PathBuf;

use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use base64::Engine as _;
use indicatif::{ProgressBar, ProgressStyle};
use ledger_projections::{ProjectionRunner, SharedLog};
use ledger_proto::v1 as api;
use ledger_proto::v1::ledger_client::LedgerClient;
use ledger_proto::v1::read_models_client::ReadModelsClient;
use serde_json::json;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::store::{Backend, StoreOptions};
use crate::verify::Bearer;

/// A progress bar of `len` steps drawn with `template` on standard error, when `shown` and it is
/// a terminal; hidden otherwise.
pub(crate) fn progress_bar(shown: bool, len: u64, template: &str) -> ProgressBar {
    if !(shown && std::io::stderr().is_terminal()) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
    bar
}

/// The bar of work counted in events.
pub(crate) const EVENTS_BAR: &str = "{bar:40} {pos}/{len} events {per_sec} eta {eta}";

/// How a client of the operator's commands meets a server that serves TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA that signed the server's certificate (PEM).
    pub ca: Option<PathBuf>,
    /// The client's certificate and key (PEM), for a server that asks for one (mutual TLS).
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// A channel to `server` (`http://` plaintext, `https://` TLS as `tls` says).
pub async fn connect(server: &str, tls: &ClientTls) -> anyhow::Result<Channel> {
    let read = |path: &PathBuf| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let mut endpoint = Endpoint::from_shared(server.to_owned())?;
    if server.starts_with("https://") {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &tls.ca {
            config = config.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let Some((cert, key)) = &tls.identity {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint = endpoint.tls_config(config)?;
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to {server}"))
}

/// Asks `server` (with a bearer `token`) where its log and projections stand.
pub async fn status(
    server: &str,
    tls: &ClientTls,
    token: &str,
) -> anyhow::Result<api::GetProjectionStatusResponse> {
    let channel = connect(server, tls).await?;
    let response = ReadModelsClient::with_interceptor(channel, Bearer::new(token)?)
        .get_projection_status(api::GetProjectionStatusRequest {})
        .await
        .map_err(|status| {
            anyhow::anyhow!(
                "{server} answered {:?}: {}",
                status.code(),
                status.message()
            )
        })?;
    Ok(response.into_inner())
}

fn commit(position: Option<&api::Position>) -> Option<u64> {
    position.map(|p| p.commit)
}

pub fn as_json(status: &api::GetProjectionStatusResponse) -> serde_json::Value {
    let projections: Vec<_> = (status.projections.iter())
        .map(|p| {
            json!({
                "projection": p.projection,
                "position": commit(p.position.as_ref()),
                "lag_events": p.lag_events,
                "lag_seconds": p.lag_seconds,
                "caught_up": p.caught_up,
                "running_here": p.running_here,
            })
        })
        .collect();
    json!({ "head": commit(status.head.as_ref()), "projections": projections })
}

pub fn as_table(status: &api::GetProjectionStatusResponse) -> String {
    let shown = |position: Option<u64>| position.map_or("-".to_owned(), |p| p.to_string());
    let mut out = format!("log head: {}\n", shown(commit(status.head.as_ref())));
    out.push_str(&format!(
        "{:<22} {:>12} {:>10} {:>10} {:>10} {:>8}\n",
        "projection", "position", "lag", "lag (s)", "caught up", "here"
    ));
    for p in &status.projections {
        out.push_str(&format!(
            "{:<22} {:>12} {:>10} {:>10.1} {:>10} {:>8}\n",
            p.projection,
            shown(commit(p.position.as_ref())),
            p.lag_events,
            p.lag_seconds,
            if p.caught_up { "yes" } else { "no" },
            if p.running_here { "yes" } else { "standby" },
        ));
    }
    out
}

/// What `rebuild` did.
#[derive(Debug, Clone, PartialEq)]
pub struct Rebuilt {
    pub projection: &'static str,
    /// The log position the projection stands at now; `None` for an empty log.
    pub position: Option<u64>,
    pub seconds: f64,
    /// A running replica holds the projection's lease: it rebuilds the projection itself, from
    /// the reset this command made.
    pub left_to_replica: bool,
}

/// Drops projection `name`'s documents and checkpoint and folds the log into it again from
/// position zero, up to the log's head when it starts. For the embedded store the server must be
/// stopped (the data directory is locked); on PostgreSQL a replica holding the projection's lease
/// rebuilds it itself after the reset.
pub async fn rebuild(
    store: &StoreOptions,
    data_dir: &Path,
    name: &str,
    progress: bool,
) -> anyhow::Result<Rebuilt> {
    let started = Instant::now();
    let all = crate::projections();
    let projection = (all.iter())
        .find(|projection| projection.name() == name)
        .cloned()
        .with_context(|| {
            let names: Vec<_> = all.iter().map(|p| p.name()).collect();
            format!("no projection {name}; there are {}", names.join(", "))
        })?;
    let name = projection.name();
    let backend = Backend::open(store, data_dir).await?;
    let documents = crate::store::open_documents(store, data_dir, &all).await?;
    let models = projection.models();
    let lease = {
        let documents = documents.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<bool> {
            documents.reset(name, models)?;
            // Held only to see whether a replica holds it; the runner takes it again.
            Ok(documents.lease(name)?.is_some())
        })
        .await??
    };
    let log = backend.shared();
    let head = log.head().await?;
    if !lease {
        backend.close().await?;
        return Ok(Rebuilt {
            projection: name,
            position: None,
            seconds: started.elapsed().as_secs_f64(),
            left_to_replica: true,
        });
    }
    let runner = ProjectionRunner::new(SharedLog::new(log), documents);
    let mut status = runner.status();
    let running = tokio::spawn(runner.run(projection));
    let bar = progress_bar(
        progress,
        head.map_or(0, |head| head.commit()),
        "{msg} {bar:40} {pos}/{len} log position {per_sec} eta {eta}",
    );
    bar.set_message(name);
    let position = loop {
        let position = status.borrow_and_update().position;
        bar.set_position(position.map_or(0, |p| p.commit()));
        if position >= head {
            break position;
        }
        if running.is_finished() || status.changed().await.is_err() {
            backend.close().await?;
            running.await??;
            anyhow::bail!("projection {name} stopped before it caught up");
        }
    };
    bar.finish_and_clear();
    backend.close().await?;
    running.await??;
    Ok(Rebuilt {
        projection: name,
        position: position.map(|p| p.commit()),
        seconds: started.elapsed().as_secs_f64(),
        left_to_replica: false,
    })
}

pub fn rebuilt_json(rebuilt: &Rebuilt) -> serde_json::Value {
    json!({
        "projection": rebuilt.projection,
        "position": rebuilt.position,
        "seconds": rebuilt.seconds,
        "left_to_replica": rebuilt.left_to_replica,
    })
}

/// What `export` wrote: the events of the tree the server's signed checkpoint covers.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    pub events: u64,
    /// The log's name in the checkpoint, `<origin>/<tenant>`.
    pub origin: String,
    /// The root hash of the tree of the exported events, base64, as the signed checkpoint has it.
    pub root: String,
    /// The signed checkpoint note, for `verify --checkpoint` against a later state of the log.
    pub note: String,
}

/// Writes the caller's tenant's ledger from `server`, up to its signed checkpoint, to `out` as
/// JSON Lines: one event a line with its leaf index, stream, revision, id, type, time, and its
/// metadata and payload in proto3 JSON. Personal text stays sealed (it is ciphertext in the log;
/// only the Privacy service opens it, for its subject). Needs an auditor's or admin's token.
pub async fn export(
    server: &str,
    tls: &ClientTls,
    token: &str,
    out: &mut dyn std::io::Write,
    progress: bool,
) -> anyhow::Result<Exported> {
    let channel = connect(server, tls).await?;
    let mut client = LedgerClient::with_interceptor(channel, Bearer::new(token)?)
        .max_decoding_message_size(64 << 20);
    let refused = |status: tonic::Status| {
        anyhow::anyhow!(
            "{server} answered {:?}: {}",
            status.code(),
            status.message()
        )
    };
    let checkpoint = (client.get_checkpoint(api::GetCheckpointRequest {}).await)
        .map_err(refused)?
        .into_inner();
    let bar = progress_bar(progress, checkpoint.tree_size, EVENTS_BAR);
    let mut events = (client
        .replay_all(api::ReplayAllRequest { from_leaf_index: 0 })
        .await)
        .map_err(refused)?
        .into_inner();
    let mut written = 0;
    while written < checkpoint.tree_size {
        let Some(event) = events.message().await.map_err(refused)? else {
            anyhow::bail!(
                "the server ended the log at {written} events; its checkpoint has {}",
                checkpoint.tree_size
            );
        };
        let line = exported_event(&event)?;
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
        written += 1;
        bar.inc(1);
    }
    out.flush()?;
    bar.finish_and_clear();
    Ok(Exported {
        events: written,
        origin: checkpoint.origin,
        root: base64::engine::general_purpose::STANDARD.encode(&checkpoint.root_hash),
        note: checkpoint.note,
    })
}

/// One event as a line of the export.
fn exported_event(event: &api::LedgerEvent) -> anyhow::Result<serde_json::Value> {
    let id = uuid::Uuid::from_slice(&event.event_id).context("an event id is not 16 bytes")?;
    let as_json = |type_name: &str, bytes: &[u8]| {
        crate::proto_json::to_json(type_name, bytes).map_err(|error| {
            anyhow::anyhow!("event {} ({}): {error}", event.leaf_index, event.event_type)
        })
    };
    Ok(json!({
        "leaf_index": event.leaf_index,
        "stream": event.stream,
        "revision": event.revision,
        "event_id": id,
        "event_type": event.event_type,
        "recorded_at_micros": event.recorded_at_micros,
        "metadata": as_json("dialogue.ledger.events.v1.EventMetadata", &event.metadata)?,
        "payload": as_json(&event.event_type, &event.payload)?,
    }))
}

pub fn exported_json(exported: &Exported) -> serde_json::Value {
    json!({
        "events": exported.events,
        "origin": exported.origin,
        "root": exported.root,
        "note": exported.note,
    })
}
