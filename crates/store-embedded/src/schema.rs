//! The database file: connection settings and the versioned schema.

use std::path::Path;
use std::time::Duration;

use ledger_store::BoxError;
use rusqlite::{Connection, OpenFlags};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many have run.
/// Append new ones; never edit a released one.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE streams (
        id            INTEGER PRIMARY KEY,
        name          TEXT    NOT NULL UNIQUE,
        last_revision INTEGER NOT NULL
    ) STRICT;
    -- position is the global sequence: 1, 2, 3, ... assigned by the single writer, without gaps.
    CREATE TABLE events (
        position    INTEGER PRIMARY KEY,
        stream_id   INTEGER NOT NULL REFERENCES streams (id),
        revision    INTEGER NOT NULL,
        event_id    BLOB    NOT NULL UNIQUE,
        event_type  TEXT    NOT NULL,
        payload     BLOB    NOT NULL,
        metadata    BLOB    NOT NULL,
        recorded_at INTEGER NOT NULL,
        UNIQUE (stream_id, revision)
    ) STRICT;
",
    "
    -- Event ids unique per stream instead of across the store: a store-wide index takes each new
    -- id at a random page of a B-tree as large as the history, while new streams' entries of
    -- this one sit together at its end. SQLite cannot drop a column's UNIQUE, so the table is
    -- copied (once, at the first start of a build with this migration).
    CREATE TABLE events_per_stream_ids (
        position    INTEGER PRIMARY KEY,
        stream_id   INTEGER NOT NULL REFERENCES streams (id),
        revision    INTEGER NOT NULL,
        event_id    BLOB    NOT NULL,
        event_type  TEXT    NOT NULL,
        payload     BLOB    NOT NULL,
        metadata    BLOB    NOT NULL,
        recorded_at INTEGER NOT NULL,
        UNIQUE (stream_id, revision)
    ) STRICT;
    INSERT INTO events_per_stream_ids SELECT * FROM events ORDER BY position;
    DROP TABLE events;
    ALTER TABLE events_per_stream_ids RENAME TO events;
    CREATE UNIQUE INDEX events_by_stream_and_id ON events (stream_id, event_id);
",
];

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens the one write connection, creating and migrating the database as needed.
pub(crate) fn open_writer(path: &Path) -> Result<Connection, BoxError> {
    let mut connection = Connection::open(path)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    // WAL lets readers run beside the writer. synchronous=NORMAL: SQLite does not fsync at
    // commit; the writer's syncer fsyncs the WAL itself before it acknowledges (see `writer`), so
    // one fsync covers several commits and the writer never waits for the disk.
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    // Checkpoints copy the WAL into the database; fewer, larger ones cost the writer less.
    connection.pragma_update(None, "wal_autocheckpoint", 65_536)?;
    migrate(&mut connection)?;
    Ok(connection)
}

/// Opens the WAL file for the syncer's fsyncs. SQLite keeps this file (it only rewinds it) while
/// the writer's connection is open, so one handle serves for the store's lifetime.
pub(crate) fn open_wal(database: &Path) -> std::io::Result<std::fs::File> {
    let mut wal = database.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(wal)
}

/// Opens a connection that can only read; `mapped`: through a memory map of the file's first
/// GiB rather than a syscall per page.
pub(crate) fn open_reader(path: &Path, mapped: bool) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    connection.pragma_update(None, "mmap_size", if mapped { 1i64 << 30 } else { 0 })?;
    // A mapped connection reads its pages through the map, not the cache; an unmapped one reads
    // the log once from front to back, and a page cache only keeps what it will not read again.
    connection.pragma_update(None, "cache_size", if mapped { -16_000 } else { -2_000 })?;
    // A statement per query shape and LIMIT (see `reader`).
    connection.set_prepared_statement_cache_capacity(64);
    Ok(connection)
}

fn migrate(connection: &mut Connection) -> Result<(), BoxError> {
    let applied: usize = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if applied > MIGRATIONS.len() {
        return Err(format!(
            "the event store has schema version {applied}, newer than this build knows ({})",
            MIGRATIONS.len()
        )
        .into());
    }
    for (version, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        let transaction = connection.transaction()?;
        transaction.execute_batch(migration)?;
        transaction.pragma_update(None, "user_version", version + 1)?;
        transaction.commit()?;
        tracing::info!(version = version + 1, "event store schema migrated");
    }
    Ok(())
}

/// The global sequence of the last stored event, 0 for an empty log.
pub(crate) fn last_sequence(connection: &Connection) -> rusqlite::Result<u64> {
    let last: i64 =
        connection.query_row("SELECT coalesce(max(position), 0) FROM events", [], |row| {
            row.get(0)
        })?;
    Ok(last as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `.cargo/config.toml` builds SQLite without the locks that every connection of the
    /// process shared: a build without it (cargo run from elsewhere, a changed flag) fails here.
    #[test]
    fn sqlite_is_built_without_process_wide_locks() {
        let connection = Connection::open_in_memory().unwrap();
        let mut statement = connection.prepare("PRAGMA compile_options").unwrap();
        let options: Vec<String> = (statement.query_map([], |row| row.get(0)).unwrap())
            .collect::<Result<_, _>>()
            .unwrap();
        let built_with = |option: &str| options.iter().any(|o| o == option);
        assert!(built_with("DEFAULT_MEMSTATUS=0"), "{options:?}");
        assert!(built_with("OMIT_SHARED_CACHE"), "{options:?}");
        assert!(!built_with("ENABLE_MEMORY_MANAGEMENT"), "{options:?}");
    }
}
