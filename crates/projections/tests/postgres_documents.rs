//! The PostgreSQL document store: the checkpoint compare-and-set, key-range scans, the change
//! feed, and one lease per projection across processes. Runs when `LEDGER_TEST_PG_URL` is set.

use ledger_projections::postgres::PostgresDocuments;
use ledger_projections::{Checkpoint, DocumentStore, Error, Write};
use ledger_store::Position;
use ledger_store_postgres::PostgresStore;
use ledger_store_postgres::testing::{TestSchema, database_url};

fn put(model: &str, key: &str, body: &str) -> Write {
    Write::Put {
        model: model.into(),
        key: key.into(),
        body: body.as_bytes().to_vec(),
    }
}

fn at(n: u64) -> Checkpoint {
    Checkpoint {
        version: 1,
        position: Position::from_sequence(n),
    }
}

/// Two stores on one fresh schema, as two replicas would have.
async fn replicas() -> Option<(PostgresDocuments, PostgresDocuments, TestSchema)> {
    let url = database_url()?;
    let schema = TestSchema::new(&url);
    // The event store creates the schema, as the server does.
    let events = PostgresStore::connect(&url, &schema.name).await.unwrap();
    events.close().await.unwrap();
    let (url, name) = (url.clone(), schema.name.clone());
    let (one, two) = tokio::task::spawn_blocking(move || {
        (
            PostgresDocuments::connect(&url, &name).unwrap(),
            PostgresDocuments::connect(&url, &name).unwrap(),
        )
    })
    .await
    .unwrap();
    Some((one, two, schema))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_scans_changes_and_leases() {
    let Some((one, two, _schema)) = replicas().await else {
        return;
    };
    tokio::task::spawn_blocking(move || {
        one.commit(
            "p",
            None,
            at(1),
            &[put("m", "acme/a_1", "1"), put("m", "acme/ab", "2")],
            &["m"],
        )
        .unwrap();
        // The other replica saw no checkpoint either: its commit must not land.
        let late = two.commit("p", None, at(1), &[put("m", "acme/zz", "9")], &["m"]);
        assert!(matches!(late, Err(Error::Conflict)), "{late:?}");
        assert_eq!(two.get("m", "acme/zz").unwrap(), None);
        assert_eq!(two.checkpoint("p").unwrap(), Some(at(1)));

        two.commit(
            "p",
            Some(at(1)),
            at(2),
            &[
                put("m", "acme/b", "3"),
                put("internal", "acme/x", "4"),
                put("m", "globex/a", "5"),
            ],
            &["m"],
        )
        .unwrap();
        // A prefix is a key range: `_` is not a wildcard, and other tenants stay out.
        let scanned: Vec<_> = one
            .scan("m", "acme/a")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(scanned, ["acme/a_1", "acme/ab"]);
        assert_eq!(one.scan("m", "acme/a_").unwrap().len(), 1);
        let changed = |tenant: &str, after: u64| -> Vec<String> {
            (one.changes(tenant, after, 100).unwrap().into_iter())
                .map(|c| c.key)
                .collect()
        };
        assert_eq!(
            changed("acme", 0),
            ["acme/a_1", "acme/ab", "acme/b"],
            "internal models and other tenants stay out"
        );
        assert_eq!(changed("globex", 0), ["globex/a"]);
        assert!(changed("acm", 0).is_empty(), "a tenant is not a key prefix");
        let first = one.changes("acme", 0, 100).unwrap()[0].seq;
        assert_eq!(changed("acme", first), ["acme/ab", "acme/b"]);

        one.reset("p", &["m"]).unwrap();
        assert_eq!(two.checkpoint("p").unwrap(), None);
        assert!(two.scan("m", "").unwrap().is_empty());
        assert_eq!(two.get("internal", "acme/x").unwrap(), Some(b"4".to_vec()));

        let lease = one
            .lease("p")
            .unwrap()
            .expect("the first replica gets the lease");
        assert!(
            two.lease("p").unwrap().is_none(),
            "two replicas hold one projection"
        );
        assert!(
            two.lease("q").unwrap().is_some(),
            "another projection is free"
        );
        drop(lease);
        let mut taken = None;
        for _ in 0..50 {
            taken = two.lease("p").unwrap();
            if taken.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(taken.is_some(), "the lease was not released");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledgers_in_two_schemas_hold_their_own_leases() {
    let Some((one, _, _schema)) = replicas().await else {
        return;
    };
    let Some((other, _, _other_schema)) = replicas().await else {
        return;
    };
    tokio::task::spawn_blocking(move || {
        let _held = one
            .lease("p")
            .unwrap()
            .expect("the first ledger gets its lease");
        assert!(
            other.lease("p").unwrap().is_some(),
            "a ledger in another schema was refused the lease this one holds"
        );
    })
    .await
    .unwrap();
}
