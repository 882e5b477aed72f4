//! How the SDK's header functions take a name: as text (`&str`, checked
//! and lower-cased each time it is used), or as a [`HeaderName`] made once
//! (a `static` built with [`HeaderName::from_static`], one of
//! [`http::header`]'s constants, or a name parsed from a variable at
//! `init`), which costs nothing per request. Filters' hot paths use the
//! latter: checking a name is most of what a header edit costs in a guest.

use crate::HeaderName;

/// A header name as the SDK's functions take it.
pub trait Name {
    /// The checked name; `None` if it is not a valid header name.
    fn header_name(self) -> Option<HeaderName>;
}

impl Name for &str {
    fn header_name(self) -> Option<HeaderName> {
        HeaderName::from_bytes(self.as_bytes()).ok()
    }
}

impl Name for &String {
    fn header_name(self) -> Option<HeaderName> {
        self.as_str().header_name()
    }
}

impl Name for HeaderName {
    fn header_name(self) -> Option<HeaderName> {
        Some(self)
    }
}

impl Name for &HeaderName {
    fn header_name(self) -> Option<HeaderName> {
        Some(self.clone())
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
    fn known_names_are_reused_and_others_parsed() {
        let known = [HeaderName::from_static("x-api-key")];
        assert_eq!(known_or_parsed("x-api-key", &known).unwrap(), known[0]);
        assert_eq!(known_or_parsed("x-other", &known).unwrap(), "x-other");
        assert!(known_or_parsed("bad name", &known).is_none());
    }
}
