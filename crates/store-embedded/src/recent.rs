//! The newest events, kept in memory as the writer commits them, so that subscribers at the
//! log's head (the projections' shared reading, the audit trees, the privacy follower) take them
//! from here instead of reading each page back from SQLite on a blocking thread.

use std::collections::VecDeque;
use std::sync::Mutex;

use ledger_store::RecordedEvent;

use crate::sequence_of;

/// Events kept: a few seconds of heavy load. A subscriber further behind reads from SQLite.
pub(crate) const KEPT: usize = 8192;

/// Consecutive events of the global log, the newest last. It may hold events committed but not
/// yet durable: readers take only what the acknowledged head covers.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    events: Mutex<VecDeque<RecordedEvent>>,
}

fn sequence(event: &RecordedEvent) -> u64 {
    sequence_of(event.position)
}

impl Recent {
    /// Adds a commit's events, in log order.
    pub(crate) fn extend(&self, committed: Vec<RecordedEvent>) {
        let mut events = self.events.lock().unwrap();
        let follows = match (events.back(), committed.first()) {
            (Some(last), Some(first)) => sequence(last) + 1 == sequence(first),
            _ => true,
        };
        if !follows {
            // Only consecutive events say by their place which sequence each has.
            events.clear();
        }
        events.extend(committed);
        let excess = events.len().saturating_sub(KEPT);
        events.drain(..excess);
    }

    /// The events after sequence `after` up to sequence `upto`, at most `limit`: `None` unless
    /// every one of them is here.
    pub(crate) fn after(&self, after: u64, upto: u64, limit: usize) -> Option<Vec<RecordedEvent>> {
        let events = self.events.lock().unwrap();
        let first = sequence(events.front()?);
        let last = sequence(events.back()?);
        if after + 1 < first || upto > last {
            return None;
        }
        let start = usize::try_from(after + 1 - first).ok()?;
        let end = usize::try_from(upto + 1 - first).ok()?.min(start + limit);
        Some(events.range(start..end.max(start)).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use ledger_store::{Metadata, Position, StreamName, Timestamp};
    use uuid::Uuid;

    use super::*;

    fn event(sequence: u64) -> RecordedEvent {
        RecordedEvent {
            stream: StreamName::new("t/s-1").unwrap(),
            revision: sequence,
            position: Position::from_sequence(sequence),
            id: Uuid::new_v4(),
            event_type: "test".into(),
            payload: Bytes::new(),
            metadata: Metadata::default(),
            recorded_at: Timestamp::from_micros(0),
        }
    }

    fn sequences(events: Option<Vec<RecordedEvent>>) -> Option<Vec<u64>> {
        events.map(|events| events.iter().map(sequence).collect())
    }

    #[test]
    fn serves_only_what_it_holds_whole() {
        let recent = Recent::default();
        assert_eq!(sequences(recent.after(0, 1, 10)), None);
        recent.extend((5..=9).map(event).collect());
        assert_eq!(sequences(recent.after(4, 9, 10)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(sequences(recent.after(6, 8, 10)), Some(vec![7, 8]));
        assert_eq!(sequences(recent.after(4, 9, 2)), Some(vec![5, 6]));
        assert_eq!(sequences(recent.after(9, 9, 10)), Some(vec![]));
        // Before the first kept, or past the last: storage must answer.
        assert_eq!(sequences(recent.after(3, 9, 10)), None);
        assert_eq!(sequences(recent.after(4, 10, 10)), None);
    }

    #[test]
    fn keeps_the_newest_consecutive_events() {
        let recent = Recent::default();
        recent.extend((1..=KEPT as u64).map(event).collect());
        recent.extend(vec![event(KEPT as u64 + 1)]);
        assert_eq!(sequences(recent.after(0, 5, 10)), None);
        assert_eq!(sequences(recent.after(1, 3, 10)), Some(vec![2, 3]));
        // A gap forgets what came before it.
        recent.extend(vec![event(KEPT as u64 + 5)]);
        assert_eq!(sequences(recent.after(1, 3, 10)), None);
        let last = KEPT as u64 + 5;
        assert_eq!(
            sequences(recent.after(last - 1, last, 10)),
            Some(vec![last])
        );
    }
}
