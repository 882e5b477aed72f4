//! The one way to write a gate: a [`Filter`]. Its author writes the
//! decision once; [`export_filter!`](crate::export_filter) exports it twice
//! from the same `.wasm`:
//!
//! - as `tollgate:gate/filter@0.4.0` (see `wit/filter.wit`), the fast path
//!   Tollgate's host calls synchronously with plain data;
//! - as a standard `wasi:http/handler@0.3.0` middleware (filter, then
//!   `next`, then the response edits), which Spin 4.1+ runs unchanged.
//!
//! A filter sees the request head (and the body, if it asks for it), may
//! edit the request's headers, records edits for the response on its way
//! back, and either lets the request go on or answers it.
//!
//! Three declarations keep the fast path cheap, and both paths honour them
//! the same way ([`Prepared`]): the request headers a filter reads (only
//! those are handed to it), the response edits that never depend on the
//! request (made once, applied to every response through the filter), and
//! the inputs without which it has nothing to do (a request that carries
//! none of them is passed on without calling it).

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use crate::config::Vars;
pub use crate::header_name::Name;

/// A gate policy, written once for both contracts.
pub trait Filter: Sized + Send + Sync + 'static {
    /// The variables the filter reads. On Spin they are loaded through
    /// `spin:variables`; Tollgate's host hands them to `init`.
    const VARIABLES: &'static [&'static str];

    /// Whether [`Filter::on_response`] is to be called.
    const WANTS_RESPONSE: bool = false;

    /// Validates the variables and builds the filter, once per instance.
    /// Errors name the variable (`variable `x`: ...`) and never its value.
    fn init(vars: &Vars) -> Result<Self, String>;

    /// The largest body the filter reads; `None` (the default) when it
    /// never reads bodies, which then are not even sent to it.
    fn body_limit(&self) -> Option<usize> {
        None
    }

    /// The request headers the filter reads (lower-case names). Only these
    /// are handed to it, on both paths; `None` (the default) hands it every
    /// header. A filter that names them is spared copying the rest of a
    /// request's headers in and out of its memory on every request.
    fn request_headers(&self) -> Option<Vec<String>> {
        None
    }

    /// With [`Filter::WANTS_RESPONSE`]: the response headers
    /// [`Filter::on_response`] reads (lower-case names). It is called only
    /// for a response that carries one of them (never, for an empty list),
    /// and is shown only those; `None` (the default): every response, all
    /// of its headers.
    fn response_headers(&self) -> Option<Vec<String>> {
        None
    }

    /// Response edits that do not depend on the request (fixed security
    /// headers, say): made once after `init`, and applied to every
    /// response that comes back through the filter, before the edits
    /// `on_request` records.
    fn fixed_response_edits(&self, _res: &mut ResponseEdits) {}

    /// The query parameters and request headers without which
    /// [`Filter::on_request`] would pass the request on unchanged, with no
    /// response edits: a request that carries none of them is passed on
    /// without calling it. Declare this only when that is exactly so.
    /// `None` (the default): called for every request. Not used for a
    /// filter that reads the body ([`Filter::body_limit`]).
    fn called_for(&self) -> Option<RequestMatch> {
        None
    }

    /// Decides on a request. Edits to `req`'s headers go on with it;
    /// `res` collects edits for the response that comes back through this
    /// filter, including the filter's own answer.
    fn on_request(&self, req: &mut Request, res: &mut ResponseEdits) -> Verdict;

    /// Edits a response on its way back, after `on_request`'s edits.
    fn on_response(&self, _status: u16, _headers: &HeaderMap, _res: &mut ResponseEdits) {}
}

/// The inputs a filter's `on_request` looks at (see [`Filter::called_for`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMatch {
    /// Query parameter names, as `application/x-www-form-urlencoded`
    /// parsing decodes them (`%75rl` is `url`), compared exactly.
    pub query_params: Vec<String>,
    /// Request header names (lower-case).
    pub headers: Vec<String>,
}

impl RequestMatch {
    /// Whether a request with this query and these headers carries one of
    /// the inputs. The host makes the same test on the fast path.
    pub fn matches(&self, query: Option<&str>, headers: &HeaderMap) -> bool {
        self.headers
            .iter()
            .any(|h| headers.contains_key(h.as_str()))
            || query.is_some_and(|q| {
                !self.query_params.is_empty()
                    && form_urlencoded::parse(q.as_bytes())
                        .any(|(name, _)| self.query_params.iter().any(|p| *p == name))
            })
    }
}

/// A filter's own answer: a complete response as plain data.
pub type Answer = http::Response<Bytes>;

/// What [`Filter::on_request`] decided.
pub enum Verdict {
    /// Pass the (edited) request on.
    Continue,
    /// Answer now; nothing further in the chain sees the request.
    Answer(Answer),
}

/// One change to a header block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOp {
    Set(HeaderName, HeaderValue),
    Append(HeaderName, HeaderValue),
    Remove(HeaderName),
}

impl HeaderOp {
    pub fn apply(&self, headers: &mut HeaderMap) {
        match self {
            HeaderOp::Set(n, v) => {
                headers.insert(n.clone(), v.clone());
            }
            HeaderOp::Append(n, v) => {
                headers.append(n.clone(), v.clone());
            }
            HeaderOp::Remove(n) => {
                headers.remove(n);
            }
        }
    }
}

/// Checks a header name and value, `None` if either is invalid.
fn field(name: impl Name, value: &str) -> Option<(HeaderName, HeaderValue)> {
    Some((name.header_name()?, HeaderValue::from_str(value).ok()?))
}

/// The request a filter decides on.
pub struct Request {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Option<Bytes>,
    edits: Vec<HeaderOp>,
}

impl Request {
    pub fn new(method: Method, uri: Uri, headers: HeaderMap, body: Option<Bytes>) -> Self {
        Self {
            method,
            uri,
            headers,
            body,
            edits: Vec::new(),
        }
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body, when [`Filter::body_limit`] asked for it.
    pub fn body(&self) -> Option<&Bytes> {
        self.body.as_ref()
    }

    /// Sets `name` (replacing any values); an invalid name or value is ignored.
    pub fn set_header(&mut self, name: impl Name, value: &str) {
        if let Some((n, v)) = field(name, value) {
            let op = HeaderOp::Set(n, v);
            op.apply(&mut self.headers);
            self.edits.push(op);
        }
    }

    /// Removes every value of `name`.
    pub fn remove_header(&mut self, name: impl Name) {
        // Looked up first: an absent name costs no parse.
        if name.is_in(&self.headers)
            && let Some(n) = name.header_name()
        {
            let op = HeaderOp::Remove(n);
            op.apply(&mut self.headers);
            self.edits.push(op);
        }
    }

    /// The head after the filter's edits, and the edits themselves.
    pub fn into_parts(self) -> (HeaderMap, Vec<HeaderOp>, Option<Bytes>) {
        (self.headers, self.edits, self.body)
    }
}

/// Edits for the response on its way back through a filter.
#[derive(Debug, Default, Clone)]
pub struct ResponseEdits(Vec<HeaderOp>);

impl ResponseEdits {
    /// Sets `name`, replacing what the response had.
    pub fn set(&mut self, name: impl Name, value: &str) {
        if let Some((n, v)) = field(name, value) {
            self.0.push(HeaderOp::Set(n, v));
        }
    }

    /// Adds a value to `name`.
    pub fn append(&mut self, name: impl Name, value: &str) {
        if let Some((n, v)) = field(name, value) {
            self.0.push(HeaderOp::Append(n, v));
        }
    }

    /// Adds a value to `name` as it is (a value taken from a header).
    pub fn append_value(&mut self, name: impl Name, value: HeaderValue) {
        if let Some(n) = name.header_name() {
            self.0.push(HeaderOp::Append(n, value));
        }
    }

    /// Removes `name` from the response.
    pub fn remove(&mut self, name: impl Name) {
        if let Some(n) = name.header_name() {
            self.0.push(HeaderOp::Remove(n));
        }
    }

    pub fn ops(&self) -> &[HeaderOp] {
        &self.0
    }

    pub fn into_ops(self) -> Vec<HeaderOp> {
        self.0
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for op in &self.0 {
            op.apply(headers);
        }
    }
}

/// A filter with what it declared once: the headers it reads and its
/// fixed response edits. Both exports serve this, so the filter sees the
/// same request and its responses get the same edits on either path.
pub struct Prepared<F> {
    pub filter: F,
    reads: Option<Vec<HeaderName>>,
    response_reads: Option<Vec<HeaderName>>,
    fixed: ResponseEdits,
    called_for: Option<RequestMatch>,
}

/// Valid header names, sorted, each once: a name no header can have
/// cannot be read.
fn name_list(names: Vec<String>) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = names
        .iter()
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    names
}

/// The fields of `headers` named in `names`.
fn narrow(names: &[HeaderName], headers: &HeaderMap) -> HeaderMap {
    let mut view = HeaderMap::with_capacity(names.len());
    for name in names {
        for v in headers.get_all(name) {
            view.append(name.clone(), v.clone());
        }
    }
    view
}

impl<F: Filter> Prepared<F> {
    /// Builds the filter from its variables and takes its declarations.
    /// A name that is not a valid header name is dropped: no request can
    /// carry it.
    pub fn init(vars: &Vars) -> Result<Self, String> {
        let filter = F::init(vars)?;
        let reads = filter.request_headers().map(name_list);
        let response_reads = filter.response_headers().map(name_list);
        let mut fixed = ResponseEdits::default();
        filter.fixed_response_edits(&mut fixed);
        let called_for = match filter.body_limit() {
            Some(_) => None,
            None => filter.called_for().map(|m| RequestMatch {
                query_params: m.query_params,
                headers: name_list(m.headers)
                    .iter()
                    .map(|n| n.as_str().to_owned())
                    .collect(),
            }),
        };
        Ok(Self {
            filter,
            reads,
            response_reads,
            fixed,
            called_for,
        })
    }

    /// The inputs without which the filter is not called (checked header
    /// names); `None`: it is called for every request.
    pub fn request_match(&self) -> Option<&RequestMatch> {
        self.called_for.as_ref()
    }

    /// Whether `on_request` is to be called for a request with this query
    /// and these headers (see [`Filter::called_for`]).
    pub fn called_for(&self, query: Option<&str>, headers: &HeaderMap) -> bool {
        self.called_for
            .as_ref()
            .is_none_or(|m| m.matches(query, headers))
    }

    /// The response headers `on_response` reads; `None`: all.
    pub fn response_reads(&self) -> Option<&[HeaderName]> {
        self.response_reads.as_deref()
    }

    /// Runs `on_response` if the filter wants this response (it asked for
    /// responses, and this one carries a header it reads), showing it only
    /// the headers it reads; its edits go into `res`.
    pub fn respond(&self, status: u16, headers: &HeaderMap, res: &mut ResponseEdits) {
        if !F::WANTS_RESPONSE {
            return;
        }
        match &self.response_reads {
            None => self.filter.on_response(status, headers, res),
            Some(names) if names.iter().any(|n| headers.contains_key(n)) => self
                .filter
                .on_response(status, &narrow(names, headers), res),
            Some(_) => {}
        }
    }

    /// The request headers the filter reads; `None`: all.
    pub fn reads(&self) -> Option<&[HeaderName]> {
        self.reads.as_deref()
    }

    /// The fixed response edits.
    pub fn fixed(&self) -> &ResponseEdits {
        &self.fixed
    }

    /// The headers the filter is shown: only those it reads, or `None`
    /// when it reads them all (then it is shown `headers` itself).
    pub fn view(&self, headers: &HeaderMap) -> Option<HeaderMap> {
        Some(narrow(self.reads.as_ref()?, headers))
    }
}

/// The answer to a body larger than the filter's limit.
pub fn body_too_large() -> http::Response<Bytes> {
    crate::problem::answer(413, "The request body is too large to inspect.")
}

/// Runs `filter` on `req`: the one decision both exports share. A body
/// over the filter's limit is answered here, before the filter sees it.
pub fn decide<F: Filter>(filter: &F, req: &mut Request, res: &mut ResponseEdits) -> Verdict {
    if let (Some(limit), Some(body)) = (filter.body_limit(), req.body())
        && body.len() > limit
    {
        return Verdict::Answer(body_too_large());
    }
    filter.on_request(req, res)
}

/// Splits `variable `x`: message` into its variable and message.
pub fn split_config_error(e: &str) -> (&str, &str) {
    e.strip_prefix("variable `")
        .and_then(|rest| rest.split_once("`: "))
        .unwrap_or(("", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Deny;
    impl Filter for Deny {
        const VARIABLES: &'static [&'static str] = &[];
        fn init(_: &Vars) -> Result<Self, String> {
            Ok(Deny)
        }
        fn body_limit(&self) -> Option<usize> {
            Some(4)
        }
        fn on_request(&self, req: &mut Request, res: &mut ResponseEdits) -> Verdict {
            req.set_header("x-seen", "1");
            req.remove_header("x-drop");
            res.append("vary", "Origin");
            Verdict::Continue
        }
    }

    #[test]
    fn edits_are_applied_and_recorded() {
        let mut h = HeaderMap::new();
        h.insert("x-drop", HeaderValue::from_static("a"));
        let mut req = Request::new(Method::GET, Uri::from_static("/"), h, Some(Bytes::new()));
        let mut res = ResponseEdits::default();
        assert!(matches!(
            decide(&Deny, &mut req, &mut res),
            Verdict::Continue
        ));
        let (headers, edits, _) = req.into_parts();
        assert_eq!(headers.get("x-seen").unwrap(), "1");
        assert!(!headers.contains_key("x-drop"));
        assert_eq!(edits.len(), 2);
        let mut out = HeaderMap::new();
        out.insert("vary", HeaderValue::from_static("Accept"));
        res.apply(&mut out);
        assert_eq!(out.get_all("vary").iter().count(), 2);
    }

    #[test]
    fn a_body_over_the_limit_is_answered_before_the_filter() {
        let mut req = Request::new(
            Method::POST,
            Uri::from_static("/"),
            HeaderMap::new(),
            Some(Bytes::from_static(b"12345")),
        );
        let mut res = ResponseEdits::default();
        match decide(&Deny, &mut req, &mut res) {
            Verdict::Answer(a) => assert_eq!(a.status(), 413),
            Verdict::Continue => panic!("a body over the limit went on"),
        }
        assert!(req.headers().get("x-seen").is_none());
    }

    struct Narrow;
    impl Filter for Narrow {
        const VARIABLES: &'static [&'static str] = &[];
        fn init(_: &Vars) -> Result<Self, String> {
            Ok(Narrow)
        }
        fn request_headers(&self) -> Option<Vec<String>> {
            Some(vec![
                "x-b".into(),
                "x-a".into(),
                "bad name".into(),
                "x-a".into(),
            ])
        }
        fn fixed_response_edits(&self, res: &mut ResponseEdits) {
            res.set("x-frame-options", "DENY");
        }
        fn on_request(&self, _: &mut Request, _: &mut ResponseEdits) -> Verdict {
            Verdict::Continue
        }
    }

    #[test]
    fn a_filter_is_shown_only_the_headers_it_reads() {
        let p =
            Prepared::<Narrow>::init(&Vars::from_pairs(Vec::<(String, String)>::new())).unwrap();
        assert_eq!(
            p.reads()
                .unwrap()
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>(),
            ["x-a", "x-b"]
        );
        let mut h = HeaderMap::new();
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        h.insert("x-secret", HeaderValue::from_static("s"));
        let view = p.view(&h).unwrap();
        assert_eq!(view.get_all("x-a").iter().count(), 2);
        assert!(!view.contains_key("x-secret"));
        assert!(!view.contains_key("x-b"));
        assert_eq!(p.fixed().ops().len(), 1);
        let all =
            Prepared::<Deny>::init(&Vars::from_pairs(Vec::<(String, String)>::new())).unwrap();
        assert!(all.view(&h).is_none());
        assert!(all.fixed().ops().is_empty());
    }

    /// Counts the `set-cookie` fields it is shown.
    struct Cookies;
    impl Filter for Cookies {
        const VARIABLES: &'static [&'static str] = &[];
        const WANTS_RESPONSE: bool = true;
        fn init(_: &Vars) -> Result<Self, String> {
            Ok(Cookies)
        }
        fn response_headers(&self) -> Option<Vec<String>> {
            Some(vec!["set-cookie".into()])
        }
        fn on_request(&self, _: &mut Request, _: &mut ResponseEdits) -> Verdict {
            Verdict::Continue
        }
        fn on_response(&self, _: u16, headers: &HeaderMap, res: &mut ResponseEdits) {
            let shown = headers.len().to_string();
            res.set("x-shown", &shown);
        }
    }

    #[test]
    fn on_response_runs_only_for_responses_with_a_header_it_reads() {
        let p =
            Prepared::<Cookies>::init(&Vars::from_pairs(Vec::<(String, String)>::new())).unwrap();
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        let mut res = ResponseEdits::default();
        p.respond(200, &h, &mut res);
        assert!(res.ops().is_empty(), "called without a set-cookie");
        h.append("set-cookie", HeaderValue::from_static("a=1"));
        h.append("set-cookie", HeaderValue::from_static("b=2"));
        p.respond(200, &h, &mut res);
        let mut out = HeaderMap::new();
        res.apply(&mut out);
        assert_eq!(out["x-shown"], "2", "shown only the set-cookie fields");
        // A filter that does not want responses is never called.
        let d = Prepared::<Deny>::init(&Vars::from_pairs(Vec::<(String, String)>::new())).unwrap();
        let mut res = ResponseEdits::default();
        d.respond(200, &h, &mut res);
        assert!(res.ops().is_empty());
    }

    #[test]
    fn config_errors_split_into_variable_and_message() {
        assert_eq!(
            split_config_error("variable `jwt_secret`: must be at least 32 bytes"),
            ("jwt_secret", "must be at least 32 bytes")
        );
        assert_eq!(split_config_error("no variable"), ("", "no variable"));
    }

    struct Picky(Option<usize>);
    impl Filter for Picky {
        const VARIABLES: &'static [&'static str] = &[];
        fn init(vars: &Vars) -> Result<Self, String> {
            Ok(Picky(vars.get("body").map(|_| 8)))
        }
        fn body_limit(&self) -> Option<usize> {
            self.0
        }
        fn called_for(&self) -> Option<RequestMatch> {
            Some(RequestMatch {
                query_params: vec!["url".into()],
                headers: vec!["X-Hook".into(), "bad name".into()],
            })
        }
        fn on_request(&self, _: &mut Request, _: &mut ResponseEdits) -> Verdict {
            Verdict::Continue
        }
    }

    #[test]
    fn a_filter_is_called_only_for_the_inputs_it_named() {
        let p = Prepared::<Picky>::init(&Vars::from_pairs::<&str, &str>([])).unwrap();
        let m = p.request_match().unwrap();
        assert_eq!(m.headers, ["x-hook"], "names are checked and lower-cased");
        let none = HeaderMap::new();
        let mut hook = HeaderMap::new();
        hook.insert("x-hook", HeaderValue::from_static("x"));
        assert!(!p.called_for(None, &none));
        assert!(!p.called_for(Some("q=1&URL=x&urls=y"), &none));
        assert!(p.called_for(Some("q=1&url=x"), &none));
        assert!(p.called_for(Some("%75rl=x"), &none), "names are decoded");
        assert!(p.called_for(Some("q=1"), &hook));
        // A filter that reads the body is always called.
        let body = Prepared::<Picky>::init(&Vars::from_pairs([("body", "1")])).unwrap();
        assert!(body.request_match().is_none());
        assert!(body.called_for(None, &none));
    }
}
