//! The filter path: runs of components that export Tollgate's filter
//! interface (`tollgate:gate/filter@0.1.0`, `wit/filter.wit`) are called
//! synchronously, in order, with plain data, on the task that holds the
//! request — no `wasi:http` resources, streams or async hops.
//!
//! A [`FilterRun`] keeps a pool of [`FilterSet`]s: one store holding an
//! instance of every filter in the run, each `init`ed with the route's
//! variables. A request takes a set for its `on-request` pass (and, only if
//! a filter asked, again for `on-response`), and gives it back unless a
//! guest failed, in which case the set is dropped. The sandbox is the same
//! as the composed path's: the store's deadline is the request's, memory
//! is capped, and a failure is recorded in the request's slot and logged
//! with the component's name.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::BodyExt;
use wasmtime::Store;
use wasmtime::component::{Component, Linker};
use wasmtime_wasi_http::WasiBody;

use super::sandbox::{ChainState, StoreFactory};
use super::slot::{Failure, RequestSlot};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "tollgate:gate/gate",
        exports: { default: async },
    });
}

use bindings::exports::tollgate::gate::filter as wit;
pub use bindings::{Gate, GatePre};

/// The interface a filter-capable component exports.
pub const FILTER: &str = "tollgate:gate/filter@0.1.0";

/// Most idle sets a run keeps for reuse (a set is held only for a
/// request's pass through the filters, so few are in use at once; the
/// rest would only hold pool slots).
const MAX_IDLE_SETS: usize = 64;

type Request = http::Request<WasiBody>;
type Response = http::Response<WasiBody>;

/// One filter of a run: its configured name, how to instantiate it, and
/// what its `init` said it needs.
pub struct FilterSpec {
    pub name: String,
    pre: GatePre<ChainState>,
    caps: Caps,
}

#[derive(Clone, Default)]
struct Caps {
    /// The name the component goes by in metrics (from `init`).
    reported: Arc<str>,
    body_limit: Option<u32>,
    wants_response: bool,
}

/// A store with one instance of every filter in a run.
pub struct FilterSet {
    store: Store<ChainState>,
    gates: Vec<Gate>,
}

/// Why a run could not be set up.
#[derive(Debug)]
pub enum SetupError {
    /// A filter's `init` refused its variables.
    Config {
        component: String,
        errors: Vec<(String, String)>,
    },
    Other(wasmtime::Error),
}

impl From<wasmtime::Error> for SetupError {
    fn from(e: wasmtime::Error) -> Self {
        SetupError::Other(e)
    }
}

/// A run of consecutive filter components in a route's chain.
pub struct FilterRun {
    filters: Vec<FilterSpec>,
    stores: StoreFactory,
    variables: Vec<(String, String)>,
    names: String,
    pool: Mutex<Vec<FilterSet>>,
    /// Whether any filter reads the body.
    needs_body: bool,
    max_body: usize,
}

impl FilterRun {
    /// Prepares the run and validates every filter's configuration by
    /// instantiating it once and calling `init` (that set is kept warm).
    pub async fn new(
        linker: &Linker<ChainState>,
        components: Vec<(String, Component)>,
        stores: StoreFactory,
        max_body: usize,
    ) -> Result<Self, SetupError> {
        let mut filters = Vec::with_capacity(components.len());
        for (name, component) in components {
            let pre = GatePre::new(linker.instantiate_pre(&component)?)?;
            filters.push(FilterSpec {
                name,
                pre,
                caps: Caps::default(),
            });
        }
        let names = filters
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let variables = stores
            .services
            .variables
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut run = FilterRun {
            filters,
            stores,
            variables,
            names,
            pool: Mutex::new(Vec::new()),
            needs_body: false,
            max_body,
        };
        let (set, caps) = run.instantiate().await?;
        for (f, c) in run.filters.iter_mut().zip(caps) {
            f.caps = c;
        }
        run.needs_body = run.filters.iter().any(|f| f.caps.body_limit.is_some());
        run.give_back(set);
        Ok(run)
    }

    /// A new set: every filter instantiated and `init`ed.
    async fn instantiate(&self) -> Result<(FilterSet, Vec<Caps>), SetupError> {
        let mut store = self.stores.store(&self.names);
        let mut gates = Vec::with_capacity(self.filters.len());
        let mut caps = Vec::with_capacity(self.filters.len());
        for f in &self.filters {
            let gate = f.pre.instantiate_async(&mut store).await?;
            let init = gate
                .tollgate_gate_filter()
                .call_init(&mut store, &self.variables)
                .await?;
            match init {
                Ok(c) => caps.push(Caps {
                    reported: reported_name(&c.name, &f.name).into(),
                    body_limit: c.body_limit,
                    wants_response: c.wants_response,
                }),
                Err(errors) => {
                    return Err(SetupError::Config {
                        component: f.name.clone(),
                        errors: errors
                            .into_iter()
                            .map(|e| (e.variable, e.message))
                            .collect(),
                    });
                }
            }
            gates.push(gate);
        }
        Ok((FilterSet { store, gates }, caps))
    }

    /// An idle set, or a new one; bound to `slot`'s request.
    async fn take(&self, slot: &Arc<RequestSlot>) -> wasmtime::Result<FilterSet> {
        let idle = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut set = match idle {
            Some(s) => s,
            None => match self.instantiate().await {
                Ok((s, _)) => s,
                Err(SetupError::Other(e)) => return Err(e),
                Err(SetupError::Config { component, .. }) => {
                    return Err(wasmtime::format_err!(
                        "component `{component}` refused its configuration"
                    ));
                }
            },
        };
        set.store.data_mut().arm(slot);
        // A fresh tick budget: an idle set's old epoch deadline has passed,
        // and would make the first call yield.
        set.store.set_epoch_deadline(1);
        Ok(set)
    }

    fn give_back(&self, mut set: FilterSet) {
        set.store.data_mut().disarm();
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < MAX_IDLE_SETS {
            pool.push(set);
        }
    }

    /// Logs a guest failure; the caller drops the set.
    fn failed(&self, slot: &RequestSlot, filter: &FilterSpec, e: &wasmtime::Error) {
        slot.record(Failure::Trapped);
        tracing::warn!(
            request_id = slot.request_id(),
            route = %self.stores.route,
            component = super::composed::failing_component(e)
                .as_deref()
                .unwrap_or(&filter.caps.reported),
            "component failed; its instance was discarded"
        );
        tracing::debug!(error = ?e, "component failure detail");
    }

    /// Runs the request through every filter, then `next` (the rest of the
    /// chain) unless one answered, then the response edits innermost first.
    pub async fn handle<N, Fut>(
        &self,
        req: Request,
        slot: &Arc<RequestSlot>,
        next: N,
    ) -> Result<Response, super::ChainError>
    where
        N: FnOnce(Request) -> Fut,
        Fut: Future<Output = Result<Response, super::ChainError>>,
    {
        let (mut parts, body) = req.into_parts();
        let (body, bytes) = if self.needs_body {
            let bytes = http_body_util::Limited::new(body, self.max_body)
                .collect()
                .await
                .map_err(|_| {
                    super::ChainError::Component(wasmtime::format_err!("request body unreadable"))
                })?
                .to_bytes();
            (None, Some(bytes))
        } else {
            (Some(body), None)
        };
        let mut head = wit::RequestHead {
            method: parts.method.as_str().to_owned(),
            scheme: parts.uri.scheme_str().unwrap_or("http").to_owned(),
            authority: parts
                .uri
                .authority()
                .map(|a| a.as_str().to_owned())
                .unwrap_or_default(),
            path_with_query: parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned(),
            headers: fields(&parts.headers),
            body: None,
        };

        let mut set = self.take(slot).await?;
        let mut edits: Vec<Vec<wit::HeaderOp>> = Vec::with_capacity(self.filters.len());
        let mut answer = None;
        for (i, f) in self.filters.iter().enumerate() {
            head.body = match (f.caps.body_limit, &bytes) {
                (Some(_), Some(b)) => Some(b.to_vec()),
                _ => None,
            };
            let started = Instant::now();
            let call = set.gates[i]
                .tollgate_gate_filter()
                .call_on_request(&mut set.store, &head)
                .await;
            let verdict = match call {
                Ok(v) => v,
                Err(e) => {
                    self.failed(slot, f, &e);
                    return Err(super::ChainError::Component(e));
                }
            };
            slot.record_time(&f.caps.reported, started.elapsed());
            edits.push(verdict.response);
            if let Some(a) = verdict.answer {
                answer = Some(a);
                break;
            }
            apply_to_fields(&mut head.headers, verdict.request);
        }
        self.give_back(set);

        let mut res = match answer {
            Some(a) => {
                let mut res = http::Response::new(full(Bytes::from(a.body)));
                *res.status_mut() = http::StatusCode::from_u16(a.status)
                    .map_err(|_| bad_answer("an invalid status"))?;
                *res.headers_mut() = header_map(a.headers)?;
                res
            }
            None => {
                parts.headers = header_map(head.headers)?;
                let body = match (body, bytes) {
                    (Some(b), _) => b,
                    (None, b) => full(b.unwrap_or_default()),
                };
                next(http::Request::from_parts(parts, body)).await?
            }
        };

        // Back out through the filters that saw the request, innermost first.
        let mut again: Option<FilterSet> = None;
        for (i, ops) in edits.into_iter().enumerate().rev() {
            apply_to_map(res.headers_mut(), ops)?;
            let f = &self.filters[i];
            if !f.caps.wants_response {
                continue;
            }
            let set = match &mut again {
                Some(s) => s,
                None => again.insert(self.take(slot).await?),
            };
            let status = res.status().as_u16();
            let call = set.gates[i]
                .tollgate_gate_filter()
                .call_on_response(&mut set.store, status, &fields(res.headers()))
                .await;
            match call {
                Ok(ops) => apply_to_map(res.headers_mut(), ops)?,
                Err(e) => {
                    self.failed(slot, f, &e);
                    return Err(super::ChainError::Component(e));
                }
            }
        }
        if let Some(set) = again {
            self.give_back(set);
        }
        Ok(res)
    }
}

/// The name a filter reported, if it is a sensible metric label; else the
/// configured name.
fn reported_name(reported: &str, configured: &str) -> String {
    let ok = (1..=64).contains(&reported.len())
        && reported
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if ok { reported } else { configured }.to_owned()
}

fn bad_answer(what: &str) -> super::ChainError {
    super::ChainError::Component(wasmtime::format_err!("a filter returned {what}"))
}

fn full(b: Bytes) -> WasiBody {
    http_body_util::Full::new(b)
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn fields(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}

fn header_map(fields: Vec<(String, Vec<u8>)>) -> Result<HeaderMap, super::ChainError> {
    let mut map = HeaderMap::with_capacity(fields.len());
    for (n, v) in fields {
        let (n, v) = field(&n, &v)?;
        map.append(n, v);
    }
    Ok(map)
}

fn field(n: &str, v: &[u8]) -> Result<(HeaderName, HeaderValue), super::ChainError> {
    Ok((
        HeaderName::from_bytes(n.as_bytes()).map_err(|_| bad_answer("an invalid header name"))?,
        HeaderValue::from_bytes(v).map_err(|_| bad_answer("an invalid header value"))?,
    ))
}

/// Applies ops to the request's field list as the next filter will see it.
/// Names are compared case-insensitively; an invalid one is caught when
/// the list becomes a header map.
fn apply_to_fields(fields: &mut Vec<(String, Vec<u8>)>, ops: Vec<wit::HeaderOp>) {
    for op in ops {
        match op {
            wit::HeaderOp::Set((n, v)) => {
                let n = n.to_ascii_lowercase();
                fields.retain(|(k, _)| *k != n);
                fields.push((n, v));
            }
            wit::HeaderOp::Append((n, v)) => fields.push((n.to_ascii_lowercase(), v)),
            wit::HeaderOp::Remove(n) => fields.retain(|(k, _)| !k.eq_ignore_ascii_case(&n)),
        }
    }
}

fn apply_to_map(map: &mut HeaderMap, ops: Vec<wit::HeaderOp>) -> Result<(), super::ChainError> {
    for op in ops {
        match op {
            wit::HeaderOp::Set((n, v)) => {
                let (n, v) = field(&n, &v)?;
                map.insert(n, v);
            }
            wit::HeaderOp::Append((n, v)) => {
                let (n, v) = field(&n, &v)?;
                map.append(n, v);
            }
            wit::HeaderOp::Remove(n) => {
                if let Ok(n) = HeaderName::from_bytes(n.as_bytes()) {
                    map.remove(n);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_edits_replace_append_and_remove_case_insensitively() {
        let mut f = vec![
            ("x-a".to_owned(), b"1".to_vec()),
            ("x-b".to_owned(), b"2".to_vec()),
        ];
        apply_to_fields(
            &mut f,
            vec![
                wit::HeaderOp::Set(("X-A".into(), b"9".to_vec())),
                wit::HeaderOp::Append(("x-b".into(), b"3".to_vec())),
                wit::HeaderOp::Remove("X-Missing".into()),
            ],
        );
        assert_eq!(
            f,
            vec![
                ("x-b".to_owned(), b"2".to_vec()),
                ("x-a".to_owned(), b"9".to_vec()),
                ("x-b".to_owned(), b"3".to_vec()),
            ]
        );
        apply_to_fields(&mut f, vec![wit::HeaderOp::Remove("X-B".into())]);
        assert_eq!(f, vec![("x-a".to_owned(), b"9".to_vec())]);
    }

    #[test]
    fn a_filter_cannot_smuggle_an_invalid_header() {
        let mut m = HeaderMap::new();
        let bad = vec![wit::HeaderOp::Set((
            "x-a".into(),
            b"line\r\nbreak".to_vec(),
        ))];
        assert!(apply_to_map(&mut m, bad).is_err());
        assert!(header_map(vec![("bad name".into(), b"v".to_vec())]).is_err());
    }

    #[test]
    fn reported_names_are_bounded() {
        assert_eq!(reported_name("tollgate_auth", "auth"), "tollgate_auth");
        assert_eq!(reported_name("{evil=\"x\"}", "auth"), "auth");
        assert_eq!(reported_name(&"a".repeat(65), "auth"), "auth");
    }
}
