//! The conformance suite: what every [`EventStore`] backend must do, as `pub async fn` tests.
//!
//! A backend runs the whole suite with one line in its tests:
//!
//! ```ignore
//! ledger_store::conformance_tests!(fresh_store());
//! ```
//!
//! where `fresh_store()` is an async expression giving `Option<(store, guard)>`: a store that no
//! other test touches and that starts empty, and a value to keep alive until the test ends (a
//! temporary directory, a schema to drop). `None` skips the suite; the factory prints why.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::time::timeout;
use uuid::Uuid;

use crate::{
    AllRead, AppendResult, Error, EventStore, EventSubscription, ExpectedVersion,
    MAX_PAYLOAD_BYTES, Metadata, NewEvent, RecordedEvent, StreamName, StreamRead,
};

/// Generates one `#[tokio::test]` per conformance test, each on a fresh store from `$fresh_store`.
#[macro_export]
macro_rules! conformance_tests {
    ($fresh_store:expr) => {
        $crate::conformance_tests!(@each $fresh_store;
            empty_store_reads_nothing,
            appends_are_ordered_within_streams_and_globally,
            reads_page_in_both_directions,
            expected_version_any,
            expected_version_no_stream,
            expected_version_stream_exists,
            expected_version_exact,
            batches_are_atomic,
            retried_appends_are_idempotent,
            concurrent_writers_to_one_stream,
            concurrent_writers_to_many_streams,
            subscription_catches_up_then_goes_live,
            subscriptions_resume_after_a_position,
            slow_subscriber_is_served_from_storage,
            long_log_is_followed_page_by_page_while_it_grows,
            large_payloads_near_the_limit,
        );
    };
    (@each $fresh_store:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some((store, _guard)) = $fresh_store.await {
                    $crate::conformance::$name(::std::sync::Arc::new(store)).await;
                }
            }
        )*
    };
}

/// Says that a test was skipped and why, where the test runner shows it: straight to stderr,
/// past the runner's capture of passing tests' output.
pub fn skip(reason: &str) {
    use std::io::Write;
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// How long a test waits for an event that must arrive.
const PATIENCE: Duration = Duration::from_secs(30);
/// How long a test waits to be sure that nothing more arrives.
const QUIET: Duration = Duration::from_millis(150);

fn stream(prefix: &str) -> StreamName {
    StreamName::new(format!("{prefix}-{}", Uuid::new_v4().simple())).unwrap()
}

fn event(label: &str) -> NewEvent {
    NewEvent {
        id: Uuid::new_v4(),
        event_type: format!("test.{label}"),
        payload: Bytes::from(format!("payload of {label}")),
        metadata: Metadata {
            correlation_id: Some(Uuid::new_v4()),
            causation_id: Some(Uuid::new_v4()),
            extra: [("label".to_owned(), label.to_owned())].into(),
        },
    }
}

fn events(label: &str, n: usize) -> Vec<NewEvent> {
    (0..n).map(|i| event(&format!("{label}-{i}"))).collect()
}

fn ids(events: &[RecordedEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.id).collect()
}

fn new_ids(events: &[NewEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.id).collect()
}

async fn read_everything<S: EventStore>(store: &S) -> Vec<RecordedEvent> {
    store
        .read_all(AllRead::Forward { after: None }, usize::MAX)
        .await
        .unwrap()
}

async fn append<S: EventStore>(
    store: &S,
    stream: &StreamName,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Result<AppendResult, Error> {
    store.append(stream, expected, events.to_vec()).await
}

fn assert_wrong_version(result: Result<AppendResult, Error>, want_actual: Option<u64>) {
    match result {
        Err(Error::WrongExpectedVersion { actual, .. }) => assert_eq!(actual, want_actual),
        other => panic!("expected a wrong-expected-version error, got {other:?}"),
    }
}

fn assert_strictly_ascending(events: &[RecordedEvent]) {
    for pair in events.windows(2) {
        assert!(
            pair[0].position < pair[1].position,
            "positions out of order: {pair:?}"
        );
    }
}

async fn next_event(subscription: &mut EventSubscription) -> RecordedEvent {
    match timeout(PATIENCE, subscription.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(other) => panic!("subscription ended or failed: {other:?}"),
        Err(_) => panic!("no event arrived within {PATIENCE:?}"),
    }
}

async fn assert_quiet(subscription: &mut EventSubscription) {
    if let Ok(item) = timeout(QUIET, subscription.next()).await {
        panic!("expected nothing more, got {item:?}");
    }
}

pub async fn empty_store_reads_nothing<S: EventStore>(store: Arc<S>) {
    let s = stream("empty");
    assert!(read_everything(&*store).await.is_empty());
    assert!(
        store
            .read_all(AllRead::Backward { before: None }, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .read_stream(&s, StreamRead::Forward { from: 0 }, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .read_stream(&s, StreamRead::Backward { from: None }, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.stream_revision(&s).await.unwrap(), None);
    assert_eq!(store.head().await.unwrap(), None);
    assert_quiet(&mut store.subscribe_all(None)).await;
    assert_quiet(&mut store.subscribe_stream(&s, None)).await;
}

pub async fn appends_are_ordered_within_streams_and_globally<S: EventStore>(store: Arc<S>) {
    let (a, b) = (stream("a"), stream("b"));
    let (first, second, third) = (events("first", 2), events("second", 1), events("third", 1));

    let r1 = append(&*store, &a, ExpectedVersion::NoStream, &first)
        .await
        .unwrap();
    let r2 = append(&*store, &b, ExpectedVersion::Any, &second)
        .await
        .unwrap();
    let r3 = append(&*store, &a, ExpectedVersion::Exact(1), &third)
        .await
        .unwrap();
    assert_eq!((r1.revision, r2.revision, r3.revision), (1, 0, 2));
    assert!(r1.position < r2.position && r2.position < r3.position);

    let all = read_everything(&*store).await;
    let written: Vec<_> = first.iter().chain(&second).chain(&third).collect();
    assert_eq!(all.len(), written.len());
    assert_strictly_ascending(&all);
    let started = crate::Timestamp::now().as_micros() - 600_000_000;
    for (stored, new) in all.iter().zip(&written) {
        assert_eq!(stored.id, new.id);
        assert_eq!(stored.event_type, new.event_type);
        assert_eq!(stored.payload, new.payload);
        assert_eq!(stored.metadata, new.metadata);
        assert!(
            stored.recorded_at.as_micros() > started,
            "implausible recorded time"
        );
    }
    let placed: Vec<_> = all.iter().map(|e| (e.stream.clone(), e.revision)).collect();
    assert_eq!(
        placed,
        [
            (a.clone(), 0),
            (a.clone(), 1),
            (b.clone(), 0),
            (a.clone(), 2)
        ]
    );
    assert_eq!(all[1].position, r1.position);
    assert_eq!(all[2].position, r2.position);
    assert_eq!(store.head().await.unwrap(), Some(r3.position));

    let stream_a = store
        .read_stream(&a, StreamRead::Forward { from: 0 }, 100)
        .await
        .unwrap();
    assert_eq!(ids(&stream_a), [all[0].id, all[1].id, all[3].id]);
    assert_eq!(stream_a, [all[0].clone(), all[1].clone(), all[3].clone()]);
    assert_eq!(store.stream_revision(&a).await.unwrap(), Some(2));
    assert_eq!(store.stream_revision(&b).await.unwrap(), Some(0));
}

pub async fn reads_page_in_both_directions<S: EventStore>(store: Arc<S>) {
    let (a, b) = (stream("a"), stream("b"));
    for i in 0..10 {
        append(
            &*store,
            &a,
            ExpectedVersion::Any,
            &events(&format!("a{i}"), 1),
        )
        .await
        .unwrap();
        append(
            &*store,
            &b,
            ExpectedVersion::Any,
            &events(&format!("b{i}"), 1),
        )
        .await
        .unwrap();
    }
    let revisions =
        |events: Vec<RecordedEvent>| events.iter().map(|e| e.revision).collect::<Vec<_>>();
    let read = |read, limit| {
        let (store, a) = (store.clone(), a.clone());
        async move { revisions(store.read_stream(&a, read, limit).await.unwrap()) }
    };
    assert_eq!(read(StreamRead::Forward { from: 3 }, 4).await, [3, 4, 5, 6]);
    assert_eq!(read(StreamRead::Forward { from: 8 }, 10).await, [8, 9]);
    assert_eq!(read(StreamRead::Forward { from: 10 }, 10).await, [0u64; 0]);
    assert_eq!(read(StreamRead::Forward { from: 0 }, 0).await, [0u64; 0]);
    assert_eq!(
        read(StreamRead::Backward { from: None }, 3).await,
        [9, 8, 7]
    );
    assert_eq!(
        read(StreamRead::Backward { from: Some(2) }, 10).await,
        [2, 1, 0]
    );
    assert_eq!(
        read(StreamRead::Backward { from: Some(50) }, 2).await,
        [9, 8]
    );

    let all = read_everything(&*store).await;
    assert_eq!(all.len(), 20);
    let mut forward = Vec::new();
    let mut after = None;
    loop {
        let page = store.read_all(AllRead::Forward { after }, 3).await.unwrap();
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 3);
        after = Some(last.position);
        forward.extend(page);
    }
    assert_eq!(forward, all);

    let mut backward = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .read_all(AllRead::Backward { before }, 4)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        before = Some(last.position);
        backward.extend(page);
    }
    backward.reverse();
    assert_eq!(backward, all);
}

pub async fn expected_version_any<S: EventStore>(store: Arc<S>) {
    let s = stream("any");
    let r = append(&*store, &s, ExpectedVersion::Any, &events("new", 1))
        .await
        .unwrap();
    assert_eq!(r.revision, 0);
    let r = append(&*store, &s, ExpectedVersion::Any, &events("existing", 2))
        .await
        .unwrap();
    assert_eq!(r.revision, 2);
}

pub async fn expected_version_no_stream<S: EventStore>(store: Arc<S>) {
    let s = stream("no-stream");
    let r = append(&*store, &s, ExpectedVersion::NoStream, &events("create", 1))
        .await
        .unwrap();
    assert_eq!(r.revision, 0);
    let rejected = append(&*store, &s, ExpectedVersion::NoStream, &events("again", 1)).await;
    assert_wrong_version(rejected, Some(0));
    assert_eq!(
        read_everything(&*store).await.len(),
        1,
        "a rejected append wrote"
    );
}

pub async fn expected_version_stream_exists<S: EventStore>(store: Arc<S>) {
    let s = stream("exists");
    let rejected = append(
        &*store,
        &s,
        ExpectedVersion::StreamExists,
        &events("early", 1),
    )
    .await;
    assert_wrong_version(rejected, None);
    assert_eq!(
        store.stream_revision(&s).await.unwrap(),
        None,
        "a rejected append created the stream"
    );
    append(&*store, &s, ExpectedVersion::NoStream, &events("create", 1))
        .await
        .unwrap();
    let r = append(
        &*store,
        &s,
        ExpectedVersion::StreamExists,
        &events("later", 1),
    )
    .await
    .unwrap();
    assert_eq!(r.revision, 1);
}

pub async fn expected_version_exact<S: EventStore>(store: Arc<S>) {
    let s = stream("exact");
    assert_wrong_version(
        append(&*store, &s, ExpectedVersion::Exact(0), &events("x", 1)).await,
        None,
    );
    append(&*store, &s, ExpectedVersion::NoStream, &events("create", 1))
        .await
        .unwrap();
    let r = append(&*store, &s, ExpectedVersion::Exact(0), &events("next", 2))
        .await
        .unwrap();
    assert_eq!(r.revision, 2);
    assert_wrong_version(
        append(&*store, &s, ExpectedVersion::Exact(1), &events("x", 1)).await,
        Some(2),
    );
    assert_wrong_version(
        append(&*store, &s, ExpectedVersion::Exact(5), &events("x", 1)).await,
        Some(2),
    );
    assert_eq!(
        read_everything(&*store).await.len(),
        3,
        "a rejected append wrote"
    );
}

pub async fn batches_are_atomic<S: EventStore>(store: Arc<S>) {
    let (a, b) = (stream("a"), stream("b"));
    let taken = events("taken", 1);
    append(&*store, &b, ExpectedVersion::Any, &taken)
        .await
        .unwrap();

    let conflicting = events("conflict", 3);
    assert_wrong_version(
        append(&*store, &a, ExpectedVersion::Exact(4), &conflicting).await,
        None,
    );

    let mut reusing = events("reuse", 3);
    reusing[2].id = taken[0].id;
    match append(&*store, &b, ExpectedVersion::Any, &reusing).await {
        Err(Error::DuplicateEventId { id }) => assert_eq!(id, taken[0].id),
        other => panic!("expected a duplicate id error, got {other:?}"),
    }
    assert_eq!(
        store.stream_revision(&b).await.unwrap(),
        Some(0),
        "a batch reusing an id of its stream wrote"
    );

    let mut repeating = events("repeat", 2);
    repeating[1].id = repeating[0].id;
    let oversized = NewEvent {
        payload: Bytes::from(vec![0; MAX_PAYLOAD_BYTES + 1]),
        ..event("big")
    };
    for batch in [vec![], repeating, vec![event("ok"), oversized]] {
        let result = append(&*store, &a, ExpectedVersion::Any, &batch).await;
        assert!(
            matches!(result, Err(Error::InvalidAppend { .. })),
            "accepted: {result:?}"
        );
    }
    assert_eq!(
        store.stream_revision(&a).await.unwrap(),
        None,
        "a rejected batch wrote"
    );
    assert_eq!(ids(&read_everything(&*store).await), new_ids(&taken));

    let batch = events("batch", 5);
    let r = append(&*store, &a, ExpectedVersion::NoStream, &batch)
        .await
        .unwrap();
    let all = read_everything(&*store).await;
    assert_eq!(
        ids(&all[1..]),
        new_ids(&batch),
        "the batch is not contiguous in the global log"
    );
    assert_eq!(
        all.iter().map(|e| e.revision).collect::<Vec<_>>(),
        [0, 0, 1, 2, 3, 4]
    );
    assert_eq!(all[5].position, r.position);
}

pub async fn retried_appends_are_idempotent<S: EventStore>(store: Arc<S>) {
    let (a, b) = (stream("a"), stream("b"));
    let batch = events("batch", 2);
    let original = append(&*store, &a, ExpectedVersion::NoStream, &batch)
        .await
        .unwrap();
    assert!(original.written, "the first append did not say it wrote");
    // A retry answers with where the batch was stored, and says it did not write it.
    let retry_of_original = AppendResult {
        written: false,
        ..original
    };
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(99),
        ExpectedVersion::Any,
    ] {
        let retried = append(&*store, &a, expected, &batch).await.unwrap();
        assert_eq!(
            retried, retry_of_original,
            "a retry with {expected} did not return the original result"
        );
    }
    let later = append(&*store, &a, ExpectedVersion::Exact(1), &events("later", 1))
        .await
        .unwrap();
    assert!(later.written);
    assert_eq!(
        append(&*store, &a, ExpectedVersion::Exact(1), &batch)
            .await
            .unwrap(),
        retry_of_original
    );
    let prefix = append(&*store, &a, ExpectedVersion::Any, &batch[..1])
        .await
        .unwrap();
    let stored = read_everything(&*store).await;
    assert_eq!(
        (prefix.revision, prefix.position, prefix.written),
        (0, stored[0].position, false)
    );
    assert_eq!(stored.len(), 3, "a retry wrote again");
    assert_eq!(stored[2].position, later.position);

    let mismatched = [
        vec![batch[1].clone(), event("new")],
        vec![event("new"), batch[0].clone()],
        vec![batch[1].clone(), batch[0].clone()],
    ];
    for attempt in mismatched {
        let result = append(&*store, &a, ExpectedVersion::Any, &attempt).await;
        assert!(
            matches!(result, Err(Error::DuplicateEventId { .. })),
            "accepted: {result:?}"
        );
    }
    assert_eq!(
        read_everything(&*store).await,
        stored,
        "a rejected retry wrote"
    );

    // Ids are unique per stream: the same batch in another stream is that stream's own.
    let elsewhere = append(&*store, &b, ExpectedVersion::NoStream, &batch)
        .await
        .unwrap();
    assert_eq!(elsewhere.revision, 1);
    assert!(elsewhere.position > later.position);
    assert_eq!(
        append(&*store, &b, ExpectedVersion::Any, &batch)
            .await
            .unwrap(),
        AppendResult {
            written: false,
            ..elsewhere
        },
        "a retry in the other stream did not return its own result"
    );
    let in_b = store
        .read_stream(&b, StreamRead::Forward { from: 0 }, 10)
        .await
        .unwrap();
    assert_eq!(ids(&in_b), new_ids(&batch));
    assert_eq!(read_everything(&*store).await.len(), 5);
}

pub async fn concurrent_writers_to_one_stream<S: EventStore>(store: Arc<S>) {
    const OPTIMISTIC: usize = 6;
    const BLIND: usize = 3;
    const APPENDS: usize = 20;
    let s = stream("contended");
    let mut tasks = Vec::new();
    for writer in 0..OPTIMISTIC + BLIND {
        let (store, s) = (store.clone(), s.clone());
        tasks.push(tokio::spawn(async move {
            let mut written = Vec::new();
            for i in 0..APPENDS {
                let batch = events(&format!("w{writer}-{i}"), 1);
                if writer >= OPTIMISTIC {
                    append(&*store, &s, ExpectedVersion::Any, &batch)
                        .await
                        .unwrap();
                } else {
                    // Read, decide, append with the revision read; on conflict read again.
                    let mut seen = store.stream_revision(&s).await.unwrap();
                    loop {
                        let expected =
                            seen.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                        match append(&*store, &s, expected, &batch).await {
                            Ok(r) => {
                                assert_eq!(Some(r.revision), seen.map(|v| v + 1).or(Some(0)));
                                break;
                            }
                            Err(Error::WrongExpectedVersion { actual, .. }) => seen = actual,
                            Err(e) => panic!("append failed: {e}"),
                        }
                    }
                }
                written.push(batch[0].id);
            }
            written
        }));
    }
    let mut written = HashSet::new();
    for task in tasks {
        written.extend(task.await.unwrap());
    }
    let stored = store
        .read_stream(&s, StreamRead::Forward { from: 0 }, usize::MAX)
        .await
        .unwrap();
    let total = (OPTIMISTIC + BLIND) * APPENDS;
    assert_eq!(stored.len(), total, "lost or doubled updates");
    assert_eq!(stored.iter().map(|e| e.id).collect::<HashSet<_>>(), written);
    assert!(
        stored
            .iter()
            .enumerate()
            .all(|(i, e)| e.revision == i as u64),
        "revisions have gaps"
    );
    assert_strictly_ascending(&stored);
    assert_eq!(
        store.stream_revision(&s).await.unwrap(),
        Some(total as u64 - 1)
    );
}

pub async fn concurrent_writers_to_many_streams<S: EventStore>(store: Arc<S>) {
    const WRITERS: usize = 16;
    const APPENDS: usize = 15;
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let s = stream(&format!("writer{writer}"));
            let mut results = Vec::new();
            for i in 0..APPENDS {
                let batch = events(&format!("w{writer}-{i}"), 1 + i % 3);
                let r = append(&*store, &s, ExpectedVersion::Any, &batch)
                    .await
                    .unwrap();
                results.push((r, new_ids(&batch)));
            }
            (s, results)
        }));
    }
    let mut finished = Vec::new();
    for task in tasks {
        finished.push(task.await.unwrap());
    }
    let all = read_everything(&*store).await;
    assert_strictly_ascending(&all);
    let mut total = 0;
    for (s, results) in finished {
        let mine: Vec<_> = all.iter().filter(|e| e.stream == s).collect();
        let expected_ids: Vec<_> = results.iter().flat_map(|(_, ids)| ids.clone()).collect();
        assert_eq!(mine.iter().map(|e| e.id).collect::<Vec<_>>(), expected_ids);
        assert!(mine.iter().enumerate().all(|(i, e)| e.revision == i as u64));
        for pair in results.windows(2) {
            assert!(
                pair[0].0.position < pair[1].0.position,
                "sequential appends out of order"
            );
        }
        for (r, batch_ids) in &results {
            let last = mine
                .iter()
                .find(|e| e.id == *batch_ids.last().unwrap())
                .unwrap();
            assert_eq!((last.revision, last.position), (r.revision, r.position));
        }
        total += expected_ids.len();
    }
    assert_eq!(all.len(), total, "events appeared that nobody wrote");
}

pub async fn subscription_catches_up_then_goes_live<S: EventStore>(store: Arc<S>) {
    const BEFORE: usize = 30;
    const WRITERS: usize = 4;
    const DURING: usize = 40;
    for i in 0..BEFORE {
        append(
            &*store,
            &stream(&format!("before{}", i % 3)),
            ExpectedVersion::Any,
            &events("b", 1),
        )
        .await
        .unwrap();
    }
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let s = stream(&format!("during{w}"));
                for i in 0..DURING {
                    let batch = events(&format!("d{w}-{i}"), 1 + i % 2);
                    append(&*store, &s, ExpectedVersion::Any, &batch)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let expected_total = BEFORE + WRITERS * (DURING / 2) * 3;
    let mut subscription = store.subscribe_all(None);
    let mut seen = Vec::with_capacity(expected_total);
    while seen.len() < expected_total {
        seen.push(next_event(&mut subscription).await);
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert_quiet(&mut subscription).await;
    assert_eq!(
        seen,
        read_everything(&*store).await,
        "the subscription differs from the log"
    );

    let live = events("live", 2);
    append(&*store, &stream("live"), ExpectedVersion::Any, &live)
        .await
        .unwrap();
    let got = [
        next_event(&mut subscription).await,
        next_event(&mut subscription).await,
    ];
    assert_eq!(ids(&got), new_ids(&live));
    assert!(seen.last().unwrap().position < got[0].position);
}

pub async fn subscriptions_resume_after_a_position<S: EventStore>(store: Arc<S>) {
    let (a, b) = (stream("a"), stream("b"));
    for i in 0..10 {
        append(
            &*store,
            &a,
            ExpectedVersion::Any,
            &events(&format!("a{i}"), 1),
        )
        .await
        .unwrap();
        append(
            &*store,
            &b,
            ExpectedVersion::Any,
            &events(&format!("b{i}"), 1),
        )
        .await
        .unwrap();
    }
    let all = read_everything(&*store).await;
    let mut resumed = store.subscribe_all(Some(all[11].position));
    for expected in &all[12..] {
        assert_eq!(&next_event(&mut resumed).await, expected);
    }
    assert_quiet(&mut resumed).await;

    let mut on_a = store.subscribe_stream(&a, Some(6));
    for revision in 7..10 {
        let event = next_event(&mut on_a).await;
        assert_eq!((&event.stream, event.revision), (&a, revision));
    }
    assert_quiet(&mut on_a).await;

    let c = stream("not-yet");
    let mut on_c = store.subscribe_stream(&c, None);
    assert_quiet(&mut on_c).await;
    let more = events("more", 1);
    append(&*store, &b, ExpectedVersion::Any, &events("other", 1))
        .await
        .unwrap();
    append(&*store, &a, ExpectedVersion::Any, &more)
        .await
        .unwrap();
    let created = events("created", 1);
    append(&*store, &c, ExpectedVersion::NoStream, &created)
        .await
        .unwrap();

    assert_eq!(next_event(&mut on_a).await.id, more[0].id);
    assert_eq!(next_event(&mut on_c).await.id, created[0].id);
    let mut tail = Vec::new();
    for _ in 0..3 {
        tail.push(next_event(&mut resumed).await);
    }
    assert_eq!(tail[0].stream, b);
    assert_eq!(ids(&tail[1..]), [more[0].id, created[0].id]);
    for subscription in [&mut resumed, &mut on_a, &mut on_c] {
        assert_quiet(subscription).await;
    }
}

pub async fn slow_subscriber_is_served_from_storage<S: EventStore>(store: Arc<S>) {
    const APPENDS: usize = 300;
    let s = stream("busy");
    let mut subscription = store.subscribe_all(None);
    append(&*store, &s, ExpectedVersion::Any, &events("first", 1))
        .await
        .unwrap();
    let first = next_event(&mut subscription).await;
    // The subscriber stops reading while the log grows far past any buffer.
    for i in 0..APPENDS {
        append(
            &*store,
            &s,
            ExpectedVersion::Any,
            &events(&format!("e{i}"), 10),
        )
        .await
        .unwrap();
    }
    let mut seen = vec![first];
    while seen.len() < 1 + APPENDS * 10 {
        seen.push(next_event(&mut subscription).await);
    }
    assert_quiet(&mut subscription).await;
    assert_eq!(seen, read_everything(&*store).await);
}

/// Subscribers far behind a log of many pages (more than a backend keeps in memory) that grows
/// while they read; one gives up midway and the store serves on.
pub async fn long_log_is_followed_page_by_page_while_it_grows<S: EventStore>(store: Arc<S>) {
    const BATCHES: usize = 24;
    const BATCH: usize = 500;
    const LATER: usize = 20;
    let streams = [stream("long-a"), stream("long-b"), stream("long-c")];
    for i in 0..BATCHES {
        let batch = events(&format!("b{i}"), BATCH);
        append(&*store, &streams[i % 3], ExpectedVersion::Any, &batch)
            .await
            .unwrap();
    }
    let mut everything = store.subscribe_all(None);
    let mut one_stream = store.subscribe_stream(&streams[1], None);
    let mut given_up = store.subscribe_all(None);
    for _ in 0..1_500 {
        next_event(&mut given_up).await;
    }
    drop(given_up);
    // The log grows when the subscriber has nearly read it: it must read on past where the log
    // ended when it began its last page.
    let before = BATCHES * BATCH;
    let mut seen = Vec::with_capacity(before + LATER * 100);
    while seen.len() < before - 2 * BATCH {
        seen.push(next_event(&mut everything).await);
    }
    for i in 0..LATER {
        let batch = events(&format!("later{i}"), 100);
        append(&*store, &streams[i % 3], ExpectedVersion::Any, &batch)
            .await
            .unwrap();
    }
    while seen.len() < before + LATER * 100 {
        seen.push(next_event(&mut everything).await);
    }
    assert_quiet(&mut everything).await;
    let log = read_everything(&*store).await;
    assert_eq!(seen.len(), log.len(), "the subscription missed events");
    assert!(seen == log, "the subscription differs from the log");

    let of_stream: Vec<_> = log.iter().filter(|e| e.stream == streams[1]).collect();
    for expected in of_stream {
        assert_eq!(&next_event(&mut one_stream).await, expected);
    }
    assert_quiet(&mut one_stream).await;
}

pub async fn large_payloads_near_the_limit<S: EventStore>(store: Arc<S>) {
    let s = stream("large");
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut noise = |len: usize| -> Bytes {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    let largest = NewEvent {
        payload: noise(MAX_PAYLOAD_BYTES),
        ..event("largest")
    };
    let three: Vec<_> = (0..3)
        .map(|i| NewEvent {
            payload: noise(MAX_PAYLOAD_BYTES - i),
            ..event("large")
        })
        .collect();
    append(
        &*store,
        &s,
        ExpectedVersion::NoStream,
        std::slice::from_ref(&largest),
    )
    .await
    .unwrap();
    append(&*store, &s, ExpectedVersion::Exact(0), &three)
        .await
        .unwrap();
    let stored = store
        .read_stream(&s, StreamRead::Forward { from: 0 }, 10)
        .await
        .unwrap();
    let written: Vec<_> = std::iter::once(&largest).chain(&three).collect();
    assert_eq!(stored.len(), written.len());
    for (stored, written) in stored.iter().zip(written) {
        assert_eq!(
            stored.payload, written.payload,
            "a large payload came back altered"
        );
    }
    let too_large = NewEvent {
        payload: noise(MAX_PAYLOAD_BYTES + 1),
        ..event("too-large")
    };
    let result = append(&*store, &s, ExpectedVersion::Any, &[too_large]).await;
    assert!(
        matches!(result, Err(Error::InvalidAppend { .. })),
        "accepted: {result:?}"
    );
    assert_eq!(store.stream_revision(&s).await.unwrap(), Some(3));
}
