//! Where read models live: documents (JSON) by model and key, and each projection's checkpoint,
//! written together in one transaction.

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
             ) WITHOUT ROWID;",
        )?;
        Ok(Self {
            writer: Mutex::new(writer),
            reader: Mutex::new(open()?),
        })
    }
}

impl DocumentStore for EmbeddedDocuments {
    fn checkpoint(&self, projection: &str) -> Result<Option<Checkpoint>, Error> {
        let reader = self.reader.lock().unwrap();
        let found = reader
            .prepare_cached(
                "SELECT version, commit_pos, prepare_pos FROM checkpoints WHERE projection = ?1",
            )?
            .query_row([projection], |row| {
                Ok(Checkpoint {
                    version: row.get(0)?,
                    position: Position::new(
                        row.get::<_, i64>(1)? as u64,
                        row.get::<_, i64>(2)? as u64,
                    ),
                })
            })
            .optional()?;
        Ok(found)
    }

    fn get(&self, model: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let reader = self.reader.lock().unwrap();
        let body = reader
            .prepare_cached("SELECT body FROM documents WHERE model = ?1 AND key = ?2")?
            .query_row([model, key], |row| row.get(0))
            .optional()?;
        Ok(body)
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
        let current = transaction
            .prepare_cached(
                "SELECT version, commit_pos, prepare_pos FROM checkpoints WHERE projection = ?1",
            )?
            .query_row([projection], |row| {
                Ok(Checkpoint {
                    version: row.get(0)?,
                    position: Position::new(
                        row.get::<_, i64>(1)? as u64,
                        row.get::<_, i64>(2)? as u64,
                    ),
                })
            })
            .optional()?;
        if current != from {
            return Err(Error::Conflict);
        }
        for write in writes {
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

/// The documents a batch of events touches: read through to the store once, changed in memory,
/// written back as one commit.
#[derive(Debug)]
pub struct Documents<'a> {
    store: &'a dyn DocumentStore,
    cache: HashMap<(String, String), Cached>,
}

/// A document as the batch sees it: its body (`None`: deleted or absent), and whether it changed.
type Cached = (Option<Vec<u8>>, bool);

impl<'a> Documents<'a> {
    pub fn new(store: &'a dyn DocumentStore) -> Self {
        Self {
            store,
            cache: HashMap::new(),
        }
    }

    fn entry(&mut self, model: &str, key: &str) -> Result<&mut Cached, Error> {
        let id = (model.to_owned(), key.to_owned());
        if !self.cache.contains_key(&id) {
            let body = self.store.get(model, key)?;
            self.cache.insert(id.clone(), (body, false));
        }
        Ok(self.cache.get_mut(&id).expect("inserted above"))
    }

    pub fn get<T: DeserializeOwned>(&mut self, model: &str, key: &str) -> Result<Option<T>, Error> {
        match &self.entry(model, key)?.0 {
            Some(body) => Ok(Some(serde_json::from_slice(body)?)),
            None => Ok(None),
        }
    }

    pub fn put<T: Serialize>(&mut self, model: &str, key: &str, document: &T) -> Result<(), Error> {
        let body = serde_json::to_vec(document)?;
        *self.entry(model, key)? = (Some(body), true);
        Ok(())
    }

    pub fn delete(&mut self, model: &str, key: &str) -> Result<(), Error> {
        *self.entry(model, key)? = (None, true);
        Ok(())
    }

    /// The changes to write.
    pub fn into_writes(self) -> Vec<Write> {
        self.cache
            .into_iter()
            .filter(|(_, (_, changed))| *changed)
            .map(|((model, key), (body, _))| match body {
                Some(body) => Write::Put { model, key, body },
                None => Write::Delete { model, key },
            })
            .collect()
    }
}
