//! Lists that are cut say so and page: "showing 1–100 of 2,431" with previous and next links
//! that keep the page's other query parameters and change only `offset`.

use super::format;

/// Where a shown list sits in the whole result.
pub struct Pager {
    pub offset: i64,
    pub limit: i64,
    pub total: i64,
    /// Rows on this page.
    pub shown: usize,
    /// The page's path and its other query parameters (name, value), without the offset.
    pub path: &'static str,
    /// The offset's parameter name (a page with two paged lists names them apart).
    pub offset_name: &'static str,
    pub params: Vec<(&'static str, String)>,
}

impl Pager {
    /// "showing 1–100 of 2,431"; "all 12" when nothing is cut.
    pub fn summary(&self) -> String {
        if self.offset == 0 && self.shown as i64 >= self.total {
            return format!("all {}", format::count(self.total));
        }
        if self.shown == 0 {
            return format!("none of {} here", format::count(self.total));
        }
        format!(
            "showing {}–{} of {}",
            format::count(self.offset + 1),
            format::count(self.offset + self.shown as i64),
            format::count(self.total)
        )
    }

    fn href(&self, offset: i64) -> String {
        let mut query = form_urlencoded_pairs(&self.params);
        if offset > 0 {
            query.push((self.offset_name, offset.to_string()));
        }
        let q = serde_urlencoded::to_string(&query).unwrap_or_default();
        if q.is_empty() {
            self.path.to_string()
        } else {
            format!("{}?{q}", self.path)
        }
    }

    /// The previous page's link, if any.
    pub fn previous(&self) -> Option<String> {
        (self.offset > 0).then(|| self.href((self.offset - self.limit).max(0)))
    }

    /// The next page's link, if any.
    pub fn next(&self) -> Option<String> {
        let end = self.offset + self.shown as i64;
        (end < self.total).then(|| self.href(end))
    }
}

/// The parameters that carry a value.
fn form_urlencoded_pairs(params: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    params
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pager(offset: i64, shown: usize, total: i64) -> Pager {
        Pager {
            offset,
            limit: 100,
            total,
            shown,
            path: "/revenue",
            offset_name: "offset",
            params: vec![("period", "30d".into()), ("kind", String::new())],
        }
    }

    #[test]
    fn cut_lists_say_so_and_link_both_ways() {
        let p = pager(0, 100, 2_431);
        assert_eq!(p.summary(), "showing 1–100 of 2,431");
        assert_eq!(p.previous(), None);
        assert_eq!(p.next().unwrap(), "/revenue?period=30d&offset=100");
        let p = pager(2_400, 31, 2_431);
        assert_eq!(p.summary(), "showing 2,401–2,431 of 2,431");
        assert_eq!(p.previous().unwrap(), "/revenue?period=30d&offset=2300");
        assert_eq!(p.next(), None);
        let p = pager(0, 12, 12);
        assert_eq!(p.summary(), "all 12");
        assert_eq!(
            pager(50, 50, 100).previous().unwrap(),
            "/revenue?period=30d"
        );
    }
}
