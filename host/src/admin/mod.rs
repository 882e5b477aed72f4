//! The admin listener: `/metrics`, `/healthz` and `/readyz` (open, see
//! [`crate::telemetry`]) and the versioned admin API under `/api/v1/`
//! ([`api`]), which needs the bearer token ([`auth`]) and answers
//! RFC 9457 problems. Loopback by default; a non-loopback admin address
//! without a token does not start (config validation).

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod gates;
pub mod page;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use utoipa::OpenApi;

use crate::ingress::Live;
use crate::reload::Reloader;
use crate::telemetry::Metrics;
use auth::{Guard, Verdict};

/// What the admin listener serves from.
pub struct Admin {
    pub live: Live,
    pub metrics: Arc<Metrics>,
    pub reloader: Option<Arc<Reloader>>,
    pub guard: Guard,
}

/// One answer: status, content type, body.
pub struct Answer {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    retry_after: Option<u64>,
    /// A Content-Security-Policy (the dashboard's pages).
    csp: Option<&'static str>,
}

impl Answer {
    pub fn json<T: serde::Serialize>(status: u16, value: &T) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(value).expect("API views serialize"),
            retry_after: None,
            csp: None,
        }
    }

    pub fn problem(status: u16, title: &str, detail: &str, errors: Vec<String>) -> Self {
        let p = api::ProblemView {
            kind: "about:blank".into(),
            title: title.into(),
            status,
            detail: detail.into(),
            errors,
        };
        Self {
            content_type: "application/problem+json",
            ..Self::json(status, &p)
        }
    }

    pub fn no_content() -> Self {
        Self {
            status: 204,
            content_type: "text/plain",
            body: Vec::new(),
            retry_after: None,
            csp: None,
        }
    }

    /// A page of the dashboard, under `csp`.
    pub fn page(content_type: &'static str, body: Vec<u8>, csp: &'static str) -> Self {
        Self {
            status: 200,
            content_type,
            body,
            retry_after: None,
            csp: Some(csp),
        }
    }

    fn into_response(self) -> hyper::Response<Full<Bytes>> {
        let mut b = hyper::Response::builder()
            .status(StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header("cache-control", "no-store");
        if !self.body.is_empty() {
            b = b.header("content-type", self.content_type);
        }
        if let Some(s) = self.retry_after {
            b = b.header("retry-after", s.to_string());
        }
        if let Some(csp) = self.csp {
            b = b
                .header("content-security-policy", csp)
                .header("x-content-type-options", "nosniff")
                .header("referrer-policy", "no-referrer");
        }
        b.body(Full::new(Bytes::from(self.body)))
            .expect("static response parts are valid")
    }
}

/// Serves the admin listener until the process exits.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(route(&admin, peer, req).await.into_response()) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn route(
    admin: &Admin,
    peer: SocketAddr,
    req: hyper::Request<hyper::body::Incoming>,
) -> Answer {
    let path = req.uri().path().to_owned();
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        if req.method() == Method::GET
            && let Some(page) = dashboard::asset(&path)
        {
            return page;
        }
        let (status, content_type, body) = crate::telemetry::ops_response(&path, &admin.metrics);
        return Answer {
            status,
            content_type,
            body: body.into_bytes(),
            retry_after: None,
            csp: None,
        };
    };
    match admin.guard.check(
        peer.ip(),
        req.headers().get("authorization").map(|v| v.as_bytes()),
        Instant::now(),
    ) {
        Verdict::Allowed => {}
        Verdict::Denied => {
            return Answer::problem(
                401,
                "Unauthorized",
                "A valid bearer token is required.",
                vec![],
            );
        }
        Verdict::LockedOut(left) => {
            return Answer {
                retry_after: Some(left.as_secs().max(1)),
                ..Answer::problem(
                    429,
                    "Too Many Requests",
                    "Too many wrong tokens from this address; retry later.",
                    vec![],
                )
            };
        }
        Verdict::Closed => {
            return Answer::problem(
                403,
                "Forbidden",
                "The admin API is closed: set server.admin_token to open it.",
                vec![],
            );
        }
    }
    let query = req.uri().query();
    match (req.method(), rest) {
        (&Method::GET, "status") => api::status(admin),
        (&Method::GET, "routes") => api::list_routes(admin, query),
        (&Method::GET, r) if r.starts_with("routes/") => {
            api::get_route(admin, &r["routes/".len()..])
        }
        (&Method::GET, "components") => api::list_components(admin, query),
        (&Method::POST, "reload") => api::reload(admin).await,
        (&Method::GET, "limits") => api::list_limits(admin, query).await,
        (&Method::GET, r) if r.starts_with("limits/") => {
            api::get_limit(admin, &r["limits/".len()..], query).await
        }
        (&Method::GET, "lockouts") => api::list_lockouts(admin, query).await,
        (&Method::DELETE, r) if r.starts_with("lockouts/") => {
            api::lift_lockout(admin, &r["lockouts/".len()..]).await
        }
        (&Method::GET, "openapi.json") => Answer {
            status: 200,
            content_type: "application/json",
            body: api::ApiDoc::openapi()
                .to_json()
                .expect("the OpenAPI document serializes")
                .into_bytes(),
            retry_after: None,
            csp: None,
        },
        (
            _,
            "routes" | "components" | "openapi.json" | "reload" | "limits" | "lockouts" | "status",
        ) => Answer::problem(
            405,
            "Method Not Allowed",
            "This method is not served here.",
            vec![],
        ),
        _ => Answer::problem(404, "Not Found", "No such admin endpoint.", vec![]),
    }
}
