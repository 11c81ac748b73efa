//! A synthetic history for benchmarks: 1on1 stories of a realistic mix (a session scheduled and
//! held with an action item, an insight shared for evaluation, a goal with progress), their text
//! sealed with each member's key as the server stores it, appended straight to an event store by
//! concurrent writers (much faster than through the commands).

use std::sync::Arc;

use ledger_domain::{Aggregate, Event, Goal, Insight, Session, TenantId, pb, to_timestamp};
use ledger_privacy::KeyRing;
use ledger_store::{Error, EventStore, ExpectedVersion, Metadata, NewEvent, StreamName};
use uuid::Uuid;

/// Events in one story.
pub const EVENTS_PER_STORY: usize = 8;
/// Concurrent writers: the server's group commit sees as many appends at once as under load.
const WRITERS: usize = 64;
/// 2026-12-01T10:00:00Z
const DEC_1: i64 = 1_796_119_200_000_000;

/// What to write.
#[derive(Debug, Clone)]
pub struct History {
    pub tenant: TenantId,
    /// Stories are spread over this many members.
    pub members: usize,
    /// At least this many events (whole stories).
    pub events: usize,
}

impl History {
    /// Appends the stories and returns how many events were written.
    pub async fn write(
        &self,
        store: Arc<dyn EventStore>,
        keys: Arc<KeyRing>,
    ) -> Result<u64, Error> {
        let stories = self.events.div_ceil(EVENTS_PER_STORY);
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let (store, keys, history) = (store.clone(), keys.clone(), self.clone());
                tokio::spawn(async move {
                    let mut written = 0;
                    for i in (writer..stories).step_by(WRITERS) {
                        written += history.append_story(store.as_ref(), &keys, i).await?;
                    }
                    Ok::<u64, Error>(written)
                })
            })
            .collect();
        let mut written = 0;
        for writer in writers {
            written += writer.await.expect("a writer does not panic")?;
        }
        Ok(written)
    }

    async fn append_story(
        &self,
        store: &dyn EventStore,
        keys: &Arc<KeyRing>,
        i: usize,
    ) -> Result<u64, Error> {
        let member = format!("m{}", i % self.members);
        let mut written = 0;
        for (stream, events) in self.story(&member, i) {
            let mut batch = Vec::with_capacity(events.len());
            for mut event in events {
                let id = Uuid::new_v4();
                keys.seal(self.tenant.as_str(), &member, &stream, id, &mut event)
                    .await
                    .map_err(|e| Error::Backend(format!("sealing: {e}").into()))?;
                batch.push(NewEvent {
                    id,
                    event_type: event.type_name().into(),
                    payload: event.encode().into(),
                    metadata: Metadata::default(),
                });
            }
            written += batch.len() as u64;
            let stream = StreamName::new(stream).map_err(|e| Error::Backend(e.into()))?;
            store
                .append(&stream, ExpectedVersion::NoStream, batch)
                .await?;
        }
        Ok(written)
    }

    /// Story `i` of `member`: its streams and their events, in the order they are appended.
    pub fn story(&self, member: &str, i: usize) -> [(String, Vec<Event>); 3] {
        let tenant = &self.tenant;
        let (session_id, insight_id, goal_id) = (format!("s{i}"), format!("i{i}"), format!("g{i}"));
        let scheduled = pb::SessionScheduled {
            session_id: session_id.clone(),
            member_id: member.to_owned(),
            partner_id: format!("m{}", (i + 1) % self.members),
            relationship: pb::Relationship::Horizontal.into(),
            purposes: vec![
                pb::Purpose::Growth.into(),
                pb::Purpose::CareerAutonomy.into(),
            ],
            scheduled_at: Some(to_timestamp(DEC_1)),
            ..Default::default()
        };
        let held = pb::SessionHeld {
            session_id: session_id.clone(),
            held_at: Some(to_timestamp(DEC_1)),
            duration_minutes: 30,
        };
        let agreed = pb::ActionItemAgreed {
            session_id: session_id.clone(),
            item_id: "a".into(),
            owner_id: member.to_owned(),
            ..Default::default()
        };
        let recorded = pb::InsightRecorded {
            insight_id: insight_id.clone(),
            subject_id: member.to_owned(),
            session_id: session_id.clone(),
            kind: pb::InsightKind::Strength.into(),
            tags: vec!["python".into(), "mentoring".into()],
            text: "enjoys teaching".into(),
            scopes: vec![pb::SharingScope::Participants.into()],
            ..Default::default()
        };
        let shared = pb::InsightShared {
            insight_id: insight_id.clone(),
            added: vec![pb::SharingScope::Evaluation.into()],
            ..Default::default()
        };
        let set = pb::GoalSet {
            goal_id: goal_id.clone(),
            owner_id: member.to_owned(),
            period: "2026-H2".into(),
            title: "grow".into(),
            ..Default::default()
        };
        let progress = |value| pb::GoalProgressRecorded {
            goal_id: goal_id.clone(),
            value,
            ..Default::default()
        };
        [
            (
                tenant.stream(Session::KIND, &session_id),
                vec![scheduled.into(), held.into(), agreed.into()],
            ),
            (
                tenant.stream(Insight::KIND, &insight_id),
                vec![recorded.into(), shared.into()],
            ),
            (
                tenant.stream(Goal::KIND, &goal_id),
                vec![set.into(), progress(1.0).into(), progress(2.0).into()],
            ),
        ]
    }
}
