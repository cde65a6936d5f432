//! The public API's OpenAPI 3.1 document, assembled from the routes of every component.
//!
//! Each component declares its routes with `utoipa` (`#[utoipa::path]` on the handler,
//! collected by `utoipa_axum::routes!` into the same router that serves them), so a
//! route cannot be served without being documented. [`document`] merges the parts and
//! adds what every operation shares: the problem responses the edge and the gateway can
//! give (401 on protected routes; 400, 413, 415 and 422 on routes with a body; 429, 503
//! and 504 from the gateway), the consistency token on accepted commands, the
//! `Idempotency-Key` of the commands that create or move something, and the consistency
//! parameters of reads (SPEC §3.6).

use serde_json::{json, Map, Value};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::OpenApi;
use utoipa::{Modify, PartialSchema};

use crate::consistency::{STATE_HEADER, TOKEN_HEADER};
use crate::http::{FieldError, Problem, PROBLEM_JSON};
use crate::idempotency::{HEADER_NAME as IDEMPOTENCY_KEY, MAX_KEY_LENGTH, REPLAYED_HEADER};

/// The operations that take an `Idempotency-Key` (docs/src/idempotency.md).
pub const KEYED_OPERATIONS: [(&str, &str); 9] = [
    ("post", "/api/customers"),
    ("post", "/api/customers/{id}/wallet/deposits"),
    ("post", "/api/orders"),
    ("post", "/api/orders/{id}/cancel"),
    ("post", "/api/products"),
    ("post", "/api/products/{id}/restock"),
    ("put", "/api/products/{id}/price"),
    ("post", "/api/shipments/{order_id}/dispatch"),
    ("post", "/api/shipments/{order_id}/deliver"),
];

/// One or more consistency tokens, comma-separated: `service:subject:sequence`.
const TOKEN_PATTERN: &str = "^(customers|inventory|orders|payments|shipping):[A-Za-z0-9_-]{1,128}:[0-9]+(,(customers|inventory|orders|payments|shipping):[A-Za-z0-9_-]{1,128}:[0-9]+)*$";

/// The name of the bearer-token security scheme every protected route refers to.
pub const BEARER: &str = "bearer";

/// Registers the bearer scheme; put `modifiers(&SecurityAddon)` on a component's doc.
pub struct SecurityAddon;

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

fn problem_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { PROBLEM_JSON: { "schema": { "$ref": "#/components/schemas/Problem" } } }
    })
}

/// Adds `code` unless the operation already documents it.
fn add_response(operation: &mut Map<String, Value>, code: &str, description: &str) {
    let responses = operation
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("responses is an object");
    if !responses.contains_key(code) {
        responses.insert(code.to_string(), problem_response(description));
    }
}

/// Adds `code`, or adds `description` to the one the operation documents.
fn add_or_extend_response(operation: &mut Map<String, Value>, code: &str, description: &str) {
    add_response(operation, code, description);
    let response = &mut operation["responses"][code];
    let known = response["description"].as_str().unwrap_or("").to_string();
    if known != description {
        response["description"] = json!(format!("{known} Or: {description}"));
    }
}

fn push_parameter(operation: &mut Map<String, Value>, parameter: Value) {
    let parameters = operation.entry("parameters").or_insert_with(|| json!([]));
    if let Some(list) = parameters.as_array_mut() {
        list.push(parameter);
    }
}

fn complete_operation(path: &str, method: &str, operation: &mut Map<String, Value>) {
    let protected = operation
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    // The handlers' own error responses are problems too.
    if let Some(responses) = operation
        .get_mut("responses")
        .and_then(Value::as_object_mut)
    {
        for (code, response) in responses.iter_mut() {
            if !code.starts_with(['2', '3']) && response.get("content").is_none() {
                let text = response["description"].as_str().unwrap_or("").to_string();
                *response = problem_response(&text);
            }
        }
    }
    if protected {
        add_response(operation, "401", "No valid bearer token.");
    }
    if operation.contains_key("requestBody") {
        add_response(operation, "400", "The body is not JSON.");
        add_response(
            operation,
            "413",
            "The body is larger than the gateway accepts.",
        );
        add_response(operation, "415", "The body is not `application/json`.");
        add_response(
            operation,
            "422",
            "The body has invalid fields; `errors` names each.",
        );
    }
    add_response(
        operation,
        "429",
        "Too many requests from this client; `Retry-After` says when to retry.",
    );
    add_or_extend_response(
        operation,
        "503",
        "The upstream is unavailable, overloaded or its circuit is open.",
    );
    add_response(operation, "504", "The upstream did not answer in time.");
    for code in ["429", "503"] {
        if let Some(refused) = operation["responses"].get_mut(code) {
            refused["headers"] = json!({
                "Retry-After": { "description": "Seconds until a request is admitted again.", "schema": { "type": "integer" } }
            });
        }
    }

    let is_command = method != "get" && path != "/api/auth/token";
    if is_command {
        // Every accepted command answers a token naming the version it wrote.
        if let Some(responses) = operation["responses"].as_object_mut() {
            for (code, response) in responses.iter_mut() {
                if code.starts_with('2') {
                    response["headers"][TOKEN_HEADER] = json!({
                        "description": "Pass it to a later read (header or `?consistency=`) to see this command's effect.",
                        "schema": { "type": "string" }
                    });
                }
            }
        }
        if KEYED_OPERATIONS.contains(&(method, path)) {
            complete_keyed(operation);
        }
    } else if method == "get" {
        push_parameter(
            operation,
            json!({
                "name": TOKEN_HEADER, "in": "header", "required": false,
                "description": "A token from an accepted command: the read waits until the read models have applied it.",
                "schema": { "type": "string", "pattern": TOKEN_PATTERN }
            }),
        );
        push_parameter(
            operation,
            json!({
                "name": "consistency", "in": "query", "required": false,
                "description": "The same token as a query parameter.",
                "schema": { "type": "string", "pattern": TOKEN_PATTERN }
            }),
        );
        add_response(
            operation,
            "400",
            "A malformed consistency token or parameter.",
        );
        if let Some(responses) = operation["responses"].as_object_mut() {
            for (code, response) in responses.iter_mut() {
                if code.starts_with('2') {
                    response["headers"][STATE_HEADER] = json!({
                        "description": "`stale` when the token's write was not applied within the wait.",
                        "schema": { "type": "string", "enum": ["stale"] }
                    });
                }
            }
        }
    }
}

/// The `Idempotency-Key` parameter of a command, its refusals and the replay's header.
fn complete_keyed(operation: &mut Map<String, Value>) {
    push_parameter(
        operation,
        json!({
            "name": IDEMPOTENCY_KEY, "in": "header", "required": false,
            "description": "A key the client chooses for this request (e.g. a UUID), kept at least 24 hours per caller: the same request again with it gets the first answer again (marked `Idempotent-Replayed: true`) and has no second effect; another request with it is refused (422). A refused request stores nothing, its key included.",
            "schema": { "type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": "^[\\x21-\\x7E]+$" }
        }),
    );
    add_or_extend_response(
        operation,
        "400",
        "A malformed `Idempotency-Key` (1 to 255 visible ASCII characters); `errors` names it.",
    );
    add_or_extend_response(
        operation,
        "422",
        "The `Idempotency-Key` was used for another request (method, path or body).",
    );
    if let Some(responses) = operation["responses"].as_object_mut() {
        for (code, response) in responses.iter_mut() {
            if code.starts_with('2') {
                response["headers"][REPLAYED_HEADER] = json!({
                    "description": "`true` when this is the stored first answer to a request with the same `Idempotency-Key`.",
                    "schema": { "type": "string", "enum": ["true"] }
                });
            }
        }
    }
}

/// The whole public API: the parts merged, each operation completed with the shared
/// responses and parameters. `version` is the API's version (the crate version).
pub fn document(parts: impl IntoIterator<Item = OpenApi>, version: &str) -> Value {
    let mut doc = OpenApi::default();
    for part in parts {
        doc.merge(part);
    }
    SecurityAddon.modify(&mut doc);
    let components = doc.components.get_or_insert_with(Default::default);
    components
        .schemas
        .insert("Problem".into(), Problem::schema());
    components
        .schemas
        .insert("FieldError".into(), FieldError::schema());
    let mut value = serde_json::to_value(&doc).expect("an OpenAPI document serializes");
    value["info"] = json!({
        "title": "Shop",
        "version": version,
        "description": "Event-sourced commerce backend. Every error is `application/problem+json` (RFC 9457). Commands answer `X-Consistency-Token`; a read that carries it sees the command's effect.",
        "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" }
    });
    if let Some(paths) = value["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, operation) in item.iter_mut() {
                if let Some(operation) = operation.as_object_mut() {
                    complete_operation(path, method, operation);
                }
            }
        }
    }
    value
}
