//! Staffing: only what was shared for staffing, tags that meet across widths and cases, and a
//! ranked search with its reasons.

use ledger_domain::{Event, pb};
use ledger_projections::staffing::{Staffing, candidates, normalise, profile};
use ledger_projections::{
    Applied, Checkpoint, DocumentStore, Documents, EmbeddedDocuments, Projection,
};
use ledger_store::Position;
use uuid::Uuid;

use pb::{InsightKind as Kind, SharingScope as S};

fn recorded(id: &str, subject: &str, kind: Kind, tags: &[&str], scopes: &[S]) -> Event {
    pb::InsightRecorded {
        insight_id: id.into(),
        subject_id: subject.into(),
        session_id: "s-1".into(),
        kind: kind.into(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        text: "never served by staffing".into(),
        scopes: scopes.iter().map(|s| (*s).into()).collect(),
        ..Default::default()
    }
    .into()
}

fn folded(events: &[Event]) -> (tempfile::TempDir, EmbeddedDocuments) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedDocuments::open(dir.path(), &[&Staffing]).unwrap();
    let mut documents = Documents::new(&store);
    for (i, event) in events.iter().enumerate() {
        let at = 1_796_119_200_000_000 + i as i64;
        let applied = Applied {
            event,
            id: Uuid::new_v4(),
            tenant: "acme",
            stream: "acme/stream",
            recorded_at: at,
            position: Position::from_sequence(i as u64 + 1),
        };
        Staffing.apply(applied, &mut documents).unwrap();
    }
    let writes = documents.take_writes().unwrap();
    drop(documents);
    let to = Checkpoint {
        version: Staffing.version(),
        position: Position::from_sequence(events.len() as u64),
    };
    store
        .commit(Staffing.name(), None, to, &writes, Staffing.followed())
        .unwrap();
    (dir, store)
}

#[test]
fn full_width_and_half_width_tags_are_one() {
    assert_eq!(normalise("Ｐｙｔｈｏｎ"), "python");
    assert_eq!(normalise(" PYTHON "), "python");
    assert_eq!(normalise("ﾃﾞｰﾀ分析"), normalise("データ分析"));
    let (_dir, store) = folded(&[
        recorded(
            "i-1",
            "mia",
            Kind::Skill,
            &["Ｐｙｔｈｏｎ"],
            &[S::Participants, S::Staffing],
        ),
        recorded(
            "i-2",
            "mia",
            Kind::Experience,
            &["python", "ﾃﾞｰﾀ分析"],
            &[S::Participants, S::Staffing],
        ),
    ]);
    let tags = profile(&store, "acme", "mia").unwrap();
    assert_eq!(tags["python"].evidence, 2);
    assert_eq!(tags["python"].event_ids.len(), 2);
    assert!(tags.contains_key(&normalise("データ分析")));
}

#[test]
fn only_insights_shared_for_staffing_are_served_and_only_while_they_are() {
    let (_dir, store) = folded(&[
        recorded("i-1", "mia", Kind::Skill, &["python"], &[S::Participants]),
        recorded(
            "i-2",
            "ren",
            Kind::Skill,
            &["python"],
            &[S::Participants, S::Evaluation],
        ),
    ]);
    assert!(profile(&store, "acme", "mia").unwrap().is_empty());
    assert!(
        candidates(&store, "acme", &["python".into()], &[], 10)
            .unwrap()
            .is_empty()
    );

    let shared = pb::InsightShared {
        insight_id: "i-1".into(),
        added: vec![S::Staffing.into()],
        ..Default::default()
    };
    let retracted = pb::InsightRetracted {
        insight_id: "i-1".into(),
        ..Default::default()
    };
    let base = recorded("i-1", "mia", Kind::Skill, &["python"], &[S::Participants]);
    let (_dir, store) = folded(&[base.clone(), shared.clone().into()]);
    assert_eq!(
        candidates(&store, "acme", &["PYTHON".into()], &[], 10).unwrap()[0].member,
        "mia"
    );
    let (_dir, store) = folded(&[base, shared.into(), retracted.into()]);
    assert!(
        candidates(&store, "acme", &["python".into()], &[], 10)
            .unwrap()
            .is_empty()
    );
    assert!(profile(&store, "acme", "mia").unwrap().is_empty());
}

#[test]
fn candidates_are_ranked_with_their_reasons() {
    let staffing = [S::Participants, S::Staffing];
    let (_dir, store) = folded(&[
        recorded("i-1", "mia", Kind::Skill, &["python"], &staffing),
        recorded("i-2", "ren", Kind::Skill, &["python", "rust"], &staffing),
        recorded("i-3", "ada", Kind::Interest, &["python"], &staffing),
        recorded("i-4", "ada", Kind::CareerAspiration, &["data"], &staffing),
    ]);
    let found = candidates(&store, "acme", &["Python".into(), "Rust".into()], &[], 10).unwrap();
    let order: Vec<_> = found.iter().map(|c| c.member.as_str()).collect();
    assert_eq!(order, ["ren", "mia"], "an interest is not a skill");
    assert_eq!(
        found[0].matched_skills.iter().collect::<Vec<_>>(),
        ["python", "rust"]
    );
    let found = candidates(
        &store,
        "acme",
        &[],
        &["ｄａｔａ".into(), "python".into()],
        10,
    )
    .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].member.as_str(), found[0].matched_interests.len()),
        ("ada", 2)
    );
    assert!(
        candidates(&store, "globex", &["python".into()], &[], 10)
            .unwrap()
            .is_empty(),
        "tenants are apart"
    );
}
