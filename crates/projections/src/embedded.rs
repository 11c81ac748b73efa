//! The embedded read-model store: one SQLite file per projection in `DATA_DIR/readmodels/`, so
//! that projections commit side by side (SQLite lets one writer at a time into a file), and one
//! change feed numbered across the files.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use ledger_store::Position;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::watch;

use crate::documents::{Change, Checkpoint, DocumentReads, DocumentStore, Error, Write};
use crate::runner::Projection;

#[derive(Debug)]
pub struct EmbeddedDocuments {
    files: Vec<File>,
    by_projection: HashMap<&'static str, usize>,
    by_model: HashMap<&'static str, usize>,
    sequence: Sequence,
}

/// The change feed's numbers. A commit reserves its numbers before it writes; a subscriber sees
/// only numbers below every commit still in flight, so it never passes over a change that a
/// slower commit in another file has yet to make visible.
#[derive(Debug)]
struct Sequence {
    numbers: Mutex<Numbers>,
    /// The highest visible number, sent when a commit's numbers become visible: not only that
    /// commit's, since a commit that finishes first shows nothing until the earlier ones have.
    visible: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Numbers {
    last: u64,
    /// The first number of each commit in flight.
    in_flight: BTreeSet<u64>,
}

impl Numbers {
    fn visible(&self) -> u64 {
        self.in_flight.first().map_or(self.last, |first| first - 1)
    }
}

impl Sequence {
    fn starting_after(last: u64) -> Self {
        let numbers = Numbers {
            last,
            in_flight: BTreeSet::new(),
        };
        Self {
            numbers: Mutex::new(numbers),
            visible: watch::channel(last).0,
        }
    }

    fn visible(&self) -> u64 {
        self.numbers.lock().unwrap().visible()
    }
}

/// Numbers reserved for one commit; released (visible or, if the commit failed, skipped) when
/// dropped.
struct Reservation<'a> {
    sequence: &'a Sequence,
    first: u64,
}

impl<'a> Reservation<'a> {
    fn take(sequence: &'a Sequence, count: u64) -> Option<Self> {
        if count == 0 {
            return None;
        }
        let mut numbers = sequence.numbers.lock().unwrap();
        let first = numbers.last + 1;
        numbers.last += count;
        numbers.in_flight.insert(first);
        Some(Self { sequence, first })
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut numbers = self.sequence.numbers.lock().unwrap();
        numbers.in_flight.remove(&self.first);
        // Sent under the lock, so that the numbers sent only grow.
        let visible = numbers.visible();
        self.sequence.visible.send_if_modified(|sent| {
            let grew = visible > *sent;
            *sent = visible.max(*sent);
            grew
        });
    }
}

impl EmbeddedDocuments {
    pub const DIRECTORY: &str = "readmodels";

    /// Opens (or creates) the files of `projections` in `data_dir`.
    pub fn open(data_dir: &Path, projections: &[&dyn Projection]) -> Result<Self, Error> {
        forget_single_file(data_dir)?;
        let directory = data_dir.join(Self::DIRECTORY);
        std::fs::create_dir_all(&directory)
            .map_err(|e| Error::Database(format!("cannot create {}: {e}", directory.display())))?;
        let (mut files, mut by_projection, mut by_model) =
            (Vec::new(), HashMap::new(), HashMap::new());
        let mut last = 0;
        for (index, projection) in projections.iter().enumerate() {
            let file = File::open(directory.join(format!("{}.db", projection.name())))?;
            last = last.max(file.read(|reader| {
                let last: Option<i64> = reader
                    .query_row("SELECT last FROM change_sequence", [], |row| row.get(0))
                    .optional()?;
                Ok(last.unwrap_or(0) as u64)
            })?);
            files.push(file);
            by_projection.insert(projection.name(), index);
            for model in projection.models() {
                by_model.insert(*model, index);
            }
        }
        Ok(Self {
            files,
            by_projection,
            by_model,
            sequence: Sequence::starting_after(last),
        })
    }

    fn of_projection(&self, projection: &str) -> Result<&File, Error> {
        (self.by_projection.get(projection))
            .map(|index| &self.files[*index])
            .ok_or_else(|| Error::Unknown(projection.to_owned()))
    }

    fn of_model(&self, model: &str) -> Result<&File, Error> {
        (self.by_model.get(model))
            .map(|index| &self.files[*index])
            .ok_or_else(|| Error::Unknown(model.to_owned()))
    }
}

/// Earlier versions kept every projection in `DATA_DIR/readmodels.db`; its read models are
/// rebuilt into the new files, so the old one is only in the way.
fn forget_single_file(data_dir: &Path) -> Result<(), Error> {
    let old = data_dir.join("readmodels.db");
    if !old.exists() {
        return Ok(());
    }
    tracing::info!(file = %old.display(), "removing the read models of an earlier version; they are rebuilt");
    for suffix in ["", "-wal", "-shm"] {
        let path = data_dir.join(format!("readmodels.db{suffix}"));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::Database(format!(
                    "cannot remove {}: {e}",
                    path.display()
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// One projection's file: its documents, checkpoint and changes.
#[derive(Debug)]
struct File {
    writer: Mutex<Connection>,
    /// Idle read connections: each reader takes one (or opens one), so the projection and
    /// queries read side by side.
    readers: Mutex<Vec<Connection>>,
    path: PathBuf,
}

impl File {
    fn open(path: PathBuf) -> Result<Self, Error> {
        let writer = open_connection(&path)?;
        // The writer's pages are the hot ones while the projection catches up. It reads them
        // without a memory map: a fold touches every page of the file, and each one it had
        // mapped would stay in the process's resident memory.
        writer.pragma_update(None, "cache_size", -32_000)?;
        writer.pragma_update(None, "mmap_size", 0)?;
        writer.execute_batch(
            "-- A document of a followed model carries the number of its last change (numbered
             -- across all files and rebuilds), so subscribers resume from a number and see every
             -- document's latest state; deleted, it stays without a body until a rebuild.
             CREATE TABLE IF NOT EXISTS documents (
                 model TEXT NOT NULL, key TEXT NOT NULL, body BLOB, seq INTEGER,
                 PRIMARY KEY (model, key)
             ) WITHOUT ROWID;
             -- A tenant's changes in order (keys begin `{tenant}/`), so a subscriber never reads
             -- through other tenants'; it replaced an index of all changes.
             DROP INDEX IF EXISTS documents_by_seq;
             CREATE INDEX IF NOT EXISTS documents_by_tenant_change
                 ON documents (substr(key, 1, instr(key, '/')), seq) WHERE seq IS NOT NULL;
             CREATE TABLE IF NOT EXISTS checkpoints (
                 projection TEXT PRIMARY KEY, version INTEGER NOT NULL,
                 commit_pos INTEGER NOT NULL, prepare_pos INTEGER NOT NULL
             ) WITHOUT ROWID;
             -- The highest change number used, kept when a rebuild deletes the documents.
             CREATE TABLE IF NOT EXISTS change_sequence (
                 id INTEGER PRIMARY KEY CHECK (id = 1), last INTEGER NOT NULL
             );",
        )?;
        Ok(Self {
            writer: Mutex::new(writer),
            readers: Mutex::new(vec![open_connection(&path)?]),
            path,
        })
    }

    /// Runs `read` on an idle read connection.
    fn read<T>(&self, read: impl FnOnce(&Connection) -> Result<T, Error>) -> Result<T, Error> {
        let connection = self.reader()?;
        let result = read(&connection);
        self.give_back(connection);
        result
    }

    /// An idle read connection (or a new one), for [`File::give_back`].
    fn reader(&self) -> Result<Connection, Error> {
        let idle = self.readers.lock().unwrap().pop();
        match idle {
            Some(connection) => Ok(connection),
            None => open_connection(&self.path),
        }
    }

    fn give_back(&self, reader: Connection) {
        self.readers.lock().unwrap().push(reader);
    }
}

/// The WAL pages after which a commit checkpoints them into the file. Catching up, 256 MiB:
/// checkpoints cost a catch-up more than a large WAL does. Live, 16 MiB: a checkpoint of 256 MiB
/// stalled the fold for a quarter of a second, and every query waiting for the head with it
/// (their p99 52–65 ms against 139–180 ms at 1,000 queries/s).
const CATCH_UP_CHECKPOINT_PAGES: i64 = 65_536;
const LIVE_CHECKPOINT_PAGES: i64 = 4_096;
/// The store does not know whether a fold is live: a commit of fewer writes is taken as live.
const LIVE_WRITES: usize = 4_096;

/// Commits the writes with a file's `writer`, numbering the changes of `followed` models from
/// `next` on.
fn write(
    writer: &mut Connection,
    projection: &str,
    from: Option<Checkpoint>,
    to: Checkpoint,
    writes: &[Write],
    followed: &[&str],
    mut next: u64,
) -> Result<(), Error> {
    let checkpoint_pages = if writes.len() < LIVE_WRITES {
        LIVE_CHECKPOINT_PAGES
    } else {
        CATCH_UP_CHECKPOINT_PAGES
    };
    writer.pragma_update(None, "wal_autocheckpoint", checkpoint_pages)?;
    // The write lock first: a transaction that reads and then asks for it gets SQLITE_BUSY at
    // once (no busy timeout) if a reader holds it a moment to re-read the WAL index's header.
    let transaction = writer.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if stored_checkpoint(&transaction, projection)? != from {
        return Err(Error::Conflict);
    }
    let first = next;
    // Looked up once, not per row: a catching-up commit writes tens of thousands.
    let mut upsert = transaction.prepare_cached(
        "INSERT OR REPLACE INTO documents (model, key, body, seq) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut delete =
        transaction.prepare_cached("DELETE FROM documents WHERE model = ?1 AND key = ?2")?;
    for write in writes {
        let (model, key, body) = match write {
            Write::Put { model, key, body } => (model, key, Some(body)),
            Write::Delete { model, key } => (model, key, None),
        };
        let seq = followed.contains(&model.as_str()).then(|| {
            next += 1;
            next as i64 - 1
        });
        if body.is_none() && seq.is_none() {
            delete.execute(params![model, key])?;
        } else {
            upsert.execute(params![model, key, body, seq])?;
        }
    }
    drop((upsert, delete));
    if next > first {
        transaction
            .prepare_cached("INSERT OR REPLACE INTO change_sequence (id, last) VALUES (1, ?1)")?
            .execute([next as i64 - 1])?;
    }
    transaction
        .prepare_cached(
            "INSERT OR REPLACE INTO checkpoints (projection, version, commit_pos, prepare_pos)
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            projection,
            to.version,
            to.position.commit() as i64,
            to.position.prepare() as i64
        ])?;
    transaction.commit()?;
    Ok(())
}

/// Documents read in one read transaction per file, begun at the file's first read.
struct Reads<'a> {
    store: &'a EmbeddedDocuments,
    /// By file index.
    open: Vec<Option<Connection>>,
}

impl Reads<'_> {
    /// The connection of `model`'s file, its read transaction begun at the first use.
    fn connection(&mut self, model: &str) -> Result<&Connection, Error> {
        let index =
            *(self.store.by_model.get(model)).ok_or_else(|| Error::Unknown(model.to_owned()))?;
        match &mut self.open[index] {
            Some(connection) => Ok(connection),
            none => {
                let connection = self.store.files[index].reader()?;
                // Prepared once per connection: a brief or a page's fold begins one each time.
                let begun = connection
                    .prepare_cached("BEGIN")
                    .and_then(|mut begin| begin.execute([]));
                if let Err(error) = begun {
                    self.store.files[index].give_back(connection);
                    return Err(error.into());
                }
                Ok(none.insert(connection))
            }
        }
    }
}

impl DocumentReads for Reads<'_> {
    fn get(&mut self, model: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
        get(self.connection(model)?, model, key)
    }

    fn scan_range(
        &mut self,
        model: &str,
        from: &str,
        until: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, Error> {
        scan(self.connection(model)?, model, from, until)
    }

    fn changes_with(
        &mut self,
        model: &str,
        tenant: &str,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<Change>>, Error> {
        // The file's changes: no bound but the read's moment (within one file, the numbers
        // follow the commits).
        let mut select = self.connection(model)?.prepare_cached(CHANGES_OF_TENANT)?;
        let bounds = params![format!("{tenant}/"), after as i64, i64::MAX, limit as i64];
        let rows = select.query_map(bounds, change_of)?;
        Ok(Some(rows.collect::<Result<_, _>>()?))
    }
}

impl Drop for Reads<'_> {
    fn drop(&mut self) {
        for (file, connection) in self.store.files.iter().zip(&mut self.open) {
            if let Some(connection) = connection.take() {
                // A read transaction has nothing to undo; ending it cannot lose anything.
                let ended = connection
                    .prepare_cached("COMMIT")
                    .and_then(|mut end| end.execute([]));
                if let Err(error) = ended {
                    tracing::warn!(%error, "cannot end a read transaction of a read model; closing its connection");
                    continue;
                }
                file.give_back(connection);
            }
        }
    }
}

/// Through `documents_by_tenant_change`, whose expression it repeats.
const CHANGES_OF_TENANT: &str = "SELECT seq, model, key FROM documents
     WHERE substr(key, 1, instr(key, '/')) = ?1 AND seq > ?2 AND seq <= ?3
     ORDER BY seq LIMIT ?4";

/// A row of [`CHANGES_OF_TENANT`].
fn change_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<Change> {
    Ok(Change {
        seq: row.get::<_, i64>(0)? as u64,
        model: row.get(1)?,
        key: row.get(2)?,
    })
}

fn get(connection: &Connection, model: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
    let body = connection
        .prepare_cached("SELECT body FROM documents WHERE model = ?1 AND key = ?2")?
        .query_row([model, key], |row| row.get::<_, Option<Vec<u8>>>(0))
        .optional()?;
    Ok(body.flatten())
}

fn scan(
    connection: &Connection,
    model: &str,
    from: &str,
    until: &str,
) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let mut select = connection.prepare_cached(
        "SELECT key, body FROM documents
         WHERE model = ?1 AND key >= ?2 AND key < ?3 AND body IS NOT NULL ORDER BY key",
    )?;
    let rows = select.query_map(params![model, from, until], |row| {
        Ok((row.get(0)?, row.get(1)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn open_connection(path: &Path) -> Result<Connection, Error> {
    let connection = Connection::open(path)?;
    // Takes effect when the file is created. Folding writes documents all over the key space, so
    // each commit rewrites many pages that changed in a few bytes: with compact documents, 4 KiB
    // pages fold faster than 16 KiB ones (measured: the evaluation briefs alone 6.8 s against
    // 8.3 s for a million events).
    connection.pragma_update(None, "page_size", 4096)?;
    connection.busy_timeout(Duration::from_secs(5))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    // Derived data: after a crash the projection folds again from its checkpoint, which
    // commits with the documents.
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    // Reads through memory maps rather than a syscall per page.
    connection.pragma_update(None, "mmap_size", 1i64 << 30)?;
    connection.pragma_update(None, "cache_size", -8_000)?;
    // Fewer, larger checkpoints of the WAL into the database cost the writer less; each commit
    // sets its own (see `write`).
    connection.pragma_update(None, "wal_autocheckpoint", CATCH_UP_CHECKPOINT_PAGES)?;
    Ok(connection)
}

fn stored_checkpoint(
    connection: &Connection,
    projection: &str,
) -> Result<Option<Checkpoint>, Error> {
    let found = connection
        .prepare_cached(
            "SELECT version, commit_pos, prepare_pos FROM checkpoints WHERE projection = ?1",
        )?
        .query_row([projection], |row| {
            let position =
                Position::new(row.get::<_, i64>(1)? as u64, row.get::<_, i64>(2)? as u64);
            Ok(Checkpoint {
                version: row.get(0)?,
                position,
            })
        })
        .optional()?;
    Ok(found)
}

impl DocumentStore for EmbeddedDocuments {
    fn checkpoint(&self, projection: &str) -> Result<Option<Checkpoint>, Error> {
        (self.of_projection(projection)?).read(|reader| stored_checkpoint(reader, projection))
    }

    fn get(&self, model: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.of_model(model)?.read(|reader| get(reader, model, key))
    }

    fn reads(&self) -> Result<Box<dyn DocumentReads + '_>, Error> {
        Ok(Box::new(Reads {
            store: self,
            open: self.files.iter().map(|_| None).collect(),
        }))
    }

    fn scan_range(
        &self,
        model: &str,
        from: &str,
        until: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, Error> {
        self.of_model(model)?
            .read(|reader| scan(reader, model, from, until))
    }

    fn commit(
        &self,
        projection: &str,
        from: Option<Checkpoint>,
        to: Checkpoint,
        writes: &[Write],
        followed: &[&str],
    ) -> Result<(), Error> {
        let file = self.of_projection(projection)?;
        let changes = (writes.iter())
            .filter(|w| {
                let (Write::Put { model, .. } | Write::Delete { model, .. }) = w;
                followed.contains(&model.as_str())
            })
            .count();
        let mut writer = file.writer.lock().unwrap();
        // Numbered under the file's lock: within a file, change numbers follow the order of
        // commits, so a read of one file that sees a number sees every lower one of that file.
        let reserved = Reservation::take(&self.sequence, changes as u64);
        let first = reserved.as_ref().map_or(0, |r| r.first);
        write(&mut writer, projection, from, to, writes, followed, first)
    }

    fn changes(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<Change>, Error> {
        let visible = self.sequence.visible();
        let prefix = format!("{tenant}/");
        let mut changes = Vec::new();
        for file in &self.files {
            changes.extend(file.read(|reader| {
                let mut select = reader.prepare_cached(CHANGES_OF_TENANT)?;
                let bounds = params![prefix, after as i64, visible as i64, limit as i64];
                let rows = select.query_map(bounds, change_of)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })?);
        }
        changes.sort_unstable_by_key(|c| c.seq);
        changes.truncate(limit);
        Ok(changes)
    }

    fn visible_changes(&self) -> Option<watch::Receiver<u64>> {
        Some(self.sequence.visible.subscribe())
    }

    fn reset(&self, projection: &str, models: &[&str]) -> Result<(), Error> {
        let mut writer = self.of_projection(projection)?.writer.lock().unwrap();
        let transaction = writer.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for model in models {
            transaction.execute("DELETE FROM documents WHERE model = ?1", [model])?;
        }
        transaction.execute(
            "DELETE FROM checkpoints WHERE projection = ?1",
            [projection],
        )?;
        transaction.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Documents;
    use crate::runner::Applied;

    /// A projection of one model, `{name}-doc`, for the store's own tests.
    struct Named(&'static str, &'static [&'static str]);

    impl Projection for Named {
        fn name(&self) -> &'static str {
            self.0
        }
        fn version(&self) -> u32 {
            1
        }
        fn models(&self) -> &'static [&'static str] {
            self.1
        }
        fn apply(&self, _: Applied<'_>, _: &mut Documents<'_>) -> Result<(), Error> {
            Ok(())
        }
    }

    const A: Named = Named("a", &["a-doc"]);
    const B: Named = Named("b", &["b-doc"]);

    fn put(model: &str, key: &str) -> Write {
        Write::Put {
            model: model.into(),
            key: key.into(),
            body: b"1".to_vec(),
        }
    }

    fn at(sequence: u64) -> Checkpoint {
        Checkpoint {
            version: 1,
            position: Position::from_sequence(sequence),
        }
    }

    #[test]
    fn reads_see_one_moment_across_scans_and_gets() {
        const TWO: Named = Named("two", &["goal", "item"]);
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedDocuments::open(dir.path(), &[&TWO]).unwrap();
        store
            .commit("two", None, at(1), &[put("goal", "t/m/g1")], &["goal"])
            .unwrap();
        let keys = |scanned: Vec<(String, Vec<u8>)>| -> Vec<String> {
            scanned.into_iter().map(|(key, _)| key).collect()
        };
        let mut reads = store.reads().unwrap();
        assert_eq!(keys(reads.scan("goal", "t/m/").unwrap()), ["t/m/g1"]);
        // A commit after the reads began: neither a later scan nor a get sees it.
        let later = [put("goal", "t/m/g2"), put("item", "t/m/i1")];
        store
            .commit("two", Some(at(1)), at(2), &later, &["goal", "item"])
            .unwrap();
        assert_eq!(keys(reads.scan("goal", "t/m/").unwrap()), ["t/m/g1"]);
        assert!(reads.scan("item", "t/m/").unwrap().is_empty());
        assert_eq!(reads.get("item", "t/m/i1").unwrap(), None);
        let changed = |changes: Option<Vec<Change>>| -> Vec<String> {
            changes.unwrap().into_iter().map(|c| c.key).collect()
        };
        assert_eq!(
            changed(reads.changes_with("goal", "t", 0, 10).unwrap()),
            ["t/m/g1"]
        );
        drop(reads);
        let mut reads = store.reads().unwrap();
        assert_eq!(
            keys(reads.scan("goal", "t/m/").unwrap()),
            ["t/m/g1", "t/m/g2"]
        );
        // The file's changes after a number, in order, at most the limit; none of another tenant.
        assert_eq!(
            changed(reads.changes_with("item", "t", 1, 10).unwrap()),
            ["t/m/g2", "t/m/i1"]
        );
        assert_eq!(
            changed(reads.changes_with("item", "t", 0, 2).unwrap()),
            ["t/m/g1", "t/m/g2"]
        );
        assert!(changed(reads.changes_with("goal", "u", 0, 10).unwrap()).is_empty());
        assert_eq!(keys(reads.scan("item", "t/").unwrap()), ["t/m/i1"]);
        // Another member's prefix is not this one's.
        assert!(reads.scan("goal", "t/m2/").unwrap().is_empty());
    }

    /// Live commits checkpoint the WAL every 16 MiB, so it never grows to the 256 MiB a
    /// catch-up lets it reach (a checkpoint that long stalls every query waiting for the head).
    #[test]
    fn live_commits_keep_the_wal_small_and_catching_up_lets_it_grow() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedDocuments::open(dir.path(), &[&A]).unwrap();
        let wal = dir.path().join("readmodels/a.db-wal");
        let body = vec![7u8; 4096];
        // 60 live commits of 100 documents of 4 KiB: the WAL grows to 29 MiB without checkpoints.
        for commit in 0..60u64 {
            let writes: Vec<Write> = (0..100)
                .map(|i| Write::Put {
                    model: "a-doc".into(),
                    key: format!("t/{commit}/{i}"),
                    body: body.clone(),
                })
                .collect();
            let from = (commit > 0).then(|| at(commit));
            store
                .commit("a", from, at(commit + 1), &writes, &[])
                .unwrap();
        }
        let size = std::fs::metadata(&wal).unwrap().len();
        assert!(size < 24 << 20, "the WAL grew to {} MiB", size >> 20);
        let checkpoint_pages = |store: &EmbeddedDocuments| -> i64 {
            (store.files[0].writer.lock().unwrap())
                .pragma_query_value(None, "wal_autocheckpoint", |row| row.get(0))
                .unwrap()
        };
        assert_eq!(checkpoint_pages(&store), LIVE_CHECKPOINT_PAGES);
        let catching_up: Vec<Write> = (0..LIVE_WRITES)
            .map(|i| put("a-doc", &format!("t/catch-up/{i}")))
            .collect();
        store
            .commit("a", Some(at(60)), at(61), &catching_up, &[])
            .unwrap();
        assert_eq!(checkpoint_pages(&store), CATCH_UP_CHECKPOINT_PAGES);
    }

    #[test]
    fn the_writer_reads_its_file_without_a_memory_map_and_readers_through_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedDocuments::open(dir.path(), &[&A]).unwrap();
        let mmap_size = |connection: &Connection| -> i64 {
            connection
                .pragma_query_value(None, "mmap_size", |row| row.get(0))
                .unwrap()
        };
        assert_eq!(mmap_size(&store.files[0].writer.lock().unwrap()), 0);
        let mapped = store.files[0].read(|reader| Ok(mmap_size(reader))).unwrap();
        assert!(mapped > 0, "queries read through a memory map");
    }

    #[test]
    fn each_projection_has_its_file_and_the_change_feed_spans_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedDocuments::open(dir.path(), &[&A, &B]).unwrap();
        store
            .commit("a", None, at(1), &[put("a-doc", "t/x")], &["a-doc"])
            .unwrap();
        store
            .commit("b", None, at(2), &[put("b-doc", "t/y")], &["b-doc"])
            .unwrap();
        // Reads list one file's changes, never two files' (numbered out of commit order).
        let mut reads = store.reads().unwrap();
        let listed = reads.changes_with("b-doc", "t", 0, 10).unwrap().unwrap();
        assert_eq!(
            listed.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(),
            ["t/y"]
        );
        assert!(matches!(
            reads.changes_with("c-doc", "t", 0, 10),
            Err(Error::Unknown(model)) if model == "c-doc"
        ));
        drop(reads);
        assert!(dir.path().join("readmodels/a.db").exists());
        assert!(dir.path().join("readmodels/b.db").exists());
        assert_eq!(store.get("b-doc", "t/y").unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.get("a-doc", "t/y").unwrap(), None);
        assert!(matches!(
            store.get("c-doc", "t/y"),
            Err(Error::Unknown(model)) if model == "c-doc"
        ));
        let seqs = |after| {
            (store.changes("t", after, 10).unwrap().into_iter())
                .map(|c| (c.seq, c.key))
                .collect::<Vec<_>>()
        };
        assert_eq!(seqs(0), [(1, "t/x".to_owned()), (2, "t/y".to_owned())]);
        assert_eq!(seqs(1), [(2, "t/y".to_owned())]);
        // A second commit of `a` conflicts if its checkpoint moved; nothing is numbered.
        assert!(matches!(
            store.commit("a", None, at(3), &[put("a-doc", "t/z")], &["a-doc"]),
            Err(Error::Conflict)
        ));
        assert_eq!(seqs(2), []);

        // Reopened, the numbers go on from the highest in any file.
        drop(store);
        let store = EmbeddedDocuments::open(dir.path(), &[&A, &B]).unwrap();
        store
            .commit("a", Some(at(1)), at(3), &[put("a-doc", "t/z")], &["a-doc"])
            .unwrap();
        let last = store.changes("t", 0, 10).unwrap().last().unwrap().seq;
        assert!(last > 2, "{last}");

        // A deleted document leaves the queries but not the change feed.
        let delete = Write::Delete {
            model: "a-doc".into(),
            key: "t/x".into(),
        };
        store
            .commit("a", Some(at(3)), at(4), &[delete], &["a-doc"])
            .unwrap();
        assert_eq!(store.get("a-doc", "t/x").unwrap(), None);
        let scanned: Vec<_> = (store.scan("a-doc", "").unwrap().into_iter())
            .map(|(key, _)| key)
            .collect();
        assert_eq!(scanned, ["t/z"]);
        let latest = store.changes("t", last, 10).unwrap();
        assert_eq!(latest.len(), 1);
        assert_eq!((latest[0].seq, latest[0].key.as_str()), (last + 1, "t/x"));

        // A rebuild deletes the documents but never reuses a number.
        store.reset("a", &["a-doc"]).unwrap();
        drop(store);
        let store = EmbeddedDocuments::open(dir.path(), &[&A, &B]).unwrap();
        store
            .commit("a", None, at(5), &[put("a-doc", "t/w")], &["a-doc"])
            .unwrap();
        assert_eq!(store.changes("t", last + 1, 10).unwrap()[0].seq, last + 2);
    }

    /// A reader that finds the WAL index's header changing takes the write lock a moment; a
    /// commit waits for it rather than failing.
    #[test]
    fn a_commit_waits_while_another_connection_holds_the_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedDocuments::open(dir.path(), &[&A, &B]).unwrap();
        store
            .commit("a", None, at(1), &[put("a-doc", "t/x")], &["a-doc"])
            .unwrap();
        let path = dir.path().join("readmodels/a.db");
        let (locked, held) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            let connection = Connection::open(path).unwrap();
            connection.execute_batch("BEGIN IMMEDIATE").unwrap();
            locked.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            connection.execute_batch("COMMIT").unwrap();
        });
        held.recv().unwrap();
        let committed = store.commit("a", Some(at(1)), at(2), &[put("a-doc", "t/y")], &["a-doc"]);
        assert!(committed.is_ok(), "{committed:?}");
        holder.join().unwrap();
        assert_eq!(
            store.checkpoint("a").unwrap().map(|c| c.position),
            Some(at(2).position)
        );
    }

    #[test]
    fn a_change_is_not_visible_while_an_earlier_number_is_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedDocuments::open(dir.path(), &[&A, &B]).unwrap();
        let mut visible = store.visible_changes().unwrap();
        // `a` reserved number 1 and has not committed yet; `b` commits number 2.
        let slow = Reservation::take(&store.sequence, 1).unwrap();
        store
            .commit("b", None, at(2), &[put("b-doc", "t/y")], &["b-doc"])
            .unwrap();
        assert_eq!(store.changes("t", 0, 10).unwrap(), []);
        assert!(!visible.has_changed().unwrap(), "b's change is not visible");
        let mut writer = store.files[0].writer.lock().unwrap();
        let writes = [put("a-doc", "t/x")];
        write(
            &mut writer,
            "a",
            None,
            at(1),
            &writes,
            &["a-doc"],
            slow.first,
        )
        .unwrap();
        drop(writer);
        drop(slow);
        // `a` finishing shows `b`'s change too, and says so to whoever waits for it.
        assert!(visible.has_changed().unwrap());
        assert_eq!(*visible.borrow_and_update(), 2);
        let keys: Vec<_> = (store.changes("t", 0, 10).unwrap().into_iter())
            .map(|c| c.key)
            .collect();
        assert_eq!(keys, ["t/x", "t/y"]);
    }

    #[test]
    fn visible_changes_start_where_the_files_left_off_and_skip_commits_without_changes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedDocuments::open(dir.path(), &[&A, &B]).unwrap();
            let writes = [put("a-doc", "t/x"), put("a-doc", "t/y")];
            store.commit("a", None, at(1), &writes, &["a-doc"]).unwrap();
        }
        let store = EmbeddedDocuments::open(dir.path(), &[&A, &B]).unwrap();
        let mut visible = store.visible_changes().unwrap();
        assert_eq!(*visible.borrow_and_update(), 2);
        // Documents no subscriber follows make no change numbers, so nothing to wake up for.
        store
            .commit("b", None, at(2), &[put("b-doc", "t/z")], &[])
            .unwrap();
        assert!(!visible.has_changed().unwrap());
        store
            .commit("b", Some(at(2)), at(3), &[put("b-doc", "t/z")], &["b-doc"])
            .unwrap();
        assert_eq!(*visible.borrow_and_update(), 3);
    }

    #[test]
    fn a_tenants_changes_come_through_its_own_index_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedDocuments::open(dir.path(), &[&A, &B]).unwrap();
        let writes = [
            put("a-doc", "t/x"),
            put("a-doc", "tt/x"),
            put("a-doc", "u/x"),
        ];
        store.commit("a", None, at(1), &writes, &["a-doc"]).unwrap();
        let keys = |tenant| {
            (store.changes(tenant, 0, 10).unwrap().into_iter())
                .map(|c| c.key)
                .collect::<Vec<_>>()
        };
        assert_eq!(keys("t"), ["t/x"]);
        assert_eq!(keys("tt"), ["tt/x"]);
        assert_eq!(keys("v"), Vec::<String>::new());
        // Read through the index, not by scanning every tenant's changes.
        let plan: Vec<String> = store.files[0]
            .read(|reader| {
                let mut explain =
                    reader.prepare(&format!("EXPLAIN QUERY PLAN {CHANGES_OF_TENANT}"))?;
                let rows = explain.query_map(params!["t/", 0, 10, 10], |row| row.get(3))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .unwrap();
        assert!(
            plan.iter()
                .any(|step| step.contains("INDEX documents_by_tenant_change (<expr>=?")),
            "{plan:?}"
        );
    }
}
