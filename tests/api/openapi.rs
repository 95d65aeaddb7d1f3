//! The OpenAPI document declares every status a route answers. Each documented operation is
//! sent the requests that provoke the failures in front of its handler — no credential, a
//! credential without the scope, a cookie-authenticated write without the CSRF header,
//! parameters that do not parse, a body that is not JSON, JSON of the wrong shape, the wrong
//! content type, a body over the limit — and every answer must be a status the document
//! declares for that operation, with an error body in the declared shape.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::*;

/// The body size every route refuses: ingest's own limit is set to the server's for this
/// test, so one oversized body fits both and stays small enough for the socket's buffers.
const LIMIT: usize = 64 * 1024;

struct Operation {
    method: Method,
    path: String,
    declared: Vec<u16>,
    secured: bool,
    has_body: bool,
    path_params: Vec<(String, bool)>,
    query_params: Vec<String>,
}

impl Operation {
    /// The path with its parameters filled in: `bad` gives each one a value that cannot
    /// parse (text for a number, a percent-escape that is not UTF-8 for text).
    fn url(&self, app: &TestApp, bad: bool) -> String {
        let mut path = self.path.clone();
        for (name, integer) in &self.path_params {
            let value = match (bad, integer) {
                (false, true) => "1",
                (false, false) => "x.y",
                (true, true) => "not-a-number",
                (true, false) => "%FF",
            };
            path = path.replace(&format!("{{{name}}}"), value);
        }
        app.url(&path)
    }
}

fn operations(doc: &Value) -> Vec<Operation> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let Ok(m) = Method::from_bytes(method.to_uppercase().as_bytes()) else {
                continue;
            };
            let declared = op["responses"]
                .as_object()
                .map(|r| r.keys().filter_map(|k| k.parse().ok()).collect())
                .unwrap_or_default();
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let named = |place: &str| {
                params
                    .iter()
                    .filter(|p| p["in"] == place)
                    .map(|p| {
                        (
                            p["name"].as_str().unwrap_or_default().to_string(),
                            p["schema"]["type"] == "integer",
                        )
                    })
                    .collect::<Vec<_>>()
            };
            out.push(Operation {
                method: m,
                path: path.clone(),
                declared,
                secured: op["security"].as_array().is_some_and(|s| !s.is_empty()),
                has_body: op.get("requestBody").is_some(),
                path_params: named("path"),
                query_params: named("query").into_iter().map(|(n, _)| n).collect(),
            });
        }
    }
    out
}

/// Sends `req` and records a problem unless the answer is declared for `op` and, when it is an
/// error, carries `{code, detail, request_id}`.
async fn probe(
    op: &Operation,
    what: &str,
    req: reqwest::RequestBuilder,
    problems: &mut Vec<String>,
) -> Option<StatusCode> {
    let label = format!("{} {} ({what})", op.method, op.path);
    let res = match req.send().await {
        Ok(res) => res,
        Err(e) => {
            problems.push(format!("{label}: no answer: {e}"));
            return None;
        }
    };
    let status = res.status();
    if !op.declared.contains(&status.as_u16()) {
        problems.push(format!(
            "{label}: answered {status}, declared {:?}",
            op.declared
        ));
    }
    if status.is_client_error() || status.is_server_error() {
        let body: Value = res.json().await.unwrap_or(Value::Null);
        if !["code", "detail", "request_id"]
            .iter()
            .all(|f| body[f].as_str().is_some_and(|s| !s.is_empty()))
        {
            problems.push(format!("{label}: {status} without an error body: {body}"));
        }
    }
    Some(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_declared_in_the_openapi_document() {
    let app = spawn_app_with(Backend::Sqlite, |c| {
        // The probes below would otherwise meet the request limit, which is declared too, and
        // hide the answer they are after.
        c.access.api_requests_per_minute = 1_000_000;
        c.ingest.max_body_bytes = LIMIT;
        c.server.max_body_bytes = LIMIT;
    })
    .await
    .unwrap();
    let c = api();
    let doc = openapi_document(&app).await;
    let full = app.key("full", &["admin", "ingest"]).await;
    let tenant = app.key("confined", &["tenant:nobody"]).await;
    let browser = browser();
    sign_in_admin(&app, &browser).await;

    let mut problems = Vec::new();
    // Every declared failure has a body whose shape the document gives.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().into_iter().flatten() {
                let failure = status.parse::<u16>().is_ok_and(|s| s >= 400);
                if failure && response["content"]["application/json"]["schema"].is_null() {
                    problems.push(format!("{method} {path}: {status} has no schema'd body"));
                }
            }
        }
    }
    for (method, path) in opsdeck::http::openapi::RAW_BODIES {
        if doc["paths"][path][method].is_null() {
            problems.push(format!(
                "RAW_BODIES names {method} {path}, not in the document"
            ));
        }
    }

    let ops = operations(&doc);
    assert!(ops.len() >= 70, "{} operations documented", ops.len());
    let mut provoked = std::collections::BTreeMap::<u16, usize>::new();
    let json = "application/json";
    for op in &ops {
        let mut seen = Vec::new();
        let request = |url: String| c.request(op.method.clone(), url);
        let valid = op.url(&app, false);

        // No credential.
        seen.push(probe(op, "no credential", request(valid.clone()), &mut problems).await);
        if op.secured {
            // A credential confined to one customer: only the routes open to any credential
            // (or to that customer) admit it.
            if !op.has_body {
                let req = request(valid.clone()).bearer_auth(&tenant);
                seen.push(probe(op, "tenant key", req, &mut problems).await);
            }
            // The session cookie on a write, without the header only our page's script sends.
            if op.method != Method::GET {
                let req = browser.request(op.method.clone(), valid.clone());
                seen.push(probe(op, "cookie without CSRF", req, &mut problems).await);
            }
        }
        // Parameters that do not parse.
        if !op.path_params.is_empty() {
            let req = request(op.url(&app, true)).bearer_auth(&full);
            seen.push(probe(op, "bad path parameter", req, &mut problems).await);
        }
        if let Some(name) = op.query_params.first() {
            let url = format!("{valid}?{name}=%FF%FE&{name}=x");
            let req = request(url).bearer_auth(&full);
            seen.push(probe(op, "bad query", req, &mut problems).await);
        }
        // Bodies that are not what the route reads.
        if op.has_body {
            let with = |ct: &str, body: String| {
                request(valid.clone())
                    .bearer_auth(&full)
                    .header("content-type", ct)
                    .body(body)
            };
            let req = with(json, "{\"unterminated".into());
            seen.push(probe(op, "malformed JSON", req, &mut problems).await);
            let req = with(json, "[[]]".into());
            seen.push(probe(op, "JSON of the wrong shape", req, &mut problems).await);
            let req = with("text/plain", "{}".into());
            seen.push(probe(op, "wrong content type", req, &mut problems).await);
            // Its own client: the server answers before reading the body and closes.
            let req = api()
                .request(op.method.clone(), valid.clone())
                .bearer_auth(&full)
                .header("content-type", json)
                .body(format!("\"{}\"", "x".repeat(LIMIT)));
            seen.push(probe(op, "oversized body", req, &mut problems).await);
        }
        for status in seen.into_iter().flatten() {
            *provoked.entry(status.as_u16()).or_default() += 1;
        }
    }
    eprintln!(
        "openapi: {} operations probed; answers by status: {provoked:?}",
        ops.len()
    );
    assert!(
        problems.is_empty(),
        "{} undeclared or shapeless answers:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // The probes reached what they were written for, so an empty list means something.
    for status in [400, 401, 403, 404, 413, 415, 422] {
        assert!(provoked.contains_key(&status), "no probe answered {status}");
    }
    app.finish().await;
}
