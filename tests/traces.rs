//! Traces against the real binary and a real OTLP/HTTP receiver (a hyper
//! server in the test that decodes each export with `opentelemetry-proto`):
//! one trace per request with the span tree request → components and
//! origin, the caller's trace continued, the origin given the origin
//! span's `traceparent`, an unsampled caller respected, and the trace id
//! in the access log.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use tokio::net::TcpListener;

use common::*;

/// Every span the receiver was sent, with its resource's `service.name`.
#[derive(Default, Clone)]
struct Received(Arc<Mutex<Vec<(String, Span)>>>);

impl Received {
    fn of_trace(&self, trace_id: &str) -> Vec<Span> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| hex::encode(&s.trace_id) == trace_id)
            .map(|(_, s)| s.clone())
            .collect()
    }

    async fn wait_for(&self, trace_id: &str, spans: usize) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.of_trace(trace_id);
            if got.len() >= spans {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "trace {trace_id}: {} of {spans} spans arrived",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A real OTLP/HTTP receiver: `POST /v1/traces` with a protobuf body.
async fn receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received = Received::default();
    let r = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let r = r.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let r = r.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/traces");
                        assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let export = ExportTraceServiceRequest::decode(body).unwrap();
                        for rs in export.resource_spans {
                            let service = rs
                                .resource
                                .iter()
                                .flat_map(|res| res.attributes.iter())
                                .find(|kv| kv.key == "service.name")
                                .and_then(|kv| kv.value.as_ref())
                                .map(|v| format!("{:?}", v.value))
                                .unwrap_or_default();
                            for ss in rs.scope_spans {
                                for span in ss.spans {
                                    r.0.lock().unwrap().push((service.clone(), span));
                                }
                            }
                        }
                        let answer = ExportTraceServiceResponse::default().encode_to_vec();
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/x-protobuf")
                                .body(Full::new(Bytes::from(answer)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (url, received)
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
}

/// `traceparent`'s trace id and parent (span) id.
fn parse_traceparent(v: &str) -> (String, String, String) {
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "{v}");
    assert_eq!(parts[0], "00");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

// The span tree is the same whether the filters run on the fast path or
// as composed `wasi:http` middleware (whose times the components report).
on_both_paths!(each_request_is_one_trace_with_its_components_and_the_origin);

async fn each_request_is_one_trace_with_its_components_and_the_origin() {
    let origin = Origin::start().await;
    let (collector, received) = receiver().await;
    let cfg = config(&format!(
        r#"
[telemetry]
otlp_endpoint = "{collector}"
service_name = "edge-test"

[components.headers]
source = "builtin:headers"

[components.rate-limit]
source = "builtin:rate-limit"
key_value_stores = ["default"]
variables = {{ policies = "per-ip ip 1000/60s" }}

[[route]]
name = "api"
origin = "{}"
middleware = ["headers", "rate-limit"]
"#,
        origin.url()
    ));
    let gw = Gateway::start_with(&cfg, &[("OTEL_BSP_SCHEDULE_DELAY", "100")]);
    let c = client();

    // A caller's sampled trace is continued.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let req = http::Request::get(gw.url("/orders"))
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .header("tracestate", "vendor=abc")
        .body(Full::<Bytes>::default())
        .unwrap();
    assert_eq!(send(&c, req).await.status, 200);
    let seen = origin.last();
    let (trace, parent, flags) = parse_traceparent(&seen.headers["traceparent"]);
    assert_eq!(trace, caller_trace, "the origin is in the caller's trace");
    assert_ne!(
        parent, caller_span,
        "its parent is the gateway's origin span"
    );
    assert_eq!(flags, "01");
    assert_eq!(seen.headers["tracestate"], "vendor=abc");

    let spans = received.wait_for(caller_trace, 4).await;
    assert_eq!(spans.len(), 4, "request, two components, origin");
    let request = spans
        .iter()
        .find(|s| s.name == "request")
        .expect("a request span");
    assert_eq!(hex::encode(&request.parent_span_id), caller_span);
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(attr(request, "http.route").as_deref(), Some("api"));
    assert_eq!(
        attr(request, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(request, "url.path").as_deref(), Some("/orders"));
    // Named as the components report themselves (`tollgate_headers`).
    for name in ["headers", "rate_limit"] {
        let s = spans
            .iter()
            .find(|s| s.name.starts_with("component ") && s.name.contains(name))
            .unwrap_or_else(|| {
                panic!(
                    "no `{name}` span in {:?}",
                    spans.iter().map(|s| &s.name).collect::<Vec<_>>()
                )
            });
        assert_eq!(
            s.parent_span_id, request.span_id,
            "{name} is the request's child"
        );
        assert!(s.start_time_unix_nano >= request.start_time_unix_nano);
        assert!(
            s.end_time_unix_nano <= request.end_time_unix_nano,
            "{name} ends inside the request"
        );
    }
    let upstream = spans
        .iter()
        .find(|s| s.name == "origin")
        .expect("an origin span");
    assert_eq!(upstream.kind, SpanKind::Client as i32);
    assert_eq!(upstream.parent_span_id, request.span_id);
    assert_eq!(
        hex::encode(&upstream.span_id),
        parent,
        "the origin got this span's id"
    );
    assert_eq!(attr(upstream, "server.address"), Some(origin.url()));
    assert_eq!(
        received.0.lock().unwrap()[0].0,
        format!(
            "{:?}",
            Some(
                opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                    "edge-test".into()
                )
            )
        ),
        "service.name comes from [telemetry]"
    );

    // No traceparent: a new trace, named in the access log.
    assert_eq!(get(&c, &gw.url("/fresh")).await.status, 200);
    let (fresh, _, _) = parse_traceparent(&origin.last().headers["traceparent"]);
    assert_ne!(fresh, caller_trace);
    assert_eq!(received.wait_for(&fresh, 4).await.len(), 4);
    let log = gw.wait_for_log("access line", |l| {
        l.contains("/fresh") && l.contains("\"request\"")
    });
    let line = log
        .lines()
        .find(|l| l.contains("\"path\":\"/fresh\""))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["fields"]["trace_id"], fresh.as_str(), "{line}");

    // An unsampled caller: propagated, not recorded.
    let quiet = "0af7651916cd43dd8448eb211c80319c";
    let req = http::Request::get(gw.url("/quiet"))
        .header("traceparent", format!("00-{quiet}-b7ad6b7169203331-00"))
        .body(Full::<Bytes>::default())
        .unwrap();
    assert_eq!(send(&c, req).await.status, 200);
    let (t, _, flags) = parse_traceparent(&origin.last().headers["traceparent"]);
    assert_eq!((t.as_str(), flags.as_str()), (quiet, "00"));
    // A later sampled request's spans arriving means the batch has gone.
    assert_eq!(get(&c, &gw.url("/after")).await.status, 200);
    let (after, _, _) = parse_traceparent(&origin.last().headers["traceparent"]);
    received.wait_for(&after, 4).await;
    assert!(
        received.of_trace(quiet).is_empty(),
        "an unsampled trace is not exported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_traces_off_the_trace_headers_pass_and_the_log_names_the_callers_trace() {
    let origin = Origin::start().await;
    let cfg = config(&format!(
        "[[route]]\nname = \"plain\"\norigin = \"{}\"\n",
        origin.url()
    ));
    let gw = Gateway::start(&cfg);
    let c = client();
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let req = http::Request::get(gw.url("/passed"))
        .header("traceparent", tp)
        .body(Full::<Bytes>::default())
        .unwrap();
    assert_eq!(send(&c, req).await.status, 200);
    assert_eq!(origin.last().headers["traceparent"], tp, "untouched");
    let log = gw.wait_for_log("access line", |l| l.contains("\"path\":\"/passed\""));
    let line = log
        .lines()
        .find(|l| l.contains("\"path\":\"/passed\""))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["fields"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    // A malformed traceparent is not a trace id.
    let req = http::Request::get(gw.url("/bad"))
        .header("traceparent", "00-zz-yy-01")
        .body(Full::<Bytes>::default())
        .unwrap();
    assert_eq!(send(&c, req).await.status, 200);
    let log = gw.wait_for_log("access line", |l| l.contains("\"path\":\"/bad\""));
    let line = log
        .lines()
        .find(|l| l.contains("\"path\":\"/bad\""))
        .unwrap();
    assert!(line.contains("\"trace_id\":\"-\""), "{line}");
}

#[test]
fn a_bad_otlp_endpoint_stops_startup_naming_the_key() {
    let dir = tempdir::TempDir::new();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[telemetry]\notlp_endpoint = \"https://user:secret@collector:4318\"\n[[route]]\norigin = \"http://127.0.0.1:1\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(tollgate_bin())
        .args(["serve", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("telemetry.otlp_endpoint: must be http://"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret"), "{stderr}");
}
