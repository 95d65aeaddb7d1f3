//! Declares, on every operation of the generated OpenAPI document, the failures that come from
//! the layers and extractors in front of its handler rather than from the handler itself.
//!
//! A handler's `#[utoipa::path]` names what the handler decides (its 404s, 409s, validation
//! 422s). What the request meets before and around the handler is the same for every route that
//! has the same shape, so it is derived here from the operation as documented — its security
//! requirement, parameters and request body — instead of being repeated (and forgotten) in
//! sixty annotations:
//!
//! - every operation: 500 (a handler error or a caught panic, with a request id) and 503 (the
//!   request timeout, `server.request_timeout`);
//! - a security requirement (the `Auth` extractor): 401 and 429, and 403 when the requirement
//!   names a scope or the method writes (a cookie-authenticated write without the CSRF header);
//! - path or query parameters (`Path`, `Query`): 400 when one does not parse;
//! - a request body read by `Json<T>`: 400 (not JSON), 413 (`server.max_body_bytes`), 415 (not
//!   `application/json`) and 422 (JSON of the wrong shape). The operations in [`RAW_BODIES`]
//!   read their bodies themselves and declare their own answers.
//!
//! A response the annotation already declares keeps its body; only an empty description is
//! filled in. `tests/api/openapi.rs` provokes each of these failures on every operation and
//! fails if the answer is not declared.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{Object, Type};
use utoipa::openapi::{Content, HeaderBuilder, OpenApi, Ref, RefOr, Response};

/// Operations whose handlers read the request body themselves instead of through `Json<T>`:
/// ingest (its own content types and `ingest.max_body_bytes`) and the Stripe receiver (the raw
/// bytes its signature covers). Their annotations declare their body failures.
pub const RAW_BODIES: &[(&str, &str)] = &[("post", "/api/v1/events"), ("post", "/webhooks/stripe")];

/// Adds the statuses the layers and extractors can answer to every operation of `doc`.
pub fn declare_generic_failures(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
            ("patch", &mut item.patch),
        ];
        for (method, op) in ops {
            if let Some(op) = op {
                let raw_body = RAW_BODIES.contains(&(method, path.as_str()));
                for (status, description) in failures(method, op, raw_body) {
                    declare(op, status, &description);
                }
            }
        }
    }
}

/// The statuses (with why each can happen) that `op`'s extractors and the shared layers add.
fn failures(method: &str, op: &Operation, raw_body: bool) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    let mut unreadable = Vec::new();
    let params = op.parameters.as_deref().unwrap_or_default();
    let located = |place: ParameterIn| {
        params.iter().any(|p| match p {
            RefOr::T(p) => p.parameter_in == place,
            RefOr::Ref(_) => false,
        })
    };
    if located(ParameterIn::Path) {
        unreadable.push("a path parameter does not parse (e.g. text where an id is a number)");
    }
    if located(ParameterIn::Query) {
        unreadable.push("a query parameter does not parse or is given twice");
    }
    let json_body = op.request_body.is_some() && !raw_body;
    if json_body {
        unreadable.push("the body is not well-formed JSON");
    }
    if !unreadable.is_empty() {
        out.push((
            400,
            format!("Unreadable request: {}.", unreadable.join("; ")),
        ));
    }

    let scopes = required_scopes(op);
    if let Some(scopes) = &scopes {
        out.push((
            401,
            "No credential, or one that is unknown, revoked or expired.".to_string(),
        ));
        let mut refused = Vec::new();
        if !scopes.is_empty() {
            refused.push(format!(
                "the credential lacks the scope this operation needs ({})",
                scopes.join(" or ")
            ));
        }
        if !matches!(method, "get" | "head") {
            refused.push(
                "a cookie-authenticated write came without the session's x-csrf-token header"
                    .to_string(),
            );
        }
        if !refused.is_empty() {
            out.push((403, format!("Forbidden: {}.", refused.join("; "))));
        }
        out.push((
            429,
            "Over this credential's request limit (access.api_requests_per_minute; for ingest, \
             ingest.events_per_second); the Retry-After header says when to try again."
                .to_string(),
        ));
    }

    if json_body {
        out.push((
            413,
            "The request body exceeds server.max_body_bytes.".to_string(),
        ));
        out.push((
            415,
            "The body was not sent as application/json.".to_string(),
        ));
        out.push((
            422,
            "The body is JSON of the wrong shape (a missing or unknown field, a wrong type), or a \
             value failed validation."
                .to_string(),
        ));
    }

    out.push((
        500,
        "Internal error; the body's request_id finds it in the server log.".to_string(),
    ));
    out.push((
        503,
        "The request took longer than server.request_timeout.".to_string(),
    ));
    out
}

/// The scopes named by `op`'s security requirements (any one of them is enough), or `None` when
/// the operation takes no credential.
fn required_scopes(op: &Operation) -> Option<Vec<String>> {
    let requirements = op.security.as_ref().filter(|s| !s.is_empty())?;
    // `SecurityRequirement` keeps its map private; its serialized form is the document's.
    let mut scopes = Vec::new();
    for requirement in requirements {
        if let Ok(serde_json::Value::Object(schemes)) = serde_json::to_value(requirement) {
            for named in schemes.values() {
                scopes.extend(
                    named
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s.as_str().map(str::to_string)),
                );
            }
        }
    }
    Some(scopes)
}

/// Declares `status` on `op` with an `ErrorBody`, unless the annotation already does; then only
/// an empty description is filled in.
fn declare(op: &mut Operation, status: u16, description: &str) {
    let key = status.to_string();
    match op.responses.responses.get_mut(&key) {
        Some(RefOr::T(existing)) => {
            if existing.description.is_empty() {
                existing.description = description.to_string();
            }
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            let mut response = Response::new(description);
            response.content.insert(
                "application/json".to_string(),
                RefOr::T(Content::new(Some(Ref::from_schema_name("ErrorBody")))),
            );
            if status == 429 {
                response.headers.insert(
                    "Retry-After".to_string(),
                    RefOr::T(
                        HeaderBuilder::new()
                            .schema(Some(Object::with_type(Type::Integer)))
                            .description(Some("Seconds to wait before trying again."))
                            .build(),
                    ),
                );
            }
            op.responses.responses.insert(key, RefOr::T(response));
        }
    }
}
