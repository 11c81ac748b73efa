//! Aggregate states kept in memory between commands, so that a command reads neither its own
//! stream nor the streams its decision consults from the log. Only where this process is the
//! log's one writer (the embedded store, locked to it): every append to an aggregate's stream then
//! goes through the command handler, which records the new state before it answers, so an entry is
//! never behind an acknowledged append. Bounded: past the capacity, an arbitrary quarter of the
//! entries is dropped; a miss reads the log, except for a command that starts its aggregate
//! (decided on no stream, its state kept only if the append wrote it).

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ledger_domain::Aggregate;
use ledger_store::Position;

/// One command's outcome on a stream, to recognise its retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Handled {
    pub(crate) command_id: String,
    pub(crate) hash: String,
    /// The revision and position of the command's last event.
    pub(crate) revision: u64,
    pub(crate) position: Position,
}

/// An aggregate's stream, folded: what a command decides on (by default, no stream yet).
#[derive(Debug, Clone, Default)]
pub(crate) struct Loaded<A> {
    pub(crate) state: A,
    pub(crate) version: Option<u64>,
    /// The commands handled on the stream, oldest first.
    pub(crate) handled: Arc<Vec<Handled>>,
}

/// The states, by stream name.
#[derive(Debug)]
pub(crate) struct States {
    entries: Mutex<HashMap<String, Box<dyn Any + Send + Sync>>>,
    capacity: usize,
}

impl States {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::default(),
            capacity,
        }
    }

    pub(crate) fn get<A: Aggregate>(&self, stream: &str) -> Option<Loaded<A>> {
        let entries = self.entries.lock().expect("never poisoned");
        entries.get(stream)?.downcast_ref::<Loaded<A>>().cloned()
    }

    /// Keeps `loaded` unless a later version of the stream is kept already.
    pub(crate) fn put<A: Aggregate>(&self, stream: &str, loaded: Loaded<A>) {
        let mut entries = self.entries.lock().expect("never poisoned");
        let kept = (entries.get(stream))
            .and_then(|entry| entry.downcast_ref::<Loaded<A>>())
            .map(|kept| kept.version);
        if kept.is_some_and(|kept| kept >= loaded.version) {
            return;
        }
        if entries.len() >= self.capacity && !entries.contains_key(stream) {
            let mut turn = 0usize;
            entries.retain(|_, _| {
                turn += 1;
                !turn.is_multiple_of(4)
            });
        }
        entries.insert(stream.to_owned(), Box::new(loaded));
    }

    /// Forgets the stream's state: the log says what it is.
    pub(crate) fn forget(&self, stream: &str) {
        self.entries.lock().expect("never poisoned").remove(stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_domain::OrgUnit;

    fn loaded(version: Option<u64>) -> Loaded<OrgUnit> {
        Loaded {
            state: OrgUnit::default(),
            version,
            handled: Arc::default(),
        }
    }

    #[test]
    fn a_state_is_only_replaced_by_a_later_one() {
        let states = States::new(8);
        states.put("acme/org-unit-a", loaded(Some(3)));
        states.put("acme/org-unit-a", loaded(Some(2)));
        assert_eq!(
            states.get::<OrgUnit>("acme/org-unit-a").unwrap().version,
            Some(3)
        );
        states.put("acme/org-unit-a", loaded(Some(4)));
        assert_eq!(
            states.get::<OrgUnit>("acme/org-unit-a").unwrap().version,
            Some(4)
        );
        states.forget("acme/org-unit-a");
        assert!(states.get::<OrgUnit>("acme/org-unit-a").is_none());
    }

    #[test]
    fn past_the_capacity_entries_are_dropped() {
        let states = States::new(8);
        for i in 0..100 {
            states.put(&format!("acme/org-unit-{i}"), loaded(Some(0)));
        }
        let kept = (0..100)
            .filter(|i| {
                states
                    .get::<OrgUnit>(&format!("acme/org-unit-{i}"))
                    .is_some()
            })
            .count();
        assert!((1..=8).contains(&kept), "{kept}");
        // The latest is always kept.
        assert!(states.get::<OrgUnit>("acme/org-unit-99").is_some());
    }
}
