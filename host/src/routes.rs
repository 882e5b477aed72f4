//! Route matching: which route serves a request, by host and path prefix.
//!
//! Routes naming the request's host win over host-less ones; among those,
//! the longest matching path prefix wins. A prefix matches on segment
//! boundaries: `/api` matches `/api` and `/api/x`, never `/apix`.

/// A matchable route: its host (lower case, no port) and normalised prefix.
pub trait Matchable {
    fn host(&self) -> Option<&str>;
    fn prefix(&self) -> &str;
    /// Whether only the exact path matches.
    fn exact(&self) -> bool {
        false
    }
}

/// Routes in match order.
pub struct RouteTable<R> {
    routes: Vec<R>,
}

impl<R: Matchable> RouteTable<R> {
    pub fn new(mut routes: Vec<R>) -> Self {
        // Host-specific first, then longer prefixes first.
        routes.sort_by_key(|r| {
            (
                r.host().is_none(),
                !r.exact(),
                std::cmp::Reverse(r.prefix().len()),
            )
        });
        Self { routes }
    }

    /// The routes, in match order.
    pub fn iter(&self) -> impl Iterator<Item = &R> {
        self.routes.iter()
    }

    /// How many routes there are.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The route for `host` (which may carry a `:port`) and `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<&R> {
        let bare = strip_port(host);
        self.routes.iter().find(|r| {
            r.host().is_none_or(|h| h == bare)
                && if r.exact() {
                    path == r.prefix()
                } else {
                    prefix_matches(r.prefix(), path)
                }
        })
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // IPv6 literal: keep the brackets, drop a trailing port.
        return host
            .rsplit_once("]:")
            .map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct R(Option<&'static str>, &'static str);
    impl Matchable for R {
        fn host(&self) -> Option<&str> {
            self.0
        }
        fn prefix(&self) -> &str {
            self.1
        }
    }

    #[test]
    fn most_specific_route_wins() {
        let t = RouteTable::new(vec![
            R(None, "/"),
            R(None, "/api"),
            R(Some("admin.example"), "/"),
        ]);
        assert_eq!(t.find("x.example", "/api/v1").unwrap().1, "/api");
        assert_eq!(t.find("x.example", "/apix").unwrap().1, "/");
        assert_eq!(
            t.find("admin.example:8080", "/api").unwrap().0,
            Some("admin.example")
        );
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }

    #[test]
    fn no_catch_all_means_no_match() {
        let t = RouteTable::new(vec![R(None, "/api")]);
        assert!(t.find("h", "/other").is_none());
    }
}
