//! Logs and OpenTelemetry: a server span and a duration measurement for every RPC (gRPC semantic
//! conventions), W3C trace context from callers handed on to the events a command appends, and
//! OTLP export over gRPC when the standard `OTEL_EXPORTER_OTLP_*` variables name an endpoint.
//! Without an endpoint nothing is exported and nothing complains.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use anyhow::Context as _;
use opentelemetry::metrics::{Histogram, Meter};
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{KeyValue, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The service name in traces and metrics unless `OTEL_SERVICE_NAME` says otherwise.
pub const DEFAULT_SERVICE_NAME: &str = "dialogue-ledger";
/// The instrumentation scope of the ledger's spans and metrics.
const SCOPE: &str = "dialogue-ledger";

/// The meter of the ledger's metrics (a no-op until [`Telemetry::install`] exports them).
pub fn meter() -> Meter {
    global::meter(SCOPE)
}

/// Counts the embedded store's writer work: appends, events, group commits and the fsyncs that
/// make them durable (appends per fsync is the group commit at work).
pub fn observe_writer(store: ledger_store_embedded::EmbeddedStore) {
    let stats = std::sync::Arc::new(move || store.stats());
    let counter = |name: &'static str,
                   description: &'static str,
                   read: fn(&ledger_store_embedded::WriterStats) -> u64| {
        let stats = stats.clone();
        meter()
            .u64_observable_counter(name)
            .with_description(description)
            .with_callback(move |observer| observer.observe(read(&stats()), &[]))
            .build();
    };
    counter("ledger.store.appends", "Appends acknowledged", |s| {
        s.appends
    });
    counter("ledger.store.events", "Events made durable", |s| s.events);
    counter(
        "ledger.store.commits",
        "Group commits, each holding every append that queued",
        |s| s.commits,
    );
    counter(
        "ledger.store.fsyncs",
        "fsyncs of the log, each making every commit since the last durable",
        |s| s.syncs,
    );
}

/// The permits of `max` subscriptions, counted as `ledger.subscriptions.open` while taken.
pub fn observe_subscriptions(max: usize) -> std::sync::Arc<tokio::sync::Semaphore> {
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(max));
    let observed = permits.clone();
    meter()
        .u64_observable_gauge("ledger.subscriptions.open")
        .with_description("Read-model subscriptions open")
        .with_callback(move |observer| {
            observer.observe((max - observed.available_permits()) as u64, &[]);
        })
        .build();
    permits
}

/// The exporters installed; [`Telemetry::shutdown`] sends what they still hold.
#[derive(Debug, Default)]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
    metrics: Option<SdkMeterProvider>,
}

/// Whether the environment names an OTLP endpoint for `signal` (`TRACES` or `METRICS`).
fn exporting(signal: &str, env: &impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| env(name).is_some_and(|value| !value.trim().is_empty());
    env("OTEL_SDK_DISABLED").as_deref() != Some("true")
        && (set("OTEL_EXPORTER_OTLP_ENDPOINT")
            || set(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")))
}

impl Telemetry {
    /// Installs the log output (stderr, filtered by `RUST_LOG`, default `info`) and, where the
    /// environment names an endpoint, OTLP export of traces and metrics. Runs inside the Tokio
    /// runtime: the exporters' gRPC client lives on it.
    pub fn install() -> anyhow::Result<Self> {
        let env = |name: &str| std::env::var(name).ok();
        global::set_text_map_propagator(TraceContextPropagator::new());
        let resource = || {
            let name = env("OTEL_SERVICE_NAME").unwrap_or_else(|| DEFAULT_SERVICE_NAME.into());
            Resource::builder().with_service_name(name).build()
        };
        let traces = if exporting("TRACES", &env) {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()
                .context("cannot set up the OTLP trace exporter")?;
            Some(
                SdkTracerProvider::builder()
                    .with_resource(resource())
                    .with_batch_exporter(exporter)
                    .build(),
            )
        } else {
            None
        };
        let metrics = if exporting("METRICS", &env) {
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .build()
                .context("cannot set up the OTLP metric exporter")?;
            let provider = SdkMeterProvider::builder()
                .with_resource(resource())
                .with_periodic_exporter(exporter)
                .build();
            global::set_meter_provider(provider.clone());
            Some(provider)
        } else {
            None
        };

        let log_filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // Logs go to stderr, keeping stdout for what a command prints.
        let logs = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(log_filter);
        // Spans of the ledger's own crates only: the exporter's own client must not trace itself.
        let spans = traces.as_ref().map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(SCOPE))
                .with_filter(tracing_subscriber::filter::Targets::new().with_targets([
                    ("dialogue_ledger", tracing::Level::INFO),
                    ("ledger_projections", tracing::Level::INFO),
                ]))
        });
        tracing_subscriber::registry()
            .with(logs)
            .with(spans)
            .try_init()
            .context("cannot install the log output")?;
        if traces.is_some() || metrics.is_some() {
            tracing::info!(
                traces = traces.is_some(),
                metrics = metrics.is_some(),
                "exporting telemetry over OTLP"
            );
        }
        Ok(Self { traces, metrics })
    }

    /// Sends what the exporters still hold and stops them.
    pub async fn shutdown(self) {
        let stopped = tokio::task::spawn_blocking(move || {
            if let Some(traces) = self.traces
                && let Err(error) = traces.shutdown()
            {
                tracing::warn!(%error, "the trace exporter did not stop cleanly");
            }
            if let Some(metrics) = self.metrics
                && let Err(error) = metrics.shutdown()
            {
                tracing::warn!(%error, "the metric exporter did not stop cleanly");
            }
        });
        let _ = stopped.await;
    }
}

/// The W3C trace context a request's events record: the server span's when traces are exported,
/// else the caller's as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: String,
    pub tracestate: String,
}

impl TraceContext {
    fn of(context: &opentelemetry::Context) -> Option<Self> {
        let span = context.span();
        let span = span.span_context();
        span.is_valid().then(|| Self {
            traceparent: format!(
                "00-{}-{}-{:02x}",
                span.trace_id(),
                span.span_id(),
                span.trace_flags().to_u8()
            ),
            tracestate: span.trace_state().header(),
        })
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Wraps every RPC in a server span (child of the caller's W3C trace context) and measures its
/// duration by method and status code.
#[derive(Debug, Clone)]
pub struct RpcTelemetry {
    duration: Histogram<f64>,
}

impl RpcTelemetry {
    pub fn new() -> Self {
        Self {
            duration: meter()
                .f64_histogram("rpc.server.call.duration")
                .with_unit("s")
                .with_description("How long RPCs took, until the last byte of the response")
                .build(),
        }
    }
}

impl Default for RpcTelemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> tower::Layer<S> for RpcTelemetry {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Traced {
            inner,
            duration: self.duration.clone(),
        }
    }
}

/// A service behind [`RpcTelemetry`].
#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
    duration: Histogram<f64>,
}

impl<S, B> tower::Service<http::Request<B>> for Traced<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().trim_start_matches('/').to_owned();
        let (service, method) = path.split_once('/').unwrap_or((&path, ""));
        let span = tracing::info_span!(
            "rpc",
            otel.name = %path,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        let caller = global::get_text_map_propagator(|propagator| {
            propagator.extract(&Headers(request.headers()))
        });
        // Fails only when spans are not exported; then the caller's context is what is recorded.
        let _ = span.set_parent(caller.clone());
        if let Some(trace) = TraceContext::of(&span.context()).or_else(|| TraceContext::of(&caller))
        {
            request.extensions_mut().insert(trace);
        }
        let call = Call {
            attributes: vec![
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", service.to_owned()),
                KeyValue::new("rpc.method", method.to_owned()),
            ],
            span: span.clone(),
            started: Instant::now(),
            code: None,
            duration: self.duration.clone(),
        };
        let response = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(tracing::Instrument::instrument(
            async move {
                let mut call = call;
                let response = response.await?;
                // An error comes as headers only; a reply's status follows its body as trailers.
                call.code = grpc_status(response.headers());
                Ok(response.map(|body| tonic::body::Body::new(Observed { body, call })))
            },
            span,
        ))
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
}

/// One RPC being answered: measured and its span closed when the response is done or dropped.
struct Call {
    attributes: Vec<KeyValue>,
    span: tracing::Span,
    started: Instant,
    code: Option<i32>,
    duration: Histogram<f64>,
}

impl Drop for Call {
    fn drop(&mut self) {
        // A response dropped before its status: the client went away.
        let code = self.code.unwrap_or(tonic::Code::Cancelled as i32);
        self.span.record("rpc.grpc.status_code", code);
        // The server-side error codes of the gRPC semantic conventions.
        if matches!(
            tonic::Code::from(code),
            tonic::Code::Unknown
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Unimplemented
                | tonic::Code::Internal
                | tonic::Code::Unavailable
                | tonic::Code::DataLoss
        ) {
            self.span.record("otel.status_code", "ERROR");
        }
        self.attributes
            .push(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
        self.duration
            .record(self.started.elapsed().as_secs_f64(), &self.attributes);
    }
}

pin_project_lite::pin_project! {
    /// A response body that reads the status from its trailers.
    struct Observed<B> {
        #[pin]
        body: B,
        call: Call,
    }
}

impl<B: http_body::Body> http_body::Body for Observed<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = this.body.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &frame
            && let Some(trailers) = frame.trailers_ref()
        {
            this.call.code = grpc_status(trailers).or(this.call.code);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_needs_an_endpoint_and_is_off_when_the_sdk_is_disabled() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                (vars.iter())
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            }
        };
        assert!(!exporting("TRACES", &env(&[])));
        assert!(!exporting(
            "TRACES",
            &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])
        ));
        let endpoint = &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")];
        assert!(exporting("TRACES", &env(endpoint)));
        assert!(exporting("METRICS", &env(endpoint)));
        let traces_only = &[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://collector:4317",
        )];
        assert!(exporting("TRACES", &env(traces_only)));
        assert!(!exporting("METRICS", &env(traces_only)));
        let disabled = &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_SDK_DISABLED", "true"),
        ];
        assert!(!exporting("TRACES", &env(disabled)));
    }
}
