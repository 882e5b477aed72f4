//! How the SDK's header functions take a name: as text (`&str`, checked
//! and lower-cased each time it is used), or as a [`HeaderName`] made once
//! (a `static` built with [`HeaderName::from_static`], one of
//! [`http::header`]'s constants, or a name parsed from a variable at
//! `init`), which costs nothing per request. Filters' hot paths use the
//! latter: checking a name is most of what a header edit costs in a guest.

use crate::{HeaderMap, HeaderName};

/// A header name as the SDK's functions take it.
pub trait Name {
    /// The checked name; `None` if it is not a valid header name.
    fn header_name(self) -> Option<HeaderName>;
    /// Whether `headers` has a field of this name, looked up without
    /// making a name (text is compared as it is, with no allocation).
    fn is_in(&self, headers: &HeaderMap) -> bool;
}

impl Name for &str {
    fn header_name(self) -> Option<HeaderName> {
        HeaderName::from_bytes(self.as_bytes()).ok()
    }
    fn is_in(&self, headers: &HeaderMap) -> bool {
        headers.contains_key(*self)
    }
}

impl Name for &String {
    fn header_name(self) -> Option<HeaderName> {
        self.as_str().header_name()
    }
    fn is_in(&self, headers: &HeaderMap) -> bool {
        headers.contains_key(self.as_str())
    }
}

impl Name for HeaderName {
    fn header_name(self) -> Option<HeaderName> {
        Some(self)
    }
    fn is_in(&self, headers: &HeaderMap) -> bool {
        headers.contains_key(self)
    }
}

impl Name for &HeaderName {
    fn header_name(self) -> Option<HeaderName> {
        Some(self.clone())
    }
    fn is_in(&self, headers: &HeaderMap) -> bool {
        headers.contains_key(*self)
    }
}

/// Finds `name` (as the host sends it: lower case) among names parsed
/// before, so that reading a header a filter declared costs no parse; else
/// parses it.
pub fn known_or_parsed(name: &str, known: &[HeaderName]) -> Option<HeaderName> {
    match known.iter().find(|k| k.as_str() == name) {
        Some(k) => Some(k.clone()),
        None => name.header_name(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_checked_and_lower_cased() {
        assert_eq!("X-Api-Key".header_name().unwrap(), "x-api-key");
        assert!("bad name".header_name().is_none());
        assert!("".header_name().is_none());
        static MADE: HeaderName = HeaderName::from_static("x-made");
        assert_eq!((&MADE).header_name().unwrap(), "x-made");
    }

    #[test]
    fn lookups_match_text_and_made_names_alike() {
        let mut h = HeaderMap::new();
        h.insert("x-made", "1".parse().unwrap());
        static MADE: HeaderName = HeaderName::from_static("x-made");
        assert!("x-made".is_in(&h) && "X-Made".is_in(&h) && (&MADE).is_in(&h));
        assert!(MADE.clone().is_in(&h) && (&"x-made".to_string()).is_in(&h));
        assert!(!"x-other".is_in(&h) && !"bad name".is_in(&h));
    }

    #[test]
    fn known_names_are_reused_and_others_parsed() {
        let known = [HeaderName::from_static("x-api-key")];
        assert_eq!(known_or_parsed("x-api-key", &known).unwrap(), known[0]);
        assert_eq!(known_or_parsed("x-other", &known).unwrap(), "x-other");
        assert!(known_or_parsed("bad name", &known).is_none());
    }
}
