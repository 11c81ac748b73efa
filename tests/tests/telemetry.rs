//! OpenTelemetry against the real binary: a small OTLP receiver in the test process takes what
//! the server exports. A command sent with a W3C `traceparent` yields a server span in the
//! caller's trace with the gRPC attributes, its decide and append spans beneath it, the same
//! trace context in the metadata of the event it appended, and RPC duration metrics by method and
//! status code; without an endpoint the server exports nothing and says nothing about it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ledger_e2e::server::{ServerProcess, authed};
use ledger_proto::events::EventMetadata;
use ledger_proto::v1 as api;
use ledger_proto::v1::ledger_client::LedgerClient;
use ledger_proto::v1::org_directory_client::OrgDirectoryClient;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric};
use opentelemetry_proto::tonic::trace::v1::{Span, span};
use prost::Message;
use tokio_stream::wrappers::TcpListenerStream;

/// What the receiver was sent.
#[derive(Debug, Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<Span>>>,
    metrics: Arc<Mutex<Vec<Metric>>>,
    service_names: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for resource in request.into_inner().resource_spans {
            let attributes = resource.resource.map(|r| r.attributes).unwrap_or_default();
            if let Some(name) = string_attribute(&attributes, "service.name") {
                self.service_names.lock().unwrap().push(name);
            }
            for scope in resource.scope_spans {
                self.spans.lock().unwrap().extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        for resource in request.into_inner().resource_metrics {
            for scope in resource.scope_metrics {
                self.metrics.lock().unwrap().extend(scope.metrics);
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn value(attributes: &[KeyValue], key: &str) -> Option<any_value::Value> {
    (attributes.iter())
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| attribute.value.clone())
        .and_then(|AnyValue { value }| value)
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    match value(attributes, key)? {
        any_value::Value::StringValue(value) => Some(value),
        _ => None,
    }
}

fn int_attribute(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match value(attributes, key)? {
        any_value::Value::IntValue(value) => Some(value),
        _ => None,
    }
}

/// Starts the receiver on a free port; returns its endpoint.
async fn start_receiver(received: Received) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(received.clone()))
            .add_service(MetricsServiceServer::new(received))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    endpoint
}

/// Waits until `found` finds what it looks for in what was received.
async fn eventually<T>(what: &str, mut found: impl FnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(found) = found() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} never arrived");
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

fn caller_traceparent() -> String {
    format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01")
}

/// Defines org unit sales as a service would that traces its calls: with a W3C `traceparent`.
async fn define_sales_as_a_traced_caller(server: &ServerProcess) {
    let service = server.token("acme", "hr-sync", &["service"]);
    let mut request = authed(
        &service,
        api::DefineOrgUnitRequest {
            command_id: "define-sales".into(),
            org_unit_id: "sales".into(),
            name: "Sales".into(),
            ..Default::default()
        },
    );
    (request.metadata_mut()).insert("traceparent", caller_traceparent().parse().unwrap());
    OrgDirectoryClient::new(server.channel().await)
        .define_org_unit(request)
        .await
        .unwrap();
}

/// The trace context the log's first event recorded, as an auditor reads it.
async fn first_events_traceparent(server: &ServerProcess) -> Option<String> {
    let auditor = server.token("acme", "audra", &["auditor"]);
    let first = api::ReadAllRequest {
        from_leaf_index: 0,
        limit: 1,
    };
    let events = LedgerClient::new(server.channel().await)
        .read_all(authed(&auditor, first))
        .await
        .unwrap()
        .into_inner()
        .events;
    let metadata = EventMetadata::decode(&events[0].metadata[..]).unwrap();
    (metadata.extra.into_iter())
        .find(|entry| entry.key == "traceparent")
        .map(|entry| entry.value)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_metrics_and_the_events_trace_context_reach_an_otlp_receiver() {
    let received = Received::default();
    let endpoint = start_receiver(received.clone()).await;
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with_env(
        data_dir.path(),
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "ledger-under-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ],
    );
    let channel = server.channel().await;
    let admin = server.token("acme", "hr-sync", &["service"]);
    define_sales_as_a_traced_caller(&server).await;
    // A refused call is measured with its code.
    let refused = OrgDirectoryClient::new(channel.clone())
        .define_org_unit(authed(&admin, api::DefineOrgUnitRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let method = "dialogue.ledger.v1.OrgDirectory/DefineOrgUnit";
    let rpc = eventually("the command's server span", || {
        (received.spans.lock().unwrap().iter())
            .find(|span| span.name == method && hex(&span.trace_id) == TRACE_ID)
            .cloned()
    })
    .await;
    assert_eq!(rpc.kind, span::SpanKind::Server as i32);
    assert_eq!(hex(&rpc.parent_span_id), CALLER_SPAN_ID);
    let attributes = &rpc.attributes;
    assert_eq!(
        string_attribute(attributes, "rpc.system").as_deref(),
        Some("grpc")
    );
    assert_eq!(
        string_attribute(attributes, "rpc.service").as_deref(),
        Some("dialogue.ledger.v1.OrgDirectory")
    );
    assert_eq!(
        string_attribute(attributes, "rpc.method").as_deref(),
        Some("DefineOrgUnit")
    );
    assert_eq!(int_attribute(attributes, "rpc.grpc.status_code"), Some(0));
    for child in ["decide", "append"] {
        eventually(child, || {
            (received.spans.lock().unwrap().iter())
                .find(|span| span.name == child && span.trace_id == rpc.trace_id)
                .map(|span| assert_eq!(span.parent_span_id, rpc.span_id, "{child}"))
        })
        .await;
    }
    assert!((received.service_names.lock().unwrap()).contains(&"ledger-under-test".to_owned()));

    // The event carries the server span's context: the trace leads from the event to the request.
    assert_eq!(
        first_events_traceparent(&server).await,
        Some(format!("00-{TRACE_ID}-{}-01", hex(&rpc.span_id)))
    );

    // RPC durations by method and code: the success and the refusal.
    let codes = eventually("rpc.server.call.duration for both calls", || {
        let metrics = received.metrics.lock().unwrap();
        let mut codes: Vec<i64> = (metrics.iter())
            .filter(|metric| metric.name == "rpc.server.call.duration")
            .filter_map(|metric| match &metric.data {
                Some(metric::Data::Histogram(histogram)) => Some(histogram.data_points.clone()),
                _ => None,
            })
            .flatten()
            .filter(|point| {
                string_attribute(&point.attributes, "rpc.method").as_deref()
                    == Some("DefineOrgUnit")
            })
            .filter_map(|point| int_attribute(&point.attributes, "rpc.grpc.status_code"))
            .collect();
        codes.sort_unstable();
        codes.dedup();
        (codes.len() == 2).then_some(codes)
    })
    .await;
    assert_eq!(codes, vec![0, tonic::Code::InvalidArgument as i64]);
    for name in [
        "ledger.store.fsyncs",
        "ledger.append.events",
        "ledger.projection.lag.seconds",
        "ledger.subscriptions.open",
    ] {
        eventually(name, || {
            (received.metrics.lock().unwrap().iter())
                .any(|metric| metric.name == name)
                .then_some(())
        })
        .await;
    }
    // Exporting does not hold up shutdown: what is left is sent and the server exits cleanly.
    assert!(server.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported_and_nothing_complains() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    define_sales_as_a_traced_caller(&server).await;
    // Not exporting, the server has no span of its own: the event records the caller's context.
    assert_eq!(
        first_events_traceparent(&server).await,
        Some(caller_traceparent())
    );
    let log = server.log();
    let complaints: Vec<_> = (log.iter())
        .filter(|line| {
            let line = line.to_lowercase();
            line.contains("error") || line.contains("otlp") || line.contains("opentelemetry")
        })
        .collect();
    assert!(complaints.is_empty(), "{complaints:#?}");
}
