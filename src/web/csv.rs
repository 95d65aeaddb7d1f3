//! CSV exports: the one cell rule shared with the script's client-side export (`csvCell` in
//! `assets/app.js`) and the responses that download a whole result, built at once or streamed
//! page by page. Export routes read the same domain queries as their pages, without the page's
//! limit.

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::Stream;

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
        self.out.push_str(&line(cells));
    }

    /// The text so far, taken out (a streamed export sends each page's rows as one chunk).
    pub fn take(&mut self) -> String {
        std::mem::take(&mut self.out)
    }

    /// The download, named `filename` (a fixed ASCII name chosen by the route).
    pub fn download(self, filename: &'static str) -> Response {
        (headers(filename), self.out).into_response()
    }
}

/// One CSV line: the cells, neutralised and quoted, comma-separated, ending in a newline.
fn line<S: AsRef<str>>(cells: impl IntoIterator<Item = S>) -> String {
    let mut out = cells
        .into_iter()
        .map(|c| cell(c.as_ref()))
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    out
}

fn headers(filename: &'static str) -> [(header::HeaderName, String); 2] {
    [
        (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
        (
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        ),
    ]
}

/// A download whose body is sent chunk by chunk as `chunks` yields them, so an export of
/// millions of rows holds one page in memory, not the file. The chunks are CSV text already
/// (see [`Csv::take`]). An error after the first chunk can only end the body early: the client
/// sees a broken transfer, not a short file that looks complete.
pub fn stream_download<S, E>(filename: &'static str, chunks: S) -> Response
where
    S: Stream<Item = Result<String, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    (headers(filename), Body::from_stream(chunks)).into_response()
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
