//! Request framing, checked before a request is routed, as RFC 9112 and
//! RFC 9110 ask of a server: the size of the head, exactly one `Host`
//! (or, on HTTP/2, the `:authority`), an absolute-form target that names
//! the same authority as `Host`, a `Content-Length` that is one number,
//! and methods a gateway must not forward (CONNECT always, TRACE unless the
//! route allows it). Every refusal here becomes a 4xx problem+json and the
//! origin never sees the request.

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::Authority;
use http::{Method, Request};

use crate::problem::Problem;

/// Approximate size of the request head as sent: request line plus fields.
pub fn header_block_size<B>(req: &Request<B>) -> usize {
    let line = req.method().as_str().len() + target_len(req.uri()) + 12;
    req.headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + line
}

/// The length of `uri` as written (its `Display`), without writing it.
fn target_len(uri: &http::Uri) -> usize {
    uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path().len()
        + uri.query().map_or(0, |q| q.len() + 1)
}

/// Refuses CONNECT (a gateway is not a tunnel) before routing.
pub fn check_method<B>(req: &Request<B>) -> Result<(), Problem> {
    if req.method() == Method::CONNECT {
        return Err(Problem::MethodNotAllowed);
    }
    Ok(())
}

/// Refuses TRACE on a route that does not allow it: it would reflect the
/// request, credentials included, back to whoever can make a client send it.
pub fn check_route_method<B>(req: &Request<B>, allow_trace: bool) -> Result<(), Problem> {
    if req.method() == Method::TRACE && !allow_trace {
        return Err(Problem::MethodNotAllowed);
    }
    Ok(())
}

/// The host the client addressed, lower-cased, trailing dot and the
/// scheme's default port removed. `None` (a 400) for two `Host` fields, a
/// malformed one, userinfo, or an absolute-form target (or HTTP/2
/// `:authority`) that names another authority than `Host`.
pub fn request_host<B>(req: &Request<B>) -> Option<String> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let field = hosts.next();
    if hosts.next().is_some() {
        return None;
    }
    let default_port = match req.uri().scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    let from_field = match field {
        Some(v) => Some(normalise(v.to_str().ok()?, default_port)?),
        None => None,
    };
    let from_target = match req.uri().authority() {
        Some(a) => Some(normalise(a.as_str(), default_port)?),
        None => None,
    };
    match (from_field, from_target) {
        (Some(f), Some(t)) if f != t => None,
        (Some(f), _) => Some(f),
        (None, t) => t,
    }
}

/// `raw` as `host[:port]`: lower case, no trailing dot, no default port.
fn normalise(raw: &str, default_port: u16) -> Option<String> {
    let authority: Authority = raw.parse().ok()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let host = authority.host().trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    Some(match authority.port_u16() {
        Some(p) if p != default_port => format!("{host}:{p}"),
        _ => host,
    })
}

/// `Ok(None)` without a length; `Err` for a malformed or conflicting one.
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    let parse = |v: &HeaderValue| -> Result<u64, ()> {
        let s = v.to_str().map_err(|_| ())?;
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(());
        }
        s.parse().map_err(|_| ())
    };
    let n = parse(first)?;
    for v in values {
        if parse(v)? != n {
            return Err(());
        }
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(uri);
        for h in hosts {
            b = b.header("host", *h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn the_target_length_is_that_of_the_written_uri() {
        for u in [
            "/",
            "/a/b?c=d&e",
            "/?",
            "http://h.example/x?y",
            "https://h.example:8443",
            "h.example:443",
            "*",
        ] {
            let uri: http::Uri = u.parse().unwrap();
            assert_eq!(target_len(&uri), uri.to_string().len(), "{u}");
        }
    }

    #[test]
    fn content_length_rejects_conflicts_and_junk() {
        let mut h = HeaderMap::new();
        assert_eq!(content_length(&h), Ok(None));
        h.insert(header::CONTENT_LENGTH, "12".parse().unwrap());
        assert_eq!(content_length(&h), Ok(Some(12)));
        h.append(header::CONTENT_LENGTH, "13".parse().unwrap());
        assert_eq!(content_length(&h), Err(()));
        h.insert(header::CONTENT_LENGTH, "+5".parse().unwrap());
        assert_eq!(content_length(&h), Err(()));
    }

    #[test]
    fn host_is_normalised() {
        let r = req("GET", "/x", &["API.Example.com.:8080"]);
        assert_eq!(request_host(&r).as_deref(), Some("api.example.com:8080"));
        assert_eq!(
            request_host(&req("GET", "/x", &["a.example:80"])).as_deref(),
            Some("a.example")
        );
        assert_eq!(request_host(&req("GET", "/x", &["a@b"])), None);
        assert_eq!(request_host(&req("GET", "/x", &[])), None);
    }

    #[test]
    fn one_host_and_an_agreeing_target() {
        assert_eq!(request_host(&req("GET", "/x", &["a", "b"])), None);
        assert_eq!(request_host(&req("GET", "/x", &["a", "a"])), None);
        assert_eq!(request_host(&req("GET", "http://b/x", &["a"])), None);
        assert_eq!(request_host(&req("GET", "http://a:81/x", &["a"])), None);
        assert_eq!(
            request_host(&req("GET", "http://A.:80/x", &["a"])).as_deref(),
            Some("a")
        );
        // HTTP/2: the :authority alone.
        assert_eq!(
            request_host(&req("GET", "http://a:8080/x", &[])).as_deref(),
            Some("a:8080")
        );
    }

    #[test]
    fn connect_always_and_trace_by_route_are_refused() {
        let connect = Request::builder()
            .method("CONNECT")
            .uri("internal.example:443")
            .body(())
            .unwrap();
        assert_eq!(check_method(&connect), Err(Problem::MethodNotAllowed));
        let trace = req("TRACE", "/", &["a"]);
        assert_eq!(check_method(&trace), Ok(()));
        assert_eq!(
            check_route_method(&trace, false),
            Err(Problem::MethodNotAllowed)
        );
        assert_eq!(check_route_method(&trace, true), Ok(()));
        assert_eq!(check_route_method(&req("GET", "/", &["a"]), false), Ok(()));
    }
}
