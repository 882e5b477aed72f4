//! Which requests a filter is called for (`capabilities.called-for` in
//! `wit/filter.wit`): a filter that declared the query parameters and
//! request headers it looks at is skipped for a request that carries none
//! of them, as if it had passed the request on with no edits. The test is
//! the SDK's (`tollgate_sdk::filter::RequestMatch::matches`): the same
//! form-urlencoded decoding of parameter names, so an encoded name
//! (`%75rl`) cannot slip past a filter that would have checked it.

use http::{HeaderMap, HeaderName};

/// The inputs a filter's `on-request` looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestMatch {
    params: Vec<String>,
    headers: Vec<HeaderName>,
}

impl RequestMatch {
    /// From a filter's declaration. A header name no request can carry is
    /// dropped; a parameter name is kept as declared (any text can be one).
    pub fn new(params: Vec<String>, headers: &[String]) -> Self {
        RequestMatch {
            params,
            headers: headers
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
        }
    }

    /// Whether the request carries one of the inputs.
    pub fn matches(&self, query: Option<&str>, headers: &HeaderMap) -> bool {
        self.headers.iter().any(|h| headers.contains_key(h))
            || query.is_some_and(|q| {
                !self.params.is_empty()
                    && url::form_urlencoded::parse(q.as_bytes())
                        .any(|(name, _)| self.params.iter().any(|p| *p == name))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn parameters_match_by_decoded_name_and_headers_by_name() {
        let m = RequestMatch::new(
            vec!["url".into(), "next page".into()],
            &["X-Hook".into(), "bad name".into()],
        );
        let none = HeaderMap::new();
        assert!(!m.matches(None, &none));
        assert!(!m.matches(Some(""), &none));
        assert!(!m.matches(Some("q=1&URL=x&urls=y&ur=l"), &none));
        assert!(m.matches(Some("q=1&url"), &none));
        assert!(m.matches(Some("%75%72l=x"), &none));
        assert!(m.matches(Some("next+page=2"), &none));
        assert!(m.matches(Some("a=1&next%20page=2"), &none));
        let mut hook = HeaderMap::new();
        hook.insert("x-hook", HeaderValue::from_static("v"));
        assert!(m.matches(None, &hook));
        let nothing = RequestMatch::new(Vec::new(), &[]);
        assert!(!nothing.matches(Some("url=x"), &hook));
    }
}
