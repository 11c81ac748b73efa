//! The operator's `export` and `rebuild` commands against the real binary: an export holds every
//! event of the signed checkpoint in order, in proto3 JSON, with personal text still sealed, and
//! only an auditor may take it; a rebuild restores a projection's documents from the log, and
//! refuses a data directory a server is using.

use std::process::{Command, Output};

use ledger_e2e::server::{ServerProcess, authed, server_binary, set_up_sales};
use ledger_proto::v1 as api;
use ledger_proto::v1::ledger_client::LedgerClient;

fn run(args: &[&str]) -> Output {
    Command::new(server_binary()).args(args).output().unwrap()
}

const MARKER: &str = "Quillon Vantablack";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_holds_the_checkpoints_events_in_order_with_personal_text_sealed() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    let channel = server.channel().await;
    set_up_sales(&server, &[("p0", MARKER), ("p1", "Lee"), ("p2", "Ren")]).await;
    let auditor = server.token("acme", "audra", &["auditor"]);
    let checkpoint = LedgerClient::new(channel)
        .get_checkpoint(authed(&auditor, api::GetCheckpointRequest {}))
        .await
        .unwrap()
        .into_inner();

    let file = data_dir.path().join("export.jsonl");
    let endpoint = server.endpoint();
    let output = run(&[
        "export",
        "--server",
        &endpoint,
        "--token",
        &auditor,
        "--json",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["events"], checkpoint.tree_size);
    assert_eq!(summary["origin"], checkpoint.origin);
    // The note is signed afresh each second: its origin, size and root lines are what must agree.
    let body = |note: &str| note.lines().take(3).collect::<Vec<_>>().join("\n");
    let note = summary["note"].as_str().unwrap();
    assert_eq!(body(note), body(&checkpoint.note));
    assert!(note.contains("\n\n— "), "not a signed note: {note}");

    let exported = std::fs::read_to_string(&file).unwrap();
    assert!(
        !exported.contains(MARKER),
        "a display name left the log unsealed"
    );
    let lines: Vec<serde_json::Value> = (exported.lines())
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, checkpoint.tree_size);
    for (index, line) in lines.iter().enumerate() {
        assert_eq!(line["leaf_index"], index as u64, "{line}");
    }
    let defined = (lines.iter())
        .find(|line| line["event_type"] == "dialogue.ledger.events.v1.OrgUnitDefined")
        .expect("the org unit's event");
    assert_eq!(defined["stream"], "acme/org-unit-sales");
    assert_eq!(defined["payload"]["name"], "Sales");
    let extra = defined["metadata"]["extra"].as_array().unwrap();
    assert!(
        extra
            .iter()
            .any(|e| e["key"] == "command_id" && e["value"] == "u"),
        "{extra:?}"
    );
    let registered: Vec<_> = (lines.iter())
        .filter(|line| line["event_type"] == "dialogue.ledger.events.v1.PersonRegistered")
        .collect();
    assert_eq!(registered.len(), 3);
    for line in registered {
        assert!(
            line["payload"]["sealed"]["ciphertext"].is_string(),
            "{line}"
        );
    }

    // Only an auditor (or admin) may take the whole ledger.
    let member = server.token("acme", "p1", &["member"]);
    let refused = run(&["export", "--server", &endpoint, "--token", &member]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("PermissionDenied"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
