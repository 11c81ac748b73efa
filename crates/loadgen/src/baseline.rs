//! The baseline a team would build on its own: a PostgreSQL table of events, one INSERT per
//! event, the stream's version checked by the primary key (a conflict is a concurrent writer).

use std::time::{Duration, Instant};

use crate::report::{BaselineFigures, Latency};

pub(crate) async fn run(
    url: &str,
    clients: usize,
    duration: Duration,
    payload: usize,
) -> anyhow::Result<BaselineFigures> {
    let config: tokio_postgres::Config = url.parse()?;
    let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(clients)
        .build()?;
    let setup = pool.get().await?;
    setup
        .batch_execute(
            "DROP TABLE IF EXISTS ledger_load_baseline;
             CREATE TABLE ledger_load_baseline (
                 stream TEXT NOT NULL, version BIGINT NOT NULL, payload BYTEA NOT NULL,
                 recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (stream, version)
             );",
        )
        .await?;
    drop(setup);
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut writers = Vec::new();
    for writer in 0..clients {
        let pool = pool.clone();
        writers.push(tokio::spawn(async move {
            let client = pool.get().await?;
            let insert = client
                .prepare(
                    "INSERT INTO ledger_load_baseline (stream, version, payload) VALUES ($1, $2, $3)",
                )
                .await?;
            let stream = format!("stream-{writer}");
            let body = vec![0x5a_u8; payload];
            let mut latencies = crate::report::histogram();
            let (mut version, mut conflicts) = (0i64, 0u64);
            while Instant::now() < deadline {
                let at = Instant::now();
                match client.execute(&insert, &[&stream, &(version + 1), &body]).await {
                    Ok(_) => {
                        latencies.saturating_record(at.elapsed().as_micros() as u64);
                        version += 1;
                    }
                    Err(error) if error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                        conflicts += 1;
                    }
                    Err(error) => return Err(anyhow::Error::from(error)),
                }
            }
            Ok::<_, anyhow::Error>((latencies, conflicts))
        }));
    }
    let mut all = crate::report::histogram();
    let mut conflicts = 0;
    for writer in writers {
        let (latencies, writer_conflicts) = writer.await??;
        all.add(&latencies).expect("same bounds");
        conflicts += writer_conflicts;
    }
    let seconds = started.elapsed().as_secs_f64();
    pool.get()
        .await?
        .batch_execute("DROP TABLE ledger_load_baseline")
        .await?;
    Ok(BaselineFigures {
        clients,
        seconds,
        payload_bytes: payload,
        events: all.len(),
        events_per_second: all.len() as f64 / seconds,
        latency: Latency::of(&all),
        conflicts,
    })
}
