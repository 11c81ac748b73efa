//! Where read models live: documents (JSON) by model and key, and each projection's checkpoint,
//! written together in one transaction.

use std::any::Any;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use ledger_store::Position;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read model storage failed")]
    Storage(#[from] rusqlite::Error),
    #[error("a stored document does not decode")]
    Document(#[from] serde_json::Error),
    #[error("a stored event does not decode")]
    Event(String),
    /// Another runner moved the projection's checkpoint since this one read it.
    #[error("the projection's checkpoint moved under this runner")]
    Conflict,
}

/// How far a projection has folded the log, under which version of its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub version: u32,
    pub position: Position,
}

/// A document that changed, and the number of its latest change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: u64,
    pub model: String,
    pub key: String,
}

/// One change to a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put {
        model: String,
        key: String,
        body: Vec<u8>,
    },
    Delete {
        model: String,
        key: String,
    },
}

/// A read-model store. Blocking: callers run it on blocking threads.
pub trait DocumentStore: Send + Sync + std::fmt::Debug + 'static {
    fn checkpoint(&self, projection: &str) -> Result<Option<Checkpoint>, Error>;
    fn get(&self, model: &str, key: &str) -> Result<Option<Vec<u8>>, Error>;
    /// Every document of `model` whose key starts with `prefix`, in key order.
    fn scan(&self, model: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error>;
    /// Applies `writes` and moves the projection's checkpoint from `from` to `to`, atomically;
    /// [`Error::Conflict`] and nothing written if the checkpoint is no longer `from` (two runners
    /// of one projection never both apply an event).
    fn commit(
        &self,
        projection: &str,
        from: Option<Checkpoint>,
        to: Checkpoint,
        writes: &[Write],
    ) -> Result<(), Error>;
    /// The documents changed after change number `after`, oldest change first, at most `limit`.
    fn changes(&self, after: u64, limit: usize) -> Result<Vec<Change>, Error>;
    /// Deletes the projection's documents (of `models`) and its checkpoint, for a rebuild.
    fn reset(&self, projection: &str, models: &[&str]) -> Result<(), Error>;
}

/// The embedded document store: `DATA_DIR/readmodels.db` (SQLite).
#[derive(Debug)]
pub struct EmbeddedDocuments {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

impl EmbeddedDocuments {
    pub const FILE_NAME: &str = "readmodels.db";

    pub fn open(data_dir: &Path) -> Result<Self, Error> {
        let path = data_dir.join(Self::FILE_NAME);
        let open = || -> Result<Connection, Error> {
            let connection = Connection::open(&path)?;
            connection.busy_timeout(Duration::from_secs(5))?;
            connection.pragma_update(None, "journal_mode", "WAL")?;
            // Derived data: after a crash the projection folds again from its checkpoint,
            // which commits with the documents.
            connection.pragma_update(None, "synchronous", "NORMAL")?;
            // Reads through memory maps and a larger cache rather than a syscall per page.
            connection.pragma_update(None, "mmap_size", 1i64 << 30)?;
            connection.pragma_update(None, "cache_size", -64_000)?;
            // Fewer, larger checkpoints of the WAL into the database cost the writer less.
            connection.pragma_update(None, "wal_autocheckpoint", 65_536)?;
            Ok(connection)
        };
        let writer = open()?;
        writer.execute_batch(
            "CREATE TABLE IF NOT EXISTS documents (
                 model TEXT NOT NULL, key TEXT NOT NULL, body BLOB NOT NULL, PRIMARY KEY (model, key)
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS checkpoints (
                 projection TEXT PRIMARY KEY, version INTEGER NOT NULL,
                 commit_pos INTEGER NOT NULL, prepare_pos INTEGER NOT NULL
             ) WITHOUT ROWID;
             -- The last change of each document, numbered across all documents and rebuilds,
             -- so subscribers resume from a number and see every document's latest state.
             CREATE TABLE IF NOT EXISTS changes (
                 model TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (model, key)
             ) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS changes_by_seq ON changes (seq);
             CREATE TABLE IF NOT EXISTS change_sequence (id INTEGER PRIMARY KEY CHECK (id = 1), last INTEGER NOT NULL);",
        )?;
        Ok(Self {
            writer: Mutex::new(writer),
            reader: Mutex::new(open()?),
        })
    }
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
        stored_checkpoint(&self.reader.lock().unwrap(), projection)
    }

    fn get(&self, model: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let reader = self.reader.lock().unwrap();
        let body = reader
            .prepare_cached("SELECT body FROM documents WHERE model = ?1 AND key = ?2")?
            .query_row([model, key], |row| row.get(0))
            .optional()?;
        Ok(body)
    }

    fn scan(&self, model: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        // A key range rather than LIKE, whose `_` would match any character of an id.
        let mut end = prefix.to_owned();
        end.push(char::MAX);
        let reader = self.reader.lock().unwrap();
        let mut select = reader.prepare_cached(
            "SELECT key, body FROM documents WHERE model = ?1 AND key >= ?2 AND key < ?3 ORDER BY key",
        )?;
        let rows = select.query_map(params![model, prefix, end], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn commit(
        &self,
        projection: &str,
        from: Option<Checkpoint>,
        to: Checkpoint,
        writes: &[Write],
    ) -> Result<(), Error> {
        let mut writer = self.writer.lock().unwrap();
        let transaction = writer.transaction()?;
        if stored_checkpoint(&transaction, projection)? != from {
            return Err(Error::Conflict);
        }
        let mut seq: i64 = transaction.query_row(
            "SELECT coalesce((SELECT last FROM change_sequence WHERE id = 1), 0)",
            [],
            |row| row.get(0),
        )?;
        for write in writes {
            let (Write::Put { model, key, .. } | Write::Delete { model, key }) = write;
            seq += 1;
            transaction
                .prepare_cached(
                    "INSERT OR REPLACE INTO changes (model, key, seq) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![model, key, seq])?;
            match write {
                Write::Put { model, key, body } => transaction
                    .prepare_cached(
                        "INSERT OR REPLACE INTO documents (model, key, body) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![model, key, body])?,
                Write::Delete { model, key } => transaction
                    .prepare_cached("DELETE FROM documents WHERE model = ?1 AND key = ?2")?
                    .execute(params![model, key])?,
            };
        }
        transaction
            .prepare_cached("INSERT OR REPLACE INTO change_sequence (id, last) VALUES (1, ?1)")?
            .execute([seq])?;
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

    fn changes(&self, after: u64, limit: usize) -> Result<Vec<Change>, Error> {
        let reader = self.reader.lock().unwrap();
        let mut select = reader.prepare_cached(
            "SELECT seq, model, key FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = select.query_map(params![after as i64, limit as i64], |row| {
            Ok(Change {
                seq: row.get::<_, i64>(0)? as u64,
                model: row.get(1)?,
                key: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn reset(&self, projection: &str, models: &[&str]) -> Result<(), Error> {
        let mut writer = self.writer.lock().unwrap();
        let transaction = writer.transaction()?;
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

/// The documents a batch of events touches: each read from the store and decoded once, changed
/// in memory as typed values, and encoded and written back once, as one commit.
pub struct Documents<'a> {
    store: &'a dyn DocumentStore,
    cache: HashMap<(String, String), Slot>,
}

impl std::fmt::Debug for Documents<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Documents")
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

/// A cached document: its typed value (`None`: absent or deleted), how to encode it, and
/// whether it changed.
struct Slot {
    value: Option<Box<dyn Any + Send>>,
    encode: Encoder,
    changed: bool,
}

type Encoder = fn(&(dyn Any + Send)) -> Result<Vec<u8>, serde_json::Error>;

fn encode_as<T: Serialize + 'static>(
    value: &(dyn Any + Send),
) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(
        value
            .downcast_ref::<T>()
            .expect("a document keeps its type within a batch"),
    )
}

impl<'a> Documents<'a> {
    pub fn new(store: &'a dyn DocumentStore) -> Self {
        Self {
            store,
            cache: HashMap::new(),
        }
    }

    fn slot<T: Serialize + DeserializeOwned + Send + 'static>(
        &mut self,
        model: &str,
        key: &str,
    ) -> Result<&mut Slot, Error> {
        let id = (model.to_owned(), key.to_owned());
        if !self.cache.contains_key(&id) {
            let value = match self.store.get(model, key)? {
                Some(body) => {
                    Some(Box::new(serde_json::from_slice::<T>(&body)?) as Box<dyn Any + Send>)
                }
                None => None,
            };
            self.cache.insert(
                id.clone(),
                Slot {
                    value,
                    encode: encode_as::<T>,
                    changed: false,
                },
            );
        }
        Ok(self.cache.get_mut(&id).expect("inserted above"))
    }

    /// A copy of the document.
    pub fn get<T: Serialize + DeserializeOwned + Clone + Send + 'static>(
        &mut self,
        model: &str,
        key: &str,
    ) -> Result<Option<T>, Error> {
        let slot = self.slot::<T>(model, key)?;
        Ok(slot.value.as_ref().map(|v| {
            v.downcast_ref::<T>()
                .expect("a document keeps its type within a batch")
                .clone()
        }))
    }

    /// The document to change in place, created from its default if absent.
    pub fn get_mut<T: Serialize + DeserializeOwned + Default + Send + 'static>(
        &mut self,
        model: &str,
        key: &str,
    ) -> Result<&mut T, Error> {
        let slot = self.slot::<T>(model, key)?;
        slot.changed = true;
        let value = slot.value.get_or_insert_with(|| Box::new(T::default()));
        Ok(value
            .downcast_mut::<T>()
            .expect("a document keeps its type within a batch"))
    }

    pub fn put<T: Serialize + DeserializeOwned + Send + 'static>(
        &mut self,
        model: &str,
        key: &str,
        document: T,
    ) -> Result<(), Error> {
        let slot = self.slot::<T>(model, key)?;
        *slot = Slot {
            value: Some(Box::new(document)),
            encode: encode_as::<T>,
            changed: true,
        };
        Ok(())
    }

    pub fn delete<T: Serialize + DeserializeOwned + Send + 'static>(
        &mut self,
        model: &str,
        key: &str,
    ) -> Result<(), Error> {
        let slot = self.slot::<T>(model, key)?;
        slot.value = None;
        slot.changed = true;
        Ok(())
    }

    /// The changes to write.
    pub fn into_writes(self) -> Result<Vec<Write>, Error> {
        let mut writes = Vec::new();
        for ((model, key), slot) in self.cache {
            if !slot.changed {
                continue;
            }
            writes.push(match &slot.value {
                Some(value) => Write::Put {
                    model,
                    key,
                    body: (slot.encode)(value.as_ref())?,
                },
                None => Write::Delete { model, key },
            });
        }
        Ok(writes)
    }
}
