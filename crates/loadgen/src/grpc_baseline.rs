//! What the gRPC transport alone allows: each client on a connection of its own (as the command
//! clients are) calls `grpc.health.v1.Health/Check` in a loop. The call goes through the
//! server's whole stack (HTTP/2, the RPC telemetry layer, the request cap, tonic's routing) and
//! the clients' (tonic, HTTP/2), and does no work of its own, so its CPU per call is what every
//! command pays before any command work.

use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::ServerOptions;
use crate::report::{GrpcBaselineFigures, Latency};
use crate::server::{Target, own_cpu_seconds};

pub(crate) async fn run(
    server: &ServerOptions,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<GrpcBaselineFigures> {
    let target = Target::open(server).await?;
    let mut channels = Vec::with_capacity(clients);
    for _ in 0..clients {
        channels.push(target.channel().await?);
    }
    let cpu_before = target.cpu_seconds();
    let own_cpu_before = own_cpu_seconds();
    let started = Instant::now();
    let deadline = started + duration;
    let callers = channels.into_iter().map(|channel| {
        tokio::spawn(async move {
            let mut health = HealthClient::new(channel);
            let mut latencies = crate::report::histogram();
            while Instant::now() < deadline {
                let at = Instant::now();
                health.check(HealthCheckRequest::default()).await?;
                latencies.saturating_record(at.elapsed().as_micros() as u64);
            }
            Ok::<_, tonic::Status>(latencies)
        })
    });
    let callers: Vec<_> = callers.collect();
    let mut all = crate::report::histogram();
    for caller in callers {
        all.add(&caller.await??).expect("same bounds");
    }
    let seconds = started.elapsed().as_secs_f64();
    let calls = all.len();
    let server_cpu = target
        .cpu_seconds()
        .zip(cpu_before)
        .map(|(end, start)| end - start);
    let own_cpu = own_cpu_seconds()
        .zip(own_cpu_before)
        .map(|(end, start)| end - start);
    let per_call = |cpu: Option<f64>| {
        cpu.filter(|_| calls > 0)
            .map(|cpu| cpu * 1e6 / calls as f64)
    };
    Ok(GrpcBaselineFigures {
        clients,
        seconds,
        calls,
        calls_per_second: calls as f64 / seconds,
        latency: Latency::of(&all),
        server_cpu_cores: server_cpu.map(|cpu| cpu / seconds),
        server_cpu_micros_per_call: per_call(server_cpu),
        load_cpu_micros_per_call: per_call(own_cpu),
    })
}
