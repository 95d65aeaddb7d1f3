//! Endpoint categories: the configured path-prefix → category map that groups `api.request`
//! events (e.g. `/api/referrals*` → Referrals) in the rollups and on the Usage page.

use std::collections::BTreeMap;
use std::sync::Arc;

/// The category of paths no prefix matches.
pub const OTHER: &str = "Other";

#[derive(Debug, Clone)]
struct Rule {
    prefix: String,
    /// `*`-suffixed patterns match any continuation; plain ones only whole path segments.
    wildcard: bool,
    name: Arc<str>,
}

/// Compiled `usage.endpoint_categories`, longest prefix first.
#[derive(Debug, Clone)]
pub struct Categories {
    rules: Vec<Rule>,
    other: Arc<str>,
}

impl Categories {
    pub fn new(map: &BTreeMap<String, String>) -> Self {
        let mut rules: Vec<Rule> = map
            .iter()
            .map(|(pattern, name)| {
                let (prefix, wildcard) = match pattern.strip_suffix('*') {
                    Some(p) => (p.to_string(), true),
                    None => (pattern.clone(), false),
                };
                Rule {
                    prefix,
                    wildcard,
                    name: Arc::from(name.trim()),
                }
            })
            .collect();
        rules.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Self {
            rules,
            other: Arc::from(OTHER),
        }
    }

    /// The category of `endpoint` (a path, possibly with a query string).
    pub fn of(&self, endpoint: &str) -> Arc<str> {
        let path = endpoint.split(['?', '#']).next().unwrap_or(endpoint);
        for rule in &self.rules {
            if let Some(rest) = path.strip_prefix(rule.prefix.as_str())
                && (rule.wildcard
                    || rest.is_empty()
                    || rest.starts_with('/')
                    || rule.prefix.ends_with('/'))
            {
                return rule.name.clone();
            }
        }
        self.other.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_segments_are_respected() {
        let map: BTreeMap<String, String> = [
            ("/api/referrals*", "Referrals"),
            ("/api", "API"),
            ("/api/auth", "Auth"),
            ("/api/auth/admin", "Admin"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let c = Categories::new(&map);
        assert_eq!(&*c.of("/api/referrals/42"), "Referrals");
        assert_eq!(&*c.of("/api/referrals-old"), "Referrals");
        assert_eq!(&*c.of("/api/auth"), "Auth");
        assert_eq!(&*c.of("/api/auth/login?next=/"), "Auth");
        assert_eq!(&*c.of("/api/auth/admin/x"), "Admin");
        // A plain prefix matches whole segments only.
        assert_eq!(&*c.of("/api/authors"), "API");
        assert_eq!(&*c.of("/health"), OTHER);
        assert_eq!(&*Categories::new(&BTreeMap::new()).of("/x"), OTHER);
    }
}
