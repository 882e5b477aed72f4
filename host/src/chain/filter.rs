//! The filter path: runs of components that export Tollgate's filter
//! interface (`tollgate:gate/filter@0.4.0`, `wit/filter.wit`) are called
//! synchronously, in order, with plain data, on the task that holds the
//! request — no `wasi:http` resources, streams or async hops.
//!
//! Each filter is sent only the request headers it declared it reads, and
//! the response edits it declared fixed are parsed once at setup and
//! applied by the host to every response through it, so neither crosses
//! into the guest per request. A filter that named the inputs it looks at
//! (`called-for`, [`super::request_match`]) is not called at all for a
//! request that carries none of them.
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

use super::request_match::RequestMatch;
use super::sandbox::{ChainState, StoreFactory};
use super::slot::{Failure, RequestSlot};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "tollgate:gate/gate",
        exports: {
            // The request pass runs every filter inside one event loop.
            "tollgate:gate/filter.on-request": async | store,
            default: async,
        },
    });
}

use bindings::exports::tollgate::gate::filter as wit;
pub use bindings::{Gate, GatePre};

/// The interface a filter-capable component exports.
pub const FILTER: &str = "tollgate:gate/filter@0.4.0";

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
    /// The request headers it reads; `None`: all.
    reads: Option<Vec<HeaderName>>,
    /// With `wants_response`: the response headers `on-response` reads
    /// (it is called only when one is there); `None`: all.
    response_reads: Option<Vec<HeaderName>>,
    /// Edits for every response through it, before the verdict's.
    fixed: Vec<Edit>,
    /// The requests `on-request` is called for; `None`: all.
    called_for: Option<RequestMatch>,
}

/// A header edit, parsed and checked.
#[derive(Clone, Debug, PartialEq)]
enum Edit {
    Set(HeaderName, HeaderValue),
    Append(HeaderName, HeaderValue),
    Remove(HeaderName),
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
                    // A filter that reads the body is called for every request.
                    called_for: c
                        .called_for
                        .filter(|_| c.body_limit.is_none())
                        .map(|m| RequestMatch::new(m.query_params, &m.headers)),
                    body_limit: c.body_limit,
                    wants_response: c.wants_response,
                    reads: c.request_headers.map(|names| read_list(&names)),
                    response_reads: c.response_headers.map(|names| read_list(&names)),
                    fixed: parse_edits(c.response_edits).map_err(|_| {
                        SetupError::Other(wasmtime::format_err!(
                            "component `{}` declared an invalid fixed response header",
                            f.name
                        ))
                    })?,
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
        let head = wit::RequestHead {
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
            headers: Vec::new(),
            body: None,
        };

        let mut set = self.take(slot).await?;
        let query = parts.uri.query();
        let pass = self
            .request_pass(
                &mut set,
                &mut parts.headers,
                head,
                query,
                bytes.as_ref(),
                slot,
            )
            .await;
        let Pass { edits, answer } = match pass {
            Ok(p) => {
                self.give_back(set);
                p
            }
            Err(PassError::Guest(i, e)) => {
                self.failed(slot, &self.filters[i], &e);
                return Err(super::ChainError::Component(e));
            }
            Err(PassError::Edit(e)) => {
                self.give_back(set);
                return Err(e);
            }
        };

        let mut res = match answer {
            Some(a) => {
                let mut res = http::Response::new(full(Bytes::from(a.body)));
                *res.status_mut() = http::StatusCode::from_u16(a.status)
                    .map_err(|_| bad_answer("an invalid status"))?;
                *res.headers_mut() = header_map(a.headers)?;
                res
            }
            None => {
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
            let f = &self.filters[i];
            apply_edits(res.headers_mut(), &f.caps.fixed);
            apply_to_map(res.headers_mut(), ops)?;
            if !f.caps.wants_response
                || !carries_any(res.headers(), f.caps.response_reads.as_deref())
            {
                continue;
            }
            let set = match &mut again {
                Some(s) => s,
                None => again.insert(self.take(slot).await?),
            };
            let status = res.status().as_u16();
            let call = set.gates[i]
                .tollgate_gate_filter()
                .call_on_response(
                    &mut set.store,
                    status,
                    &fields(res.headers(), f.caps.response_reads.as_deref()),
                )
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

/// What the request pass left for the way back: each filter's response
/// edits (outermost first), and the answer if one answered.
struct Pass {
    edits: Vec<Vec<wit::HeaderOp>>,
    answer: Option<wit::Response>,
}

enum PassError {
    /// Filter `i` failed (trap, panic, deadline, memory): drop the set.
    Guest(usize, wasmtime::Error),
    /// A filter returned an invalid request edit.
    Edit(super::ChainError),
}

impl FilterRun {
    /// Calls each filter's `on-request` in order, applying its request
    /// edits to `headers` before the next, and timing each call. All the
    /// calls run inside one `run_concurrent` of the set's store: one event
    /// loop per request rather than one per call.
    async fn request_pass(
        &self,
        set: &mut FilterSet,
        headers: &mut HeaderMap,
        head: wit::RequestHead,
        query: Option<&str>,
        bytes: Option<&Bytes>,
        slot: &RequestSlot,
    ) -> Result<Pass, PassError> {
        let FilterSet { store, gates } = set;
        let mut at = 0;
        let run = store
            .run_concurrent(async |accessor| {
                let mut pass = Pass {
                    edits: Vec::with_capacity(self.filters.len()),
                    answer: None,
                };
                for (i, f) in self.filters.iter().enumerate() {
                    at = i;
                    // Nothing it looks at is there: as if it passed the
                    // request on with no edits.
                    if f.caps
                        .called_for
                        .as_ref()
                        .is_some_and(|m| !m.matches(query, headers))
                    {
                        pass.edits.push(Vec::new());
                        continue;
                    }
                    let this = wit::RequestHead {
                        method: head.method.clone(),
                        scheme: head.scheme.clone(),
                        authority: head.authority.clone(),
                        path_with_query: head.path_with_query.clone(),
                        headers: fields(headers, f.caps.reads.as_deref()),
                        body: match (f.caps.body_limit, bytes) {
                            (Some(_), Some(b)) => Some(b.to_vec()),
                            _ => None,
                        },
                    };
                    let started = Instant::now();
                    let verdict = gates[i]
                        .tollgate_gate_filter()
                        .call_on_request(accessor, this)
                        .await
                        .map_err(|e| PassError::Guest(i, e))?;
                    slot.record_time(&f.caps.reported, started);
                    pass.edits.push(verdict.response);
                    if let Some(a) = verdict.answer {
                        pass.answer = Some(a);
                        break;
                    }
                    apply_to_map(headers, verdict.request).map_err(PassError::Edit)?;
                }
                Ok(pass)
            })
            .await;
        match run {
            Ok(pass) => pass,
            Err(e) => Err(PassError::Guest(at, e)),
        }
    }
}

/// The header names a filter declared it reads, each once (any component
/// may declare them, not only SDK ones): a name no header can have
/// cannot be read, and a name twice would send its values twice.
fn read_list(names: &[String]) -> Vec<HeaderName> {
    let mut list: Vec<HeaderName> = names
        .iter()
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    list.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    list.dedup();
    list
}

/// Whether `headers` has a field a filter reads (`None`: it reads all).
fn carries_any(headers: &HeaderMap, reads: Option<&[HeaderName]>) -> bool {
    reads.is_none_or(|names| names.iter().any(|n| headers.contains_key(n)))
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

/// The header list a filter is sent: all of `headers`, or only the names
/// it `reads`.
fn fields(headers: &HeaderMap, reads: Option<&[HeaderName]>) -> Vec<(String, Vec<u8>)> {
    let field =
        |(n, v): (&HeaderName, &HeaderValue)| (n.as_str().to_owned(), v.as_bytes().to_vec());
    match reads {
        None => headers.iter().map(field).collect(),
        Some(names) => names
            .iter()
            .flat_map(|n| headers.get_all(n).iter().map(move |v| field((n, v))))
            .collect(),
    }
}

fn header_map(fields: Vec<(String, Vec<u8>)>) -> Result<HeaderMap, super::ChainError> {
    let mut map = HeaderMap::with_capacity(fields.len());
    for (n, v) in fields {
        let (n, v) = field(&n, v)?;
        map.append(n, v);
    }
    Ok(map)
}

/// Checks a header a filter returned; the value keeps the memory it was
/// lifted into.
fn field(n: &str, v: Vec<u8>) -> Result<(HeaderName, HeaderValue), super::ChainError> {
    Ok((
        HeaderName::from_bytes(n.as_bytes()).map_err(|_| bad_answer("an invalid header name"))?,
        HeaderValue::from_maybe_shared(Bytes::from(v))
            .map_err(|_| bad_answer("an invalid header value"))?,
    ))
}

/// Parses and checks a filter's header ops. An invalid name or value is
/// an error; removing a name no header can have is dropped (it would do
/// nothing).
fn parse_edits(ops: Vec<wit::HeaderOp>) -> Result<Vec<Edit>, super::ChainError> {
    ops.into_iter()
        .filter_map(|op| parse_edit(op).transpose())
        .collect()
}

/// One op, checked; `None` for a removal of a name no header can have.
fn parse_edit(op: wit::HeaderOp) -> Result<Option<Edit>, super::ChainError> {
    Ok(Some(match op {
        wit::HeaderOp::Set((n, v)) => {
            let (n, v) = field(&n, v)?;
            Edit::Set(n, v)
        }
        wit::HeaderOp::Append((n, v)) => {
            let (n, v) = field(&n, v)?;
            Edit::Append(n, v)
        }
        wit::HeaderOp::Remove(n) => match HeaderName::from_bytes(n.as_bytes()) {
            Ok(n) => Edit::Remove(n),
            Err(_) => return Ok(None),
        },
    }))
}

fn apply_edits(map: &mut HeaderMap, edits: &[Edit]) {
    for e in edits {
        apply_edit(map, e.clone());
    }
}

fn apply_edit(map: &mut HeaderMap, edit: Edit) {
    match edit {
        Edit::Set(n, v) => {
            map.insert(n, v);
        }
        Edit::Append(n, v) => {
            map.append(n, v);
        }
        Edit::Remove(n) => {
            map.remove(n);
        }
    }
}

/// Applies a filter's ops to a header block (the request on its way in,
/// the response on its way out), each as it is checked. Names are
/// case-insensitive; an invalid name or value fails the request (the
/// block is then dropped with it, so ops already applied do not matter).
fn apply_to_map(map: &mut HeaderMap, ops: Vec<wit::HeaderOp>) -> Result<(), super::ChainError> {
    for op in ops {
        if let Some(e) = parse_edit(op)? {
            apply_edit(map, e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_replace_append_and_remove_case_insensitively() {
        let mut m = HeaderMap::new();
        m.insert("x-a", HeaderValue::from_static("1"));
        m.insert("x-b", HeaderValue::from_static("2"));
        apply_to_map(
            &mut m,
            vec![
                wit::HeaderOp::Set(("X-A".into(), b"9".to_vec())),
                wit::HeaderOp::Append(("x-b".into(), b"3".to_vec())),
                wit::HeaderOp::Remove("X-Missing".into()),
                wit::HeaderOp::Remove("bad name".into()),
            ],
        )
        .unwrap();
        assert_eq!(m.get_all("x-a").iter().collect::<Vec<_>>(), ["9"]);
        assert_eq!(m.get_all("x-b").iter().collect::<Vec<_>>(), ["2", "3"]);
        apply_to_map(&mut m, vec![wit::HeaderOp::Remove("X-B".into())]).unwrap();
        assert!(!m.contains_key("x-b"));
    }

    #[test]
    fn a_filter_is_sent_only_the_headers_it_reads() {
        let mut m = HeaderMap::new();
        m.append("x-a", HeaderValue::from_static("1"));
        m.append("x-a", HeaderValue::from_static("2"));
        m.insert("cookie", HeaderValue::from_static("secret"));
        let reads = [
            HeaderName::from_static("x-a"),
            HeaderName::from_static("x-none"),
        ];
        assert_eq!(
            fields(&m, Some(&reads)),
            vec![
                ("x-a".to_owned(), b"1".to_vec()),
                ("x-a".to_owned(), b"2".to_vec())
            ]
        );
        assert_eq!(fields(&m, None).len(), 3);
    }

    #[test]
    fn on_response_is_called_only_for_a_header_it_reads() {
        let mut m = HeaderMap::new();
        m.insert("content-type", HeaderValue::from_static("text/plain"));
        let cookies = [HeaderName::from_static("set-cookie")];
        assert!(carries_any(&m, None));
        assert!(!carries_any(&m, Some(&cookies)));
        assert!(!carries_any(&m, Some(&[])));
        m.append("set-cookie", HeaderValue::from_static("a=1"));
        assert!(carries_any(&m, Some(&cookies)));
    }

    #[test]
    fn declared_reads_are_checked_and_deduplicated() {
        let names = ["X-A", "x-a", "bad name", "x-b"].map(String::from);
        assert_eq!(
            read_list(&names)
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>(),
            ["x-a", "x-b"]
        );
    }

    #[test]
    fn fixed_edits_are_checked_once_and_applied() {
        let edits = parse_edits(vec![
            wit::HeaderOp::Remove("server".into()),
            wit::HeaderOp::Set(("x-frame-options".into(), b"DENY".to_vec())),
            wit::HeaderOp::Append(("vary".into(), b"Origin".to_vec())),
        ])
        .unwrap();
        let mut m = HeaderMap::new();
        m.insert("server", HeaderValue::from_static("x"));
        m.insert("vary", HeaderValue::from_static("Accept"));
        apply_edits(&mut m, &edits);
        assert!(!m.contains_key("server"));
        assert_eq!(m["x-frame-options"], "DENY");
        assert_eq!(m.get_all("vary").iter().count(), 2);
        assert!(
            parse_edits(vec![wit::HeaderOp::Remove("bad name".into())])
                .unwrap()
                .is_empty()
        );
        assert!(parse_edits(vec![wit::HeaderOp::Set(("x".into(), b"a\nb".to_vec()))]).is_err());
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
