//! Where read models live: documents by model and key, and each projection's checkpoint,
//! written together in one transaction.
//!
//! Documents are encoded with postcard: compact and quick to write and read back, which is most
//! of what catching up costs. The encoding follows the Rust types field by field, so any change
//! to a document type bumps its projection's version (the projection is then rebuilt).
//!
//! Folds build their keys with `[tenant, ...].join("/")`: several per event, and `format!`
//! took 6.7% of a catch-up's CPU where the joins take 2.6%.

use std::any::Any;
use std::collections::HashMap;

use ledger_store::Position;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read model storage failed")]
    Storage(#[from] rusqlite::Error),
    #[error("read model database failed: {0}")]
    Database(String),
    #[error("a stored document does not decode")]
    Document(#[from] postcard::Error),
    #[error("a stored event does not decode")]
    Event(String),
    /// A model or projection the store was not opened for.
    #[error("unknown read model {0}")]
    Unknown(String),
    /// Another runner moved the projection's checkpoint since this one read it.
    #[error("the projection's checkpoint moved under this runner")]
    Conflict,
}

/// How far a projection has folded the log, under which version of its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub version: u32,
    pub position: Position,
}

/// A document that changed, and the number of its latest change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: u64,
    pub model: String,
    pub key: String,
}

/// One change to a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put {
        model: String,
        key: String,
        body: Vec<u8>,
    },
    Delete {
        model: String,
        key: String,
    },
}

/// A read-model store. Blocking: callers run it on blocking threads.
pub trait DocumentStore: Send + Sync + std::fmt::Debug + 'static {
    fn checkpoint(&self, projection: &str) -> Result<Option<Checkpoint>, Error>;
    fn get(&self, model: &str, key: &str) -> Result<Option<Vec<u8>>, Error>;
    /// Reads documents one after another as of one moment, for as long as it lives: a fold
    /// reads many, and one read transaction for them all costs far less than one each. It
    /// sees what was committed when it began; callers keep newer writes at hand themselves.
    fn reads(&self) -> Result<Box<dyn DocumentReads + '_>, Error> {
        Ok(Box::new(EachOnItsOwn(self)))
    }
    /// Every document of `model` whose key starts with `prefix`, in key order.
    fn scan(&self, model: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        self.scan_range(model, prefix, &prefix_end(prefix))
    }
    /// Every document of `model` with a key from `from` (inclusive) to `until` (exclusive), in
    /// key order.
    fn scan_range(
        &self,
        model: &str,
        from: &str,
        until: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, Error>;
    /// Applies `writes` and moves the projection's checkpoint from `from` to `to`, atomically;
    /// [`Error::Conflict`] and nothing written if the checkpoint is no longer `from` (two runners
    /// of one projection never both apply an event). Changes to documents of the `followed`
    /// models enter the change feed.
    fn commit(
        &self,
        projection: &str,
        from: Option<Checkpoint>,
        to: Checkpoint,
        writes: &[Write],
        followed: &[&str],
    ) -> Result<(), Error>;
    /// The documents of `tenant` (keys `{tenant}/...`) changed after change number `after`,
    /// oldest change first, at most `limit`: a subscriber reads its own tenant's changes, however
    /// many other tenants have.
    fn changes(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<Change>, Error>;
    /// The highest change number [`changes`](Self::changes) shows, updated as it grows, for a
    /// store that can show a commit's changes later than the commit itself (the embedded store's
    /// files commit side by side, and a change waits for every lower number). `None`: changes
    /// are visible once the commit that made them has returned.
    fn visible_changes(&self) -> Option<watch::Receiver<u64>> {
        None
    }
    /// Deletes the projection's documents (of `models`) and its checkpoint, for a rebuild.
    fn reset(&self, projection: &str, models: &[&str]) -> Result<(), Error>;
    /// Claims the right to run `projection` in this process for as long as the lease lives;
    /// `None` while another process holds it. A store of one process grants it always.
    fn lease(&self, _projection: &str) -> Result<Option<Lease>, Error> {
        Ok(Some(Lease::exclusive()))
    }
}

/// Documents read as of one moment; see [`DocumentStore::reads`].
pub trait DocumentReads {
    fn get(&mut self, model: &str, key: &str) -> Result<Option<Vec<u8>>, Error>;
    /// As [`DocumentStore::scan`].
    fn scan(&mut self, model: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        self.scan_range(model, prefix, &prefix_end(prefix))
    }
    /// As [`DocumentStore::scan_range`].
    fn scan_range(
        &mut self,
        model: &str,
        from: &str,
        until: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, Error>;
    /// The changes to `tenant`'s documents of the followed models of `model`'s projection after
    /// change number `after`, as of the reads' moment, oldest first, at most `limit` (fewer:
    /// there are no more), where the store can promise that none is missing (a projection's
    /// changes are numbered in the order it commits them, so none numbered lower can commit
    /// later); `None` where it cannot.
    fn changes_with(
        &mut self,
        _model: &str,
        _tenant: &str,
        _after: u64,
        _limit: usize,
    ) -> Result<Option<Vec<Change>>, Error> {
        Ok(None)
    }
}

/// Reads for a store that has nothing to gain from reading together.
struct EachOnItsOwn<'a, S: ?Sized>(&'a S);

impl<S: DocumentStore + ?Sized> DocumentReads for EachOnItsOwn<'_, S> {
    fn get(&mut self, model: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.0.get(model, key)
    }

    fn scan_range(
        &mut self,
        model: &str,
        from: &str,
        until: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, Error> {
        self.0.scan_range(model, from, until)
    }
}

/// The first key after every key that starts with `prefix`.
pub(crate) fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.to_owned();
    end.push(char::MAX);
    end
}

/// The right to run a projection, held until dropped.
#[derive(Debug)]
pub struct Lease {
    /// Dropping it lets the thread that keeps the lease's resource (a database connection) go.
    _release: Option<std::sync::mpsc::Sender<()>>,
}

impl Lease {
    /// A lease with nothing to hold: the store has one process.
    pub fn exclusive() -> Self {
        Self { _release: None }
    }

    /// A lease that lasts as long as `resource` is kept, on a thread of its own (a blocking
    /// database connection must not be dropped inside an async task).
    pub(crate) fn holding<T: Send + 'static>(resource: T) -> Self {
        let (release, released) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let _ = released.recv();
            drop(resource);
        });
        Self {
            _release: Some(release),
        }
    }
}

/// The documents a batch of events touches: each read from the store and decoded once, changed
/// in memory as typed values, and encoded and written back once, as one commit.
pub struct Documents<'a> {
    store: &'a dyn DocumentStore,
    /// Open from the first read that misses the cache until [`Documents::end_reads`].
    reads: Option<Box<dyn DocumentReads + 'a>>,
    /// By model, then key: looking a cached document up allocates nothing.
    cache: Map<Map<Slot>>,
    /// Whether a document changed since the last [`Documents::take_writes`].
    changed: bool,
}

type Map<T> = HashMap<String, T, foldhash::fast::RandomState>;

impl std::fmt::Debug for Documents<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Documents")
            .field("cached", &self.cache.values().map(Map::len).sum::<usize>())
            .finish_non_exhaustive()
    }
}

/// A cached document: its typed value (`None`: absent or deleted), how to encode it, whether
/// it changed, and whether the store may hold it (so deleting what never was writes nothing).
struct Slot {
    value: Option<Box<dyn Any + Send>>,
    encode: Encoder,
    changed: bool,
    stored: bool,
}

/// The cached documents of `model`.
fn of_model<'c>(cache: &'c mut Map<Map<Slot>>, model: &str) -> &'c mut Map<Slot> {
    if !cache.contains_key(model) {
        cache.insert(model.to_owned(), Map::default());
    }
    cache.get_mut(model).expect("inserted above")
}

type Encoder = fn(&(dyn Any + Send)) -> Result<Vec<u8>, Error>;

/// A document as the store keeps it.
pub fn encode<T: Serialize>(document: &T) -> Result<Vec<u8>, Error> {
    Ok(postcard::to_stdvec(document)?)
}

/// A stored document.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    Ok(postcard::from_bytes(body)?)
}

fn encode_as<T: Serialize + 'static>(value: &(dyn Any + Send)) -> Result<Vec<u8>, Error> {
    encode(
        value
            .downcast_ref::<T>()
            .expect("a document keeps its type within a batch"),
    )
}

impl<'a> Documents<'a> {
    pub fn new(store: &'a dyn DocumentStore) -> Self {
        Self {
            store,
            reads: None,
            cache: Map::default(),
            changed: false,
        }
    }

    /// Ends the reads begun since the last call, so that the store sees none in progress (a
    /// read left open would hold back the store's upkeep). The next read that misses the cache
    /// begins anew; a caller that reads after committing must call this in between.
    pub fn end_reads(&mut self) {
        self.reads = None;
    }

    fn slot<T: Serialize + DeserializeOwned + Send + 'static>(
        &mut self,
        model: &str,
        key: &str,
    ) -> Result<&mut Slot, Error> {
        let Self {
            store,
            reads,
            cache,
            ..
        } = self;
        let documents = of_model(cache, model);
        if !documents.contains_key(key) {
            let reads = match reads {
                Some(reads) => reads,
                None => reads.insert(store.reads()?),
            };
            let value = match reads.get(model, key)? {
                Some(body) => Some(Box::new(decode::<T>(&body)?) as Box<dyn Any + Send>),
                None => None,
            };
            let slot = Slot {
                stored: value.is_some(),
                value,
                encode: encode_as::<T>,
                changed: false,
            };
            documents.insert(key.to_owned(), slot);
        }
        Ok(documents.get_mut(key).expect("inserted above"))
    }

    /// A copy of the document.
    pub fn get<T: Serialize + DeserializeOwned + Clone + Send + 'static>(
        &mut self,
        model: &str,
        key: &str,
    ) -> Result<Option<T>, Error> {
        let slot = self.slot::<T>(model, key)?;
        Ok(slot.value.as_ref().map(|v| {
            v.downcast_ref::<T>()
                .expect("a document keeps its type within a batch")
                .clone()
        }))
    }

    /// The document to change in place, created from its default if absent.
    pub fn get_mut<T: Serialize + DeserializeOwned + Default + Send + 'static>(
        &mut self,
        model: &str,
        key: &str,
    ) -> Result<&mut T, Error> {
        self.changed = true;
        let slot = self.slot::<T>(model, key)?;
        slot.changed = true;
        let value = slot.value.get_or_insert_with(|| Box::new(T::default()));
        Ok(value
            .downcast_mut::<T>()
            .expect("a document keeps its type within a batch"))
    }

    /// Replaces the document (without reading what it replaces).
    pub fn put<T: Serialize + DeserializeOwned + Send + 'static>(
        &mut self,
        model: &str,
        key: &str,
        document: T,
    ) -> Result<(), Error> {
        self.overwrite::<T>(model, key, Box::new(document), false);
        Ok(())
    }

    /// Puts the document of a key that the event makes (an aggregate's first event names it), so
    /// the store holds none: deleting it before the next commit writes nothing.
    pub fn create<T: Serialize + DeserializeOwned + Send + 'static>(
        &mut self,
        model: &str,
        key: &str,
        document: T,
    ) -> Result<(), Error> {
        self.overwrite::<T>(model, key, Box::new(document), true);
        Ok(())
    }

    pub fn delete<T: Serialize + DeserializeOwned + Send + 'static>(
        &mut self,
        model: &str,
        key: &str,
    ) -> Result<(), Error> {
        self.changed = true;
        let slot = self.slot::<T>(model, key)?;
        slot.value = None;
        slot.changed = true;
        Ok(())
    }

    /// Caches `value` as the changed document; `new`: the store holds none under `key`.
    fn overwrite<T: Serialize + 'static>(
        &mut self,
        model: &str,
        key: &str,
        value: Box<dyn Any + Send>,
        new: bool,
    ) {
        self.changed = true;
        let documents = of_model(&mut self.cache, model);
        let stored = !new && documents.get(key).is_none_or(|slot| slot.stored);
        let slot = Slot {
            value: Some(value),
            encode: encode_as::<T>,
            changed: true,
            stored,
        };
        documents.insert(key.to_owned(), slot);
    }

    /// The changes to write since the last call, in key order (so the store's B-trees are
    /// written in order). The documents stay cached, as the store holds them once the writes
    /// commit.
    pub fn take_writes(&mut self) -> Result<Vec<Write>, Error> {
        self.changed = false;
        let mut writes = Vec::new();
        let mut models: Vec<_> = self.cache.iter_mut().collect();
        models.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (model, documents) in models {
            let mut slots: Vec<_> = (documents.iter_mut()).filter(|(_, s)| s.changed).collect();
            slots.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (key, slot) in slots {
                slot.changed = false;
                let (model, key) = (model.clone(), key.clone());
                match &slot.value {
                    Some(value) => writes.push(Write::Put {
                        model,
                        key,
                        body: (slot.encode)(value.as_ref())?,
                    }),
                    // Deleting what the store never held writes nothing.
                    None if slot.stored => writes.push(Write::Delete { model, key }),
                    None => {}
                }
                slot.stored = slot.value.is_some();
            }
        }
        Ok(writes)
    }

    /// Whether a document changed since the last [`Documents::take_writes`]: if not, the store
    /// already holds what the events folded since then make of the documents.
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// Drops the cached documents that have no changes to write: once the last writes are
    /// committed, the store gives the same.
    pub fn forget_written(&mut self) {
        for documents in self.cache.values_mut() {
            documents.retain(|_, slot| slot.changed);
        }
    }

    /// [`Documents::forget_written`] once more than `keep` documents are cached: a live fold
    /// finds what its last pages read and wrote without reading it back, while a catch-up's
    /// cache stays bounded.
    pub fn forget_written_beyond(&mut self, keep: usize) {
        if self.cache.values().map(Map::len).sum::<usize>() > keep {
            self.forget_written();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::as_of::MemoryDocuments;

    fn commit(store: &dyn DocumentStore, writes: &[Write]) {
        let from = store.checkpoint("p").unwrap();
        let to = Checkpoint {
            version: 1,
            position: Position::from_sequence(from.map_or(1, |c| c.position.commit() + 1)),
        };
        store.commit("p", from, to, writes, &["m"]).unwrap();
    }

    #[test]
    fn writes_are_what_changed_in_key_order() {
        let store = MemoryDocuments::default();
        let mut documents = Documents::new(&store);
        documents.put("m", "b", 2u32).unwrap();
        documents.put("m", "a", 1u32).unwrap();
        // Deleting what was never stored writes nothing.
        documents.delete::<u32>("m", "never").unwrap();
        let writes = documents.take_writes().unwrap();
        let keys: Vec<_> = writes
            .iter()
            .map(|w| match w {
                Write::Put { key, .. } => key.as_str(),
                Write::Delete { .. } => panic!("{w:?}"),
            })
            .collect();
        assert_eq!(keys, ["a", "b"]);
        commit(&store, &writes);

        let mut documents = Documents::new(&store);
        assert_eq!(documents.get::<u32>("m", "a").unwrap(), Some(1));
        documents.delete::<u32>("m", "a").unwrap();
        *documents.get_mut::<u32>("m", "b").unwrap() += 40;
        // Put without reading, then deleted: it may have been stored, so the delete is written.
        documents.put("m", "c", 3u32).unwrap();
        documents.delete::<u32>("m", "c").unwrap();
        // Created (its key is new), then deleted: there is nothing to write.
        documents.create("m", "d", 4u32).unwrap();
        documents.delete::<u32>("m", "d").unwrap();
        let writes = documents.take_writes().unwrap();
        assert_eq!(writes.len(), 3, "{writes:?}");
        assert!(writes.contains(&Write::Delete {
            model: "m".into(),
            key: "a".into()
        }));
        assert!(writes.contains(&Write::Put {
            model: "m".into(),
            key: "b".into(),
            body: encode(&42u32).unwrap()
        }));
        assert!(writes.contains(&Write::Delete {
            model: "m".into(),
            key: "c".into()
        }));
        commit(&store, &writes);
        assert_eq!(store.get("m", "a").unwrap(), None);
    }

    /// A store that counts reads, to see what the cache spares it.
    #[derive(Debug, Default)]
    struct Counting {
        inner: MemoryDocuments,
        reads: std::sync::atomic::AtomicUsize,
    }

    impl DocumentStore for Counting {
        fn checkpoint(&self, projection: &str) -> Result<Option<Checkpoint>, Error> {
            self.inner.checkpoint(projection)
        }
        fn get(&self, model: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
            self.reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.inner.get(model, key)
        }
        fn scan_range(
            &self,
            model: &str,
            from: &str,
            until: &str,
        ) -> Result<Vec<(String, Vec<u8>)>, Error> {
            self.inner.scan_range(model, from, until)
        }
        fn commit(
            &self,
            projection: &str,
            from: Option<Checkpoint>,
            to: Checkpoint,
            writes: &[Write],
            followed: &[&str],
        ) -> Result<(), Error> {
            self.inner.commit(projection, from, to, writes, followed)
        }
        fn changes(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<Change>, Error> {
            self.inner.changes(tenant, after, limit)
        }
        fn reset(&self, projection: &str, models: &[&str]) -> Result<(), Error> {
            self.inner.reset(projection, models)
        }
    }

    #[test]
    fn written_documents_stay_cached_until_forgotten() {
        let store = Counting::default();
        let mut documents = Documents::new(&store);
        *documents.get_mut::<u32>("m", "a").unwrap() = 1;
        assert_eq!(store.reads.load(std::sync::atomic::Ordering::Relaxed), 1);
        let first = documents.take_writes().unwrap();
        assert_eq!(first.len(), 1);
        // The next window reads what the first wrote from the cache while it commits.
        *documents.get_mut::<u32>("m", "a").unwrap() += 1;
        assert_eq!(store.reads.load(std::sync::atomic::Ordering::Relaxed), 1);
        commit(&store, &first);
        // Changed again since the last writes: kept. Nothing else was cached.
        documents.forget_written();
        let second = documents.take_writes().unwrap();
        assert_eq!(
            second,
            [Write::Put {
                model: "m".into(),
                key: "a".into(),
                body: encode(&2u32).unwrap()
            }]
        );
        // Nothing changed since: nothing to write; forgotten, the next read goes to the store.
        assert_eq!(documents.take_writes().unwrap(), []);
        commit(&store, &second);
        documents.forget_written();
        assert_eq!(documents.get::<u32>("m", "a").unwrap(), Some(2));
        assert_eq!(store.reads.load(std::sync::atomic::Ordering::Relaxed), 2);
        // A deletion of what a taken write put is written: the store holds it by then.
        documents.delete::<u32>("m", "a").unwrap();
        let deleted = documents.take_writes().unwrap();
        assert!(matches!(&deleted[..], [Write::Delete { key, .. }] if key == "a"));
    }

    #[test]
    fn written_documents_are_forgotten_only_beyond_the_bound() {
        let store = Counting::default();
        let reads = || store.reads.load(std::sync::atomic::Ordering::Relaxed);
        let mut documents = Documents::new(&store);
        for key in ["a", "b"] {
            *documents.get_mut::<u32>("m", key).unwrap() = 1;
        }
        commit(&store, &documents.take_writes().unwrap());
        documents.forget_written_beyond(2);
        assert_eq!(documents.get::<u32>("m", "a").unwrap(), Some(1));
        assert_eq!(reads(), 2, "a kept document was read again");
        *documents.get_mut::<u32>("m", "c").unwrap() = 1;
        commit(&store, &documents.take_writes().unwrap());
        documents.forget_written_beyond(2);
        assert_eq!(documents.get::<u32>("m", "a").unwrap(), Some(1));
        assert_eq!(reads(), 4, "past the bound, the cache was kept");
    }
}
