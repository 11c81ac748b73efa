//! Where wrapped data keys live: apart from the event log, so destroying a key needs no change
//! to any event. Blocking, like the read-model stores: callers run it on blocking threads.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use uuid::Uuid;

use crate::Error;

/// A person's data key as stored: wrapped by the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub id: Uuid,
    pub tenant: String,
    pub person: String,
    pub wrapped: Vec<u8>,
}

/// A store of wrapped data keys and a few named settings (the master key's check value).
pub trait KeyStore: Send + Sync + std::fmt::Debug + 'static {
    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, Error>;
    /// Stores `value` under `name` unless a value is there; returns the stored value.
    fn init_meta(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, Error>;
    /// The key that seals the person's new text, if they have one.
    fn live_key(&self, tenant: &str, person: &str) -> Result<Option<StoredKey>, Error>;
    /// Stores `key` as its person's key unless they have one; returns the one stored.
    fn insert_live(&self, key: &StoredKey) -> Result<StoredKey, Error>;
    /// `None` once the key is destroyed.
    fn key(&self, id: Uuid) -> Result<Option<StoredKey>, Error>;
    /// Destroys the person's keys; returns their ids.
    fn destroy(&self, tenant: &str, person: &str) -> Result<Vec<Uuid>, Error>;
    fn keys(&self) -> Result<Vec<StoredKey>, Error>;
    /// Replaces the wrapped form of `keys` and sets `meta`, in one transaction.
    fn rewrap(&self, keys: &[StoredKey], meta: (&str, &[u8])) -> Result<(), Error>;
}

fn store_error(error: impl std::fmt::Display) -> Error {
    Error::Store(error.to_string())
}

/// The embedded key store: `keys.db` in the data directory. Deleted keys are overwritten on disk
/// (`secure_delete`) and a rollback journal (not a WAL) keeps no old copies after a commit.
#[derive(Debug)]
pub struct SqliteKeys {
    connection: Mutex<rusqlite::Connection>,
}

const SQLITE_SCHEMA: &str = "
    PRAGMA journal_mode = TRUNCATE;
    PRAGMA synchronous = FULL;
    PRAGMA secure_delete = ON;
    CREATE TABLE IF NOT EXISTS data_keys (
        id BLOB PRIMARY KEY,
        tenant TEXT NOT NULL,
        person TEXT NOT NULL,
        wrapped BLOB NOT NULL,
        UNIQUE (tenant, person)
    );
    CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
";

impl SqliteKeys {
    pub fn open(path: &Path) -> Result<Self, Error> {
        let connection = rusqlite::Connection::open(path)
            .map_err(|e| Error::Store(format!("cannot open {}: {e}", path.display())))?;
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(store_error)?;
        connection
            .execute_batch(SQLITE_SCHEMA)
            .map_err(store_error)?;
        Ok(Self {
            connection: Mutex::new(connection),
        })
    }
}

fn sqlite_key(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredKey> {
    Ok(StoredKey {
        id: Uuid::from_bytes(row.get(0)?),
        tenant: row.get(1)?,
        person: row.get(2)?,
        wrapped: row.get(3)?,
    })
}

impl KeyStore for SqliteKeys {
    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        use rusqlite::OptionalExtension;
        let connection = self.connection.lock().unwrap();
        (connection.query_row("SELECT value FROM meta WHERE name = ?1", [name], |row| {
            row.get(0)
        }))
        .optional()
        .map_err(store_error)
    }

    fn init_meta(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, Error> {
        let connection = self.connection.lock().unwrap();
        connection
            .execute(
                "INSERT INTO meta (name, value) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                rusqlite::params![name, value],
            )
            .map_err(store_error)?;
        (connection.query_row("SELECT value FROM meta WHERE name = ?1", [name], |row| {
            row.get(0)
        }))
        .map_err(store_error)
    }

    fn live_key(&self, tenant: &str, person: &str) -> Result<Option<StoredKey>, Error> {
        use rusqlite::OptionalExtension;
        let connection = self.connection.lock().unwrap();
        (connection.query_row(
            "SELECT id, tenant, person, wrapped FROM data_keys WHERE tenant = ?1 AND person = ?2",
            [tenant, person],
            sqlite_key,
        ))
        .optional()
        .map_err(store_error)
    }

    fn insert_live(&self, key: &StoredKey) -> Result<StoredKey, Error> {
        let connection = self.connection.lock().unwrap();
        connection
            .execute(
                "INSERT INTO data_keys (id, tenant, person, wrapped) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO NOTHING",
                rusqlite::params![key.id.as_bytes(), key.tenant, key.person, key.wrapped],
            )
            .map_err(store_error)?;
        (connection.query_row(
            "SELECT id, tenant, person, wrapped FROM data_keys WHERE tenant = ?1 AND person = ?2",
            [&key.tenant, &key.person],
            sqlite_key,
        ))
        .map_err(store_error)
    }

    fn key(&self, id: Uuid) -> Result<Option<StoredKey>, Error> {
        use rusqlite::OptionalExtension;
        let connection = self.connection.lock().unwrap();
        (connection.query_row(
            "SELECT id, tenant, person, wrapped FROM data_keys WHERE id = ?1",
            [id.as_bytes()],
            sqlite_key,
        ))
        .optional()
        .map_err(store_error)
    }

    fn destroy(&self, tenant: &str, person: &str) -> Result<Vec<Uuid>, Error> {
        let connection = self.connection.lock().unwrap();
        let mut statement = connection
            .prepare("DELETE FROM data_keys WHERE tenant = ?1 AND person = ?2 RETURNING id")
            .map_err(store_error)?;
        let ids = statement
            .query_map([tenant, person], |row| Ok(Uuid::from_bytes(row.get(0)?)))
            .map_err(store_error)?;
        ids.collect::<Result<_, _>>().map_err(store_error)
    }

    fn keys(&self) -> Result<Vec<StoredKey>, Error> {
        let connection = self.connection.lock().unwrap();
        let mut statement = connection
            .prepare("SELECT id, tenant, person, wrapped FROM data_keys")
            .map_err(store_error)?;
        let keys = statement.query_map([], sqlite_key).map_err(store_error)?;
        keys.collect::<Result<_, _>>().map_err(store_error)
    }

    fn rewrap(&self, keys: &[StoredKey], (name, value): (&str, &[u8])) -> Result<(), Error> {
        let mut connection = self.connection.lock().unwrap();
        let transaction = connection.transaction().map_err(store_error)?;
        for key in keys {
            transaction
                .execute(
                    "UPDATE data_keys SET wrapped = ?2 WHERE id = ?1",
                    rusqlite::params![key.id.as_bytes(), key.wrapped],
                )
                .map_err(store_error)?;
        }
        transaction
            .execute(
                "INSERT INTO meta (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                rusqlite::params![name, value],
            )
            .map_err(store_error)?;
        transaction.commit().map_err(store_error)
    }
}

/// Data keys in PostgreSQL, in the event store's schema, shared by every replica.
pub struct PostgresKeys {
    config: postgres::Config,
    client: Mutex<Option<postgres::Client>>,
}

impl std::fmt::Debug for PostgresKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PostgresKeys")
    }
}

const POSTGRES_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS data_keys (
        id UUID PRIMARY KEY,
        tenant TEXT NOT NULL,
        person TEXT NOT NULL,
        wrapped BYTEA NOT NULL,
        UNIQUE (tenant, person)
    );
    CREATE TABLE IF NOT EXISTS key_meta (name TEXT PRIMARY KEY, value BYTEA NOT NULL);
";

fn postgres_key(row: &postgres::Row) -> StoredKey {
    StoredKey {
        id: row.get(0),
        tenant: row.get(1),
        person: row.get(2),
        wrapped: row.get(3),
    }
}

impl PostgresKeys {
    /// Connects to `url` and creates the schema and the key tables in it if needed.
    pub fn connect(url: &str, schema: &str) -> Result<Self, Error> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| Error::Store(format!("the PostgreSQL URL does not parse: {e}")))?;
        config.options(&format!("-c search_path={schema}"));
        config.connect_timeout(Duration::from_secs(5));
        let keys = Self {
            config,
            client: Mutex::new(None),
        };
        let quoted = format!("\"{}\"", schema.replace('"', "\"\""));
        keys.with(|client| {
            let mut transaction = client.transaction()?;
            transaction.execute(
                "SELECT pg_advisory_xact_lock(hashtext('ledger data keys'))",
                &[],
            )?;
            transaction.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {quoted}"))?;
            transaction.batch_execute(POSTGRES_SCHEMA)?;
            transaction.commit()
        })?;
        Ok(keys)
    }

    /// Runs `work` on the connection, opening it if needed; a failed connection is replaced.
    fn with<T>(
        &self,
        work: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error>,
    ) -> Result<T, Error> {
        let mut slot = self.client.lock().unwrap();
        let client = match slot.take() {
            Some(client) if !client.is_closed() => slot.insert(client),
            _ => slot.insert(
                self.config
                    .connect(postgres::NoTls)
                    .map_err(|e| Error::Store(format!("cannot connect to PostgreSQL: {e}")))?,
            ),
        };
        let result = work(client);
        if client.is_closed() {
            *slot = None;
        }
        result.map_err(store_error)
    }
}

impl KeyStore for PostgresKeys {
    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        self.with(|client| {
            let row = client.query_opt("SELECT value FROM key_meta WHERE name = $1", &[&name])?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    fn init_meta(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, Error> {
        self.with(|client| {
            client.execute(
                "INSERT INTO key_meta (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&name, &value],
            )?;
            let row = client.query_one("SELECT value FROM key_meta WHERE name = $1", &[&name])?;
            Ok(row.get(0))
        })
    }

    fn live_key(&self, tenant: &str, person: &str) -> Result<Option<StoredKey>, Error> {
        self.with(|client| {
            let row = client.query_opt(
                "SELECT id, tenant, person, wrapped FROM data_keys WHERE tenant = $1 AND person = $2",
                &[&tenant, &person],
            )?;
            Ok(row.as_ref().map(postgres_key))
        })
    }

    fn insert_live(&self, key: &StoredKey) -> Result<StoredKey, Error> {
        self.with(|client| {
            client.execute(
                "INSERT INTO data_keys (id, tenant, person, wrapped) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                &[&key.id, &key.tenant, &key.person, &key.wrapped],
            )?;
            let row = client.query_one(
                "SELECT id, tenant, person, wrapped FROM data_keys WHERE tenant = $1 AND person = $2",
                &[&key.tenant, &key.person],
            )?;
            Ok(postgres_key(&row))
        })
    }

    fn key(&self, id: Uuid) -> Result<Option<StoredKey>, Error> {
        self.with(|client| {
            let row = client.query_opt(
                "SELECT id, tenant, person, wrapped FROM data_keys WHERE id = $1",
                &[&id],
            )?;
            Ok(row.as_ref().map(postgres_key))
        })
    }

    fn destroy(&self, tenant: &str, person: &str) -> Result<Vec<Uuid>, Error> {
        self.with(|client| {
            let rows = client.query(
                "DELETE FROM data_keys WHERE tenant = $1 AND person = $2 RETURNING id",
                &[&tenant, &person],
            )?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
    }

    fn keys(&self) -> Result<Vec<StoredKey>, Error> {
        self.with(|client| {
            let rows = client.query("SELECT id, tenant, person, wrapped FROM data_keys", &[])?;
            Ok(rows.iter().map(postgres_key).collect())
        })
    }

    fn rewrap(&self, keys: &[StoredKey], (name, value): (&str, &[u8])) -> Result<(), Error> {
        self.with(|client| {
            let mut transaction = client.transaction()?;
            for key in keys {
                transaction.execute(
                    "UPDATE data_keys SET wrapped = $2 WHERE id = $1",
                    &[&key.id, &key.wrapped],
                )?;
            }
            transaction.execute(
                "INSERT INTO key_meta (name, value) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                &[&name, &value],
            )?;
            transaction.commit()
        })
    }
}
