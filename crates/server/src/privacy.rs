//! Personal data: the key ring's configuration and start-up, the `Privacy` service (erasure by
//! key destruction, export), and keeping other replicas' key caches true after an erasure.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use ledger_domain::{Event, Id, Role, pb, to_timestamp};
use ledger_privacy::{KeyRing, KeyStore, MasterKey, Opened, PostgresKeys, SqliteKeys};
use ledger_proto::v1 as api;
use ledger_store::{AllRead, EventStore, ExpectedVersion, Metadata, NewEvent, StreamName};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::access::AccessLog;
use crate::auth::Principal;
use crate::status;
use crate::store::StoreOptions;

const EXPORT_PERSON_DATA: &str = "/dialogue.ledger.v1.Privacy/ExportPersonData";
const FORGET_PERSON: &str = "/dialogue.ledger.v1.Privacy/ForgetPerson";

/// The stream kind of erasure records: `{tenant}/erasure-{person}`.
const ERASURE_STREAM_KIND: &str = "erasure";
/// Events read per page while exporting.
const EXPORT_PAGE: usize = 1024;

/// Where the master key comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    /// The key itself, base64 (from the environment).
    Value(String),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "File({})", path.display()),
            Self::Value(_) => f.write_str("Value(<redacted>)"),
        }
    }
}

impl KeySource {
    fn load(&self) -> anyhow::Result<MasterKey> {
        Ok(match self {
            Self::File(path) => MasterKey::read(path)?,
            Self::Value(value) => MasterKey::parse(value)?,
        })
    }
}

/// How personal data is protected and who may erase it.
#[derive(Debug, Clone)]
pub struct PrivacyOptions {
    /// The master key; `None`: `DATA_DIR/master.key`, created together with a new key store.
    pub master_key: Option<KeySource>,
    /// The master key being rotated away from: data keys still wrapped by it are re-wrapped
    /// under `master_key` at start-up.
    pub previous_master_key: Option<KeySource>,
    /// Whether a person may erase their own data (hr and admin always may).
    pub allow_self_erasure: bool,
}

impl Default for PrivacyOptions {
    /// The quick start: the data directory's own master key, self-erasure allowed.
    fn default() -> Self {
        Self {
            master_key: None,
            previous_master_key: None,
            allow_self_erasure: true,
        }
    }
}

/// The master key file used when none is configured.
pub fn default_master_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("master.key")
}

/// Opens the key store (PostgreSQL beside a PostgreSQL event store, so replicas share it;
/// otherwise `DATA_DIR/keys.db`) and unlocks it with the master key. Fails, before the event
/// store or anything else is opened, if the key is missing or not the store's.
pub async fn open_key_ring(
    options: &PrivacyOptions,
    store: &StoreOptions,
    data_dir: &Path,
) -> anyhow::Result<Arc<KeyRing>> {
    let (options, store, data_dir) = (options.clone(), store.clone(), data_dir.to_owned());
    tokio::task::spawn_blocking(move || {
        let keys: Arc<dyn KeyStore> = match &store {
            StoreOptions::Postgres { url, schema } => Arc::new(
                PostgresKeys::connect(url, schema)
                    .with_context(|| format!("cannot open the key store (schema {schema})"))?,
            ),
            StoreOptions::Embedded | StoreOptions::EventStoreDb { .. } => {
                std::fs::create_dir_all(&data_dir).with_context(|| {
                    format!("cannot create the data directory {}", data_dir.display())
                })?;
                let path = data_dir.join("keys.db");
                Arc::new(
                    SqliteKeys::open(&path)
                        .with_context(|| format!("cannot open the key store {}", path.display()))?,
                )
            }
        };
        let master = match &options.master_key {
            Some(source) => source.load().context("cannot load the master key")?,
            None => default_master_key(&data_dir, keys.as_ref())?,
        };
        let previous = (options.previous_master_key.as_ref())
            .map(KeySource::load)
            .transpose()
            .context("cannot load the previous master key")?;
        let ring =
            KeyRing::unlock(keys, master, previous).context("cannot unlock the key store")?;
        Ok(Arc::new(ring))
    })
    .await?
}

/// The data directory's own master key: read, or created with a new key store. A key store
/// that has keys but whose master key file is gone is an error, never a fresh key.
fn default_master_key(data_dir: &Path, keys: &dyn KeyStore) -> anyhow::Result<MasterKey> {
    let path = default_master_key_path(data_dir);
    if path.exists() {
        return Ok(MasterKey::read(&path)?);
    }
    if KeyRing::initialised(keys)? {
        anyhow::bail!(
            "the master key is missing: no master key is configured (--master-key-file or \
             LEDGER_MASTER_KEY) and {} does not exist, but the key store already holds data keys \
             wrapped by one. Restore the master key; without it no personal text can be read",
            path.display()
        );
    }
    write_private(&path, &MasterKey::generate())?;
    tracing::warn!(
        path = %path.display(),
        "created a master key beside the data; keep a copy elsewhere, or configure one"
    );
    Ok(MasterKey::read(&path)?)
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(file, "{contents}")?;
    file.sync_all()?;
    Ok(())
}

/// Keeps this replica's key cache true when another replica erases a person: follows the log
/// from its head and evicts the keys of every `PersonForgotten`.
pub fn spawn_eviction_follower(
    store: Arc<dyn EventStore>,
    keys: Arc<KeyRing>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut after = loop {
            match store.head().await {
                Ok(head) => break head,
                Err(ledger_store::Error::Closed) => return,
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        };
        loop {
            let mut events = store.subscribe_all(after);
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(event) => event,
                    Err(ledger_store::Error::Closed) => return,
                    Err(error) => {
                        tracing::warn!(%error, "erasure follower lost the log; resubscribing");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break;
                    }
                };
                after = Some(event.position);
                if let Ok(Some(Event::PersonForgotten(forgotten))) =
                    Event::decode(&event.event_type, &event.payload)
                    && let Some((tenant, _)) = event.stream.as_str().split_once('/')
                {
                    keys.evict(tenant, &forgotten.person_id, &[]);
                }
            }
        }
    })
}

/// The `Privacy` service.
#[derive(Debug, Clone)]
pub struct PrivacyService {
    store: Arc<dyn EventStore>,
    keys: Arc<KeyRing>,
    access: AccessLog,
    allow_self_erasure: bool,
}

impl PrivacyService {
    pub fn new(
        store: Arc<dyn EventStore>,
        keys: Arc<KeyRing>,
        access: AccessLog,
        allow_self_erasure: bool,
    ) -> Self {
        Self {
            store,
            keys,
            access,
            allow_self_erasure,
        }
    }
}

fn is_self(principal: &Principal, person: &Id) -> bool {
    principal.actor.has(Role::Member) && principal.actor.subject == person.as_str()
}

fn privileged(principal: &Principal) -> bool {
    principal.actor.has(Role::Hr) || principal.actor.has(Role::Admin)
}

/// `event` in proto3 JSON.
fn to_json(event: &Event) -> Result<String, Status> {
    crate::proto_json::to_json(event.type_name(), &event.encode())
        .map(|json| json.to_string())
        .map_err(|error| {
            tracing::error!(%error, event_type = event.type_name(), "an event does not convert to JSON");
            Status::internal("internal error")
        })
}

/// Whether `event`, the first of its stream, makes the stream `person`'s.
fn founds_stream_of(event: &Event, person: &str) -> bool {
    match event {
        Event::SessionScheduled(e) => e.member_id == person,
        Event::InsightRecorded(e) => e.subject_id == person,
        Event::GoalSet(e) => e.owner_id == person,
        _ => false,
    }
}

#[tonic::async_trait]
impl api::privacy_server::Privacy for PrivacyService {
    async fn forget_person(
        &self,
        request: Request<api::ForgetPersonRequest>,
    ) -> Result<Response<api::ForgetPersonResponse>, Status> {
        let principal = Principal::of(&request)?;
        let person =
            Id::parse("person_id", &request.get_ref().person_id).map_err(status::from_domain)?;
        if !(privileged(&principal) || (self.allow_self_erasure && is_self(&principal, &person))) {
            self.access
                .record(&principal, [person.to_string()], FORGET_PERSON, false)
                .await;
            return Err(Status::permission_denied(if self.allow_self_erasure {
                "erasing a person needs the role hr or admin, or to be that person"
            } else {
                "erasing a person needs the role hr or admin"
            }));
        }
        let tenant = principal.tenant.as_str();
        // The key goes first: if the record then fails to append, a retry appends it.
        let destroyed = (self.keys)
            .forget(tenant, person.as_str())
            .await
            .map_err(|e| status::from_keys(e, "destroying a person's keys"))?;
        let record = Event::from(pb::PersonForgotten {
            person_id: person.to_string(),
            forgotten_by: principal.actor.subject.clone(),
            at: Some(to_timestamp(ledger_store::Timestamp::now().as_micros())),
            keys_destroyed: destroyed,
        });
        let stream = StreamName::new(
            principal
                .tenant
                .stream(ERASURE_STREAM_KIND, person.as_str()),
        )
        .map_err(|e| status::invalid_argument("person_id", &e.to_string()))?;
        let appended = self
            .store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![NewEvent {
                    id: Uuid::new_v4(),
                    event_type: record.type_name().to_owned(),
                    payload: record.encode().into(),
                    metadata: Metadata {
                        extra: [("actor".to_owned(), principal.actor.subject.clone())].into(),
                        ..Metadata::default()
                    },
                }],
            )
            .await
            .map_err(|e| status::from_store(e, "appending an erasure record"))?;
        tracing::info!(tenant, keys_destroyed = destroyed, "a person was erased");
        Ok(Response::new(api::ForgetPersonResponse {
            keys_destroyed: destroyed,
            position: Some(api::Position {
                commit: appended.position.commit(),
                prepare: appended.position.prepare(),
            }),
        }))
    }

    type ExportPersonDataStream = ReceiverStream<Result<api::ExportedEvent, Status>>;

    async fn export_person_data(
        &self,
        request: Request<api::ExportPersonDataRequest>,
    ) -> Result<Response<Self::ExportPersonDataStream>, Status> {
        let principal = Principal::of(&request)?;
        let person =
            Id::parse("person_id", &request.get_ref().person_id).map_err(status::from_domain)?;
        let allowed = privileged(&principal) || is_self(&principal, &person);
        self.access
            .record(
                &principal,
                [person.to_string()],
                EXPORT_PERSON_DATA,
                allowed,
            )
            .await;
        if !allowed {
            return Err(Status::permission_denied(
                "exporting a person's data needs the role hr or admin, or to be that person",
            ));
        }
        let (sender, receiver) = mpsc::channel(64);
        let service = self.clone();
        tokio::spawn(async move {
            if let Err(error) = service.export(&principal, &person, &sender).await {
                let _ = sender.send(Err(error)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

impl PrivacyService {
    /// Sends every event of `person`'s, oldest first: their person record and erasure record,
    /// the streams their first event makes theirs (sessions as member, insights as subject,
    /// goals as owner), and the records of who read their data.
    async fn export(
        &self,
        principal: &Principal,
        person: &Id,
        sender: &mpsc::Sender<Result<api::ExportedEvent, Status>>,
    ) -> Result<(), Status> {
        let tenant = principal.tenant.clone();
        let prefix = format!("{tenant}/");
        let mut theirs: HashSet<String> = [
            tenant.stream("person", person.as_str()),
            tenant.stream(ERASURE_STREAM_KIND, person.as_str()),
            tenant.stream(crate::access::ACCESS_STREAM_KIND, person.as_str()),
        ]
        .into();
        let mut after = None;
        loop {
            let page = self
                .store
                .read_all(AllRead::Forward { after }, EXPORT_PAGE)
                .await
                .map_err(|e| status::from_store(e, "reading the log for an export"))?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(last.position);
            for recorded in page {
                let stream = recorded.stream.as_str();
                if !stream.starts_with(&prefix) {
                    continue;
                }
                let Ok(Some(mut event)) = Event::decode(&recorded.event_type, &recorded.payload)
                else {
                    continue;
                };
                if recorded.revision == 0 && founds_stream_of(&event, person.as_str()) {
                    theirs.insert(stream.to_owned());
                }
                if !theirs.contains(stream) {
                    continue;
                }
                let opened = (self.keys)
                    .open(tenant.as_str(), stream, recorded.id, &mut event)
                    .await
                    .map_err(|e| status::from_keys(e, "opening personal text for an export"))?;
                let exported = api::ExportedEvent {
                    position: Some(api::Position {
                        commit: recorded.position.commit(),
                        prepare: recorded.position.prepare(),
                    }),
                    stream: stream.to_owned(),
                    event_type: recorded.event_type.clone(),
                    recorded_at_micros: recorded.recorded_at.as_micros(),
                    json: to_json(&event)?,
                    erased: opened == Opened::Erased,
                };
                if sender.send(Ok(exported)).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}
