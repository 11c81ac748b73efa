//! Subscriptions: catch-up from storage in pages up to the known head, then live, woken by
//! `NOTIFY` (and a once-a-second look at the head, so a missed notification delays, never loses).

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use ledger_store::{Error, EventSubscription, RecordedEvent, StreamName};
use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::rows::{EVENT_COLUMNS, recorded};
use crate::{Head, Shared, from_pg, to_i64};

/// Events read from storage at a time: a subscriber holds at most one page in memory.
const PAGE: usize = 1024;
/// How often the head is read in case a notification was missed.
const HEAD_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub(crate) enum Filter {
    /// Every event after this global position.
    All { after: u64 },
    /// The stream's events after this revision (all when `None`).
    Stream {
        stream: StreamName,
        after: Option<u64>,
    },
}

/// Keeps the shared head current from notifications and polling until the store is dropped.
pub(crate) async fn listen(shared: Weak<Shared>, config: tokio_postgres::Config) {
    loop {
        let Some(channel) = shared.upgrade().map(|s| s.channel.clone()) else {
            return;
        };
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (sender, mut notifications) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(Ok(message)) = messages.next().await {
                        if let AsyncMessage::Notification(notification) = message {
                            let _ = sender.send(notification.payload().to_owned());
                        }
                    }
                });
                if let Err(error) = client.batch_execute(&format!("LISTEN {channel}")).await {
                    tracing::warn!(%error, "cannot listen for appends; retrying");
                } else {
                    let mut poll = tokio::time::interval(HEAD_POLL);
                    loop {
                        tokio::select! {
                            payload = notifications.recv() => match payload {
                                Some(payload) => {
                                    let Some(shared) = shared.upgrade() else { return };
                                    if let Ok(sequence) = payload.parse() {
                                        shared.advance(sequence);
                                    }
                                }
                                None => break,
                            },
                            _ = poll.tick() => {
                                let Some(shared) = shared.upgrade() else { return };
                                match client.query_one("SELECT last FROM head WHERE id = 1", &[]).await {
                                    Ok(row) => shared.advance(row.get::<_, i64>(0) as u64),
                                    Err(_) => break,
                                }
                            }
                        }
                    }
                }
                driver.abort();
            }
            Err(error) => tracing::warn!(%error, "cannot connect to listen for appends; retrying"),
        }
        tokio::time::sleep(HEAD_POLL).await;
    }
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
        ended: false,
    };
    futures::stream::unfold(state, Subscription::next).boxed()
}

struct Subscription {
    shared: Arc<Shared>,
    filter: Filter,
    head: watch::Receiver<Head>,
    /// Every event up to this position has been read into the buffer (or skipped by the filter).
    scanned: u64,
    buffer: VecDeque<RecordedEvent>,
    ended: bool,
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

    /// Reads the next page of matching events up to `upto`, a committed head: every position up
    /// to it is filled, so the page has no gap.
    async fn fetch(&mut self, upto: u64) -> Result<(), Error> {
        let client = self.shared.client().await?;
        let rows = match &self.filter {
            Filter::All { .. } => {
                let sql = format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 AND position <= $2
                     ORDER BY position LIMIT $3"
                );
                let bounds = (to_i64(self.scanned), to_i64(upto), PAGE as i64);
                client.query(&sql, &[&bounds.0, &bounds.1, &bounds.2]).await
            }
            Filter::Stream { stream, after } => {
                let sql = format!(
                    "SELECT {EVENT_COLUMNS} FROM events
                     WHERE stream = $1 AND revision > $2 AND position <= $3
                     ORDER BY revision LIMIT $4"
                );
                let after = after.map_or(-1, to_i64);
                let bounds = (to_i64(upto), PAGE as i64);
                client
                    .query(&sql, &[&stream.as_str(), &after, &bounds.0, &bounds.1])
                    .await
            }
        }
        .map_err(from_pg)?;
        let page: Vec<RecordedEvent> = rows.iter().map(recorded).collect::<Result<_, _>>()?;
        self.scanned = match page.last() {
            Some(last) if page.len() == PAGE => last.position.commit(),
            _ => upto,
        };
        if let (Filter::Stream { after, .. }, Some(last)) = (&mut self.filter, page.last()) {
            *after = Some(last.revision);
        }
        self.buffer.extend(page);
        Ok(())
    }
}
