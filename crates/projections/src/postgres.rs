//! The PostgreSQL document store: read models that several server replicas share, in the event
//! store's schema. A projection runs in one replica at a time, the holder of its lease (a
//! session advisory lock, released by PostgreSQL when the holder's connection ends, so another
//! replica takes over within seconds of a crash); the checkpoint compare-and-set in `commit`
//! keeps even an overlap from applying an event twice.

use std::sync::Mutex;
use std::time::Duration;

use ledger_store::Position;
use postgres::{Client, NoTls};

use crate::documents::{Change, Checkpoint, DocumentStore, Error, Lease, Write};

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS documents (
        model TEXT COLLATE \"C\" NOT NULL,
        key   TEXT COLLATE \"C\" NOT NULL,
        body  BYTEA NOT NULL,
        PRIMARY KEY (model, key)
    );
    CREATE TABLE IF NOT EXISTS checkpoints (
        projection TEXT PRIMARY KEY,
        version    INTEGER NOT NULL,
        commit_pos BIGINT NOT NULL,
        prepare_pos BIGINT NOT NULL
    );
    -- The last change of each followed document, numbered across all documents and rebuilds.
    CREATE TABLE IF NOT EXISTS changes (
        model TEXT COLLATE \"C\" NOT NULL,
        key   TEXT COLLATE \"C\" NOT NULL,
        seq   BIGINT NOT NULL,
        PRIMARY KEY (model, key)
    );
    -- A tenant's changes in order (keys begin `{tenant}/`), so a subscriber never reads
    -- through other tenants'; it replaced an index of all changes.
    DROP INDEX IF EXISTS changes_by_seq;
    CREATE INDEX IF NOT EXISTS changes_by_tenant ON changes (split_part(key, '/', 1), seq);
    CREATE TABLE IF NOT EXISTS change_sequence (
        id   INTEGER PRIMARY KEY CHECK (id = 1),
        last BIGINT NOT NULL
    );
    INSERT INTO change_sequence (id, last) VALUES (1, 0) ON CONFLICT DO NOTHING;
";

/// Read models in PostgreSQL. Blocking, like every document store: callers run it on blocking
/// threads.
pub struct PostgresDocuments {
    config: postgres::Config,
    /// Idle connections.
    idle: Mutex<Vec<Client>>,
}

impl PostgresDocuments {
    /// Connects to `url` and creates the read-model tables in `schema` (which the event store
    /// has created) if needed.
    pub fn connect(url: &str, schema: &str) -> Result<Self, Error> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| Error::Database(format!("the PostgreSQL URL does not parse: {e}")))?;
        config.options(&format!("-c search_path={schema}"));
        config.connect_timeout(Duration::from_secs(5));
        let store = Self {
            config,
            idle: Mutex::new(Vec::new()),
        };
        store.with(|client| {
            let mut transaction = client.transaction()?;
            // Replicas starting together create the tables once.
            transaction.execute(
                "SELECT pg_advisory_xact_lock(hashtext('ledger read models'))",
                &[],
            )?;
            transaction.batch_execute(SCHEMA)?;
            transaction.commit()
        })?;
        Ok(store)
    }

    /// Runs `work` on an idle connection (or a new one); a connection that failed is dropped.
    fn with<T>(
        &self,
        work: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, Error> {
        let idle = self.idle.lock().unwrap().pop();
        let mut client = match idle {
            Some(client) if !client.is_closed() => client,
            _ => self.config.connect(NoTls).map_err(database)?,
        };
        let result = work(&mut client);
        if result.is_ok() && !client.is_closed() {
            self.idle.lock().unwrap().push(client);
        }
        result.map_err(database)
    }
}

impl std::fmt::Debug for PostgresDocuments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config holds the password: never print it.
        f.debug_struct("PostgresDocuments")
            .field("idle", &self.idle.lock().map_or(0, |idle| idle.len()))
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresDocuments {
    fn drop(&mut self) {
        // A blocking client owns a runtime, which must not be dropped inside an async task.
        let idle = std::mem::take(&mut *self.idle.lock().unwrap());
        if !idle.is_empty() {
            std::thread::spawn(move || drop(idle));
        }
    }
}

fn database(error: postgres::Error) -> Error {
    Error::Database(error.to_string())
}

fn checkpoint_of(row: &postgres::Row) -> Checkpoint {
    Checkpoint {
        version: row.get::<_, i32>(0) as u32,
        position: Position::new(row.get::<_, i64>(1) as u64, row.get::<_, i64>(2) as u64),
    }
}

impl DocumentStore for PostgresDocuments {
    fn checkpoint(&self, projection: &str) -> Result<Option<Checkpoint>, Error> {
        self.with(|client| {
            let row = client.query_opt(
                "SELECT version, commit_pos, prepare_pos FROM checkpoints WHERE projection = $1",
                &[&projection],
            )?;
            Ok(row.as_ref().map(checkpoint_of))
        })
    }

    fn get(&self, model: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.with(|client| {
            let row = client.query_opt(
                "SELECT body FROM documents WHERE model = $1 AND key = $2",
                &[&model, &key],
            )?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    fn scan_range(
        &self,
        model: &str,
        from: &str,
        until: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, Error> {
        self.with(|client| {
            let rows = client.query(
                "SELECT key, body FROM documents WHERE model = $1 AND key >= $2 AND key < $3
                 ORDER BY key",
                &[&model, &from, &until],
            )?;
            Ok(rows
                .into_iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect())
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
        let conflict = self.with(|client| {
            let mut transaction = client.transaction()?;
            // Every commit takes the change sequence in turn, so change numbers follow commit
            // order across replicas.
            let mut seq: i64 = transaction
                .query_one(
                    "SELECT last FROM change_sequence WHERE id = 1 FOR UPDATE",
                    &[],
                )?
                .get(0);
            let stored = transaction
                .query_opt(
                    "SELECT version, commit_pos, prepare_pos FROM checkpoints WHERE projection = $1",
                    &[&projection],
                )?
                .as_ref()
                .map(checkpoint_of);
            if stored != from {
                return Ok(true);
            }
            let put = transaction.prepare(
                "INSERT INTO documents (model, key, body) VALUES ($1, $2, $3)
                 ON CONFLICT (model, key) DO UPDATE SET body = excluded.body",
            )?;
            let delete = transaction.prepare("DELETE FROM documents WHERE model = $1 AND key = $2")?;
            let change = transaction.prepare(
                "INSERT INTO changes (model, key, seq) VALUES ($1, $2, $3)
                 ON CONFLICT (model, key) DO UPDATE SET seq = excluded.seq",
            )?;
            for write in writes {
                let (Write::Put { model, key, .. } | Write::Delete { model, key }) = write;
                if followed.contains(&model.as_str()) {
                    seq += 1;
                    transaction.execute(&change, &[model, key, &seq])?;
                }
                match write {
                    Write::Put { model, key, body } => {
                        transaction.execute(&put, &[model, key, body])?
                    }
                    Write::Delete { model, key } => transaction.execute(&delete, &[model, key])?,
                };
            }
            transaction.execute("UPDATE change_sequence SET last = $1 WHERE id = 1", &[&seq])?;
            transaction.execute(
                "INSERT INTO checkpoints (projection, version, commit_pos, prepare_pos)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (projection) DO UPDATE SET version = excluded.version,
                     commit_pos = excluded.commit_pos, prepare_pos = excluded.prepare_pos",
                &[
                    &projection,
                    &(to.version as i32),
                    &(to.position.commit() as i64),
                    &(to.position.prepare() as i64),
                ],
            )?;
            transaction.commit()?;
            Ok(false)
        })?;
        if conflict {
            Err(Error::Conflict)
        } else {
            Ok(())
        }
    }

    fn changes(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<Change>, Error> {
        self.with(|client| {
            let rows = client.query(
                "SELECT seq, model, key FROM changes WHERE split_part(key, '/', 1) = $1
                 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&tenant, &(after as i64), &(limit as i64)],
            )?;
            Ok(rows
                .into_iter()
                .map(|row| Change {
                    seq: row.get::<_, i64>(0) as u64,
                    model: row.get(1),
                    key: row.get(2),
                })
                .collect())
        })
    }

    fn reset(&self, projection: &str, models: &[&str]) -> Result<(), Error> {
        self.with(|client| {
            let mut transaction = client.transaction()?;
            for model in models {
                transaction.execute("DELETE FROM documents WHERE model = $1", &[model])?;
            }
            transaction.execute(
                "DELETE FROM checkpoints WHERE projection = $1",
                &[&projection],
            )?;
            transaction.commit()
        })
    }

    fn lease(&self, projection: &str) -> Result<Option<Lease>, Error> {
        let mut client = self.config.connect(NoTls).map_err(database)?;
        let held: bool = client
            .query_one(
                // Advisory locks are the database's, not the schema's: the key names the
                // schema too, or ledgers in two schemas of one database would share leases.
                "SELECT pg_try_advisory_lock(
                     hashtext('ledger projection'), hashtext(current_schema() || '/' || $1))",
                &[&projection],
            )
            .map_err(database)?
            .get(0);
        // The lock lives as long as this connection: the lease keeps it.
        Ok(held.then(|| Lease::holding(client)))
    }
}
