//! The operator's `status` command: where a running server's log and projections stand, as a
//! table for people or as JSON for scripts; and how the operator's commands reach a server.

use std::path::PathBuf;

use anyhow::Context;
use ledger_proto::v1 as api;
use ledger_proto::v1::read_models_client::ReadModelsClient;
use serde_json::json;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::verify::Bearer;

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
