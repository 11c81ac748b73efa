//! What a run measured, as a table on stdout and as JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::RunOptions;

/// Microseconds from 1 µs to a minute, to 3 significant figures.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Latency {
    pub(crate) count: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
}

impl Latency {
    pub(crate) fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.5)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct Figures {
    pub(crate) clients: usize,
    pub(crate) members: usize,
    pub(crate) seconds: f64,
    /// Acknowledged commands.
    pub(crate) commands: u64,
    pub(crate) commands_per_second: f64,
    pub(crate) all_commands: Latency,
    pub(crate) by_command: BTreeMap<String, Latency>,
    /// Failures by command and gRPC code.
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) queries_per_second: f64,
    pub(crate) queries: Option<Latency>,
    pub(crate) query_errors: BTreeMap<String, u64>,
    /// Query ticks skipped because every query slot was taken (the rate was not met).
    pub(crate) queries_dropped: u64,
    /// Brief changes the subscription received.
    pub(crate) subscription_changes: u64,
    /// The furthest-behind projection's lag, sampled every 250 ms.
    pub(crate) projection_lag: Latency,
    /// From the server's start to answering its health check (a server this run started).
    pub(crate) server_start_seconds: Option<f64>,
    /// From its start to ready: SERVING, its projections within the readiness lag.
    pub(crate) server_ready_seconds: Option<f64>,
    /// How long after serving its projections caught up with the history it started on.
    pub(crate) catch_up_seconds: Option<f64>,
    pub(crate) server_peak_memory_mib: Option<f64>,
    /// Resident at the end of the run.
    pub(crate) server_memory_mib: Option<f64>,
    /// The server's CPU time while the clients drove it, over the run's length: how many cores
    /// it kept busy. On a shared machine this, not commands/s alone, shows what a change saved.
    pub(crate) server_cpu_cores: Option<f64>,
    /// The server's CPU time per acknowledged command, in microseconds.
    pub(crate) server_cpu_micros_per_command: Option<f64>,
    /// What the server wrote to disk per acknowledged command, in KiB: the log, its
    /// checkpoints and the read models together.
    pub(crate) server_disk_kib_per_command: Option<f64>,
    /// The load generator's own CPU time per acknowledged command, in microseconds: on one
    /// machine, what it takes is not the server's.
    pub(crate) load_cpu_micros_per_command: Option<f64>,
}

/// What was measured of a server this run started.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) started_in: Option<Duration>,
    pub(crate) ready_in: Option<Duration>,
    pub(crate) caught_up_in: Option<Duration>,
    pub(crate) peak_memory_kib: Option<u64>,
    pub(crate) memory_kib: Option<u64>,
    /// CPU seconds the server used while the clients drove it.
    pub(crate) cpu_seconds: Option<f64>,
    /// Bytes the server sent to disk while the clients drove it.
    pub(crate) disk_written_bytes: Option<u64>,
}

impl Figures {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        options: &RunOptions,
        elapsed: Duration,
        commands: &BTreeMap<&'static str, Histogram<u64>>,
        errors: BTreeMap<String, u64>,
        queries: Option<&Histogram<u64>>,
        query_errors: BTreeMap<String, u64>,
        queries_dropped: u64,
        subscription_changes: u64,
        lag: &Histogram<u64>,
        load_cpu_seconds: Option<f64>,
        server: Server,
    ) -> Self {
        let mib = |kib: Option<u64>| kib.map(|k| k as f64 / 1024.0);
        let mut all = crate::report::histogram();
        for histogram in commands.values() {
            all.add(histogram).expect("same bounds");
        }
        let seconds = elapsed.as_secs_f64();
        Self {
            clients: options.clients,
            members: options.members,
            seconds,
            commands: all.len(),
            commands_per_second: all.len() as f64 / seconds,
            all_commands: Latency::of(&all),
            by_command: (commands.iter())
                .map(|(what, h)| ((*what).to_owned(), Latency::of(h)))
                .collect(),
            errors,
            queries_per_second: queries.map_or(0.0, |q| q.len() as f64 / seconds),
            queries: queries.map(Latency::of),
            query_errors,
            queries_dropped,
            subscription_changes,
            projection_lag: Latency::of(lag),
            server_start_seconds: server.started_in.map(|d| d.as_secs_f64()),
            server_ready_seconds: server.ready_in.map(|d| d.as_secs_f64()),
            catch_up_seconds: server.caught_up_in.map(|d| d.as_secs_f64()),
            server_peak_memory_mib: mib(server.peak_memory_kib),
            server_memory_mib: mib(server.memory_kib),
            server_cpu_cores: server.cpu_seconds.map(|cpu| cpu / seconds),
            server_cpu_micros_per_command: (server.cpu_seconds)
                .filter(|_| !all.is_empty())
                .map(|cpu| cpu * 1e6 / all.len() as f64),
            server_disk_kib_per_command: (server.disk_written_bytes)
                .filter(|_| !all.is_empty())
                .map(|bytes| bytes as f64 / 1024.0 / all.len() as f64),
            load_cpu_micros_per_command: load_cpu_seconds
                .filter(|_| !all.is_empty())
                .map(|cpu| cpu * 1e6 / all.len() as f64),
        }
    }
}

/// The heading of the latency rows that [`row`] prints.
fn header() {
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency (ms)", "count", "p50", "p99", "p99.9", "max"
    );
}

fn row(what: &str, latency: &Latency) {
    println!(
        "{what:<22} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
        latency.count, latency.p50_ms, latency.p99_ms, latency.p999_ms, latency.max_ms
    );
}

pub(crate) fn print(figures: &Figures) {
    println!(
        "{} clients, {} members, {:.1} s: {} commands acknowledged, {:.0} commands/s",
        figures.clients,
        figures.members,
        figures.seconds,
        figures.commands,
        figures.commands_per_second
    );
    header();
    row("all commands", &figures.all_commands);
    for (what, latency) in &figures.by_command {
        row(what, latency);
    }
    if let Some(queries) = &figures.queries {
        row("GetEvaluationBrief", queries);
        println!(
            "queries: {:.0}/s ({} ticks dropped: every query slot taken)",
            figures.queries_per_second, figures.queries_dropped
        );
    }
    row("projection lag", &figures.projection_lag);
    println!(
        "subscription changes received: {}",
        figures.subscription_changes
    );
    for (what, count) in figures.errors.iter().chain(&figures.query_errors) {
        println!("errors: {what}: {count}");
    }
    if let (Some(started), Some(ready)) =
        (figures.server_start_seconds, figures.server_ready_seconds)
    {
        println!(
            "server answering {started:.2} s after it started, ready (SERVING) after {ready:.2} s"
        );
    }
    if let Some(seconds) = figures.catch_up_seconds {
        println!("projections caught up with the history {seconds:.1} s after serving");
    }
    if let (Some(peak), Some(now)) = (figures.server_peak_memory_mib, figures.server_memory_mib) {
        println!("server memory: peak {peak:.0} MiB, {now:.0} MiB at the end");
    }
    if let (Some(cores), Some(micros)) = (
        figures.server_cpu_cores,
        figures.server_cpu_micros_per_command,
    ) {
        println!("server CPU: {cores:.2} cores busy, {micros:.0} µs per command");
    }
    if let Some(kib) = figures.server_disk_kib_per_command {
        println!("server disk writes: {kib:.1} KiB per command");
    }
    if let Some(micros) = figures.load_cpu_micros_per_command {
        println!("load generator CPU: {micros:.0} µs per command");
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct BaselineFigures {
    pub(crate) clients: usize,
    pub(crate) seconds: f64,
    pub(crate) payload_bytes: usize,
    pub(crate) events: u64,
    pub(crate) events_per_second: f64,
    pub(crate) latency: Latency,
    pub(crate) conflicts: u64,
}

pub(crate) fn print_baseline(figures: &BaselineFigures) {
    println!(
        "PostgreSQL INSERT per event with a version check: {} clients, {:.1} s, {} events, {:.0} events/s ({} conflicts)",
        figures.clients,
        figures.seconds,
        figures.events,
        figures.events_per_second,
        figures.conflicts
    );
    header();
    row("INSERT", &figures.latency);
}

#[derive(Debug, Serialize)]
pub(crate) struct GrpcBaselineFigures {
    pub(crate) clients: usize,
    pub(crate) seconds: f64,
    pub(crate) calls: u64,
    pub(crate) calls_per_second: f64,
    pub(crate) latency: Latency,
    /// Of a server this run started, as for the command mix.
    pub(crate) server_cpu_cores: Option<f64>,
    pub(crate) server_cpu_micros_per_call: Option<f64>,
    pub(crate) load_cpu_micros_per_call: Option<f64>,
}

pub(crate) fn print_grpc_baseline(figures: &GrpcBaselineFigures) {
    println!(
        "gRPC health checks through the server's stack: {} clients, {:.1} s, {} calls, {:.0} calls/s",
        figures.clients, figures.seconds, figures.calls, figures.calls_per_second
    );
    header();
    row("Health/Check", &figures.latency);
    if let (Some(cores), Some(micros)) =
        (figures.server_cpu_cores, figures.server_cpu_micros_per_call)
    {
        println!("server CPU: {cores:.2} cores busy, {micros:.1} µs per call");
    }
    if let Some(micros) = figures.load_cpu_micros_per_call {
        println!("load generator CPU: {micros:.1} µs per call");
    }
}
