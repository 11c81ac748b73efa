//! The verifiable ledger against the real binary: checkpoints and proofs checked with code that
//! uses only RFC 9162's algorithms (written here, not the server's), `verify` over the whole log,
//! and tampering behind the service's back detected and located.

use std::path::Path;
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ledger_e2e::server::{ServerProcess, authed, server_binary, set_up_sales};
use ledger_proto::v1 as api;
use ledger_proto::v1::ledger_client::LedgerClient;
use ledger_proto::v1::org_directory_client::OrgDirectoryClient;
use sha2::{Digest, Sha256};
use tonic::Code;
use tonic::transport::Channel;

/// RFC 9162 section 2.1, from the text, for checking the server from outside.
mod rfc9162 {
    use super::*;

    pub(crate) type Hash = [u8; 32];

    pub(crate) fn leaf_hash(leaf: &[u8]) -> Hash {
        Sha256::new()
            .chain_update([0])
            .chain_update(leaf)
            .finalize()
            .into()
    }

    fn node(left: &[u8], right: &[u8]) -> Hash {
        Sha256::new()
            .chain_update([1])
            .chain_update(left)
            .chain_update(right)
            .finalize()
            .into()
    }

    fn split(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    /// MTH(D[n]).
    pub(crate) fn root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => Sha256::digest([]).into(),
            1 => leaves[0],
            n => node(&root(&leaves[..split(n)]), &root(&leaves[split(n)..])),
        }
    }

    /// 2.1.3.2.
    pub(crate) fn verify_inclusion(
        index: u64,
        size: u64,
        leaf: &[u8],
        proof: &[Vec<u8>],
        root: &[u8],
    ) -> bool {
        if index >= size {
            return false;
        }
        let (mut f, mut s, mut r) = (index, size - 1, leaf.to_vec());
        for p in proof {
            if s == 0 {
                return false;
            }
            if f % 2 == 1 || f == s {
                r = node(p, &r).to_vec();
                while f % 2 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            } else {
                r = node(&r, p).to_vec();
            }
            f >>= 1;
            s >>= 1;
        }
        s == 0 && r == root
    }

    /// 2.1.4.2, for 0 < first < second.
    pub(crate) fn verify_consistency(
        first: u64,
        second: u64,
        proof: &[Vec<u8>],
        first_root: &[u8],
        second_root: &[u8],
    ) -> bool {
        if first == 0 || first >= second || proof.is_empty() {
            return false;
        }
        let mut path = proof.to_vec();
        if first.is_power_of_two() {
            path.insert(0, first_root.to_vec());
        }
        let (mut f, mut s) = (first - 1, second - 1);
        while f % 2 == 1 {
            f >>= 1;
            s >>= 1;
        }
        let (mut fr, mut sr) = (path[0].clone(), path[0].clone());
        for c in &path[1..] {
            if s == 0 {
                return false;
            }
            if f % 2 == 1 || f == s {
                fr = node(c, &fr).to_vec();
                sr = node(c, &sr).to_vec();
                while f % 2 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            } else {
                sr = node(&sr, c).to_vec();
            }
            f >>= 1;
            s >>= 1;
        }
        fr == first_root && sr == second_root && s == 0
    }
}

/// The leaf bytes as documented in proto/dialogue/ledger/v1/ledger.proto.
fn leaf_of(event: &api::LedgerEvent) -> rfc9162::Hash {
    let fields: [&[u8]; 8] = [
        b"dialogue-ledger/leaf/v1",
        event.stream.as_bytes(),
        &event.revision.to_be_bytes(),
        &event.event_id,
        event.event_type.as_bytes(),
        &event.recorded_at_micros.to_be_bytes(),
        &event.metadata,
        &event.payload,
    ];
    let mut leaf = Vec::new();
    for field in fields {
        leaf.extend_from_slice(&(field.len() as u32).to_be_bytes());
        leaf.extend_from_slice(field);
    }
    rfc9162::leaf_hash(&leaf)
}

/// Appends `n` events (org units `{prefix}-0`...) as the HR system.
async fn write_events(server: &ServerProcess, tenant: &str, prefix: &str, n: usize) {
    let token = server.token(tenant, "hr-sync", &["service"]);
    let mut org = OrgDirectoryClient::new(server.channel().await);
    for i in 0..n {
        let request = api::DefineOrgUnitRequest {
            command_id: format!("{prefix}-{i}"),
            org_unit_id: format!("{prefix}-{i}"),
            name: format!("unit {i}"),
            ..Default::default()
        };
        org.define_org_unit(authed(&token, request)).await.unwrap();
    }
}

async fn ledger(server: &ServerProcess) -> LedgerClient<Channel> {
    LedgerClient::new(server.channel().await)
}

fn verifier_key(data_dir: &Path) -> String {
    let output = Command::new(server_binary())
        .arg("checkpoint-key")
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Runs `dialogue-ledger verify`; returns whether it passed and what it printed.
fn run_verify(server: &ServerProcess, token: &str, key: &str, extra: &[&str]) -> (bool, String) {
    let output = Command::new(server_binary())
        .args([
            "verify",
            "--server",
            &server.endpoint(),
            "--token",
            token,
            "--key",
            key,
        ])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        !stdout.is_empty(),
        "verify printed nothing: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), stdout)
}

async fn all_events(client: &mut LedgerClient<Channel>, token: &str) -> Vec<api::LedgerEvent> {
    let mut stream = client
        .replay_all(authed(token, api::ReplayAllRequest { from_leaf_index: 0 }))
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        events.push(event);
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_and_proofs_verify_with_the_rfc_algorithms_alone() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    let auditor = server.token("acme", "audra", &["auditor"]);
    let mut client = ledger(&server).await;
    write_events(&server, "acme", "a", 13).await;
    write_events(&server, "globex", "g", 4).await;

    let first = client
        .get_checkpoint(authed(&auditor, api::GetCheckpointRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (first.origin.as_str(), first.tree_size),
        ("dialogue-ledger/acme", 13)
    );
    write_events(&server, "acme", "b", 9).await;
    let second = client
        .get_checkpoint(authed(&auditor, api::GetCheckpointRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.tree_size, 22);

    // The note is a C2SP checkpoint whose body carries the same size and root.
    let body: Vec<&str> = second.note.lines().collect();
    assert_eq!(
        &body[..3],
        [
            "dialogue-ledger/acme",
            "22",
            &BASE64.encode(&second.root_hash)
        ]
    );
    assert!(
        body.iter()
            .any(|line| line.starts_with("\u{2014} dialogue-ledger ")),
        "unsigned: {}",
        second.note
    );

    // Only the tenant's events, with consecutive leaf indices; the root recomputes from them.
    let events = all_events(&mut client, &auditor).await;
    assert_eq!(events.len(), 22);
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e.leaf_index == i as u64 && e.stream.starts_with("acme/"))
    );
    let leaves: Vec<_> = events.iter().map(leaf_of).collect();
    assert_eq!(rfc9162::root(&leaves).to_vec(), second.root_hash);
    assert_eq!(rfc9162::root(&leaves[..13]).to_vec(), first.root_hash);

    let consistency = api::GetConsistencyProofRequest {
        old_size: 13,
        new_size: 22,
    };
    let proof = client
        .get_consistency_proof(authed(&auditor, consistency))
        .await
        .unwrap()
        .into_inner();
    assert!(rfc9162::verify_consistency(
        13,
        22,
        &proof.hashes,
        &first.root_hash,
        &second.root_hash
    ));
    for index in [0, 5, 12, 13, 21] {
        let request = api::GetInclusionProofRequest {
            leaf_index: index,
            tree_size: 22,
        };
        let proof = client
            .get_inclusion_proof(authed(&auditor, request))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(proof.leaf_hash, leaves[index as usize]);
        assert!(rfc9162::verify_inclusion(
            index,
            22,
            &leaves[index as usize],
            &proof.hashes,
            &second.root_hash
        ));
        assert!(!rfc9162::verify_inclusion(
            index,
            22,
            &leaves[(index as usize + 1) % 22],
            &proof.hashes,
            &second.root_hash
        ));
    }

    // Reads by page and by stream carry the same leaf indices.
    let page = client
        .read_all(authed(
            &auditor,
            api::ReadAllRequest {
                from_leaf_index: 20,
                limit: 10,
            },
        ))
        .await
        .unwrap();
    assert_eq!(page.into_inner().events, events[20..].to_vec());
    let stream = api::ReadStreamRequest {
        stream: "org-unit-b-3".into(),
        limit: 10,
        ..Default::default()
    };
    let read = client
        .read_stream(authed(&auditor, stream))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.events, vec![events[16].clone()]);

    // A live subscription hears the next event with the next leaf index.
    let mut live = client
        .subscribe_all(authed(
            &auditor,
            api::ReplayAllRequest {
                from_leaf_index: 21,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(live.message().await.unwrap().unwrap().leaf_index, 21);
    write_events(&server, "acme", "c", 1).await;
    let next = live.message().await.unwrap().unwrap();
    assert_eq!(
        (next.leaf_index, next.stream.as_str()),
        (22, "acme/org-unit-c-0")
    );

    // Refusals: wrong role, bad sizes; another tenant's auditor sees only its own tree.
    let member = server.token("acme", "mia", &["member"]);
    let denied = client
        .get_checkpoint(authed(&member, api::GetCheckpointRequest {}))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let beyond = api::GetInclusionProofRequest {
        leaf_index: 1,
        tree_size: 999,
    };
    assert_eq!(
        client
            .get_inclusion_proof(authed(&auditor, beyond))
            .await
            .unwrap_err()
            .code(),
        Code::OutOfRange
    );
    let empty_old = api::GetConsistencyProofRequest {
        old_size: 0,
        new_size: 5,
    };
    assert_eq!(
        client
            .get_consistency_proof(authed(&auditor, empty_old))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let globex = server.token("globex", "gus", &["auditor"]);
    let theirs = client
        .get_checkpoint(authed(&globex, api::GetCheckpointRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (theirs.origin.as_str(), theirs.tree_size),
        ("dialogue-ledger/globex", 4)
    );
    assert!(
        all_events(&mut client, &globex)
            .await
            .iter()
            .all(|e| e.stream.starts_with("globex/"))
    );

    // The verify command agrees, and extends a saved checkpoint.
    let key = verifier_key(data_dir.path());
    let saved = data_dir.path().join("checkpoint-1.txt");
    std::fs::write(&saved, &first.note).unwrap();
    let (ok, out) = run_verify(
        &server,
        &auditor,
        &key,
        &["--checkpoint", saved.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("VERIFIED dialogue-ledger/acme: 23 leaves")
            && out.contains("saved checkpoint of 13"),
        "{out}"
    );
}

/// Writes a story, saves a checkpoint, stops the server, lets `tamper` change events.db, and
/// restarts it (with `audit.db` removed too when `rebuild_trees`).
async fn tampered(
    tamper: impl FnOnce(&rusqlite::Connection),
    rebuild_trees: bool,
) -> (
    tempfile::TempDir,
    ServerProcess,
    String,
    String,
    api::SignedCheckpoint,
) {
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    write_events(&server, "acme", "a", 20).await;
    let auditor = server.token("acme", "audra", &["auditor"]);
    let key = verifier_key(data_dir.path());
    let mut client = ledger(&server).await;
    let saved = client
        .get_checkpoint(authed(&auditor, api::GetCheckpointRequest {}))
        .await
        .unwrap()
        .into_inner();
    let (ok, out) = run_verify(&server, &auditor, &key, &[]);
    assert!(ok, "the honest log does not verify: {out}");
    assert!(server.terminate().await.success());

    let db = rusqlite::Connection::open(data_dir.path().join("events.db")).unwrap();
    tamper(&db);
    drop(db);
    if rebuild_trees {
        for file in ["audit.db", "audit.db-wal", "audit.db-shm"] {
            let _ = std::fs::remove_file(data_dir.path().join(file));
        }
    }
    let server = ServerProcess::start(data_dir.path());
    (data_dir, server, auditor, key, saved)
}

fn sql(db: &rusqlite::Connection, statements: &str) {
    db.execute_batch(statements).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_byte_is_found_at_its_leaf() {
    // Position 8 is leaf 7 (one tenant, one event per command).
    let flip_one_byte = |db: &rusqlite::Connection| {
        let mut payload: Vec<u8> = db
            .query_row("SELECT payload FROM events WHERE position = 8", [], |r| {
                r.get(0)
            })
            .unwrap();
        payload[3] ^= 0x01;
        db.execute(
            "UPDATE events SET payload = ?1 WHERE position = 8",
            [payload],
        )
        .unwrap();
    };
    let (_dir, server, auditor, key, _) = tampered(flip_one_byte, false).await;
    let (ok, out) = run_verify(&server, &auditor, &key, &[]);
    assert!(!ok, "tampering went unnoticed: {out}");
    assert!(out.contains("first bad leaf index 7"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_event_is_found_at_its_leaf() {
    let (_dir, server, auditor, key, _) = tampered(
        |db| sql(db, "DELETE FROM events WHERE position = 12"),
        false,
    )
    .await;
    let (ok, out) = run_verify(&server, &auditor, &key, &[]);
    assert!(!ok, "the deletion went unnoticed: {out}");
    assert!(out.contains("first bad leaf index 11"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reordered_events_are_found_at_the_first() {
    let swap = "UPDATE events SET position = -1 WHERE position = 4;
                UPDATE events SET position = 4 WHERE position = 9;
                UPDATE events SET position = 9 WHERE position = -1;";
    let (_dir, server, auditor, key, _) = tampered(|db| sql(db, swap), false).await;
    let (ok, out) = run_verify(&server, &auditor, &key, &[]);
    assert!(!ok, "the reordering went unnoticed: {out}");
    assert!(out.contains("first bad leaf index 3"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_history_fails_against_an_older_checkpoint() {
    // The operator also rebuilds the trees from the altered log: the new checkpoint is
    // self-consistent, but not an extension of what an auditor saved before.
    let (dir, server, auditor, key, saved) = tampered(
        |db| {
            sql(
                db,
                "UPDATE events SET payload = x'0a0178' WHERE position = 5",
            )
        },
        true,
    )
    .await;
    let mut client = ledger(&server).await;
    let current = client
        .get_checkpoint(authed(&auditor, api::GetCheckpointRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(current.tree_size, saved.tree_size);
    assert_ne!(current.root_hash, saved.root_hash);
    let (ok, out) = run_verify(&server, &auditor, &key, &[]);
    assert!(ok, "a rebuilt log verifies on its own: {out}");

    write_events(&server, "acme", "z", 3).await;
    let request = api::GetConsistencyProofRequest {
        old_size: saved.tree_size,
        new_size: saved.tree_size + 3,
    };
    let proof = client
        .get_consistency_proof(authed(&auditor, request))
        .await
        .unwrap()
        .into_inner();
    let newest = client
        .get_checkpoint(authed(&auditor, api::GetCheckpointRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(!rfc9162::verify_consistency(
        saved.tree_size,
        newest.tree_size,
        &proof.hashes,
        &saved.root_hash,
        &newest.root_hash
    ));

    let saved_path = dir.path().join("saved.txt");
    std::fs::write(&saved_path, &saved.note).unwrap();
    let (ok, out) = run_verify(
        &server,
        &auditor,
        &key,
        &["--checkpoint", saved_path.to_str().unwrap()],
    );
    assert!(
        !ok,
        "a rewritten history passed against the saved checkpoint: {out}"
    );
    assert!(out.contains("saved checkpoint"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_of_a_persons_data_is_on_record_for_them() {
    use ledger_proto::v1::sessions_client::SessionsClient;
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    set_up_sales(&server, &[("mia", "mia"), ("lee", "lee"), ("ren", "ren")]).await;
    let mia = server.token("acme", "mia", &["member"]);
    let schedule = api::ScheduleSessionRequest {
        command_id: "s".into(),
        session_id: "s-1".into(),
        member_id: "mia".into(),
        partner_id: "lee".into(),
        purposes: vec![ledger_domain::pb::Purpose::Growth.into()],
        hoped_response: ledger_domain::pb::HopedResponse::JustListen.into(),
        scheduled_at: Some(prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 0,
        }),
        ..Default::default()
    };
    SessionsClient::new(server.channel().await)
        .schedule_session(authed(&mia, schedule))
        .await
        .unwrap();

    let mut client = ledger(&server).await;
    let auditor = server.token("acme", "audra", &["auditor"]);
    assert_eq!(all_events(&mut client, &auditor).await.len(), 5);
    let ren = server.token("acme", "ren", &["member"]);
    let peek = api::ReadStreamRequest {
        stream: "session-s-1".into(),
        ..Default::default()
    };
    assert_eq!(
        client
            .read_stream(authed(&ren, peek))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let list = |person: &str| api::ListAccessRecordsRequest {
        person_id: person.into(),
    };
    assert_eq!(
        client
            .list_access_records(authed(&ren, list("mia")))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    let records = client
        .list_access_records(authed(&mia, list("mia")))
        .await
        .unwrap()
        .into_inner()
        .records;
    let seen: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r.reader.as_str(),
                r.query.rsplit('/').next().unwrap(),
                r.allowed,
            )
        })
        .collect();
    assert!(seen.contains(&("audra", "ReplayAll", true)), "{seen:?}");
    assert!(seen.contains(&("ren", "ReadStream", false)), "{seen:?}");
    assert!(
        seen.contains(&("ren", "ListAccessRecords", false)),
        "{seen:?}"
    );
    assert!(
        seen.contains(&("mia", "ListAccessRecords", true)),
        "{seen:?}"
    );
    assert!(
        records
            .iter()
            .all(|r| r.person_id == "mia" && r.at_micros > 0)
    );
    let audra = records.iter().find(|r| r.reader == "audra").unwrap();
    assert_eq!(audra.reader_roles, ["auditor"]);
    // lee's record shows the replay too, and nobody else's data was touched by ren.
    let hr = server.token("acme", "hiro", &["hr"]);
    let lee = client
        .list_access_records(authed(&hr, list("lee")))
        .await
        .unwrap()
        .into_inner()
        .records;
    assert!(lee.iter().any(|r| r.reader == "audra" && r.allowed));
    let ren_records = client
        .list_access_records(authed(&hr, list("ren")))
        .await
        .unwrap()
        .into_inner()
        .records;
    assert!(
        ren_records
            .iter()
            .all(|r| r.reader != "ren" || r.query.ends_with("ListAccessRecords")),
        "{ren_records:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_servers_data_directory_verifies_offline() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    write_events(&server, "acme", "a", 20).await;
    let auditor = server.token("acme", "audra", &["auditor"]);
    let mut client = ledger(&server).await;
    let saved = client
        .get_checkpoint(authed(&auditor, api::GetCheckpointRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(server.terminate().await.success());
    let saved_path = data_dir.path().join("saved.txt");
    std::fs::write(&saved_path, &saved.note).unwrap();
    let key = verifier_key(data_dir.path());

    let offline = || {
        let output = Command::new(server_binary())
            .args([
                "verify",
                "--tenant",
                "acme",
                "--key",
                &key,
                "--checkpoint",
                saved_path.to_str().unwrap(),
            ])
            .arg("--data-dir")
            .arg(data_dir.path())
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (ok, out) = offline();
    assert!(ok, "{out}");
    assert!(
        out.contains("20 leaves recomputed") && out.contains("saved checkpoint of 20"),
        "{out}"
    );

    let db = rusqlite::Connection::open(data_dir.path().join("events.db")).unwrap();
    let mut payload: Vec<u8> = db
        .query_row("SELECT payload FROM events WHERE position = 8", [], |r| {
            r.get(0)
        })
        .unwrap();
    payload[0] ^= 0x80;
    db.execute(
        "UPDATE events SET payload = ?1 WHERE position = 8",
        [payload],
    )
    .unwrap();
    drop(db);
    let (ok, out) = offline();
    assert!(!ok, "tampering went unnoticed offline: {out}");
    assert!(out.contains("first bad leaf index 7"), "{out}");
}
