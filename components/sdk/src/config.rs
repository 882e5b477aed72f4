//! Component configuration through `spin:variables`: on Spin from
//! `[variables]` and component variables, on Tollgate from the
//! component's `variables` table. Parsing helpers turn the strings into
//! typed values with errors that name the variable.

/// A variable's value, or `None` if it is not defined.
pub async fn get(name: &str) -> Option<String> {
    spin_sdk::variables::get(name).await.ok()
}

/// A variable's value, or `default` when it is not defined.
pub async fn get_or(name: &str, default: &str) -> String {
    get(name).await.unwrap_or_else(|| default.to_owned())
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
    }
}
