//! Component configuration through `spin:variables`: on Spin from
//! `[variables]` and component variables, on Tollgate from the
//! component's `variables` table.
//!
//! A component lists the variables it reads, loads them once into
//! [`Vars`], and parses them with a plain function that can be unit-tested
//! natively and that names the variable in every error.

use std::collections::BTreeMap;
use std::sync::OnceLock;

/// A variable's value, or `None` if it is not defined.
pub async fn get(name: &str) -> Option<String> {
    spin_sdk::variables::get(name).await.ok()
}

/// The defined subset of a component's variables.
#[derive(Debug, Clone, Default)]
pub struct Vars(BTreeMap<String, String>);

impl Vars {
    /// Reads each of `names` through `spin:variables`.
    pub async fn load(names: &[&str]) -> Vars {
        let mut map = BTreeMap::new();
        for name in names {
            if let Some(v) = get(name).await {
                map.insert((*name).to_owned(), v);
            }
        }
        Vars(map)
    }

    /// Builds from pairs: for tests, and for hosts that validate ahead of time.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Vars {
        Vars(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn get_or<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.get(name).unwrap_or(default)
    }

    /// A comma-separated list (blanks trimmed, empties dropped).
    pub fn list(&self, name: &str, default: &str) -> Vec<String> {
        list(self.get_or(name, default))
    }

    /// A header name (lower-cased), or `default` when unset; checked here
    /// so that a name no request can carry fails at startup.
    pub fn header_name(&self, name: &str, default: &str) -> Result<http::HeaderName, String> {
        header_name(name, self.get_or(name, default))
    }

    /// A number, or `default` when unset.
    pub fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => number(name, v),
        }
    }

    /// `true`/`false`, or `default` when unset.
    pub fn boolean(&self, name: &str, default: bool) -> Result<bool, String> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => boolean(name, v),
        }
    }
}

/// Loads and parses a component's configuration once per instance.
pub async fn cached<T: Send + Sync + 'static>(
    cell: &'static OnceLock<Result<T, String>>,
    names: &[&str],
    parse: fn(&Vars) -> Result<T, String>,
) -> Result<&'static T, &'static str> {
    if cell.get().is_none() {
        let parsed = parse(&Vars::load(names).await);
        let _ = cell.set(parsed);
    }
    match cell.get().expect("set above") {
        Ok(t) => Ok(t),
        Err(e) => Err(e.as_str()),
    }
}

/// Splits a comma-separated list, trimming blanks and dropping empties.
pub fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Parses a number, naming the variable in the error.
pub fn header_name(name: &str, value: &str) -> Result<http::HeaderName, String> {
    http::HeaderName::from_bytes(value.trim().as_bytes())
        .map_err(|_| format!("variable `{name}`: must be a valid header name"))
}

pub fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("variable `{name}`: `{value}` is not a valid number"))
}

/// Parses `true`/`false`, naming the variable in the error.
pub fn boolean(name: &str, value: &str) -> Result<bool, String> {
    match value.trim() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        other => Err(format!("variable `{name}`: `{other}` is not true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_numbers_parse() {
        assert_eq!(list(" a, ,b ,"), vec!["a", "b"]);
        assert_eq!(number::<u32>("n", " 7 "), Ok(7));
        assert!(number::<u32>("n", "-1").unwrap_err().contains("`n`"));
        assert_eq!(boolean("b", "on"), Ok(true));
        assert!(boolean("b", "maybe").is_err());
        let v = Vars::from_pairs([("n", "3"), ("l", "x,y")]);
        assert_eq!(v.number("n", 0u8), Ok(3));
        assert_eq!(v.number("missing", 9u8), Ok(9));
        assert_eq!(v.list("l", ""), vec!["x", "y"]);
    }
}
