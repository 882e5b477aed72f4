//! An upstream and one request's way to it: pick an endpoint
//! ([`super::balance`]), send, judge the attempt, and retry on another
//! endpoint when [`super::retry`] allows it, within the request's deadline
//! and the route's retry budget. Every attempt feeds the endpoint's
//! passive health ([`super::endpoint`]).
//!
//! A route's single `origin` URL is an upstream of one endpoint that never
//! retries and is never ejected: the same path, with nothing to decide.

use crate::traces::RequestTrace;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::header::HeaderValue;
use http_body_util::{BodyExt, Full};
use prometheus_client::metrics::counter::Counter;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

use super::balance::{Balance, Balancer, HashOn};
use super::client::OriginClient;
use super::endpoint::{Endpoint, OutlierConfig};
use super::health_check::HealthCheckConfig;
use super::retry::{self, Budget, Outcome, RetryConfig};
use crate::config::Origin;
use crate::ingress::forwarded::CLIENT_IP;
use crate::telemetry::UpstreamFamilies;

/// A validated upstream: `[upstreams.NAME]`, or a route's single origin.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// The table's name; `route:NAME` for a route's own single origin.
    pub name: String,
    /// Each endpoint and its weight (≥ 1).
    pub endpoints: Vec<(Origin, u32)>,
    pub balance: Balance,
    pub retry: RetryConfig,
    /// Passive health; `None` never ejects.
    pub outlier: Option<OutlierConfig>,
    /// Active health; `None` runs no checks.
    pub health_check: Option<HealthCheckConfig>,
}

impl UpstreamConfig {
    /// A route's single origin URL: one endpoint, no retries, no ejection.
    pub fn single(route: &str, origin: Origin) -> Self {
        Self {
            name: format!("route:{route}"),
            endpoints: vec![(origin, 1)],
            balance: Balance::RoundRobin,
            retry: RetryConfig::none(),
            outlier: None,
            health_check: None,
        }
    }
}

/// A running upstream, shared by the routes that name it.
pub struct Upstream {
    pub name: Arc<str>,
    pub endpoints: Vec<Arc<Endpoint>>,
    balancer: Balancer,
    hash_on: Option<HashOn>,
    pub retry: RetryConfig,
    outlier: Option<OutlierConfig>,
    pub health_check: Option<HealthCheckConfig>,
    /// Serialises ejection decisions (they look at every endpoint).
    ejecting: Mutex<()>,
    /// Attempts by endpoint and outcome, resolved once.
    attempts: Vec<[Counter; 5]>,
    ejections: Vec<Counter>,
    pub families: UpstreamFamilies,
}

const OUTCOMES: [Outcome; 5] = [
    Outcome::Answered,
    Outcome::FailedStatus,
    Outcome::ConnectFailed,
    Outcome::Reset,
    Outcome::TimedOut,
];

impl Upstream {
    pub fn new(config: &UpstreamConfig, families: UpstreamFamilies) -> Arc<Self> {
        let epoch = Instant::now();
        let endpoints: Vec<Arc<Endpoint>> = config
            .endpoints
            .iter()
            .map(|(o, w)| Arc::new(Endpoint::new(o.clone(), *w, epoch)))
            .collect();
        let names: Vec<String> = endpoints.iter().map(|e| e.name.to_string()).collect();
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        let attempts = endpoints
            .iter()
            .map(|e| OUTCOMES.map(|o| families.attempt(&config.name, &e.name, o.label())))
            .collect();
        let ejections = endpoints
            .iter()
            .map(|e| families.ejection(&config.name, &e.name))
            .collect();
        Arc::new(Self {
            name: config.name.as_str().into(),
            balancer: Balancer::new(&config.balance, &names, &weights),
            hash_on: match &config.balance {
                Balance::Hash(on) => Some(on.clone()),
                _ => None,
            },
            endpoints,
            retry: config.retry.clone(),
            outlier: config.outlier.clone(),
            health_check: config.health_check.clone(),
            ejecting: Mutex::new(()),
            attempts,
            ejections,
            families,
        })
    }

    /// Whether any endpoint passes its active health checks.
    pub fn any_healthy(&self) -> bool {
        self.endpoints.iter().any(|e| e.is_healthy())
    }

    /// An endpoint for the next attempt: usable and not yet tried, or,
    /// when every usable one has been tried, a usable one again. `None`
    /// when no endpoint is usable.
    fn pick(&self, key: &[u8], tried: &[usize], now: Instant) -> Option<usize> {
        let in_flight = |i: usize| self.endpoints[i].in_flight();
        if let [only] = self.endpoints.as_slice() {
            return only.is_usable(now).then_some(0);
        }
        self.balancer
            .pick(key, in_flight, |i| {
                !tried.contains(&i) && self.endpoints[i].is_usable(now)
            })
            .or_else(|| {
                self.balancer
                    .pick(key, in_flight, |i| self.endpoints[i].is_usable(now))
            })
    }

    /// Records an attempt on endpoint `i`, ejecting it when it has failed
    /// too often and ejecting it leaves enough endpoints in.
    fn record(&self, i: usize, outcome: Outcome, now: Instant) {
        self.attempts[i][OUTCOMES.iter().position(|&o| o == outcome).unwrap_or(0)].inc();
        let endpoint = &self.endpoints[i];
        if !endpoint.record(outcome.is_failure(), self.outlier.as_ref()) {
            return;
        }
        let Some(config) = &self.outlier else { return };
        let _one_at_a_time = self.ejecting.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.endpoints.len();
        let out = self.endpoints.iter().filter(|e| e.is_ejected(now)).count();
        let others_usable = self
            .endpoints
            .iter()
            .enumerate()
            .any(|(j, e)| j != i && e.is_usable(now));
        let cap = (n * config.max_ejected_percent as usize / 100).min(n - 1);
        if endpoint.is_ejected(now) || out >= cap || !others_usable {
            return;
        }
        let period = endpoint.eject(now, config);
        self.ejections[i].inc();
        tracing::warn!(
            upstream = %self.name,
            endpoint = %endpoint.name,
            seconds = period.as_secs_f64(),
            "endpoint ejected after consecutive failures"
        );
    }

    /// The hash key of a request (hash mode): the configured header, or
    /// the client IP the ingress determined.
    fn key<'r>(&self, headers: &'r http::HeaderMap) -> &'r [u8] {
        let header = match &self.hash_on {
            None => return b"",
            Some(HashOn::Header(name)) => headers.get(name),
            Some(HashOn::ClientIp) => None,
        };
        header
            .or_else(|| headers.get(CLIENT_IP))
            .map(HeaderValue::as_bytes)
            .unwrap_or(b"")
    }
}

/// A route's way to its upstream: the upstream, the route's retry budget,
/// and whether the route lets non-idempotent methods be retried.
pub struct RouteUpstream {
    pub upstream: Arc<Upstream>,
    route: Arc<str>,
    budget: Budget,
    retry_non_idempotent: bool,
    /// A shorter wait for each response head than the gateway's own.
    response_timeout: Option<std::time::Duration>,
    retries: Counter,
    retries_refused: Counter,
}

/// Every endpoint fails its health checks: nothing to try.
fn unavailable() -> Forwarded {
    Forwarded {
        result: Err(HttpError::DestinationUnavailable),
        endpoint: None,
    }
}

/// What forwarding produced, and which endpoint answered (or was tried last).
pub struct Forwarded {
    pub result: Result<http::Response<WasiBody>, HttpError>,
    pub endpoint: Option<Arc<str>>,
}

impl RouteUpstream {
    pub fn new(route: &str, upstream: Arc<Upstream>, retry_non_idempotent: bool) -> Self {
        let retries = upstream.families.retry(route, &upstream.name, "retried");
        let retries_refused = upstream
            .families
            .retry(route, &upstream.name, "over-budget");
        Self {
            budget: Budget::new(&upstream.retry),
            route: route.into(),
            upstream,
            retry_non_idempotent,
            response_timeout: None,
            retries,
            retries_refused,
        }
    }

    /// Waits at most `timeout` for each attempt's response head (never
    /// longer than the gateway's own response timeout).
    pub fn with_response_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.response_timeout = Some(timeout);
        self
    }

    /// The scheme requests get when a component leaves it out.
    pub fn default_scheme(&self) -> http::uri::Scheme {
        self.upstream.endpoints[0].origin.scheme.clone()
    }

    /// Sends `request` to an endpoint, retrying as the policy allows,
    /// never past `deadline`. A traced request gets an origin span around
    /// all of it, and carries that span's `traceparent`.
    pub async fn forward(
        &self,
        client: &OriginClient,
        mut request: http::Request<WasiBody>,
        deadline: Instant,
        trace: Option<&RequestTrace>,
    ) -> Forwarded {
        let span = trace.map(|t| t.origin(request.headers_mut()));
        let forwarded = if self.upstream.retry.attempts <= 1 {
            self.forward_once(client, request, deadline).await
        } else {
            self.forward_with_retries(client, request, deadline).await
        };
        if let Some(span) = span {
            span.end(
                forwarded.endpoint.as_deref(),
                forwarded.result.as_ref().ok().map(|r| r.status().as_u16()),
            );
        }
        forwarded
    }

    /// One attempt and no retry (a single origin, or `attempts = 1`): the
    /// request goes as it is, with its body never copied.
    ///
    /// The one exception is a keep-alive race (RFC 9112 §9.3.1): an origin
    /// may close an idle pooled connection just as a request goes out on
    /// it, and the attempt ends in a reset though the origin never saw a
    /// request it answered. An idempotent request without a body is then
    /// sent once more, on a fresh connection, as nginx does for a cached
    /// upstream connection. Its head is kept for that; nothing else is.
    async fn forward_once(
        &self,
        client: &OriginClient,
        request: http::Request<WasiBody>,
        deadline: Instant,
    ) -> Forwarded {
        let up = &*self.upstream;
        let now = Instant::now();
        let Some(i) = up.pick(up.key(request.headers()), &[], now) else {
            return unavailable();
        };
        let again = resendable(&request).then(|| ResendHead::of(&request));
        let (result, outcome) = self.attempt(client, i, request, deadline, now).await;
        if let (Outcome::Reset, Some(head)) = (outcome, again) {
            self.retries.inc();
            tracing::debug!(
                route = %self.route,
                endpoint = %up.endpoints[i].name,
                "the connection closed before a response; sending once more"
            );
            let (result, _) = self
                .attempt(client, i, head.request(), deadline, Instant::now())
                .await;
            return self.done(result, &up.endpoints[i]);
        }
        self.done(result, &up.endpoints[i])
    }

    async fn forward_with_retries(
        &self,
        client: &OriginClient,
        request: http::Request<WasiBody>,
        deadline: Instant,
    ) -> Forwarded {
        let up = &*self.upstream;
        self.budget.request(Instant::now());
        let (parts, body) = request.into_parts();
        // A body can be sent again only if the gateway holds all of it:
        // the ingress buffers every request body, so this is the rule, and
        // a body streamed by a composed middleware goes once.
        let mut body = Some(body);
        let replay = match body.as_ref().map(http_body::Body::size_hint) {
            Some(hint) if hint.exact().is_some() => {
                match body.take().expect("present").collect().await {
                    Ok(b) => Some(b.to_bytes()),
                    Err(_) => {
                        return Forwarded {
                            result: Err(HttpError::HttpProtocolError),
                            endpoint: None,
                        };
                    }
                }
            }
            _ => None,
        };
        let key = up.key(&parts.headers);
        let mut tried: Vec<usize> = Vec::new();
        let mut attempt: u32 = 0;
        loop {
            let now = Instant::now();
            let Some(i) = up.pick(key, &tried, now) else {
                return unavailable();
            };
            tried.push(i);
            let this_body = match (&replay, body.take()) {
                (Some(bytes), _) => Full::new(bytes.clone())
                    .map_err(|never| match never {})
                    .boxed_unsync(),
                (None, Some(b)) => b,
                (None, None) => unreachable!("a body without a replay copy is sent once"),
            };
            let mut req = http::Request::new(this_body);
            *req.method_mut() = parts.method.clone();
            *req.uri_mut() = parts.uri.clone();
            *req.version_mut() = parts.version;
            *req.headers_mut() = parts.headers.clone();
            let (result, outcome) = self.attempt(client, i, req, deadline, now).await;
            let endpoint = &up.endpoints[i];

            let again = attempt + 1 < up.retry.attempts
                && (replay.is_some() || body.is_some())
                && retry::retryable(outcome, &parts.method, self.retry_non_idempotent);
            if !again {
                return self.done(result, endpoint);
            }
            let now = Instant::now();
            let wait = retry::backoff(&up.retry, attempt, fastrand::f64());
            if now + wait >= deadline {
                return self.done(result, endpoint);
            }
            if !self.budget.try_retry(now) {
                self.retries_refused.inc();
                return self.done(result, endpoint);
            }
            self.retries.inc();
            tracing::debug!(
                route = %self.route,
                endpoint = %endpoint.name,
                outcome = outcome.label(),
                "retrying on another endpoint"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// One attempt on endpoint `i`, judged and recorded in its health.
    async fn attempt(
        &self,
        client: &OriginClient,
        i: usize,
        request: http::Request<WasiBody>,
        deadline: Instant,
        now: Instant,
    ) -> (Result<http::Response<WasiBody>, HttpError>, Outcome) {
        let up = &*self.upstream;
        let endpoint = &up.endpoints[i];
        let remaining = deadline.saturating_duration_since(now);
        if remaining.is_zero() {
            // The request's time is up: no attempt, and no mark against
            // the endpoint.
            return (Err(HttpError::HttpResponseTimeout), Outcome::TimedOut);
        }
        let in_flight = endpoint.start();
        let result = client
            .forward_to(
                request,
                &endpoint.origin,
                remaining.min(
                    self.response_timeout
                        .map_or(client.response_timeout, |t| t.min(client.response_timeout)),
                ),
            )
            .await;
        drop(in_flight);
        let outcome = match &result {
            Ok(res) if up.retry.on_status.contains(&res.status().as_u16()) => Outcome::FailedStatus,
            Ok(_) => Outcome::Answered,
            Err(HttpError::ConnectionRefused | HttpError::ConnectionTimeout) => {
                Outcome::ConnectFailed
            }
            Err(HttpError::HttpResponseTimeout) => Outcome::TimedOut,
            Err(_) => Outcome::Reset,
        };
        up.record(i, outcome, Instant::now());
        (result, outcome)
    }

    fn done(
        &self,
        result: Result<http::Response<WasiBody>, HttpError>,
        endpoint: &Endpoint,
    ) -> Forwarded {
        Forwarded {
            result,
            endpoint: Some(endpoint.name.clone()),
        }
    }
}

/// Whether a request whose attempt ended in a reset may go once more
/// without the route's retry policy: an idempotent method (RFC 9110
/// §9.2.2) and no body, so nothing has to be held back to send it again.
fn resendable(request: &http::Request<WasiBody>) -> bool {
    retry::idempotent(request.method())
        && http_body::Body::size_hint(request.body()).exact() == Some(0)
}

/// The head of a bodiless request, kept to send it again.
struct ResendHead {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
}

impl ResendHead {
    fn of(request: &http::Request<WasiBody>) -> Self {
        Self {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
        }
    }

    fn request(self) -> http::Request<WasiBody> {
        let body = http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        let mut req = http::Request::new(body);
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers;
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_origin;

    fn upstream(n: usize, outlier: Option<OutlierConfig>) -> Arc<Upstream> {
        let config = UpstreamConfig {
            name: "api".into(),
            endpoints: (0..n)
                .map(|i| (parse_origin(&format!("http://10.0.0.{i}:80")).unwrap(), 1))
                .collect(),
            balance: Balance::RoundRobin,
            retry: RetryConfig::default(),
            outlier,
            health_check: None,
        };
        Upstream::new(&config, UpstreamFamilies::default())
    }

    fn failing_outlier() -> OutlierConfig {
        OutlierConfig {
            consecutive_failures: 2,
            max_ejected_percent: 50,
            ..OutlierConfig::default()
        }
    }

    #[test]
    fn retries_go_to_endpoints_not_yet_tried() {
        let up = upstream(3, None);
        let now = Instant::now();
        let first = up.pick(b"", &[], now).unwrap();
        let second = up.pick(b"", &[first], now).unwrap();
        let third = up.pick(b"", &[first, second], now).unwrap();
        let mut all = vec![first, second, third];
        all.sort();
        assert_eq!(all, vec![0, 1, 2]);
        // All tried: any usable one again.
        assert!(up.pick(b"", &[0, 1, 2], now).is_some());
    }

    #[test]
    fn ejection_takes_out_at_most_the_configured_share_and_never_the_last() {
        let up = upstream(3, Some(failing_outlier()));
        let now = Instant::now();
        for _ in 0..2 {
            up.record(0, Outcome::ConnectFailed, now);
        }
        assert!(up.endpoints[0].is_ejected(now));
        // 50% of 3 is one endpoint: the second failing one stays in.
        for _ in 0..4 {
            up.record(1, Outcome::ConnectFailed, now);
        }
        assert!(!up.endpoints[1].is_ejected(now));
        // With the only other usable endpoint unhealthy, none is ejected.
        let two = upstream(
            2,
            Some(OutlierConfig {
                max_ejected_percent: 100,
                ..failing_outlier()
            }),
        );
        two.endpoints[1].set_healthy(false);
        for _ in 0..4 {
            two.record(0, Outcome::FailedStatus, now);
        }
        assert!(!two.endpoints[0].is_ejected(now));
        // A single endpoint is never ejected, whatever the share.
        let one = upstream(
            1,
            Some(OutlierConfig {
                max_ejected_percent: 100,
                ..failing_outlier()
            }),
        );
        for _ in 0..4 {
            one.record(0, Outcome::ConnectFailed, now);
        }
        assert!(!one.endpoints[0].is_ejected(now));
    }

    #[test]
    fn an_ejected_endpoint_takes_no_traffic() {
        let up = upstream(3, Some(failing_outlier()));
        let now = Instant::now();
        up.record(2, Outcome::Reset, now);
        up.record(2, Outcome::Reset, now);
        assert!((0..30).all(|_| up.pick(b"", &[], now) != Some(2)));
        assert!(up.any_healthy());
    }
}
