//! CSV exports: the one cell rule shared with the script's client-side export (`csvCell` in
//! `assets/app.js`) and the response that downloads a whole result. Export routes read the
//! same domain queries as their pages, without the page's limit.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// One CSV field: RFC 4180 quoting, and a leading `'` on a cell starting with `=`, `+`, `-`,
/// `@`, tab or carriage return — a spreadsheet would otherwise run it as a formula. Senders'
/// text (event fields, customer names) reaches these files.
pub fn cell(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// A CSV document built row by row.
pub struct Csv {
    out: String,
}

impl Csv {
    pub fn new(header: &[&str]) -> Self {
        let mut csv = Self { out: String::new() };
        csv.row(header.iter().copied());
        csv
    }

    pub fn row<S: AsRef<str>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let line: Vec<String> = cells.into_iter().map(|c| cell(c.as_ref())).collect();
        self.out.push_str(&line.join(","));
        self.out.push('\n');
    }

    /// The download, named `filename` (a fixed ASCII name chosen by the route).
    pub fn download(self, filename: &'static str) -> Response {
        (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{filename}\""),
                ),
            ],
            self.out,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_neutralised_and_fields_quoted() {
        assert_eq!(cell("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(cell("+1"), "'+1");
        assert_eq!(cell("-€12.00"), "'-€12.00");
        assert_eq!(cell("@cmd"), "'@cmd");
        assert_eq!(cell("\tx"), "'\tx");
        assert_eq!(cell("\rx"), "\"'\rx\"");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("$1,833.10"), "\"$1,833.10\"");
        assert_eq!(cell("plain"), "plain");
        let mut csv = Csv::new(&["a", "b"]);
        csv.row(["=1", "x"]);
        assert_eq!(csv.out, "a,b\n'=1,x\n");
    }
}
