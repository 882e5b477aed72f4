//! The one pooled HTTP client shared by all routes, and the two `wasi:http`
//! hooks that use it.
//!
//! - [`OriginHooks`] serves the innermost `wasi:http/handler` import of a
//!   composed segment: the rest of the route's chain, then its upstream.
//! - [`ClientHooks`] serves the chain's own `wasi:http/client` calls, and
//!   lets them reach only the route's allowed outbound hosts.
//!
//! The pool keys connections by scheme and authority, so every endpoint of
//! an upstream has its own keep-alive connections. Both hooks strip
//! hop-by-hop headers, and both apply the connect and response timeouts,
//! which surface as `connection-timeout` and `http-response-timeout` so the
//! ingress can answer 502 or 504.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName};
use http::uri::{PathAndQuery, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::config::{Limits, Origin};

/// The shared client: one connection pool per I/O worker (and one for
/// every other thread), so a worker's requests reuse connections whose
/// tasks run on that worker.
pub struct OriginClient {
    clients: Box<[Client<HttpConnector, WasiBody>]>,
    pub response_timeout: Duration,
}

thread_local! {
    /// Which I/O worker this thread is (0: none).
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks this thread as I/O worker `i` (from 1).
pub fn set_worker(i: usize) {
    WORKER.with(|w| w.set(i));
}

/// How many pools a client keeps: one per possible worker, and one more.
fn pools() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()) + 1
}

type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
>;

impl OriginClient {
    pub fn new(limits: &Limits) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(limits.origin_connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let clients = (0..pools())
            .map(|_| {
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(90))
                    .pool_max_idle_per_host(limits.origin_idle_connections)
                    .build(connector.clone())
            })
            .collect();
        Arc::new(Self {
            clients,
            response_timeout: limits.origin_response_timeout,
        })
    }

    /// This thread's pool.
    fn client(&self) -> &Client<HttpConnector, WasiBody> {
        &self.clients[WORKER.with(|w| w.get()) % self.clients.len()]
    }

    async fn send_within(&self, mut req: http::Request<WasiBody>, timeout: Duration) -> SendResult {
        strip_hop_by_hop(req.headers_mut());
        // The host's timing protocol stays between the host and the chain.
        req.headers_mut().remove(crate::timing::HEADER);
        let res = tokio::time::timeout(timeout, self.client().request(req))
            .await
            .map_err(|_| HttpError::HttpResponseTimeout)?
            .map_err(classify)?;
        let (mut parts, body) = res.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(crate::timing::HEADER);
        let body = body.map_err(HttpError::from).boxed_unsync();
        // The pool drives connections on its own tasks: no I/O future to hand back.
        Ok((
            http::Response::from_parts(parts, body),
            Box::new(async { Ok(()) }),
        ))
    }
}

impl OriginClient {
    /// Re-targets `request` at `origin` (keeping path and query, setting
    /// `Host` to the origin's authority) and sends it, waiting at most
    /// `timeout` for the response head.
    pub async fn forward_to(
        &self,
        mut request: http::Request<WasiBody>,
        origin: &Origin,
        timeout: Duration,
    ) -> Result<http::Response<WasiBody>, HttpError> {
        *request.uri_mut() = retarget(request.uri(), origin)?;
        if let Ok(host) = http::HeaderValue::from_str(origin.authority.as_str()) {
            request.headers_mut().insert(header::HOST, host);
        }
        self.send_within(request, timeout).await.map(|(res, _)| res)
    }

    /// A health check: whether `GET path` on `origin` answers 2xx within
    /// `timeout` (the body is read and discarded, so the connection can be
    /// kept).
    pub async fn probe(&self, origin: &Origin, path: &PathAndQuery, timeout: Duration) -> bool {
        let Ok(uri) = Uri::builder()
            .scheme(origin.scheme.clone())
            .authority(origin.authority.clone())
            .path_and_query(path.clone())
            .build()
        else {
            return false;
        };
        let request = http::Request::get(uri)
            .header(header::USER_AGENT, "tollgate-health-check")
            .body(
                http_body_util::Empty::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .expect("a GET with a valid URI builds");
        let check = async {
            let (res, _) = self.send_within(request, timeout).await.ok()?;
            let ok = res.status().is_success();
            res.into_body().collect().await.ok()?;
            Some(ok)
        };
        tokio::time::timeout(timeout, check)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    }
}

fn classify(e: hyper_util::client::legacy::Error) -> HttpError {
    if e.is_connect() {
        let text = format!("{e:?}");
        if text.contains("timed out") || text.contains("TimedOut") {
            HttpError::ConnectionTimeout
        } else {
            HttpError::ConnectionRefused
        }
    } else {
        HttpError::HttpProtocolError
    }
}

/// Re-targets `uri` at `origin`, keeping its path and query.
fn retarget(uri: &Uri, origin: &Origin) -> Result<Uri, HttpError> {
    let pq = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::builder()
        .scheme(origin.scheme.clone())
        .authority(origin.authority.clone())
        .path_and_query(pq)
        .build()
        .map_err(|_| HttpError::HttpRequestUriInvalid)
}

/// Serves a composed segment's innermost `next`: the rest of the route's
/// chain and then its upstream (set per request). A Spin app's last
/// segment ends in its primary component and has no `next` to serve.
pub struct OriginHooks {
    /// The scheme for requests a component sends without one.
    pub scheme: Option<http::uri::Scheme>,
    pub downstream: Option<crate::chain::Downstream>,
}

impl WasiHttpHooks for OriginHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let Some(downstream) = self.downstream.clone() else {
            return Box::new(async { Err(HttpError::DestinationNotFound) });
        };
        Box::new(async move {
            let res = if downstream.is_upstream() {
                // Straight to the upstream: no component runs, so no need
                // for a task of its own.
                downstream.run(request).await?
            } else {
                // The rest of the chain runs as its own task: its filters'
                // stores cannot run inside this store's event loop.
                tokio::spawn(downstream.run(request))
                    .await
                    .map_err(|_| HttpError::InternalError(None))??
            };
            Ok((
                res,
                Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }

    fn default_scheme(&mut self) -> Option<http::uri::Scheme> {
        self.scheme.clone()
    }
}

/// Serves the chain's own outbound calls, within the route's allowlist.
pub struct ClientHooks {
    pub client: Arc<OriginClient>,
    pub allowed: Arc<[Origin]>,
}

impl WasiHttpHooks for ClientHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let client = self.client.clone();
        let allowed = is_allowed(request.uri(), &self.allowed);
        // A component may ask for a shorter wait than the gateway's own.
        let timeout = options
            .and_then(|o| o.first_byte_timeout)
            .map_or(client.response_timeout, |t| t.min(client.response_timeout));
        Box::new(async move {
            if !allowed {
                return Err(HttpError::HttpRequestDenied);
            }
            client.send_within(request, timeout).await
        })
    }
}

/// Whether `uri`'s scheme and authority match an allowed origin exactly
/// (ports default by scheme; host names compare case-insensitively).
pub fn is_allowed(uri: &Uri, allowed: &[Origin]) -> bool {
    let (Some(scheme), Some(auth)) = (uri.scheme(), uri.authority()) else {
        return false;
    };
    let default_port = if *scheme == http::uri::Scheme::HTTPS {
        443
    } else {
        80
    };
    let port = auth.port_u16().unwrap_or(default_port);
    allowed.iter().any(|o| {
        o.scheme == *scheme
            && o.authority.host().eq_ignore_ascii_case(auth.host())
            && o.authority.port_u16().unwrap_or(default_port) == port
    })
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers, including any that `Connection` names.
/// Most messages carry none, so one pass over the names comes first: a
/// removal hashes its name even when nothing is there.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers
        .keys()
        .any(|k| HOP_BY_HOP.contains(k) || *k == PROXY_CONNECTION)
    {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(PROXY_CONNECTION);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_origin;

    #[test]
    fn allowlist_matches_scheme_host_and_port() {
        let allowed = [parse_origin("https://api.example.com").unwrap()];
        let ok: Uri = "https://API.example.com/x".parse().unwrap();
        let ok_port: Uri = "https://api.example.com:443/x".parse().unwrap();
        let bad_scheme: Uri = "http://api.example.com/x".parse().unwrap();
        let bad_port: Uri = "https://api.example.com:8443/x".parse().unwrap();
        let bad_host: Uri = "https://api.example.com.evil.net/x".parse().unwrap();
        assert!(is_allowed(&ok, &allowed));
        assert!(is_allowed(&ok_port, &allowed));
        assert!(!is_allowed(&bad_scheme, &allowed));
        assert!(!is_allowed(&bad_port, &allowed));
        assert!(!is_allowed(&bad_host, &allowed));
    }

    #[test]
    fn hop_by_hop_headers_go_including_connection_named_ones() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "close, x-secret-hop".parse().unwrap());
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
        // Any one of them alone is enough to be found.
        for name in HOP_BY_HOP.iter().chain([&PROXY_CONNECTION]) {
            h.insert(name, "1".parse().unwrap());
            strip_hop_by_hop(&mut h);
            assert!(!h.contains_key(name), "{name} kept");
            assert_eq!(h.len(), 1);
        }
    }

    #[test]
    fn retarget_keeps_path_and_query() {
        let o = parse_origin("http://10.0.0.1:9000").unwrap();
        let u: Uri = "http://public.example/a/b?c=d".parse().unwrap();
        assert_eq!(
            retarget(&u, &o).unwrap().to_string(),
            "http://10.0.0.1:9000/a/b?c=d"
        );
    }
}
