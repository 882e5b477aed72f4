//! List parameters of the admin API (`page`, `limit`, `sortBy`,
//! `sortOrder`) and the paginated envelope `{ data, total, page,
//! totalPages }`. Pure: parsed from the query, applied to a vector.

use serde::Serialize;

/// Items per page unless `limit` says otherwise, and the most allowed.
pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 100;

/// A parsed list query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub page: usize,
    pub limit: usize,
    pub sort_by: String,
    pub descending: bool,
}

/// A list page as the API returns it (documented in the OpenAPI document
/// by `api::RoutePage` and `api::ComponentPage`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub data: Vec<T>,
    pub total: usize,
    pub page: usize,
    pub total_pages: usize,
}

/// Parses `query` (the URL's query string); `fields` are the sort keys
/// the list accepts, the first the default. An error names the parameter.
pub fn parse(query: Option<&str>, fields: &[&str]) -> Result<ListQuery, String> {
    let mut q = ListQuery {
        page: 1,
        limit: DEFAULT_LIMIT,
        sort_by: fields[0].to_owned(),
        descending: false,
    };
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "page" => {
                q.page = v
                    .parse()
                    .ok()
                    .filter(|&p| p >= 1)
                    .ok_or("page: must be a whole number of 1 or more")?
            }
            "limit" => {
                q.limit = v
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or(format!("limit: must be between 1 and {MAX_LIMIT}"))?
            }
            "sortBy" => {
                if !fields.contains(&v.as_ref()) {
                    return Err(format!("sortBy: must be one of {}", fields.join(", ")));
                }
                q.sort_by = v.into_owned();
            }
            "sortOrder" => {
                q.descending = match v.as_ref() {
                    "asc" => false,
                    "desc" => true,
                    _ => return Err("sortOrder: must be asc or desc".into()),
                }
            }
            _ => {}
        }
    }
    Ok(q)
}

/// Sorts `items` by `key` (the query's field), then cuts the page out.
pub fn apply<T, K: Ord>(mut items: Vec<T>, q: &ListQuery, key: impl Fn(&T, &str) -> K) -> Page<T> {
    items.sort_by(|a, b| key(a, &q.sort_by).cmp(&key(b, &q.sort_by)));
    if q.descending {
        items.reverse();
    }
    let total = items.len();
    let total_pages = total.div_ceil(q.limit);
    let data = items
        .into_iter()
        .skip((q.page - 1) * q.limit)
        .take(q.limit)
        .collect();
    Page {
        data,
        total,
        page: q.page,
        total_pages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors_naming_the_parameter() {
        let q = parse(None, &["name", "requests"]).unwrap();
        assert_eq!(
            (q.page, q.limit, q.sort_by.as_str(), q.descending),
            (1, 20, "name", false)
        );
        let q = parse(
            Some("page=2&limit=5&sortBy=requests&sortOrder=desc"),
            &["name", "requests"],
        )
        .unwrap();
        assert_eq!(
            (q.page, q.limit, q.sort_by.as_str(), q.descending),
            (2, 5, "requests", true)
        );
        for (bad, key) in [
            ("page=0", "page:"),
            ("limit=101", "limit:"),
            ("sortBy=x", "sortBy:"),
            ("sortOrder=up", "sortOrder:"),
        ] {
            assert!(
                parse(Some(bad), &["name"]).unwrap_err().starts_with(key),
                "{bad}"
            );
        }
    }

    #[test]
    fn pages_are_cut_after_sorting_and_empty_is_an_empty_list() {
        let q = parse(Some("limit=2&page=2&sortOrder=desc"), &["n"]).unwrap();
        let p = apply(vec![1, 5, 3, 4, 2], &q, |x, _| *x);
        assert_eq!(
            (p.data, p.total, p.page, p.total_pages),
            (vec![3, 2], 5, 2, 3)
        );
        let q = parse(Some("page=9"), &["n"]).unwrap();
        let p = apply(vec![1, 2], &q, |x, _| *x);
        assert!(p.data.is_empty());
        assert_eq!(p.total_pages, 1);
        let none = apply(Vec::<u8>::new(), &q, |x, _| *x);
        assert_eq!((none.total, none.total_pages), (0, 0));
    }
}
