//! `ledger-load fill`: a long synthetic history written straight into a data directory's
//! embedded event store, so that a run can measure the server with it (`--server-data-dir`).

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use dialogue_ledger::privacy::{PrivacyOptions, open_key_ring};
use dialogue_ledger::store::{Backend, StoreOptions};
use ledger_domain::TenantId;
use ledger_synthetic::History;

pub(crate) async fn run(
    data_dir: &Path,
    events: usize,
    members: usize,
    tenant: &str,
) -> anyhow::Result<()> {
    let tenant = TenantId::parse(tenant).context("the tenant must be [a-z0-9-], 1 to 63")?;
    // As the server opens them, so that it reads what is sealed here.
    let keys = open_key_ring(
        &PrivacyOptions::default(),
        &StoreOptions::Embedded,
        data_dir,
    )
    .await?;
    let store = Backend::open(&StoreOptions::Embedded, data_dir).await?;
    let history = History {
        tenant,
        members,
        events,
    };
    let started = Instant::now();
    let written = history.write(store.shared(), keys).await?;
    store.close().await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "wrote {written} events for {members} members into {} in {seconds:.1} s ({:.0} events/s)",
        data_dir.display(),
        written as f64 / seconds
    );
    Ok(())
}
