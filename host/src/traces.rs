//! Distributed traces, when `[telemetry] otlp_endpoint` is set: W3C trace
//! context in (`traceparent`/`tracestate`, or a new trace when none comes
//! in) and out to the origin, and a span tree per request, exported over
//! OTLP/HTTP by the OpenTelemetry SDK's batch processor on its own thread.
//!
//! The tree of one request:
//!
//! ```text
//! request  (server; route, method, path, status, request id)
//! ├── component NAME   one per filter call, from the host's own timing
//! │                    (composed middleware: from the times they report)
//! └── origin           (client; the endpoint; its traceparent is the one
//!                       the origin receives)
//! ```
//!
//! Sampling follows the caller: an incoming `traceparent` that is not
//! sampled is not recorded here either (its context still propagates);
//! everything else is. Off (the default), nothing is started: the trace
//! headers pass to the origin untouched, and the access log still names
//! an incoming trace id so lines can be joined with the caller's trace.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

use crate::config::TelemetryConfig;

/// The exporter and tracer; one per process (reloads keep it).
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl Traces {
    /// The tracer `config` asks for; `None` when traces are off.
    pub fn new(config: &TelemetryConfig) -> anyhow::Result<Option<Arc<Traces>>> {
        let Some(url) = &config.otlp_traces_url else {
            return Ok(None);
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| anyhow::anyhow!("telemetry.otlp_endpoint: {e}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "tollgate");
        Ok(Some(Arc::new(Traces {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
        })))
    }

    /// Starts the request span, under the caller's trace if it sent one.
    pub fn start(self: &Arc<Self>, headers: &HeaderMap, method: &str, path: &str) -> RequestTrace {
        let parent = self.propagator.extract(&HeaderExtractor(headers));
        let span = self.tracer.build_with_context(
            opentelemetry::trace::SpanBuilder::from_name("request")
                .with_kind(SpanKind::Server)
                .with_attributes([
                    KeyValue::new("http.request.method", method.to_owned()),
                    KeyValue::new("url.path", path.to_owned()),
                ]),
            &parent,
        );
        RequestTrace {
            traces: self.clone(),
            cx: parent.with_span(span),
            started: Instant::now(),
            started_at: SystemTime::now(),
        }
    }

    /// Sends what is buffered and stops the exporter (at shutdown).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "traces: the exporter did not shut down cleanly");
        }
    }
}

/// The trace id of a valid incoming `traceparent`, when traces are off.
pub fn incoming_trace_id(headers: &HeaderMap) -> Option<String> {
    headers.get("traceparent")?;
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The trace of one request in flight.
pub struct RequestTrace {
    traces: Arc<Traces>,
    cx: Context,
    started: Instant,
    started_at: SystemTime,
}

impl RequestTrace {
    pub fn trace_id(&self) -> String {
        self.cx.span().span_context().trace_id().to_string()
    }

    fn wall(&self, at: Instant) -> SystemTime {
        self.started_at + at.saturating_duration_since(self.started)
    }

    /// Starts the origin span and writes its context into the request
    /// going to the origin, replacing any trace headers it carried.
    pub fn origin(&self, headers: &mut HeaderMap) -> OriginSpan {
        let span = self.traces.tracer.build_with_context(
            opentelemetry::trace::SpanBuilder::from_name("origin").with_kind(SpanKind::Client),
            &self.cx,
        );
        let cx = self.cx.with_span(span);
        headers.remove("traceparent");
        headers.remove("tracestate");
        self.traces
            .propagator
            .inject_context(&cx, &mut HeaderInjector(headers));
        OriginSpan { cx }
    }

    /// A child span for one component's time. `host_measured`: the host
    /// timed the call (filters); otherwise the component reported only a
    /// duration (composed middleware), and `start` is the chain's start.
    pub fn component(&self, name: &str, start: Instant, took: Duration, host_measured: bool) {
        let mut span = self.traces.tracer.build_with_context(
            opentelemetry::trace::SpanBuilder::from_name(format!("component {name}"))
                .with_kind(SpanKind::Internal)
                .with_start_time(self.wall(start))
                .with_attributes([
                    KeyValue::new("tollgate.component", name.to_owned()),
                    KeyValue::new(
                        "tollgate.timing",
                        if host_measured { "host" } else { "reported" },
                    ),
                ]),
            &self.cx,
        );
        span.end_with_timestamp(self.wall(start + took));
    }

    /// Ends the request span, at the response head.
    pub fn finish(&self, route: &str, request_id: &str, status: u16) {
        let span = self.cx.span();
        span.set_attributes([
            KeyValue::new("http.route", route.to_owned()),
            KeyValue::new("http.response.status_code", i64::from(status)),
            KeyValue::new("tollgate.request_id", request_id.to_owned()),
        ]);
        if status >= 500 {
            span.set_status(Status::error(""));
        }
        span.end();
    }
}

/// The origin call in flight.
pub struct OriginSpan {
    cx: Context,
}

impl OriginSpan {
    /// Ends it: the endpoint that answered (or was tried last), and the
    /// origin's status (`None`: no answer).
    pub fn end(self, endpoint: Option<&str>, status: Option<u16>) {
        let span = self.cx.span();
        if let Some(e) = endpoint {
            span.set_attribute(KeyValue::new("server.address", e.to_owned()));
        }
        match status {
            Some(s) => {
                span.set_attribute(KeyValue::new("http.response.status_code", i64::from(s)));
                if s >= 500 {
                    span.set_status(Status::error(""));
                }
            }
            None => span.set_status(Status::error("no answer from the origin")),
        }
        span.end();
    }
}
