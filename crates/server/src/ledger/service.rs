//! The `Ledger` gRPC service: auditors read the tenant's log with leaf indices, and get signed
//! checkpoints and RFC 9162 proofs.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{Stream, StreamExt};
use ledger_audit::{Checkpoint, NoteSigner, ProofError};
use ledger_domain::{Event, Id, Role, from_timestamp};
use ledger_proto::v1 as api;
use ledger_store::{AllRead, EventStore, Position, RecordedEvent, StreamName, StreamRead};
use tonic::{Request, Response, Status};

use super::{AuditTrees, TreeError};
use crate::access::{ACCESS_STREAM_KIND, AccessLog, FLUSH_PATIENCE, Whose};
use crate::auth::Principal;
use crate::status;

/// Query names in access records.
const READ_STREAM: &str = "/dialogue.ledger.v1.Ledger/ReadStream";
const READ_ALL: &str = "/dialogue.ledger.v1.Ledger/ReadAll";
const REPLAY_ALL: &str = "/dialogue.ledger.v1.Ledger/ReplayAll";
const SUBSCRIBE_ALL: &str = "/dialogue.ledger.v1.Ledger/SubscribeAll";
const LIST_ACCESS_RECORDS: &str = "/dialogue.ledger.v1.Ledger/ListAccessRecords";

/// The most events one read returns.
const MAX_LIMIT: u32 = 1000;
/// How long a read waits for the trees to cover what the store has acknowledged.
const COVERAGE_PATIENCE: Duration = Duration::from_secs(10);

type EventStream = Pin<Box<dyn Stream<Item = Result<api::LedgerEvent, Status>> + Send>>;

#[derive(Debug, Clone)]
pub struct LedgerService {
    store: Arc<dyn EventStore>,
    trees: AuditTrees,
    signer: Arc<NoteSigner>,
    /// Checkpoint origins are `<origin prefix>/<tenant>`.
    origin_prefix: String,
    access: AccessLog,
}

impl LedgerService {
    pub fn new(
        store: Arc<dyn EventStore>,
        trees: AuditTrees,
        signer: NoteSigner,
        origin_prefix: String,
        access: AccessLog,
    ) -> Self {
        Self {
            store,
            trees,
            signer: Arc::new(signer),
            origin_prefix,
            access,
        }
    }

    /// Records the reads of the persons whose data `events` hold.
    async fn record_reads(&self, reader: &Principal, events: &[RecordedEvent], query: &str) {
        let mut whose = Whose::default();
        let mut persons = Vec::new();
        for event in events {
            persons.extend(whose.new_persons(self.store.as_ref(), event).await);
        }
        self.access.record(reader, persons, query, true).await;
    }

    /// The caller, who must be an auditor or an admin.
    fn auditor<T>(request: &Request<T>) -> Result<Principal, Status> {
        let principal = Principal::of(request)?;
        Self::auditor_only(&principal)?;
        Ok(principal)
    }

    fn auditor_only(principal: &Principal) -> Result<(), Status> {
        if principal.actor.has(Role::Auditor) || principal.actor.has(Role::Admin) {
            Ok(())
        } else {
            Err(Status::permission_denied(
                "the ledger is read by auditors and admins",
            ))
        }
    }

    /// Waits until the trees hold every event acknowledged so far, so leaf indices and
    /// checkpoints are complete.
    async fn caught_up(&self) -> Result<(), Status> {
        let head = self
            .store
            .head()
            .await
            .map_err(|e| status::from_store(e, "reading the log head"))?;
        if self.trees.wait_covered(head, COVERAGE_PATIENCE).await {
            Ok(())
        } else {
            Err(Status::unavailable(
                "the audit trees are catching up with the log; retry shortly",
            ))
        }
    }

    /// Up to `limit` of the tenant's events from leaf `from`.
    async fn page(
        &self,
        tenant: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, Status> {
        let after = match from {
            0 => None,
            _ => match self
                .trees
                .leaf_position(tenant, from - 1)
                .await
                .map_err(tree_status)?
            {
                Some(position) => Some(position),
                None => return Ok(Vec::new()),
            },
        };
        let prefix = format!("{tenant}/");
        let mut page = Vec::with_capacity(limit.min(1024));
        let mut cursor = after;
        while page.len() < limit {
            let events = (self
                .store
                .read_all(AllRead::Forward { after: cursor }, 1024)
                .await)
                .map_err(|e| status::from_store(e, "reading the log"))?;
            let Some(last) = events.last() else { break };
            cursor = Some(last.position);
            let remaining = limit - page.len();
            page.extend(
                events
                    .into_iter()
                    .filter(|e| e.stream.as_str().starts_with(&prefix))
                    .take(remaining),
            );
        }
        Ok(page)
    }

    /// The tenant's events from leaf `from`: to the head as of now, or on forever when `live`.
    /// Records, as it goes, whose data the reader has been sent.
    async fn follow(
        &self,
        reader: Principal,
        from: u64,
        live: bool,
        query: &'static str,
    ) -> Result<EventStream, Status> {
        self.caught_up().await?;
        let tenant = reader.tenant.to_string();
        let after = match from {
            0 => None,
            _ => match self
                .trees
                .leaf_position(&tenant, from - 1)
                .await
                .map_err(tree_status)?
            {
                Some(position) => Some(position),
                None => {
                    return Err(Status::out_of_range(format!(
                        "leaf {} is beyond the end of the log",
                        from - 1
                    )));
                }
            },
        };
        let head = self
            .store
            .head()
            .await
            .map_err(|e| status::from_store(e, "reading the log head"))?;
        if !live && head <= after {
            return Ok(futures::stream::empty().boxed());
        }
        let follower = Follower {
            subscription: self.store.subscribe_all(after),
            prefix: format!("{tenant}/"),
            index: from,
            end: (!live).then_some(head).flatten(),
            finished: false,
            reader,
            query,
            whose: Whose::default(),
            service: self.clone(),
        };
        Ok(futures::stream::unfold(follower, Follower::next).boxed())
    }
}

/// The state of a replay or subscription.
struct Follower {
    subscription: ledger_store::EventSubscription,
    prefix: String,
    /// The next leaf index.
    index: u64,
    /// A replay ends with the head as it was when it began; a subscription has no end.
    end: Option<Position>,
    finished: bool,
    reader: Principal,
    query: &'static str,
    whose: Whose,
    service: LedgerService,
}

impl Follower {
    async fn next(mut self) -> Option<(Result<api::LedgerEvent, Status>, Self)> {
        if self.finished {
            return None;
        }
        loop {
            let event = match self.subscription.next().await? {
                Ok(event) => event,
                Err(error) => {
                    self.finished = true;
                    return Some((Err(status::from_store(error, "following the log")), self));
                }
            };
            let at_end = self.end.is_some_and(|end| event.position >= end);
            if event.stream.as_str().starts_with(&self.prefix) {
                let persons = self
                    .whose
                    .new_persons(self.service.store.as_ref(), &event)
                    .await;
                self.service
                    .access
                    .record(&self.reader, persons, self.query, true)
                    .await;
                let item = ledger_event(&event, self.index);
                self.index += 1;
                self.finished = at_end;
                return Some((Ok(item), self));
            }
            if at_end {
                return None;
            }
        }
    }
}

fn tree_status(error: TreeError) -> Status {
    match error {
        TreeError::Proof(ProofError::IndexOutOfRange { index, size }) => {
            Status::out_of_range(format!("index {index} is beyond the tree of {size} leaves"))
        }
        TreeError::Proof(error) => status::invalid_argument("size", &error.to_string()),
        error => {
            tracing::error!(%error, "audit tree failure");
            Status::internal("internal error")
        }
    }
}

fn ledger_event(event: &RecordedEvent, leaf_index: u64) -> api::LedgerEvent {
    api::LedgerEvent {
        leaf_index,
        stream: event.stream.as_str().to_owned(),
        revision: event.revision,
        position: Some(api::Position {
            commit: event.position.commit(),
            prepare: event.position.prepare(),
        }),
        event_id: event.id.as_bytes().to_vec(),
        event_type: event.event_type.clone(),
        recorded_at_micros: event.recorded_at.as_micros(),
        metadata: event.metadata.encode(),
        payload: event.payload.clone(),
    }
}

fn limit(requested: u32) -> Result<usize, Status> {
    match requested {
        0 => Ok(100),
        n if n <= MAX_LIMIT => Ok(n as usize),
        _ => Err(status::invalid_argument("limit", "must be at most 1000")),
    }
}

#[tonic::async_trait]
impl api::ledger_server::Ledger for LedgerService {
    async fn read_stream(
        &self,
        request: Request<api::ReadStreamRequest>,
    ) -> Result<Response<api::ReadEventsResponse>, Status> {
        let caller = Principal::of(&request)?;
        let request = request.into_inner();
        let limit = limit(request.limit)?;
        if request.stream.is_empty() || request.stream.contains('/') {
            return Err(status::invalid_argument(
                "stream",
                "name a stream without the tenant prefix",
            ));
        }
        let stream = StreamName::new(format!("{}/{}", caller.tenant, request.stream))
            .map_err(|e| status::invalid_argument("stream", &e.to_string()))?;
        let read = match (request.backward, request.from_end) {
            (false, _) => StreamRead::Forward {
                from: request.from_revision,
            },
            (true, true) => StreamRead::Backward { from: None },
            (true, false) => StreamRead::Backward {
                from: Some(request.from_revision),
            },
        };
        self.caught_up().await?;
        let events = (self.store.read_stream(&stream, read, limit).await)
            .map_err(|e| status::from_store(e, "reading a stream"))?;
        if let Err(denied) = Self::auditor_only(&caller) {
            // Whose data was asked for is recorded, even though none is sent.
            let persons = match events.first() {
                Some(event) => {
                    Whose::default()
                        .new_persons(self.store.as_ref(), event)
                        .await
                }
                None => Vec::new(),
            };
            self.access
                .record(&caller, persons, READ_STREAM, false)
                .await;
            return Err(denied);
        }
        self.record_reads(&caller, &events, READ_STREAM).await;
        let positions: Vec<Position> = events.iter().map(|e| e.position).collect();
        let indices = self
            .trees
            .leaf_indices(caller.tenant.as_str(), positions)
            .await
            .map_err(tree_status)?;
        let events = events
            .iter()
            .zip(indices)
            .map(|(event, index)| {
                ledger_event(
                    event,
                    index.expect("the trees cover every acknowledged event"),
                )
            })
            .collect();
        Ok(Response::new(api::ReadEventsResponse { events }))
    }

    async fn read_all(
        &self,
        request: Request<api::ReadAllRequest>,
    ) -> Result<Response<api::ReadEventsResponse>, Status> {
        let principal = Self::auditor(&request)?;
        let request = request.into_inner();
        let limit = limit(request.limit)?;
        self.caught_up().await?;
        let from = request.from_leaf_index;
        let events = self.page(principal.tenant.as_str(), from, limit).await?;
        self.record_reads(&principal, &events, READ_ALL).await;
        let events = (events.iter().enumerate())
            .map(|(i, event)| ledger_event(event, from + i as u64))
            .collect();
        Ok(Response::new(api::ReadEventsResponse { events }))
    }

    type ReplayAllStream = EventStream;

    async fn replay_all(
        &self,
        request: Request<api::ReplayAllRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let principal = Self::auditor(&request)?;
        let from = request.into_inner().from_leaf_index;
        Ok(Response::new(
            self.follow(principal, from, false, REPLAY_ALL).await?,
        ))
    }

    type SubscribeAllStream = EventStream;

    async fn subscribe_all(
        &self,
        request: Request<api::ReplayAllRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let principal = Self::auditor(&request)?;
        let from = request.into_inner().from_leaf_index;
        Ok(Response::new(
            self.follow(principal, from, true, SUBSCRIBE_ALL).await?,
        ))
    }

    async fn get_checkpoint(
        &self,
        request: Request<api::GetCheckpointRequest>,
    ) -> Result<Response<api::SignedCheckpoint>, Status> {
        let principal = Self::auditor(&request)?;
        self.caught_up().await?;
        let (size, root) = self
            .trees
            .head(principal.tenant.as_str())
            .await
            .map_err(tree_status)?;
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let origin = format!("{}/{}", self.origin_prefix, principal.tenant);
        let checkpoint = Checkpoint {
            origin: origin.clone(),
            size,
            root,
            timestamp,
        };
        Ok(Response::new(api::SignedCheckpoint {
            note: self.signer.sign(&checkpoint),
            origin,
            tree_size: size,
            root_hash: root.to_vec(),
            timestamp,
        }))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<api::GetInclusionProofRequest>,
    ) -> Result<Response<api::InclusionProof>, Status> {
        let principal = Self::auditor(&request)?;
        let api::GetInclusionProofRequest {
            leaf_index,
            tree_size,
        } = request.into_inner();
        if leaf_index >= tree_size {
            return Err(status::invalid_argument(
                "leaf_index",
                "must be below tree_size",
            ));
        }
        // A tree size the caller saw acknowledged is one the trees will hold.
        self.caught_up().await?;
        let (leaf, proof) = self
            .trees
            .inclusion_proof(principal.tenant.as_str(), leaf_index, tree_size)
            .await
            .map_err(tree_status)?;
        Ok(Response::new(api::InclusionProof {
            leaf_index,
            tree_size,
            leaf_hash: leaf.to_vec(),
            hashes: proof.iter().map(|h| h.to_vec()).collect(),
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<api::GetConsistencyProofRequest>,
    ) -> Result<Response<api::ConsistencyProof>, Status> {
        let principal = Self::auditor(&request)?;
        let api::GetConsistencyProofRequest { old_size, new_size } = request.into_inner();
        if old_size == 0 || old_size > new_size {
            return Err(status::invalid_argument(
                "old_size",
                "must be at least 1 and at most new_size",
            ));
        }
        self.caught_up().await?;
        let proof = self
            .trees
            .consistency_proof(principal.tenant.as_str(), old_size, new_size)
            .await
            .map_err(tree_status)?;
        Ok(Response::new(api::ConsistencyProof {
            old_size,
            new_size,
            hashes: proof.iter().map(|h| h.to_vec()).collect(),
        }))
    }

    async fn list_access_records(
        &self,
        request: Request<api::ListAccessRecordsRequest>,
    ) -> Result<Response<api::ListAccessRecordsResponse>, Status> {
        let caller = Principal::of(&request)?;
        let person =
            Id::parse("person_id", &request.into_inner().person_id).map_err(status::from_domain)?;
        let actor = &caller.actor;
        let own = actor.has(Role::Member) && actor.subject == person.as_str();
        let allowed = own
            || [Role::Hr, Role::Auditor, Role::Admin]
                .iter()
                .any(|role| actor.has(*role));
        self.access
            .record(&caller, [person.to_string()], LIST_ACCESS_RECORDS, allowed)
            .await;
        if !allowed {
            return Err(Status::permission_denied(
                "access records are read by the person themself, hr, auditors and admins",
            ));
        }
        if tokio::time::timeout(FLUSH_PATIENCE, self.access.flush())
            .await
            .is_err()
        {
            return Err(Status::unavailable(
                "access records are still being written; retry shortly",
            ));
        }
        let stream = StreamName::new(caller.tenant.stream(ACCESS_STREAM_KIND, person.as_str()))
            .map_err(|e| status::invalid_argument("person_id", &e.to_string()))?;
        let stored = (self
            .store
            .read_stream(&stream, StreamRead::Forward { from: 0 }, usize::MAX)
            .await)
            .map_err(|e| status::from_store(e, "reading access records"))?;
        let records = stored
            .iter()
            .filter_map(
                |event| match Event::decode(&event.event_type, &event.payload) {
                    Ok(Some(Event::AccessRecorded(r))) => Some(api::AccessRecord {
                        reader: r.reader,
                        reader_roles: r.reader_roles,
                        person_id: r.person_id,
                        query: r.query,
                        allowed: r.allowed,
                        at_micros: r.at.as_ref().map_or(0, from_timestamp),
                    }),
                    _ => None,
                },
            )
            .collect();
        Ok(Response::new(api::ListAccessRecordsResponse { records }))
    }
}
