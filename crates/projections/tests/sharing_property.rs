//! The sharing invariant, for random histories: a read model never serves an insight outside the
//! scope its subject currently shares it with, nor across tenants.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ledger_domain::{Event, pb};
use ledger_projections::as_of::MemoryDocuments;
use ledger_projections::evaluation::{EvaluationBriefs, brief};
use ledger_projections::staffing::{Staffing, candidates, profile};
use ledger_projections::{Applied, Checkpoint, DocumentStore, Documents, Projection};
use ledger_store::Position;
use proptest::prelude::*;
use uuid::Uuid;

use pb::{InsightKind as Kind, SharingScope as S};

const TENANTS: [&str; 2] = ["acme", "globex"];
const SUBJECTS: [&str; 3] = ["mia", "ren", "ada"];
const KINDS: [Kind; 5] = [
    Kind::Skill,
    Kind::Interest,
    Kind::Strength,
    Kind::CareerAspiration,
    Kind::Condition,
];
const SCOPES: [S; 4] = [S::Participants, S::Evaluation, S::Staffing, S::Hr];
/// 2026-12-01T10:00:00Z: every event's time, so every insight is in period 2026.
const AT: i64 = 1_796_119_200_000_000;

#[derive(Debug, Clone)]
enum Op {
    Record {
        tenant: usize,
        insight: usize,
        subject: usize,
        kind: usize,
        scopes: Vec<usize>,
    },
    Share {
        tenant: usize,
        insight: usize,
        scopes: Vec<usize>,
    },
    Narrow {
        tenant: usize,
        insight: usize,
        scopes: Vec<usize>,
    },
    Retract {
        tenant: usize,
        insight: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let scopes = proptest::collection::vec(0..4usize, 1..3);
    prop_oneof![
        (0..2usize, 0..6usize, 0..3usize, 0..5usize, scopes.clone()).prop_map(
            |(tenant, insight, subject, kind, scopes)| Op::Record {
                tenant,
                insight,
                subject,
                kind,
                scopes
            }
        ),
        (0..2usize, 0..6usize, scopes.clone()).prop_map(|(tenant, insight, scopes)| Op::Share {
            tenant,
            insight,
            scopes
        }),
        (0..2usize, 0..6usize, scopes).prop_map(|(tenant, insight, scopes)| Op::Narrow {
            tenant,
            insight,
            scopes
        }),
        (0..2usize, 0..6usize).prop_map(|(tenant, insight)| Op::Retract { tenant, insight }),
    ]
}

/// What each insight is, by the rules: (tenant, insight) → (subject, kind, scopes, retracted).
type Reference = BTreeMap<(usize, usize), (usize, Kind, BTreeSet<S>, bool)>;

fn scopes_of(indices: &[usize]) -> Vec<i32> {
    indices.iter().map(|i| SCOPES[*i].into()).collect()
}

/// Turns the operations into the events the domain would accept, and the reference state.
fn history(ops: &[Op]) -> (Vec<(usize, Event)>, Reference) {
    let mut reference = Reference::new();
    let mut events = Vec::new();
    for op in ops {
        match op {
            Op::Record {
                tenant,
                insight,
                subject,
                kind,
                scopes,
            } if !reference.contains_key(&(*tenant, *insight)) => {
                let scope_set: BTreeSet<S> = scopes.iter().map(|i| SCOPES[*i]).collect();
                reference.insert(
                    (*tenant, *insight),
                    (*subject, KINDS[*kind], scope_set, false),
                );
                let event = pb::InsightRecorded {
                    insight_id: format!("i{insight}"),
                    subject_id: SUBJECTS[*subject].into(),
                    session_id: "s".into(),
                    kind: KINDS[*kind].into(),
                    tags: vec![format!("tag-of-{}", TENANTS[*tenant]), "python".into()],
                    text: format!("{} secret", TENANTS[*tenant]),
                    scopes: scopes_of(scopes),
                    ..Default::default()
                };
                events.push((*tenant, event.into()));
            }
            Op::Share {
                tenant,
                insight,
                scopes,
            } => {
                if let Some((_, _, current, false)) = reference.get_mut(&(*tenant, *insight)) {
                    current.extend(scopes.iter().map(|i| SCOPES[*i]));
                    let event = pb::InsightShared {
                        insight_id: format!("i{insight}"),
                        added: scopes_of(scopes),
                        explicit_consent: true,
                        ..Default::default()
                    };
                    events.push((*tenant, event.into()));
                }
            }
            Op::Narrow {
                tenant,
                insight,
                scopes,
            } => {
                if let Some((_, _, current, false)) = reference.get_mut(&(*tenant, *insight)) {
                    for i in scopes {
                        current.remove(&SCOPES[*i]);
                    }
                    let event = pb::InsightNarrowed {
                        insight_id: format!("i{insight}"),
                        removed: scopes_of(scopes),
                        ..Default::default()
                    };
                    events.push((*tenant, event.into()));
                }
            }
            Op::Retract { tenant, insight } => {
                if let Some((_, _, _, retracted @ false)) = reference.get_mut(&(*tenant, *insight))
                {
                    *retracted = true;
                    events.push((
                        *tenant,
                        pb::InsightRetracted {
                            insight_id: format!("i{insight}"),
                            ..Default::default()
                        }
                        .into(),
                    ));
                }
            }
            Op::Record { .. } => {}
        }
    }
    (events, reference)
}

fn fold(projection: &dyn Projection, store: &MemoryDocuments, events: &[(usize, Event)]) {
    let mut documents = Documents::new(store);
    for (i, (tenant, event)) in events.iter().enumerate() {
        let applied = Applied {
            event,
            id: Uuid::new_v4(),
            tenant: TENANTS[*tenant],
            stream: "acme/stream",
            recorded_at: AT,
            position: Position::from_sequence(i as u64 + 1),
        };
        projection.apply(applied, &mut documents).unwrap();
    }
    let writes = documents.take_writes().unwrap();
    let to = Checkpoint {
        version: projection.version(),
        position: Position::from_sequence(events.len() as u64 + 1),
    };
    store
        .commit(projection.name(), None, to, &writes, projection.followed())
        .unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn read_models_serve_only_what_is_shared_with_them(ops in proptest::collection::vec(op(), 1..40)) {
        let (events, reference) = history(&ops);
        let store = Arc::new(MemoryDocuments::default());
        fold(&EvaluationBriefs, &store, &events);
        fold(&Staffing, &store, &events);
        for (t, tenant) in TENANTS.iter().enumerate() {
            for (s, subject) in SUBJECTS.iter().enumerate() {
                let shared_with = |scope: S| -> BTreeSet<String> {
                    reference.iter()
                        .filter(|((rt, _), (rs, _, scopes, retracted))| *rt == t && *rs == s && !retracted && scopes.contains(&scope))
                        .map(|((_, i), _)| format!("i{i}"))
                        .collect()
                };
                let served = brief(store.as_ref(), tenant, subject, "2026").unwrap();
                let served_ids: BTreeSet<String> = served.insights.keys().cloned().collect();
                prop_assert_eq!(&served_ids, &shared_with(S::Evaluation), "evaluation brief of {}/{}", tenant, subject);
                for insight in served.insights.values() {
                    prop_assert!(insight.text.shown().starts_with(tenant), "another tenant's text in {}", tenant);
                }
                let staffing_allowed: BTreeSet<String> = reference.iter()
                    .filter(|((rt, _), (rs, kind, scopes, retracted))| *rt == t && *rs == s && !retracted && scopes.contains(&S::Staffing)
                        && matches!(kind, Kind::Skill | Kind::Interest | Kind::Strength | Kind::CareerAspiration))
                    .map(|((_, i), _)| format!("i{i}"))
                    .collect();
                let tags = profile(store.as_ref(), tenant, subject).unwrap();
                let evidence = tags.get("python").map_or(0, |t| t.evidence as usize);
                prop_assert_eq!(evidence, staffing_allowed.len(), "staffing profile of {}/{}", tenant, subject);
                let other = TENANTS[1 - t];
                prop_assert!(!tags.contains_key(&format!("tag-of-{other}")), "a tag crossed tenants");
            }
            let found = candidates(store.as_ref(), tenant, &["python".into()], &["python".into()], 100).unwrap();
            for candidate in found {
                let s = SUBJECTS.iter().position(|x| *x == candidate.member).unwrap();
                let shares = reference.iter().any(|((rt, _), (rs, _, scopes, retracted))| *rt == t && *rs == s && !retracted && scopes.contains(&S::Staffing));
                prop_assert!(shares, "{} found without a staffing-shared insight", candidate.member);
            }
        }
    }
}
