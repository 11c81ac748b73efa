//! Read models as they stood at a past point of the log: the projection folded afresh into an
//! in-memory store, up to a position or a time, for one tenant.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ledger_domain::Micros;
use ledger_store::{AllRead, EventStore, Position};

use crate::documents::{Change, Checkpoint, DocumentStore, Error, Write};
use crate::runner::{Projection, fold};

/// Where to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// Up to and including this position.
    Position(Position),
    /// Up to every event recorded at or before this time (microseconds since the epoch).
    Time(Micros),
}

/// A document store in memory, for rebuilds that are thrown away after one query.
#[derive(Debug, Default)]
pub struct MemoryDocuments {
    documents: Mutex<BTreeMap<(String, String), Vec<u8>>>,
    checkpoints: Mutex<BTreeMap<String, Checkpoint>>,
}

impl DocumentStore for MemoryDocuments {
    fn checkpoint(&self, projection: &str) -> Result<Option<Checkpoint>, Error> {
        Ok(self.checkpoints.lock().unwrap().get(projection).copied())
    }

    fn get(&self, model: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .documents
            .lock()
            .unwrap()
            .get(&(model.to_owned(), key.to_owned()))
            .cloned())
    }

    fn scan_range(
        &self,
        model: &str,
        from: &str,
        until: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, Error> {
        if from >= until {
            return Ok(Vec::new()); // `range` would panic
        }
        let documents = self.documents.lock().unwrap();
        let (from, until) = (
            (model.to_owned(), from.to_owned()),
            (model.to_owned(), until.to_owned()),
        );
        Ok(documents
            .range(from..until)
            .map(|((_, key), body)| (key.clone(), body.clone()))
            .collect())
    }

    fn commit(
        &self,
        projection: &str,
        from: Option<Checkpoint>,
        to: Checkpoint,
        writes: &[Write],
        _followed: &[&str],
    ) -> Result<(), Error> {
        let mut checkpoints = self.checkpoints.lock().unwrap();
        if checkpoints.get(projection).copied() != from {
            return Err(Error::Conflict);
        }
        let mut documents = self.documents.lock().unwrap();
        for write in writes {
            match write {
                Write::Put { model, key, body } => {
                    documents.insert((model.clone(), key.clone()), body.clone())
                }
                Write::Delete { model, key } => documents.remove(&(model.clone(), key.clone())),
            };
        }
        checkpoints.insert(projection.to_owned(), to);
        Ok(())
    }

    fn changes(&self, _tenant: &str, _after: u64, _limit: usize) -> Result<Vec<Change>, Error> {
        // A rebuild for one query has no subscribers.
        Ok(Vec::new())
    }

    fn reset(&self, projection: &str, models: &[&str]) -> Result<(), Error> {
        self.documents
            .lock()
            .unwrap()
            .retain(|(model, _), _| !models.contains(&model.as_str()));
        self.checkpoints.lock().unwrap().remove(projection);
        Ok(())
    }
}

/// Folds `tenant`'s events up to `as_of` into a fresh in-memory store. Returns the store and the
/// last position folded.
pub async fn rebuild(
    store: &dyn EventStore,
    projection: Arc<dyn Projection>,
    tenant: &str,
    as_of: AsOf,
) -> Result<(Arc<MemoryDocuments>, Option<Position>), Error> {
    let documents = Arc::new(MemoryDocuments::default());
    let prefix = format!("{tenant}/");
    let (mut after, mut checkpoint) = (None, None);
    loop {
        let page = (store.read_all(AllRead::Forward { after }, 4096).await)
            .map_err(|e| Error::Event(format!("reading the log: {e}")))?;
        let Some(last) = page.last() else { break };
        after = Some(last.position);
        let within = |event: &ledger_store::RecordedEvent| match as_of {
            AsOf::Position(until) => event.position <= until,
            AsOf::Time(until) => event.recorded_at.as_micros() <= until,
        };
        let reached_end = !page.iter().all(within);
        let batch: Vec<_> = page
            .into_iter()
            .take_while(within)
            .filter(|e| e.stream.as_str().starts_with(&prefix))
            .collect();
        if !batch.is_empty() {
            let (memory, folding, from) = (documents.clone(), projection.clone(), checkpoint);
            let folded = tokio::task::spawn_blocking(move || {
                fold(memory.as_ref(), folding.as_ref(), from, batch)
            })
            .await
            .expect("folding does not panic")?;
            checkpoint = Some(folded);
        }
        if reached_end {
            break;
        }
    }
    Ok((documents, checkpoint.map(|c| c.position)))
}
