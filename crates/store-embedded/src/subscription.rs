//! Subscriptions: catch-up from storage in pages, then live, woken by the writer's head updates.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::StreamExt;
use ledger_store::{Error, EventSubscription, RecordedEvent, StreamName};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Head, Shared, backend};

/// Events read from storage at a time: a subscriber holds at most two pages in memory (the one
/// it hands out and the next, read ahead), however far behind it is.
const PAGE: usize = 1024;

#[derive(Debug, Clone)]
pub(crate) enum Filter {
    /// Every event after this global sequence.
    All { after: u64 },
    /// The stream's events after this revision (all when `None`).
    Stream {
        stream: StreamName,
        after: Option<u64>,
    },
}

pub(crate) fn subscribe(shared: Arc<Shared>, filter: Filter) -> EventSubscription {
    let scanned = match filter {
        Filter::All { after } => after,
        Filter::Stream { .. } => 0,
    };
    let head = shared.head.subscribe();
    let state = Subscription {
        shared,
        filter,
        head,
        scanned,
        buffer: VecDeque::new(),
        ahead: None,
        ended: false,
    };
    futures::stream::unfold(state, Subscription::next).boxed()
}

struct Subscription {
    shared: Arc<Shared>,
    filter: Filter,
    head: watch::Receiver<Head>,
    /// Every event up to this global sequence has been read into the buffer (or skipped as not
    /// matching the filter).
    scanned: u64,
    buffer: VecDeque<RecordedEvent>,
    /// The next page, read while the subscriber takes the buffer's events: a subscriber far
    /// behind (a replay, a first fold of the audit trees) would otherwise wait for every page.
    ahead: Option<Ahead>,
    ended: bool,
}

/// A page being read ahead, of the events after the subscription's `scanned` up to `upto`.
struct Ahead {
    upto: u64,
    page: JoinHandle<Result<Vec<RecordedEvent>, Error>>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(ahead) = self.ahead.take() {
            ahead.page.abort();
        }
    }
}

impl Subscription {
    async fn next(mut self) -> Option<(Result<RecordedEvent, Error>, Self)> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return Some((Ok(event), self));
            }
            if self.ended {
                return None;
            }
            let head = *self.head.borrow_and_update();
            if self.scanned < head.sequence {
                if let Err(error) = self.fetch(head.sequence).await {
                    self.ended = true;
                    return Some((Err(error), self));
                }
            } else if !head.open {
                self.ended = true;
                return Some((Err(Error::Closed), self));
            } else if self.head.changed().await.is_err() {
                self.ended = true;
            }
        }
    }

    /// Reads the next page of matching events up to `upto` (or takes the page read ahead, up to
    /// where it was asked to read), and when it is full begins to read the one after it.
    async fn fetch(&mut self, upto: u64) -> Result<(), Error> {
        let (upto, page) = match self.ahead.take() {
            Some(ahead) => (ahead.upto, ahead.page.await.map_err(backend)??),
            None => {
                let page = read(self.shared.clone(), self.filter.clone(), self.scanned, upto);
                (upto, page.await?)
            }
        };
        let full = page.len() == PAGE;
        self.scanned = match page.last() {
            Some(last) if full => last.position.commit(),
            _ => upto,
        };
        if let (Filter::Stream { after, .. }, Some(last)) = (&mut self.filter, page.last()) {
            *after = Some(last.revision);
        }
        self.buffer.extend(page);
        if full {
            let next = read(self.shared.clone(), self.filter.clone(), self.scanned, upto);
            self.ahead = Some(Ahead {
                upto,
                page: tokio::spawn(next),
            });
        }
        Ok(())
    }
}

/// The page of `filter`'s events after global sequence `scanned` up to `upto`: at the head from
/// the events the writer keeps in memory, otherwise from storage.
async fn read(
    shared: Arc<Shared>,
    filter: Filter,
    scanned: u64,
    upto: u64,
) -> Result<Vec<RecordedEvent>, Error> {
    let kept = match filter {
        Filter::All { .. } => shared.recent.after(scanned, upto, PAGE),
        Filter::Stream { .. } => None,
    };
    match kept {
        Some(page) => Ok(page),
        None => {
            (shared.scanners)
                .run(move |reader| match &filter {
                    Filter::All { .. } => reader.read_all(scanned, true, upto, PAGE),
                    Filter::Stream { stream, after } => {
                        reader.read_stream_after(stream, *after, upto, PAGE)
                    }
                })
                .await
        }
    }
}
