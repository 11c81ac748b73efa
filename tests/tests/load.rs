//! The load generator against a server it starts: the organisation is set up, every command of
//! the mix is acknowledged, queries and the subscription get answers, and the JSON report says so;
//! and on a history `fill` wrote, which the run waits for the projections to fold; and the gRPC
//! baseline's health checks.

use std::path::Path;
use std::process::Command;

use ledger_e2e::server::{load_binary, server_binary};

/// What a run with `args` (a subcommand's, or the command mix's) reported: its JSON figures and
/// its output (for failure messages). Fails unless the run succeeded.
fn run_reported(dir: &Path, args: &[&str]) -> (serde_json::Value, String) {
    let report = dir.join("load.json");
    let output = Command::new(load_binary())
        .args(args)
        .arg("--server-binary")
        .arg(server_binary())
        .arg("--json")
        .arg(&report)
        .output()
        .unwrap();
    let printed = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{printed}");
    let figures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    (figures, printed)
}

/// A command-mix run's report; fails unless no command failed.
fn run_load(dir: &Path, args: &[&str]) -> (serde_json::Value, String) {
    let (figures, printed) = run_reported(dir, args);
    assert_eq!(figures["errors"], serde_json::json!({}), "{printed}");
    (figures, printed)
}

#[test]
fn the_load_generator_drives_every_command_of_the_mix_without_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (figures, printed) = run_load(
        dir.path(),
        &[
            "--clients",
            "2",
            "--seconds",
            "2",
            "--members",
            "16",
            "--queries-per-second",
            "20",
        ],
    );
    assert_eq!(figures["query_errors"], serde_json::json!({}), "{printed}");
    let by_command = figures["by_command"].as_object().unwrap();
    assert_eq!(by_command.len(), 10, "{printed}");
    for (command, latency) in by_command {
        assert!(
            latency["count"].as_u64().unwrap() > 0,
            "{command}: {latency}"
        );
    }
    assert!(figures["commands_per_second"].as_f64().unwrap() > 0.0);
    assert!(figures["queries"]["count"].as_u64().unwrap() > 0);
    assert!(figures["subscription_changes"].as_u64().unwrap() > 0);
    assert!(figures["server_peak_memory_mib"].as_f64().unwrap() > 0.0);
    assert!(figures["server_cpu_cores"].as_f64().unwrap() > 0.0);
    assert!(figures["server_cpu_micros_per_command"].as_f64().unwrap() > 0.0);
    assert!(figures["load_cpu_micros_per_command"].as_f64().unwrap() > 0.0);
    // Every acknowledged command was fsynced to the log, so the server wrote to disk.
    assert!(figures["server_disk_kib_per_command"].as_f64().unwrap() > 0.0);
    assert!(printed.contains("commands/s"), "{printed}");
    assert!(printed.contains("µs per command"), "{printed}");
    assert!(printed.contains("load generator CPU"), "{printed}");
    assert!(printed.contains("KiB per command"), "{printed}");
}

/// A history written by `fill` is what the server then starts on: the run waits until the
/// projections have folded it, reports how long start-up and catch-up took, and drives the load
/// on top without errors.
#[test]
fn a_run_on_a_filled_history_waits_for_the_projections_to_fold_it() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let fill = Command::new(load_binary())
        .args(["fill", "--events", "20000", "--members", "100"])
        .arg("--data-dir")
        .arg(&data_dir)
        .output()
        .unwrap();
    let filled = String::from_utf8_lossy(&fill.stdout);
    assert!(
        fill.status.success(),
        "{filled}\n{}",
        String::from_utf8_lossy(&fill.stderr)
    );
    assert!(
        filled.starts_with("wrote 20000 events for 100 members"),
        "{filled}"
    );

    let (figures, printed) = run_load(
        dir.path(),
        &[
            "--clients",
            "2",
            "--seconds",
            "1",
            "--members",
            "16",
            "--queries-per-second",
            "0",
            "--server-data-dir",
            data_dir.to_str().unwrap(),
        ],
    );
    assert!(printed.contains("projections caught up in"), "{printed}");
    assert!(figures["server_start_seconds"].as_f64().unwrap() > 0.0);
    assert!(figures["server_ready_seconds"].as_f64().unwrap() > 0.0);
    assert!(figures["catch_up_seconds"].as_f64().is_some(), "{figures}");
    assert!(figures["server_memory_mib"].as_f64().unwrap() > 0.0);
    // The server ran on the given directory (kept), not a temporary one.
    let read_models = std::fs::read_dir(data_dir.join("readmodels")).unwrap();
    assert!(read_models.count() > 0, "no read models beside the history");
}

/// The transport's baseline calls the server it starts and reports what the calls cost each side.
#[test]
fn the_grpc_baseline_reports_the_calls_and_what_each_side_spent() {
    let dir = tempfile::tempdir().unwrap();
    let (figures, printed) = run_reported(
        dir.path(),
        &["grpc-baseline", "--clients", "2", "--seconds", "1"],
    );
    let calls = figures["calls"].as_u64().unwrap();
    assert!(calls > 0, "{figures}");
    assert_eq!(figures["latency"]["count"].as_u64(), Some(calls));
    assert!(figures["server_cpu_micros_per_call"].as_f64().unwrap() > 0.0);
    assert!(figures["load_cpu_micros_per_call"].as_f64().unwrap() > 0.0);
    assert!(printed.contains("calls/s"), "{printed}");
    assert!(printed.contains("µs per call"), "{printed}");
}
