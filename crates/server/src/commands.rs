//! Command handling: load the aggregate's stream, consult the world it references, decide,
//! append with the version it was decided on. Retries with the same command id return the
//! original result; concurrent commands on one aggregate are serialised by the expected version.
//! A command that starts an aggregate is decided on no stream without reading one: the append,
//! expecting no stream, confirms it.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use ledger_domain::{
    Aggregate, Context, Event, Id, OrgUnit, PersonRecord, Policy, References, Session, TenantId,
    World,
};
use ledger_proto::v1 as api;
use ledger_store::{
    EventStore, ExpectedVersion, Metadata, NewEvent, RecordedEvent, StreamName, StreamRead,
};
use opentelemetry::KeyValue;
use opentelemetry::metrics::Histogram;
use prost::Message;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};
use tracing::Instrument;
use uuid::Uuid;

use crate::auth::Principal;
use crate::states::{Handled, Loaded, States};
use crate::status;
use crate::telemetry::TraceContext;
use ledger_privacy::KeyRing;

/// Event ids are UUIDv5 of stream (which names the tenant), command id, request hash and index
/// in this namespace: a retried command produces the same ids, so the store's idempotency (per
/// stream) makes the retry a no-op, and ids stay unique across streams without the store
/// checking it.
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6d1f_3a2e_8c4b_4e57_9a0d_5b7e_2c91_f0a3);

/// How often a command without an expected version is decided again after a concurrent change.
/// Each round of conflicting writers lets at least one through, so this many concurrent commands
/// on one aggregate all succeed; a short random pause spreads the next round out.
const MAX_ATTEMPTS: u32 = 64;

/// The most people loaded to walk manager chains for one command.
const MAX_PERSONS: usize = 64;
/// Aggregate states kept in memory at most: about 100 MiB at a kilobyte each.
const STATES_KEPT: usize = 100_000;

/// Metadata keys stored with every event a command appends.
const COMMAND_ID: &str = "command_id";
const COMMAND_HASH: &str = "command_hash";
const ACTOR: &str = "actor";
/// Metadata keys of the W3C trace context that caused the event.
const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// A gRPC command request: an envelope (command id, expected version) around the command body.
pub trait CommandRequest: Message + Clone + Default + 'static {
    fn command_id(&self) -> &str;
    fn expected_version(&self) -> Option<u64>;
    /// The body without the envelope, for recognising a retry.
    fn body(&self) -> Self;
}

macro_rules! command_requests {
    ($($request:ty),* $(,)?) => {$(
        impl CommandRequest for $request {
            fn command_id(&self) -> &str {
                &self.command_id
            }
            fn expected_version(&self) -> Option<u64> {
                self.expected_version
            }
            fn body(&self) -> Self {
                Self { command_id: String::new(), expected_version: None, ..self.clone() }
            }
        }
    )*};
}

command_requests!(
    api::DefineOrgUnitRequest,
    api::RegisterPersonRequest,
    api::AssignManagerRequest,
    api::MovePersonRequest,
    api::RecordDepartureRequest,
    api::ScheduleSessionRequest,
    api::RescheduleSessionRequest,
    api::CancelSessionRequest,
    api::RecordSessionHeldRequest,
    api::AddAgendaItemRequest,
    api::RecordNoteRequest,
    api::AgreeActionItemRequest,
    api::CompleteActionItemRequest,
    api::DropActionItemRequest,
    api::RecordReflectionRequest,
    api::RecordInsightRequest,
    api::ShareInsightRequest,
    api::NarrowInsightRequest,
    api::RetractInsightRequest,
    api::SetGoalRequest,
    api::RecordGoalProgressRequest,
    api::ReflectOnGoalRequest,
    api::ReviseGoalRequest,
    api::CompleteGoalRequest,
    api::AbandonGoalRequest,
    api::RecordSurveyResultRequest,
);

/// The command envelope, checked.
#[derive(Debug, Clone)]
struct Envelope {
    command_id: String,
    expected_version: Option<u64>,
    /// The body without the envelope, encoded: a retry must repeat it.
    body: Vec<u8>,
    correlation_id: Option<Uuid>,
    /// The request's W3C trace context, recorded with its events.
    trace: Option<TraceContext>,
}

/// Handles every command of every aggregate.
#[derive(Debug)]
pub struct CommandHandler {
    store: Arc<dyn EventStore>,
    policy: Policy,
    keys: Arc<KeyRing>,
    /// Events per append, by aggregate kind.
    append_sizes: Histogram<u64>,
    states: Option<Arc<States>>,
}

impl CommandHandler {
    /// `keep_states`: keep aggregate states in memory between commands, which is right only when
    /// this process is the log's one writer (see [`States`]).
    pub fn new(
        store: Arc<dyn EventStore>,
        policy: Policy,
        keys: Arc<KeyRing>,
        keep_states: bool,
    ) -> Self {
        Self {
            store,
            policy,
            keys,
            states: keep_states.then(|| Arc::new(States::new(STATES_KEPT))),
            append_sizes: (crate::telemetry::meter().u64_histogram("ledger.append.events"))
                .with_description("Events a command appended at once")
                .with_boundaries(vec![1.0, 2.0, 4.0, 8.0, 16.0, 64.0])
                .build(),
        }
    }

    /// Runs one gRPC command request through aggregate `A`.
    pub async fn handle<A: Aggregate, R: CommandRequest>(
        &self,
        request: Request<R>,
        command: fn(R) -> A::Command,
    ) -> Result<Response<api::CommandResult>, Status> {
        let principal = Principal::of(&request)?;
        let correlation_id = (request.metadata().get("x-correlation-id"))
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
        let trace = request.extensions().get::<TraceContext>().cloned();
        let body = request.into_inner();
        let command_id = body.command_id();
        if command_id.is_empty() || command_id.len() > 128 {
            return Err(status::invalid_argument(
                "command_id",
                "is required, at most 128 characters",
            ));
        }
        let envelope = Envelope {
            command_id: command_id.to_owned(),
            expected_version: body.expected_version(),
            body: body.body().encode_to_vec(),
            correlation_id,
            trace,
        };
        let result = self
            .execute::<A>(&principal, &envelope, &command(body))
            .await?;
        Ok(Response::new(result))
    }

    async fn execute<A: Aggregate>(
        &self,
        principal: &Principal,
        envelope: &Envelope,
        command: &A::Command,
    ) -> Result<api::CommandResult, Status> {
        let id = A::id(command).map_err(status::from_domain)?;
        let stream = stream_name(&principal.tenant, A::KIND, &id)?;
        // A command that starts its aggregate is first decided on no stream, without reading
        // it: the append's version check confirms the guess; a stream that exists after all is
        // read and the command decided again on what it holds.
        let mut guess_new = A::starts(command) && envelope.expected_version.is_none();
        let mut conflicts = 0;
        loop {
            let (loaded, guessed) = match self.kept::<A>(&stream) {
                Some(loaded) => (loaded, false),
                None if guess_new => (Loaded::default(), true),
                None => (self.read_state::<A>(&stream).await?, false),
            };
            guess_new = false;
            if let Some(result) = self.original_result(principal, &loaded, envelope).await? {
                return Ok(result);
            }
            if let Some(expected) = envelope.expected_version
                && loaded.version != Some(expected)
            {
                return Err(version_conflict(&stream, expected, loaded.version));
            }
            let references = A::references(command, &loaded.state);
            let world = self.load_world(&principal.tenant, references).await?;
            let context = Context {
                actor: &principal.actor,
                now: ledger_store::Timestamp::now().as_micros(),
                world: &world,
                policy: &self.policy,
            };
            let decided = tracing::info_span!("decide", aggregate = A::KIND)
                .in_scope(|| A::decide(command, &loaded.state, &context));
            let events = match decided {
                Ok(events) => events,
                // Refused on no stream: decide on what the stream holds, if it exists.
                Err(_) if guessed => continue,
                Err(error) => return Err(status::from_domain(error)),
            };
            let expected = loaded
                .version
                .map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
            // The data subject is known once the stream's first event is decided.
            let after;
            let subject = match loaded.state.data_subject() {
                Some(subject) => Some(subject),
                None => {
                    after = events.iter().fold(loaded.state.clone(), A::evolve);
                    after.data_subject()
                }
            };
            let new_events = self
                .to_new_events(principal, envelope, &stream, subject, events)
                .await?;
            let appending = new_events.len() as u64;
            let append = tracing::info_span!("append", stream = %stream, events = appending);
            let outcome = self
                .append(&stream, expected, new_events, loaded, envelope)
                .instrument(append)
                .await;
            match outcome {
                // Not new after all: the stream holds this command's original result, or says
                // why it cannot be carried out.
                Ok(appended) if guessed && !appended.written => {}
                Err(
                    ledger_store::Error::WrongExpectedVersion { .. }
                    | ledger_store::Error::DuplicateEventId { .. },
                ) if guessed => {}
                Ok(appended) => {
                    (self.append_sizes).record(appending, &[KeyValue::new("aggregate", A::KIND)]);
                    tracing::debug!(stream = %stream, command_id = %envelope.command_id, "command appended");
                    return Ok(api::CommandResult {
                        version: appended.revision,
                        position: Some(position(appended.position)),
                    });
                }
                Err(ledger_store::Error::WrongExpectedVersion { actual, .. }) => {
                    if let Some(expected) = envelope.expected_version {
                        return Err(version_conflict(&stream, expected, actual));
                    }
                    // Someone else changed the aggregate: decide again on the new state, after
                    // a short random pause that spreads the next round of writers out.
                    conflicts += 1;
                    if conflicts == MAX_ATTEMPTS {
                        return Err(Status::aborted(
                            "the aggregate kept changing under this command; retry it",
                        ));
                    }
                    let pause = rand::random_range(0..=conflicts.min(10)) * 200;
                    tokio::time::sleep(std::time::Duration::from_micros(pause.into())).await;
                }
                Err(ledger_store::Error::DuplicateEventId { .. }) => {
                    return Err(reused(envelope));
                }
                Err(error) => {
                    return Err(status::from_store(error, "appending a command's events"));
                }
            }
        }
    }

    /// The aggregate's state as this process keeps it, if it does.
    fn kept<A: Aggregate>(&self, stream: &StreamName) -> Option<Loaded<A>> {
        self.states.as_ref()?.get(stream.as_str())
    }

    /// The aggregate's state: kept, or read from its stream (and then kept).
    async fn load<A: Aggregate>(&self, stream: &StreamName) -> Result<Loaded<A>, Status> {
        match self.kept(stream) {
            Some(loaded) => Ok(loaded),
            None => self.read_state(stream).await,
        }
    }

    /// The aggregate's state as its stream holds it, then kept.
    async fn read_state<A: Aggregate>(&self, stream: &StreamName) -> Result<Loaded<A>, Status> {
        let stored = (self
            .store
            .read_stream(stream, StreamRead::Forward { from: 0 }, usize::MAX)
            .await)
            .map_err(|e| status::from_store(e, "loading an aggregate"))?;
        let mut state = A::default();
        let mut handled = Vec::new();
        for recorded in &stored {
            if let Some(event) = decode(recorded)? {
                state = A::evolve(state, &event);
            }
            let extra = &recorded.metadata.extra;
            if let Some(command_id) = extra.get(COMMAND_ID) {
                handled.push(Handled {
                    command_id: command_id.clone(),
                    hash: extra.get(COMMAND_HASH).cloned().unwrap_or_default(),
                    revision: recorded.revision,
                    position: recorded.position,
                });
            }
        }
        let loaded = Loaded {
            state,
            version: stored.last().map(|event| event.revision),
            handled: Arc::new(handled),
        };
        if let Some(states) = &self.states {
            states.put(stream.as_str(), loaded.clone());
        }
        Ok(loaded)
    }

    /// Appends and keeps the stream's new state. Runs to its end even when the caller goes away
    /// (its deadline passes, it cancels): an acknowledged append is never missing from a kept
    /// state. Whatever failed, the stream's state is forgotten: the log says what it holds.
    async fn append<A: Aggregate>(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        new_events: Vec<NewEvent>,
        loaded: Loaded<A>,
        envelope: &Envelope,
    ) -> Result<ledger_store::AppendResult, ledger_store::Error> {
        let (store, states) = (self.store.clone(), self.states.clone());
        let (stream, command_id) = (stream.clone(), envelope.command_id.clone());
        let appending = async move {
            let Some(states) = states else {
                return store.append(&stream, expected, new_events).await;
            };
            // What the events leave, folded before they are handed to the store.
            let Loaded { state, handled, .. } = loaded;
            let hash = (new_events.first())
                .and_then(|new| new.metadata.extra.get(COMMAND_HASH).cloned())
                .unwrap_or_default();
            let state = evolved(state, &new_events);
            let outcome = store.append(&stream, expected, new_events).await;
            match (&outcome, state) {
                // A retry's answer says where the batch went then, not what the stream holds
                // now: the state decided on may be behind it.
                (Ok(appended), Some(state)) if appended.written => {
                    let mut handled = Vec::clone(&handled);
                    handled.push(Handled {
                        command_id,
                        hash,
                        revision: appended.revision,
                        position: appended.position,
                    });
                    let after = Loaded {
                        state,
                        version: Some(appended.revision),
                        handled: Arc::new(handled),
                    };
                    states.put(stream.as_str(), after);
                }
                _ => states.forget(stream.as_str()),
            }
            outcome
        };
        tokio::spawn(appending.in_current_span())
            .await
            .expect("appending does not panic")
    }

    /// If this command was handled before, what it returned; ALREADY_EXISTS if its id was used
    /// for a different body.
    async fn original_result<A: Aggregate>(
        &self,
        principal: &Principal,
        loaded: &Loaded<A>,
        envelope: &Envelope,
    ) -> Result<Option<api::CommandResult>, Status> {
        let mine =
            (loaded.handled.iter().rev()).find(|handled| handled.command_id == envelope.command_id);
        let Some(last) = mine else {
            return Ok(None);
        };
        let hash = self
            .command_hash(principal, loaded.state.data_subject(), envelope)
            .await?;
        if last.hash != hash {
            return Err(reused(envelope));
        }
        Ok(Some(api::CommandResult {
            version: last.revision,
            position: Some(position(last.position)),
        }))
    }

    /// What recognises a retry: a digest of the body, keyed by the data subject's key when
    /// there is one, so that once they are erased it cannot confirm a guess at their text.
    async fn command_hash(
        &self,
        principal: &Principal,
        subject: Option<&str>,
        envelope: &Envelope,
    ) -> Result<String, Status> {
        Ok(match subject {
            Some(subject) => hex(&(self.keys)
                .digest(principal.tenant.as_str(), subject, &envelope.body)
                .await
                .map_err(|e| status::from_keys(e, "hashing a command"))?),
            None => hex(&Sha256::digest(&envelope.body)),
        })
    }

    /// The events to append, their personal text sealed with `subject`'s key.
    async fn to_new_events(
        &self,
        principal: &Principal,
        envelope: &Envelope,
        stream: &StreamName,
        subject: Option<&str>,
        events: Vec<Event>,
    ) -> Result<Vec<NewEvent>, Status> {
        let hash = self.command_hash(principal, subject, envelope).await?;
        // The request's hash is in the ids too: two requests with one command id and different
        // bodies, decided side by side, then append different ids, so the second is a version
        // conflict (decided again, and refused as a reuse) rather than taken for a retry.
        let command_uuid = Uuid::new_v5(
            &EVENT_ID_NAMESPACE,
            format!("{stream}\n{}\n{hash}", envelope.command_id).as_bytes(),
        );
        let mut extra = BTreeMap::from([
            (COMMAND_ID.to_owned(), envelope.command_id.clone()),
            (COMMAND_HASH.to_owned(), hash),
            (ACTOR.to_owned(), principal.actor.subject.clone()),
        ]);
        if let Some(trace) = &envelope.trace {
            extra.insert(TRACEPARENT.to_owned(), trace.traceparent.clone());
            if !trace.tracestate.is_empty() {
                extra.insert(TRACESTATE.to_owned(), trace.tracestate.clone());
            }
        }
        let metadata = Metadata {
            correlation_id: Some(envelope.correlation_id.unwrap_or(command_uuid)),
            causation_id: Some(command_uuid),
            extra,
        };
        let mut new_events = Vec::with_capacity(events.len());
        for (index, mut event) in events.into_iter().enumerate() {
            let id = Uuid::new_v5(&command_uuid, index.to_string().as_bytes());
            if let Some(subject) = subject {
                (self.keys)
                    .seal(
                        principal.tenant.as_str(),
                        subject,
                        stream.as_str(),
                        id,
                        &mut event,
                    )
                    .await
                    .map_err(|e| status::from_keys(e, "sealing personal text"))?;
            } else if event.personal_text().is_some() {
                tracing::error!(stream = %stream, "an event with personal text has no data subject");
                return Err(Status::internal("internal error"));
            }
            new_events.push(NewEvent {
                id,
                event_type: event.type_name().to_owned(),
                payload: event.encode().into(),
                metadata: metadata.clone(),
            });
        }
        Ok(new_events)
    }

    /// Loads what a decision consults: the referenced org units and sessions, the referenced
    /// people (and the sessions' participants) and everyone in their manager chains.
    pub async fn load_world(
        &self,
        tenant: &TenantId,
        references: References,
    ) -> Result<World, Status> {
        let mut world = World::default();
        for unit in valid(&references.org_units) {
            let loaded = self
                .load::<OrgUnit>(&stream_name(tenant, OrgUnit::KIND, &unit)?)
                .await?;
            world.org_units.insert(unit.to_string(), loaded.state);
        }
        let mut persons: VecDeque<Id> = valid(&references.persons).collect();
        for session in valid(&references.sessions) {
            let loaded = self
                .load::<Session>(&stream_name(tenant, Session::KIND, &session)?)
                .await?;
            persons.extend(valid(&[
                loaded.state.member_id.clone(),
                loaded.state.partner_id.clone(),
            ]));
            world.sessions.insert(session.to_string(), loaded.state);
        }
        let mut seen = HashSet::new();
        while let Some(person) = persons.pop_front() {
            if seen.len() >= MAX_PERSONS || !seen.insert(person.clone()) {
                continue;
            }
            let loaded = self
                .load::<PersonRecord>(&stream_name(tenant, PersonRecord::KIND, &person)?)
                .await?;
            let managers: Vec<String> = loaded.state.managers().map(str::to_owned).collect();
            persons.extend(valid(&managers));
            world.persons.insert(person.to_string(), loaded.state);
        }
        Ok(world)
    }
}

/// The answer to a command id sent again with a different request.
fn reused(envelope: &Envelope) -> Status {
    Status::already_exists(format!(
        "command id {} was already used with a different request",
        envelope.command_id
    ))
}

/// `state` after `new_events`, folded from their stored (sealed) form as a read of the log would
/// fold them; `None` if one does not decode.
fn evolved<A: Aggregate>(mut state: A, new_events: &[NewEvent]) -> Option<A> {
    for new in new_events {
        match Event::decode(&new.event_type, &new.payload) {
            Ok(Some(event)) => state = A::evolve(state, &event),
            Ok(None) => {}
            Err(error) => {
                tracing::error!(%error, event_type = %new.event_type, "an appended event does not decode");
                return None;
            }
        }
    }
    Some(state)
}

/// The ids among `raw` that are well-formed; malformed ones are the decider's to report.
fn valid(raw: &[String]) -> impl Iterator<Item = Id> + '_ {
    raw.iter().filter_map(|id| Id::parse("id", id).ok())
}

fn stream_name(tenant: &TenantId, kind: &str, id: &Id) -> Result<StreamName, Status> {
    StreamName::new(tenant.stream(kind, id.as_str()))
        .map_err(|e| status::invalid_argument("id", &e.to_string()))
}

fn decode(recorded: &RecordedEvent) -> Result<Option<Event>, Status> {
    Event::decode(&recorded.event_type, &recorded.payload).map_err(|error| {
        tracing::error!(stream = %recorded.stream, revision = recorded.revision, %error, "stored event does not decode");
        Status::internal("internal error")
    })
}

fn version_conflict(stream: &StreamName, expected: u64, actual: Option<u64>) -> Status {
    let actual = actual.map_or_else(|| "none (it does not exist)".to_owned(), |v| v.to_string());
    let id = stream
        .as_str()
        .split_once('/')
        .map_or(stream.as_str(), |(_, id)| id);
    Status::aborted(format!(
        "{id}: expected version {expected}, current version {actual}"
    ))
}

fn position(position: ledger_store::Position) -> api::Position {
    api::Position {
        commit: position.commit(),
        prepare: position.prepare(),
    }
}

/// Lower-case hex, as command hashes have always been stored.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        hex.push(DIGITS[usize::from(byte >> 4)].into());
        hex.push(DIGITS[usize::from(byte & 0x0f)].into());
    }
    hex
}

#[cfg(test)]
mod tests {
    use ledger_domain::{Actor, OrgUnitCommand, PersonCommand, Role};
    use ledger_store_embedded::EmbeddedStore;
    use tonic::Code;

    use super::*;
    use crate::privacy::{PrivacyOptions, open_key_ring};
    use crate::store::StoreOptions;
    use crate::watched_store::WatchedStore;

    /// A command handler on `store`, as a fresh process starts one.
    fn handler(
        store: &Arc<WatchedStore>,
        keys: &Arc<KeyRing>,
        keep_states: bool,
    ) -> CommandHandler {
        let store: Arc<dyn EventStore> = store.clone();
        CommandHandler::new(store, Policy::default(), keys.clone(), keep_states)
    }

    fn envelope(command_id: &str, expected_version: Option<u64>, body: &impl Message) -> Envelope {
        Envelope {
            command_id: command_id.into(),
            expected_version,
            body: body.encode_to_vec(),
            correlation_id: None,
            trace: None,
        }
    }

    fn define(unit: &str) -> api::DefineOrgUnitRequest {
        api::DefineOrgUnitRequest {
            org_unit_id: unit.into(),
            name: unit.into(),
            ..Default::default()
        }
    }

    fn register(person: &str) -> api::RegisterPersonRequest {
        api::RegisterPersonRequest {
            person_id: person.into(),
            display_name: person.into(),
            org_unit_id: "sales".into(),
            ..Default::default()
        }
    }

    async fn run<A: Aggregate>(
        handler: &CommandHandler,
        command_id: &str,
        expected_version: Option<u64>,
        body: &impl Message,
        command: A::Command,
    ) -> Result<api::CommandResult, Status> {
        let service = Principal {
            tenant: TenantId::parse("acme").unwrap(),
            actor: Actor {
                subject: "hr-sync".into(),
                roles: vec![Role::Service],
            },
        };
        let envelope = envelope(command_id, expected_version, body);
        handler.execute::<A>(&service, &envelope, &command).await
    }

    async fn register_as(
        handler: &CommandHandler,
        command_id: &str,
        person: &str,
    ) -> Result<api::CommandResult, Status> {
        let body = register(person);
        let command = PersonCommand::Register(body.clone());
        run::<PersonRecord>(handler, command_id, None, &body, command).await
    }

    async fn assign(
        handler: &CommandHandler,
        command_id: &str,
        expected_version: Option<u64>,
    ) -> Result<api::CommandResult, Status> {
        let body = api::AssignManagerRequest {
            person_id: "mia".into(),
            manager_id: "lee".into(),
            ..Default::default()
        };
        let command = PersonCommand::AssignManager(body.clone());
        run::<PersonRecord>(handler, command_id, expected_version, &body, command).await
    }

    /// A command that starts an aggregate is carried out without reading its stream, with or
    /// without kept states; a retry of it in a process that keeps nothing yet (a restart) gets
    /// the original result, a second start the aggregate's refusal, and neither leaves a state
    /// that disagrees with the log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_start_is_decided_without_reading_its_stream_and_confirmed_by_the_append() {
        for keep_states in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let log = EmbeddedStore::open(dir.path().join("log")).unwrap();
            let store = Arc::new(WatchedStore::new(log));
            let keys = open_key_ring(
                &PrivacyOptions::default(),
                &StoreOptions::Embedded,
                dir.path(),
            )
            .await
            .unwrap();
            let first = handler(&store, &keys, keep_states);
            let body = define("sales");
            let command = OrgUnitCommand::Define(body.clone());
            run::<OrgUnit>(&first, "d", None, &body, command)
                .await
                .unwrap();
            assert_eq!(store.reads("acme/org-unit-sales"), 0, "read to start it");
            let registered = register_as(&first, "r-mia", "mia").await.unwrap();
            register_as(&first, "r-lee", "lee").await.unwrap();
            assert_eq!(registered.version, 0);
            for stream in ["acme/person-mia", "acme/person-lee"] {
                assert_eq!(store.reads(stream), 0, "{stream} was read to start it");
            }
            assign(&first, "m", None).await.unwrap();

            let restarted = handler(&store, &keys, keep_states);
            let retried = register_as(&restarted, "r-mia", "mia").await.unwrap();
            assert_eq!(retried, registered, "the retry after a restart");
            let again = register_as(&restarted, "r-mia-2", "mia").await.unwrap_err();
            assert_eq!(
                (again.code(), again.message()),
                (Code::AlreadyExists, "person mia already exists")
            );
            // The person's stream holds the registration and the manager: a command expecting
            // that version is carried out, not refused on a state left behind by the retry.
            let assigned = assign(&restarted, "m-2", Some(1)).await.unwrap();
            assert_eq!(assigned.version, 2);
            let stored = (store.store)
                .read_stream(
                    &StreamName::new("acme/person-mia").unwrap(),
                    StreamRead::Forward { from: 0 },
                    10,
                )
                .await
                .unwrap();
            assert_eq!(stored.len(), 3, "keep_states {keep_states}");
            assert!(store.reads("acme/person-mia") > 0);
        }
    }

    #[test]
    fn hex_is_two_lower_case_digits_a_byte_as_stored_hashes_are() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff, 0x10]), "000fa5ff10");
        assert_eq!(hex(&[]), "");
    }
}
