//! The gateway's own part of the public OpenAPI document: the admin traffic API.

use serde_json::{json, Value};

fn op(summary: &str, description: &str, extra: Value, ok: (&str, Value)) -> Value {
    let mut op = json!({
        "tags": ["traffic"],
        "summary": summary,
        "description": description,
        "security": [{ "bearer": [] }],
        "responses": {
            "403": { "description": "The token is not an admin's." },
            "404": { "description": "No such upstream or legacy route." },
        }
    });
    op["responses"][ok.0] = ok.1;
    if let (Some(op), Some(extra)) = (op.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if k == "responses" {
                for (code, r) in v.as_object().into_iter().flatten() {
                    op["responses"][code] = r.clone();
                }
            } else {
                op.insert(k.clone(), v.clone());
            }
        }
    }
    op
}

fn json_ok(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "headers": { "ETag": { "description": "The traffic table's revision; name it in If-Match to change it.", "schema": { "type": "string" } } },
        "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
    })
}

fn upstream_param() -> Value {
    json!({
        "name": "upstream", "in": "path", "required": true,
        "description": "The upstream (a component behind the gateway).",
        "schema": { "type": "string", "enum": crate::Upstream::ALL.map(crate::Upstream::name) }
    })
}

fn name_param() -> Value {
    json!({
        "name": "name", "in": "path", "required": true,
        "description": "The legacy route's name.",
        "schema": { "type": "string", "pattern": "^[A-Za-z0-9._-]{1,40}$" }
    })
}

fn if_match() -> Value {
    json!({
        "name": "If-Match", "in": "header", "required": true,
        "description": "The ETag of the last read: a change made since then is not overwritten (412).",
        "schema": { "type": "string" }
    })
}

fn precondition() -> Value {
    json!({
        "412": { "description": "The traffic table changed since the read named in If-Match." },
        "428": { "description": "If-Match is missing." },
    })
}

/// The admin traffic API's paths and schemas.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut set_responses = precondition();
    set_responses["409"] = json!({ "description": "A canary weight for an upstream without canary instances (name them at start, SHOP_GATEWAY_CANARY)." });
    let doc = json!({
        "openapi": "3.1.0",
        "info": { "title": "Shop gateway", "version": "0" },
        "paths": {
            "/api/admin/traffic": {
                "get": op("Every upstream's traffic split and the legacy routes",
                    "The weights of each upstream's versions, its rollback policy, the canary's recent outcomes and why it was last rolled back; the strangler-fig routes.",
                    json!({}), ("200", json_ok("The traffic table.", "TrafficTable")))
            },
            "/api/admin/traffic/{upstream}": {
                "get": op("An upstream's traffic split",
                    "Its versions (stable and canary, with labels such as blue and green) and their weights, the automatic-rollback policy, the canary's sliding window and the last rollback with its reason.",
                    json!({ "parameters": [upstream_param()] }),
                    ("200", json_ok("The split.", "TrafficSplit"))),
                "put": op("Set an upstream's weights, labels, stickiness or rollback policy",
                    "Weights by version name or label, together 100. Audited (log target `audit`, metric `gateway_traffic_changes_total`). Bad input changes nothing.",
                    json!({
                        "parameters": [upstream_param(), if_match()],
                        "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/TrafficUpdate" } } } },
                        "responses": set_responses,
                    }),
                    ("200", json_ok("The split now.", "TrafficSplit")))
            },
            "/api/admin/traffic/{upstream}/promote": {
                "post": op("Promote the canary one step",
                    "Its weight goes to the next of 10, 25, 50, 75, 100 %.",
                    json!({ "parameters": [upstream_param()], "responses": { "409": { "description": "No canary, or it already takes 100 %." } } }),
                    ("200", json_ok("The split now.", "TrafficSplit")))
            },
            "/api/admin/traffic/{upstream}/rollback": {
                "post": op("Roll the canary back at once",
                    "Its weight goes to 0; the split's lastRollback says who and when.",
                    json!({ "parameters": [upstream_param()] }),
                    ("200", json_ok("The split now.", "TrafficSplit")))
            },
            "/api/admin/legacy-routes": {
                "get": op("The strangler-fig routes",
                    "Path prefixes (or a share of them) sent to a legacy upstream outside Shop.",
                    json!({}), ("200", json_ok("The routes by name.", "LegacyRoutes")))
            },
            "/api/admin/legacy-routes/{name}": {
                "get": op("A strangler-fig route", "", json!({ "parameters": [name_param()] }),
                    ("200", json_ok("The route.", "LegacyRoute"))),
                "put": op("Create or replace a strangler-fig route",
                    "Requests under `prefix` (the longest matching prefix wins), or `percent` of the clients, go to `upstream` with `requestHeaders` added; its answers get `responseHeaders`. Audited.",
                    json!({
                        "parameters": [name_param(), if_match()],
                        "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/LegacyRoute" } } } },
                        "responses": { "201": json_ok("Created.", "LegacyRoute"), "409": { "description": "Too many routes." }, "412": precondition()["412"], "428": precondition()["428"] },
                    }),
                    ("200", json_ok("Replaced.", "LegacyRoute"))),
                "delete": op("Remove a strangler-fig route", "Its prefix goes back to Shop's own routes. Audited.",
                    json!({ "parameters": [name_param()] }),
                    ("204", json!({ "description": "Removed." })))
            }
        },
        "components": { "schemas": {
            "RollbackPolicy": {
                "type": "object", "additionalProperties": false,
                "required": ["threshold", "minRequests", "windowSecs"],
                "properties": {
                    "threshold": { "type": "number", "exclusiveMinimum": 0, "maximum": 1, "description": "Share of the canary's requests in the window that failed (5xx or timeout) above which it is rolled back." },
                    "minRequests": { "type": "integer", "minimum": 1, "maximum": 100000 },
                    "windowSecs": { "type": "integer", "minimum": 1, "maximum": 3600 }
                }
            },
            "TrafficUpdate": {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "weights": { "type": "object", "description": "Percent per version (stable, canary, or their labels); together 100.", "additionalProperties": { "type": "integer", "minimum": 0, "maximum": 100 } },
                    "rollback": { "$ref": "#/components/schemas/RollbackPolicy" },
                    "sticky": { "type": "boolean", "description": "A client (token subject, else address) stays on one version." },
                    "labels": {
                        "type": "object", "additionalProperties": false, "required": ["stable", "canary"],
                        "properties": {
                            "stable": { "type": "string", "pattern": "^[A-Za-z0-9._-]{1,40}$" },
                            "canary": { "type": "string", "pattern": "^[A-Za-z0-9._-]{1,40}$" }
                        }
                    }
                }
            },
            "TrafficVersion": {
                "type": "object", "required": ["name", "label", "weight", "instances"],
                "properties": {
                    "name": { "type": "string", "enum": ["stable", "canary"] },
                    "label": { "type": "string" },
                    "weight": { "type": "integer", "minimum": 0, "maximum": 100 },
                    "instances": { "type": "array", "items": { "type": "string" } }
                }
            },
            "TrafficRollback": {
                "type": "object", "required": ["kind", "reason", "at", "fromWeight"],
                "properties": {
                    "kind": { "type": "string", "enum": ["automatic", "manual"] },
                    "reason": { "type": "string" },
                    "at": { "type": "integer", "description": "Seconds since the Unix epoch." },
                    "fromWeight": { "type": "integer" }
                }
            },
            "TrafficSplit": {
                "type": "object",
                "required": ["upstream", "revision", "versions", "sticky", "rollback", "window", "lastRollback"],
                "properties": {
                    "upstream": { "type": "string" },
                    "revision": { "type": "string" },
                    "versions": { "type": "array", "items": { "$ref": "#/components/schemas/TrafficVersion" } },
                    "sticky": { "type": "boolean" },
                    "rollback": { "$ref": "#/components/schemas/RollbackPolicy" },
                    "window": {
                        "type": "object", "required": ["requests", "failures", "errorRate"],
                        "properties": {
                            "requests": { "type": "integer" },
                            "failures": { "type": "integer" },
                            "errorRate": { "type": "number" }
                        }
                    },
                    "lastRollback": { "oneOf": [{ "$ref": "#/components/schemas/TrafficRollback" }, { "type": "null" }] }
                }
            },
            "LegacyRoute": {
                "type": "object", "additionalProperties": false, "required": ["prefix", "upstream"],
                "properties": {
                    "prefix": { "type": "string", "pattern": "^/", "maxLength": 200 },
                    "upstream": { "type": "string", "pattern": "^https?://", "maxLength": 500, "description": "The legacy system's base URL." },
                    "percent": { "type": "integer", "minimum": 0, "maximum": 100, "default": 100 },
                    "requestHeaders": { "type": "object", "additionalProperties": { "type": "string" } },
                    "responseHeaders": { "type": "object", "additionalProperties": { "type": "string" } }
                }
            },
            "LegacyRoutes": {
                "type": "object", "required": ["revision", "routes"],
                "properties": {
                    "revision": { "type": "string" },
                    "routes": { "type": "object", "additionalProperties": { "$ref": "#/components/schemas/LegacyRoute" } }
                }
            },
            "TrafficTable": {
                "type": "object", "required": ["revision", "upstreams", "legacyRoutes"],
                "properties": {
                    "revision": { "type": "string" },
                    "upstreams": { "type": "array", "items": { "$ref": "#/components/schemas/TrafficSplit" } },
                    "legacyRoutes": { "type": "object", "additionalProperties": { "$ref": "#/components/schemas/LegacyRoute" } }
                }
            }
        } }
    });
    serde_json::from_value(doc).expect("the gateway's OpenAPI part is a valid document")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_admin_part_parses_and_keeps_its_paths() {
        let doc = serde_json::to_value(super::openapi()).unwrap();
        for path in [
            "/api/admin/traffic",
            "/api/admin/traffic/{upstream}",
            "/api/admin/traffic/{upstream}/promote",
            "/api/admin/traffic/{upstream}/rollback",
            "/api/admin/legacy-routes",
            "/api/admin/legacy-routes/{name}",
        ] {
            assert!(doc["paths"][path].is_object(), "{path}");
        }
        assert!(doc["components"]["schemas"]["TrafficSplit"].is_object());
        assert_eq!(
            doc["paths"]["/api/admin/traffic/{upstream}"]["put"]["responses"]["412"]["description"],
            "The traffic table changed since the read named in If-Match."
        );
    }
}
