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
    #[error("read model database failed: {0}")]
    Database(String),
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
    /// of one projection never both apply an event). Changes to documents of the `followed`
    /// models enter the change feed.
    fn commit(
        &self,
        projection: &str,
        from: Option<Checkpoint>,
        to: Checkpoint,
        writes: &[Write],
        followed: &[&str],
    ) -> Result<(), Error>;
    /// The documents changed after change number `after`, oldest change first, at most `limit`.
    fn changes(&self, after: u64, limit: usize) -> Result<Vec<Change>, Error>;
    /// Deletes the projection's documents (of `models`) and its checkpoint, for a rebuild.
    fn reset(&self, projection: &str, models: &[&str]) -> Result<(), Error>;
    /// Claims the right to run `projection` in this process for as long as the lease lives;
    /// `None` while another process holds it. A store of one process grants it always.
    fn lease(&self, _projection: &str) -> Result<Option<Lease>, Error> {
        Ok(Some(Lease::exclusive()))
    }
}

/// The right to run a projection, held until dropped.
#[derive(Debug)]
pub struct Lease {
    /// Dropping it lets the thread that keeps the lease's resource (a database connection) go.
    _release: Option<std::sync::mpsc::Sender<()>>,
}

impl Lease {
    /// A lease with nothing to hold: the store has one process.
    pub fn exclusive() -> Self {
        Self { _release: None }
    }

    /// A lease that lasts as long as `resource` is kept, on a thread of its own (a blocking
    /// database connection must not be dropped inside an async task).
    pub(crate) fn holding<T: Send + 'static>(resource: T) -> Self {
        let (release, released) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let _ = released.recv();
            drop(resource);
        });
        Self {
            _release: Some(release),
        }
    }
}

/// The embedded document store: `DATA_DIR/readmodels.db` (SQLite).
#[derive(Debug)]
pub struct EmbeddedDocuments {
    writer: Mutex<Connection>,
    /// Idle read connections: each reader takes one (or opens one), so projections and queries
    /// read side by side.
    readers: Mutex<Vec<Connection>>,
    path: std::path::PathBuf,
}

impl EmbeddedDocuments {
    pub const FILE_NAME: &str = "readmodels.db";

    pub fn open(data_dir: &Path) -> Result<Self, Error> {
        let path = data_dir.join(Self::FILE_NAME);
        let writer = open_connection(&path)?;
        // The writer's pages are the hot ones while projections catch up.
        writer.pragma_update(None, "cache_size", -64_000)?;
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
            readers: Mutex::new(vec![open_connection(&path)?]),
            path,
        })
    }

    /// Runs `read` on an idle read connection.
    fn read<T>(&self, read: impl FnOnce(&Connection) -> Result<T, Error>) -> Result<T, Error> {
        let idle = self.readers.lock().unwrap().pop();
        let connection = match idle {
            Some(connection) => connection,
            None => open_connection(&self.path)?,
        };
        let result = read(&connection);
        self.readers.lock().unwrap().push(connection);
        result
    }
}

fn open_connection(path: &Path) -> Result<Connection, Error> {
    let connection = Connection::open(path)?;
    // Takes effect when the file is created. Folding writes documents all over the key space;
    // larger pages mean fewer B-tree pages to find, change and log per batch (measured: 16 KiB
    // pages fold about a quarter faster than 4 KiB ones).
    connection.pragma_update(None, "page_size", 16_384)?;
    connection.busy_timeout(Duration::from_secs(5))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    // Derived data: after a crash the projection folds again from its checkpoint, which
    // commits with the documents.
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    // Reads through memory maps rather than a syscall per page.
    connection.pragma_update(None, "mmap_size", 1i64 << 30)?;
    connection.pragma_update(None, "cache_size", -16_000)?;
    // Fewer, larger checkpoints of the WAL into the database cost the writer less.
    connection.pragma_update(None, "wal_autocheckpoint", 65_536)?;
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
        self.read(|reader| stored_checkpoint(reader, projection))
    }

    fn get(&self, model: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.read(|reader| {
            let body = reader
                .prepare_cached("SELECT body FROM documents WHERE model = ?1 AND key = ?2")?
                .query_row([model, key], |row| row.get(0))
                .optional()?;
            Ok(body)
        })
    }

    fn scan(&self, model: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        // A key range rather than LIKE, whose `_` would match any character of an id.
        let mut end = prefix.to_owned();
        end.push(char::MAX);
        self.read(|reader| {
            let mut select = reader.prepare_cached(
                "SELECT key, body FROM documents WHERE model = ?1 AND key >= ?2 AND key < ?3 ORDER BY key",
            )?;
            let rows = select.query_map(params![model, prefix, end], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn commit(
        &self,
        projection: &str,
        from: Option<Checkpoint>,
        to: Checkpoint,
        writes: &[Write],
        followed: &[&str],
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
            if followed.contains(&model.as_str()) {
                seq += 1;
                transaction
                    .prepare_cached(
                        "INSERT OR REPLACE INTO changes (model, key, seq) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![model, key, seq])?;
            }
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
        self.read(|reader| {
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
        })
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

/// A cached document: its typed value (`None`: absent or deleted), how to encode it, whether
/// it changed, and whether the store may hold it (so deleting what never was writes nothing).
struct Slot {
    value: Option<Box<dyn Any + Send>>,
    encode: Encoder,
    changed: bool,
    stored: bool,
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
                    stored: value.is_some(),
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

    /// Replaces the document (without reading what it replaces).
    pub fn put<T: Serialize + DeserializeOwned + Send + 'static>(
        &mut self,
        model: &str,
        key: &str,
        document: T,
    ) -> Result<(), Error> {
        self.overwrite::<T>(model, key, Box::new(document));
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

    fn overwrite<T: Serialize + 'static>(
        &mut self,
        model: &str,
        key: &str,
        value: Box<dyn Any + Send>,
    ) {
        let id = (model.to_owned(), key.to_owned());
        let stored = self.cache.get(&id).is_none_or(|slot| slot.stored);
        let slot = Slot {
            value: Some(value),
            encode: encode_as::<T>,
            changed: true,
            stored,
        };
        self.cache.insert(id, slot);
    }

    /// The changes to write, in key order (so the store's B-trees are written in order).
    pub fn into_writes(self) -> Result<Vec<Write>, Error> {
        let mut writes = Vec::new();
        let mut slots: Vec<_> = (self.cache.into_iter())
            .filter(|(_, s)| s.changed && (s.value.is_some() || s.stored))
            .collect();
        slots.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for ((model, key), slot) in slots {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::as_of::MemoryDocuments;

    fn commit(store: &dyn DocumentStore, writes: &[Write]) {
        let from = store.checkpoint("p").unwrap();
        let to = Checkpoint {
            version: 1,
            position: Position::from_sequence(from.map_or(1, |c| c.position.commit() + 1)),
        };
        store.commit("p", from, to, writes, &["m"]).unwrap();
    }

    #[test]
    fn writes_are_what_changed_in_key_order() {
        let store = MemoryDocuments::default();
        let mut documents = Documents::new(&store);
        documents.put("m", "b", 2u32).unwrap();
        documents.put("m", "a", 1u32).unwrap();
        // Deleting what was never stored writes nothing.
        documents.delete::<u32>("m", "never").unwrap();
        let writes = documents.into_writes().unwrap();
        let keys: Vec<_> = writes
            .iter()
            .map(|w| match w {
                Write::Put { key, .. } => key.as_str(),
                Write::Delete { .. } => panic!("{w:?}"),
            })
            .collect();
        assert_eq!(keys, ["a", "b"]);
        commit(&store, &writes);

        let mut documents = Documents::new(&store);
        assert_eq!(documents.get::<u32>("m", "a").unwrap(), Some(1));
        documents.delete::<u32>("m", "a").unwrap();
        *documents.get_mut::<u32>("m", "b").unwrap() += 40;
        // Put without reading, then deleted: it may have been stored, so the delete is written.
        documents.put("m", "c", 3u32).unwrap();
        documents.delete::<u32>("m", "c").unwrap();
        let writes = documents.into_writes().unwrap();
        assert!(writes.contains(&Write::Delete {
            model: "m".into(),
            key: "a".into()
        }));
        assert!(writes.contains(&Write::Put {
            model: "m".into(),
            key: "b".into(),
            body: b"42".to_vec()
        }));
        assert!(writes.contains(&Write::Delete {
            model: "m".into(),
            key: "c".into()
        }));
        commit(&store, &writes);
        assert_eq!(store.get("m", "a").unwrap(), None);
    }
}
