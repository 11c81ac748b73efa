//! The log as a process's projections read it: one reader of the log, each page read and
//! decoded once for every projection that folds it.
//!
//! A runner joins the shared reading at its checkpoint when the reading has not yet passed it
//! (the first to join sets where the reading starts); otherwise it reads on its own, and tries
//! again each time it has read up to the log's head. Joined runners fold the same pages in step:
//! the reading hands a page to each of them in turn and waits for the slowest, so the pages in
//! memory stay few however far behind they are.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use ledger_domain::Event;
use ledger_store::{EventStore, EventSubscription, Position, RecordedEvent};
use tokio::sync::{mpsc, oneshot};

/// Events per page.
pub(crate) const PAGE: usize = 4096;
/// How long a page at the log's head gathers the events that come.
const LIVE_PAGE: Duration = Duration::from_millis(10);

/// Events read from the log together, each decoded once, by the first fold that needs it.
#[derive(Debug)]
pub(crate) struct LogPage {
    pub(crate) events: Vec<RecordedEvent>,
    decoded: OnceLock<Vec<Decoded>>,
}

/// A recorded event as a domain event: `None` if it is none the projections know, `Err` with
/// why if its payload does not decode.
pub(crate) type Decoded = Result<Option<Event>, String>;

impl LogPage {
    pub(crate) fn new(events: Vec<RecordedEvent>) -> Self {
        Self {
            events,
            decoded: OnceLock::new(),
        }
    }

    pub(crate) fn decoded(&self) -> &[Decoded] {
        self.decoded.get_or_init(|| {
            (self.events.iter())
                .map(|recorded| {
                    Event::decode(&recorded.event_type, &recorded.payload).map_err(|e| {
                        format!("{} at {}: {e}", recorded.event_type, recorded.position)
                    })
                })
                .collect()
        })
    }
}

/// A page as one runner folds it.
#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) log: Arc<LogPage>,
    /// Events at the start that the runner had already folded.
    pub(crate) skip: usize,
    /// The page reached the log's head: the fold commits it at once.
    pub(crate) drained: bool,
}

/// Why feeding a runner stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fed {
    /// The store closed.
    Closed,
    /// Reading the log failed; try again shortly.
    Lost,
    /// The fold stopped taking pages (another runner moved the checkpoint).
    Stopped,
}

/// The shared reading of the log; see the module's comment.
#[derive(Debug, Clone)]
pub struct SharedLog {
    store: Arc<dyn EventStore>,
    joins: mpsc::Sender<Join>,
}

/// A runner asking to be fed from `after` on.
struct Join {
    after: Option<Position>,
    pages: mpsc::Sender<Page>,
    /// `Ok` with where its feeding will end, or its pages back if the reading has passed `after`.
    answer: oneshot::Sender<Result<oneshot::Receiver<Fed>, mpsc::Sender<Page>>>,
}

struct Member {
    after: Option<Position>,
    pages: mpsc::Sender<Page>,
    ended: oneshot::Sender<Fed>,
}

impl SharedLog {
    /// Starts the shared reading (on the current Tokio runtime); it ends with the last clone.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        let (joins, requests) = mpsc::channel(16);
        tokio::spawn(read_for_members(store.clone(), requests));
        Self { store, joins }
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Feeds `pages` with the log after `after` until the store closes or the fold stops taking
    /// pages: from the shared reading once it can join it, on its own until then.
    pub(crate) async fn feed(
        &self,
        name: &str,
        after: Option<Position>,
        mut pages: mpsc::Sender<Page>,
    ) -> Fed {
        let mut after = after;
        let mut events: Option<EventSubscription> = None;
        loop {
            let stopped = pages.clone();
            pages = match self.join(after, pages).await {
                Ok(ended) => {
                    // Live, the log may stay quiet for long: a fold that stopped must not wait
                    // for the next page to be heard.
                    return tokio::select! {
                        ended = ended => ended.unwrap_or(Fed::Stopped),
                        () = stopped.closed() => Fed::Stopped,
                    };
                }
                Err(pages) => pages,
            };
            // Read on its own up to the head, then try to join again.
            let events = events.get_or_insert_with(|| self.store.subscribe_all(after));
            loop {
                let (page, end) = match read_page(name, self.store.as_ref(), events, &pages).await {
                    Ok(read) => read,
                    Err(fed) => return fed,
                };
                after = page.last().or(after);
                let drained = page.drained;
                if pages.send(Page::whole(page)).await.is_err() {
                    return Fed::Stopped;
                }
                if let Some(end) = end {
                    return end;
                }
                if drained {
                    break;
                }
            }
        }
    }

    async fn join(
        &self,
        after: Option<Position>,
        pages: mpsc::Sender<Page>,
    ) -> Result<oneshot::Receiver<Fed>, mpsc::Sender<Page>> {
        let (answer, answered) = oneshot::channel();
        let request = Join {
            after,
            pages,
            answer,
        };
        match self.joins.send(request).await {
            Ok(()) => answered
                .await
                .expect("the shared reading answers while it runs"),
            Err(mpsc::error::SendError(request)) => Err(request.pages),
        }
    }
}

impl Page {
    fn whole(log: ReadPage) -> Self {
        Self {
            log: Arc::new(LogPage::new(log.events)),
            skip: 0,
            drained: log.drained,
        }
    }
}

/// The shared reading: idle without members; the first member sets where it starts.
async fn read_for_members(store: Arc<dyn EventStore>, mut requests: mpsc::Receiver<Join>) {
    let mut members: Vec<Member> = Vec::new();
    // Where the reading stands: every member has been sent every event up to here.
    let mut read_to: Option<Position> = None;
    let mut sent_any = false;
    let mut events: Option<EventSubscription> = None;
    loop {
        let Some(mut reading) = events.take() else {
            // No members: wait for one, and start reading where it stands.
            let Some(request) = requests.recv().await else {
                return;
            };
            (read_to, sent_any) = (request.after, false);
            admit(&mut members, request);
            events = Some(store.subscribe_all(read_to));
            continue;
        };
        // Wait for the next event or a runner asking to join, whichever comes first.
        let first = tokio::select! {
            request = requests.recv() => {
                let Some(request) = request else { return };
                if request.after >= read_to {
                    admit(&mut members, request);
                } else if !sent_any {
                    // Nothing sent yet: start earlier, where this one stands.
                    read_to = request.after;
                    reading = store.subscribe_all(read_to);
                    admit(&mut members, request);
                } else {
                    let _ = request.answer.send(Err(request.pages));
                }
                events = Some(reading);
                continue;
            }
            first = reading.next() => first,
        };
        let (page, end) = match fill_page(store.as_ref(), first, &mut reading).await {
            Ok((page, end)) => (Some(page), end),
            Err(end) => (None, Some(end)),
        };
        if let Some(page) = page {
            read_to = page.last().or(read_to);
            sent_any = true;
            send_to_members(&mut members, page).await;
        }
        match end {
            _ if members.is_empty() => {}
            Some(Fed::Lost) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                events = Some(store.subscribe_all(read_to));
            }
            Some(fed) => end_all(&mut members, fed),
            None => events = Some(reading),
        }
    }
}

/// Hands the page to each member in turn (waiting while one's fold is behind), less the
/// events each had already folded; forgets members whose fold stopped.
async fn send_to_members(members: &mut Vec<Member>, page: ReadPage) {
    let last = page.last();
    let drained = page.drained;
    let log = Arc::new(LogPage::new(page.events));
    let mut kept = Vec::with_capacity(members.len());
    for mut member in members.drain(..) {
        let skip = (log.events.iter())
            .take_while(|e| Some(e.position) <= member.after)
            .count();
        if skip == log.events.len() {
            kept.push(member);
            continue;
        }
        member.after = last;
        let page = Page {
            log: log.clone(),
            skip,
            drained,
        };
        if member.pages.send(page).await.is_ok() {
            kept.push(member);
        } else {
            let _ = member.ended.send(Fed::Stopped);
        }
    }
    *members = kept;
}

fn admit(members: &mut Vec<Member>, request: Join) {
    let (ended, ending) = oneshot::channel();
    if request.answer.send(Ok(ending)).is_ok() {
        members.push(Member {
            after: request.after,
            pages: request.pages,
            ended,
        });
    }
}

/// Ends every member's feeding: the log closed or failed.
fn end_all(members: &mut Vec<Member>, fed: Fed) {
    for member in members.drain(..) {
        let _ = member.ended.send(fed);
    }
}

/// Events read at once, before the page is folded.
struct ReadPage {
    events: Vec<RecordedEvent>,
    drained: bool,
}

impl ReadPage {
    fn last(&self) -> Option<Position> {
        self.events.last().map(|e| e.position)
    }
}

/// Reads the next page for a runner on its own; stops early if its fold stopped.
async fn read_page(
    name: &str,
    store: &dyn EventStore,
    events: &mut EventSubscription,
    pages: &mpsc::Sender<Page>,
) -> Result<(ReadPage, Option<Fed>), Fed> {
    // Live, the log may stay quiet for long: a fold that stopped (its checkpoint moved
    // elsewhere, or an event did not decode) must not wait for the next event to be heard.
    let first = tokio::select! {
        first = events.next() => first,
        () = pages.closed() => return Err(Fed::Stopped),
    };
    fill_page(store, first, events).await.inspect_err(|fed| {
        if *fed == Fed::Lost {
            tracing::warn!(projection = name, "projection lost the log; resubscribing");
        }
    })
}

/// A page starting with `first`, up to where the log's head stood when the page began: live,
/// that is a moment's events, and the page goes at once (drained: the fold commits it); catching
/// up, the head is far ahead and the page fills up, however slowly a busy machine reads.
/// Returns the page and how the log ended after it, if it did; `Err` if it ended before.
async fn fill_page(
    store: &dyn EventStore,
    first: Option<Result<RecordedEvent, ledger_store::Error>>,
    events: &mut EventSubscription,
) -> Result<(ReadPage, Option<Fed>), Fed> {
    let first = match first {
        Some(Ok(event)) => event,
        end => return Err(ended(end)),
    };
    // Not knowing the head (the store did not answer), the page goes with its first event.
    let stood = store.head().await.ok().flatten();
    let mut page = ReadPage {
        events: vec![first],
        drained: false,
    };
    let began = tokio::time::Instant::now();
    while page.events.len() < PAGE {
        let next = if page.last() >= stood {
            // At the head: what comes within a few milliseconds joins the page (one commit
            // for several moments' events costs the fold less than one for each).
            match tokio::time::timeout_at(began + LIVE_PAGE, events.next()).await {
                Ok(next) => next,
                Err(_) => {
                    page.drained = true;
                    break;
                }
            }
        } else {
            events.next().await
        };
        match next {
            Some(Ok(event)) => page.events.push(event),
            end => return Ok((page, Some(ended(end)))),
        }
    }
    Ok((page, None))
}

fn ended(end: Option<Result<RecordedEvent, ledger_store::Error>>) -> Fed {
    match end {
        Some(Err(ledger_store::Error::Closed)) | None => Fed::Closed,
        Some(Err(error)) => {
            tracing::warn!(%error, "reading the log failed");
            Fed::Lost
        }
        Some(Ok(_)) => unreachable!("an event is not an end"),
    }
}
