//! The writer task: commits every queued append in one transaction that holds the head row's
//! lock, checking each append on its own (a rejected append leaves nothing behind), and answers
//! once PostgreSQL has committed.

use std::collections::HashMap;
use std::sync::Arc;

use ledger_store::{
    AppendResult, Error, ExpectedVersion, NewEvent, Position, StoredAt, StreamName, Timestamp,
    stored_batch,
};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Transaction;
use uuid::Uuid;

use crate::{Shared, from_pg, to_i64};

/// At most this many appends share a transaction.
const GROUP: usize = 256;

#[derive(Debug)]
pub(crate) struct AppendRequest {
    pub(crate) stream: StreamName,
    pub(crate) expected: ExpectedVersion,
    pub(crate) events: Vec<NewEvent>,
    pub(crate) reply: oneshot::Sender<Result<AppendResult, Error>>,
}

pub(crate) async fn run(shared: Arc<Shared>, mut queue: mpsc::Receiver<AppendRequest>) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < GROUP {
            match queue.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        match commit(&shared, &group).await {
            Ok((answers, last)) => {
                shared.advance(last);
                for (request, answer) in group.into_iter().zip(answers) {
                    let _ = request.reply.send(answer);
                }
            }
            Err(error) => {
                tracing::warn!(%error, appends = group.len(), "an append group failed");
                // Whether it committed is unknown if the connection broke at COMMIT: the callers
                // retry with the same event ids, which settles it either way.
                let unavailable = matches!(error, Error::Unavailable(_));
                for request in group {
                    let message = error.to_string();
                    let _ = request.reply.send(Err(if unavailable {
                        Error::Unavailable(message.into())
                    } else {
                        Error::Backend(message.into())
                    }));
                }
            }
        }
    }
}

/// Commits the group; returns each append's answer and the head after it.
async fn commit(
    shared: &Shared,
    group: &[AppendRequest],
) -> Result<(Vec<Result<AppendResult, Error>>, u64), Error> {
    let mut client = shared.client().await?;
    let transaction = client.transaction().await.map_err(from_pg)?;
    // Serialises appends across every process on this schema until COMMIT.
    let last: i64 = transaction
        .query_one("SELECT last FROM head WHERE id = 1 FOR UPDATE", &[])
        .await
        .map_err(from_pg)?
        .get(0);
    let first_free = last as u64 + 1;
    let mut next = first_free;
    let recorded_at = Timestamp::now().as_micros();
    let mut answers = Vec::with_capacity(group.len());
    for request in group {
        answers.push(append_one(&transaction, request, &mut next, recorded_at).await?);
    }
    if !shared.pause_in_transaction.is_zero() {
        let nanos = u64::from(Timestamp::now().as_micros().unsigned_abs().to_le_bytes()[0]);
        tokio::time::sleep(shared.pause_in_transaction.mul_f64(nanos as f64 / 255.0)).await;
    }
    if next > first_free {
        let head = to_i64(next - 1);
        transaction
            .execute("UPDATE head SET last = $1 WHERE id = 1", &[&head])
            .await
            .map_err(from_pg)?;
        transaction
            .execute(
                "SELECT pg_notify($1, $2)",
                &[&shared.channel, &head.to_string()],
            )
            .await
            .map_err(from_pg)?;
    }
    transaction.commit().await.map_err(from_pg)?;
    Ok((answers, next - 1))
}

/// Checks one append against the transaction's state (which includes the group's earlier appends)
/// and writes it if the checks pass.
async fn append_one(
    transaction: &Transaction<'_>,
    request: &AppendRequest,
    next: &mut u64,
    recorded_at: i64,
) -> Result<Result<AppendResult, Error>, Error> {
    let ids: Vec<Uuid> = request.events.iter().map(|e| e.id).collect();
    let found: HashMap<Uuid, StoredAt> = transaction
        .query(
            "SELECT id, revision, position FROM events WHERE stream = $1 AND id = ANY($2)",
            &[&request.stream.as_str(), &ids],
        )
        .await
        .map_err(from_pg)?
        .into_iter()
        .map(|row| {
            let stored = StoredAt {
                revision: row.get::<_, i64>(1) as u64,
                position: Position::from_sequence(row.get::<_, i64>(2) as u64),
            };
            (row.get(0), stored)
        })
        .collect();
    let stored: Vec<Option<StoredAt>> = ids.iter().map(|id| found.get(id).copied()).collect();
    // A retry or a duplicate is answered without writing.
    if let Some(answer) = stored_batch(&ids, &stored).transpose() {
        return Ok(answer);
    }
    let actual = transaction
        .query_opt(
            "SELECT last_revision FROM streams WHERE name = $1",
            &[&request.stream.as_str()],
        )
        .await
        .map_err(from_pg)?
        .map(|row| row.get::<_, i64>(0) as u64);
    if !request.expected.is_satisfied_by(actual) {
        return Ok(Err(Error::WrongExpectedVersion {
            stream: request.stream.clone(),
            expected: request.expected,
            actual,
        }));
    }

    let first_revision = actual.map_or(0, |last| last + 1);
    let count = request.events.len() as u64;
    let last_revision = first_revision + count - 1;
    transaction
        .execute(
            "INSERT INTO streams (name, last_revision) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET last_revision = excluded.last_revision",
            &[&request.stream.as_str(), &to_i64(last_revision)],
        )
        .await
        .map_err(from_pg)?;
    let positions: Vec<i64> = (*next..*next + count).map(to_i64).collect();
    let revisions: Vec<i64> = (first_revision..=last_revision).map(to_i64).collect();
    let types: Vec<&str> = request
        .events
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    let payloads: Vec<&[u8]> = request.events.iter().map(|e| &e.payload[..]).collect();
    let metadata: Vec<Vec<u8>> = request.events.iter().map(|e| e.metadata.encode()).collect();
    transaction
        .execute(
            "INSERT INTO events
                 (position, stream, revision, id, event_type, payload, metadata, recorded_at)
             SELECT position, $2, revision, id, event_type, payload, metadata, $8
             FROM UNNEST($1::BIGINT[], $3::BIGINT[], $4::UUID[], $5::TEXT[], $6::BYTEA[], $7::BYTEA[])
                 AS batch (position, revision, id, event_type, payload, metadata)",
            &[
                &positions,
                &request.stream.as_str(),
                &revisions,
                &ids,
                &types,
                &payloads,
                &metadata,
                &recorded_at,
            ],
        )
        .await
        .map_err(from_pg)?;
    *next += count;
    Ok(Ok(AppendResult {
        revision: last_revision,
        position: Position::from_sequence(*next - 1),
        written: true,
    }))
}
