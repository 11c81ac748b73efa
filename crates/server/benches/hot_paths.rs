//! Micro-benchmarks of the parts every command or audit touches: an aggregate's decision and
//! fold, event encoding and decoding, sealing and opening personal text, a projection's fold and
//! the encoding of the documents it changed, Merkle leaf hashing and tree growth, inclusion
//! proofs, and token verification (first sight and remembered). The store's own appends and reads
//! have theirs in `ledger-store-embedded` (`--bench append`, `--bench read`).
//!
//! `cargo bench -p dialogue-ledger --bench hot_paths`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use dialogue_ledger::auth::{Authenticator, Claims, DEFAULT_AUDIENCE, DEFAULT_ISSUER, LocalKeys};
use ledger_audit::{Frontier, MemoryTree, inclusion_proof, leaf_hash};
use ledger_domain::{
    Actor, Aggregate, Context, Event, Goal, GoalCommand, Policy, Role, World, api, pb, to_timestamp,
};
use ledger_privacy::{KeyRing, MasterKey, SqliteKeys};
use ledger_projections::as_of::MemoryDocuments;
use ledger_projections::evaluation::{self, EvaluationBriefs, GoalDoc};
use ledger_projections::{Applied, Documents, Projection, Write, decode};
use ledger_store::Position;
use tonic::Request;

/// Runs `work` `n` times and prints its cost per run.
fn measure(name: &str, n: u64, mut work: impl FnMut(u64)) {
    let started = Instant::now();
    for i in 0..n {
        work(i);
    }
    report(name, n, started.elapsed());
}

/// Prints the cost of each of `n` runs that took `took` together.
fn report(name: &str, n: u64, took: std::time::Duration) {
    println!(
        "{name:<40} {:>10.0} ns/op {:>12.0} ops/s",
        took.as_nanos() as f64 / n as f64,
        n as f64 / took.as_secs_f64()
    );
}

fn main() {
    decide_and_evolve();
    let event: Event = pb::SessionScheduled {
        session_id: "s-0123456789".into(),
        member_id: "m-42".into(),
        partner_id: "g-5".into(),
        relationship: pb::Relationship::Horizontal.into(),
        purposes: vec![pb::Purpose::Growth.into()],
        topic: "how the quarter went".into(),
        scheduled_at: Some(to_timestamp(1_796_119_200_000_000)),
        ..Default::default()
    }
    .into();
    let encoded = event.encode();
    measure("event encode", 1_000_000, |_| {
        black_box(black_box(&event).encode());
    });
    measure("event decode", 1_000_000, |_| {
        black_box(Event::decode(event.type_name(), black_box(&encoded)).unwrap());
    });

    seal_and_open();
    fold_and_encode();

    measure("leaf hash (256 bytes)", 1_000_000, |i| {
        let mut data = [0u8; 256];
        data[..8].copy_from_slice(&i.to_le_bytes());
        black_box(leaf_hash(&data));
    });
    let mut frontier = Frontier::default();
    measure("frontier append", 1_000_000, |i| {
        black_box(frontier.push(leaf_hash(&i.to_le_bytes())));
    });
    let tree = MemoryTree::new((0..4096u64).map(|i| leaf_hash(&i.to_le_bytes())).collect());
    measure("inclusion proof (4,096 leaves, in memory)", 1_000, |i| {
        black_box(inclusion_proof(&tree, i % 4096, 4096).unwrap());
    });

    let dir = tempfile::tempdir().unwrap();
    let keys = LocalKeys::new(dir.path());
    let authenticator =
        Authenticator::new(&keys.ensure().unwrap(), DEFAULT_ISSUER, DEFAULT_AUDIENCE).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let tokens: Vec<String> = (0..2_000)
        .map(|i| {
            let claims = Claims {
                iss: DEFAULT_ISSUER.into(),
                aud: DEFAULT_AUDIENCE.into(),
                sub: format!("member-{i}"),
                tenant: "acme".into(),
                roles: vec!["member".into()],
                iat: now,
                exp: now + 3600,
            };
            keys.issue(&claims).unwrap()
        })
        .collect();
    let request = |token: &str| {
        let mut request = Request::new(());
        let bearer = format!("Bearer {token}").parse().unwrap();
        request.metadata_mut().insert("authorization", bearer);
        request
    };
    let requests: Vec<_> = tokens.iter().map(|t| request(t)).collect();
    measure("token verification (first sight)", 2_000, |i| {
        black_box(authenticator.authenticate(&requests[i as usize]).unwrap());
    });
    measure("token verification (remembered)", 1_000_000, |i| {
        black_box(
            authenticator
                .authenticate(&requests[(i % 2_000) as usize])
                .unwrap(),
        );
    });
}

/// A goal's decision to record progress, on the state its owner's command finds (set, then
/// progressed nine times), and the fold of those ten events into that state.
fn decide_and_evolve() {
    let history: Vec<Event> = goal_story(0).collect();
    measure("goal fold (ten events)", 100_000, |_| {
        black_box(Goal::fold(black_box(&history)));
    });
    let state = Goal::fold(&history);
    let actor = Actor {
        subject: "m-0".into(),
        roles: vec![Role::Member],
    };
    let (world, policy) = (World::default(), Policy::default());
    let context = Context {
        actor: &actor,
        now: 1_796_119_200_000_000,
        world: &world,
        policy: &policy,
    };
    let command = GoalCommand::RecordProgress(api::RecordGoalProgressRequest {
        goal_id: "g-0".into(),
        key_result_id: "kr-1".into(),
        value: 2.0,
        ..Default::default()
    });
    assert_eq!(Goal::decide(&command, &state, &context).unwrap().len(), 1);
    measure("goal decide (record progress)", 1_000_000, |_| {
        black_box(Goal::decide(black_box(&command), &state, &context).unwrap());
    });
}

/// Sealing a reflection's text with its owner's data key (XChaCha20-Poly1305), as a command
/// does before it appends, and opening it again, as a read model does before it answers.
fn seal_and_open() {
    const N: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(
        KeyRing::unlock(
            Arc::new(SqliteKeys::open(&dir.path().join("keys.db")).unwrap()),
            MasterKey::parse(&MasterKey::generate()).unwrap(),
            None,
        )
        .unwrap(),
    );
    let reflection: Event = pb::GoalReflected {
        goal_id: "g-1".into(),
        text: "The reviews went better once the agenda came a day ahead; next quarter I want to \
               run one myself."
            .into(),
        reflected_by: "m-1".into(),
        ..Default::default()
    }
    .into();
    let (stream, id) = ("acme/goal-g-1", uuid::Uuid::nil());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut events = vec![reflection.clone(); N];
        // The first seal creates the member's key; the rest find it in memory, as a server does.
        let mut first = reflection.clone();
        keys.seal("acme", "m-1", stream, id, &mut first)
            .await
            .unwrap();
        let started = Instant::now();
        for event in &mut events {
            keys.seal("acme", "m-1", stream, id, event).await.unwrap();
        }
        report("seal personal text", N as u64, started.elapsed());
        let started = Instant::now();
        for event in &mut events {
            keys.open("acme", stream, id, event).await.unwrap();
        }
        report("open personal text", N as u64, started.elapsed());
        assert_eq!(events[N - 1], reflection);
    });
}

/// The evaluation briefs' fold of goals (each set, then progressed nine times, 1,000 members) and
/// the encoding of the documents it changed, as a catch-up's window does them.
fn fold_and_encode() {
    let events: Vec<Event> = (0..10_000).flat_map(goal_story).collect();
    let store = MemoryDocuments::default();
    let id = uuid::Uuid::nil();
    let fold = |documents: &mut Documents<'_>, i: u64| {
        let applied = Applied {
            event: &events[i as usize],
            id,
            tenant: "acme",
            stream: "acme/goal",
            recorded_at: 1_796_119_200_000_000,
            position: Position::from_sequence(i + 1),
        };
        EvaluationBriefs.apply(applied, documents).unwrap();
    };
    let mut documents = Documents::new(&store);
    measure("evaluation fold (goal events)", events.len() as u64, |i| {
        fold(&mut documents, i)
    });
    // Five windows' worth, each folded afresh: one encoding of 20,000 documents is too short to
    // time alone.
    let (mut encoded, mut took) = (0, std::time::Duration::ZERO);
    let mut writes = Vec::new();
    for _ in 0..5 {
        let mut documents = Documents::new(&store);
        (0..events.len() as u64).for_each(|i| fold(&mut documents, i));
        let started = Instant::now();
        writes = black_box(documents.take_writes().unwrap());
        took += started.elapsed();
        encoded += writes.len() as u64;
    }
    report("changed documents encoded", encoded, took);
    // Read back, as the next window's fold reads a goal that it progresses.
    let goals: Vec<&[u8]> = (writes.iter())
        .filter_map(|write| match write {
            Write::Put { model, body, .. } if model == evaluation::GOALS => Some(&body[..]),
            _ => None,
        })
        .collect();
    measure("goal document decoded", goals.len() as u64 * 10, |i| {
        let body = goals[i as usize % goals.len()];
        black_box(decode::<GoalDoc>(body).unwrap());
    });
}

/// Goal `g-{goal}` of member `m-{goal % 1000}`: set by its owner with one key result (its text
/// sealed), then progressed nine times.
fn goal_story(goal: u64) -> impl Iterator<Item = Event> {
    let (id, owner) = (format!("g-{goal}"), format!("m-{}", goal % 1000));
    let set: Event = pb::GoalSet {
        goal_id: id.clone(),
        owner_id: owner.clone(),
        period: "2026-H2".into(),
        kind: pb::GoalKind::Growth.into(),
        // Sealed, as the server stores personal text: a key id, a nonce, and the ciphertext of
        // the goal's personal text with its tag.
        sealed: Some(pb::Sealed {
            key_id: uuid::Uuid::from_u128(u128::from(goal % 1000)).to_string(),
            nonce: vec![7; 24],
            ciphertext: vec![9; 96],
        }),
        key_results: vec![pb::KeyResult {
            key_result_id: "kr-1".into(),
            description: "three reviews held".into(),
            target: 3.0,
            unit: "reviews".into(),
        }],
        set_by: owner.clone(),
        ..Default::default()
    }
    .into();
    let progress = (0..9).map(move |step| {
        pb::GoalProgressRecorded {
            goal_id: id.clone(),
            key_result_id: "kr-1".into(),
            value: f64::from(step),
            recorded_by: owner.clone(),
            ..Default::default()
        }
        .into()
    });
    std::iter::once(set).chain(progress)
}
