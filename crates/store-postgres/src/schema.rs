//! The schema and its versioned migrations, applied on connect under an advisory lock so that
//! replicas starting together migrate once.

use ledger_store::Error;

use crate::from_pg;

/// Each migration, in order; the schema's version is how many have been applied.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE streams (
        name          TEXT PRIMARY KEY,
        last_revision BIGINT NOT NULL
    );
    -- The global order: position is handed out under the head row's lock, in commit order.
    CREATE TABLE events (
        position    BIGINT PRIMARY KEY,
        stream      TEXT   NOT NULL,
        revision    BIGINT NOT NULL,
        id          UUID   NOT NULL UNIQUE,
        event_type  TEXT   NOT NULL,
        payload     BYTEA  NOT NULL,
        metadata    BYTEA  NOT NULL,
        recorded_at BIGINT NOT NULL,
        UNIQUE (stream, revision)
    );
    CREATE TABLE head (
        id   INTEGER PRIMARY KEY CHECK (id = 1),
        last BIGINT NOT NULL
    );
    INSERT INTO head (id, last) VALUES (1, 0);
",
    "
    -- Event ids unique per stream instead of across the store (the store's contract).
    ALTER TABLE events DROP CONSTRAINT events_id_key;
    CREATE UNIQUE INDEX events_by_stream_and_id ON events (stream, id);
",
];

/// A schema name safe to splice into SQL: lower-case ASCII letters, digits and `_`, not starting
/// with a digit, at most 48 bytes.
pub(crate) fn check_name(schema: &str) -> Result<(), Error> {
    let ok = !schema.is_empty()
        && schema.len() <= 48
        && !schema.starts_with(|c: char| c.is_ascii_digit())
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::Backend(
            format!("invalid schema name {schema:?}: use a-z, 0-9 and _").into(),
        ))
    }
}

pub(crate) async fn migrate(
    client: &mut tokio_postgres::Client,
    schema: &str,
) -> Result<(), Error> {
    let transaction = client.transaction().await.map_err(from_pg)?;
    // One migrator at a time across processes; the lock ends with the transaction.
    transaction
        .execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&schema])
        .await
        .map_err(from_pg)?;
    transaction
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {schema}.schema_version (
                 id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL
             );
             INSERT INTO {schema}.schema_version (id, version) VALUES (1, 0) ON CONFLICT DO NOTHING;"
        ))
        .await
        .map_err(from_pg)?;
    let version: i32 = transaction
        .query_one(
            &format!("SELECT version FROM {schema}.schema_version WHERE id = 1"),
            &[],
        )
        .await
        .map_err(from_pg)?
        .get(0);
    let applied = usize::try_from(version).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(Error::Backend(
            format!(
                "schema {schema} is at version {version}, newer than this build knows ({})",
                MIGRATIONS.len()
            )
            .into(),
        ));
    }
    for migration in &MIGRATIONS[applied..] {
        transaction
            .batch_execute(&format!("SET LOCAL search_path = {schema}; {migration}"))
            .await
            .map_err(from_pg)?;
    }
    transaction
        .execute(
            &format!("UPDATE {schema}.schema_version SET version = $1 WHERE id = 1"),
            &[&(MIGRATIONS.len() as i32)],
        )
        .await
        .map_err(from_pg)?;
    transaction.commit().await.map_err(from_pg)
}
