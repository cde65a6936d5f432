//! `/api/docs`: the OpenAPI document as one self-contained HTML page, rendered on the
//! server (no script, no stylesheet or font from elsewhere), so it reads the same offline.

use std::fmt::Write;

use serde_json::{Map, Value};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `code` spans for backticked words; everything else escaped.
fn prose(text: &str) -> String {
    text.split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                format!("<code>{}</code>", escape(part))
            } else {
                escape(part)
            }
        })
        .collect()
}

fn anchor(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// A schema in one line: `Order`, `[Product]`, `string (uuid)`, `integer 1..1000`.
fn type_of(schema: &Value) -> String {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        return format!("<a href=\"#schema-{}\">{}</a>", anchor(name), escape(name));
    }
    if let Some(all) = schema
        .get("allOf")
        .or_else(|| schema.get("oneOf"))
        .and_then(Value::as_array)
    {
        return all.iter().map(type_of).collect::<Vec<_>>().join(" | ");
    }
    let kinds: Vec<String> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        _ => vec![],
    };
    let mut text = kinds
        .iter()
        .map(|kind| match kind.as_str() {
            "array" => format!("[{}]", schema.get("items").map(type_of).unwrap_or_default()),
            other => escape(other),
        })
        .collect::<Vec<_>>()
        .join(" | ");
    if text.is_empty() {
        text = "any".into();
    }
    if let Some(format) = schema.get("format").and_then(Value::as_str) {
        let _ = write!(text, " ({})", escape(format));
    }
    let bound = |key: &str| schema.get(key).map(Value::to_string);
    match (
        bound("minimum").or_else(|| bound("minLength")),
        bound("maximum").or_else(|| bound("maxLength")),
    ) {
        (Some(lo), Some(hi)) => {
            let _ = write!(text, " {lo}..{hi}");
        }
        (Some(lo), None) => {
            let _ = write!(text, " ≥ {lo}");
        }
        (None, Some(hi)) => {
            let _ = write!(text, " ≤ {hi}");
        }
        (None, None) => {}
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        let _ = write!(text, " <code>{}</code>", escape(pattern));
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let values: Vec<String> = values.iter().map(|v| escape(&v.to_string())).collect();
        let _ = write!(text, " one of {}", values.join(", "));
    }
    text
}

fn content_schema(holder: &Value) -> Option<String> {
    let content = holder.get("content")?.as_object()?;
    let (media, body) = content.iter().next()?;
    Some(format!(
        "{} <span class=media>{}</span>",
        body.get("schema").map(type_of).unwrap_or_default(),
        escape(media)
    ))
}

fn operation_html(out: &mut String, path: &str, method: &str, op: &Map<String, Value>) {
    let id = anchor(&format!("{method}-{path}"));
    let protected = op
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    let _ = write!(
        out,
        "<section class=op id=\"{id}\"><h3><span class=\"method {method}\">{}</span> <code>{}</code>{}</h3>",
        method.to_uppercase(),
        escape(path),
        if protected { " <span class=lock>bearer token</span>" } else { " <span class=public>public</span>" }
    );
    if let Some(text) = op
        .get("description")
        .or_else(|| op.get("summary"))
        .and_then(Value::as_str)
    {
        let _ = write!(out, "<p>{}</p>", prose(text));
    }
    if let Some(params) = op.get("parameters").and_then(Value::as_array) {
        out.push_str(
            "<table><tr><th>parameter</th><th>in</th><th>type</th><th>description</th></tr>",
        );
        for p in params {
            let _ = write!(
                out,
                "<tr><td><code>{}</code>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(p["name"].as_str().unwrap_or("")),
                if p["required"] == Value::Bool(true) {
                    " <b>required</b>"
                } else {
                    ""
                },
                escape(p["in"].as_str().unwrap_or("")),
                p.get("schema").map(type_of).unwrap_or_default(),
                prose(p["description"].as_str().unwrap_or("")),
            );
        }
        out.push_str("</table>");
    }
    if let Some(body) = op.get("requestBody").and_then(content_schema) {
        let _ = write!(out, "<p><b>Body</b>: {body}</p>");
    }
    if let Some(responses) = op.get("responses").and_then(Value::as_object) {
        out.push_str("<table><tr><th>status</th><th>body</th><th>description</th></tr>");
        for (code, response) in responses {
            let _ = write!(
                out,
                "<tr><td class=\"code c{}\">{}</td><td>{}</td><td>{}</td></tr>",
                &code[..1],
                escape(code),
                content_schema(response).unwrap_or_default(),
                prose(response["description"].as_str().unwrap_or("")),
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</section>");
}

fn schema_html(out: &mut String, name: &str, schema: &Value) {
    let _ = write!(
        out,
        "<section class=schema id=\"schema-{}\"><h3>{}</h3>",
        anchor(name),
        escape(name)
    );
    if let Some(text) = schema.get("description").and_then(Value::as_str) {
        let _ = write!(out, "<p>{}</p>", prose(text));
    }
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        out.push_str("<table><tr><th>field</th><th>type</th><th>description</th></tr>");
        for (field, property) in properties {
            let _ = write!(
                out,
                "<tr><td><code>{}</code>{}</td><td>{}</td><td>{}</td></tr>",
                escape(field),
                if required.contains(&field.as_str()) {
                    " <b>required</b>"
                } else {
                    ""
                },
                type_of(property),
                prose(property["description"].as_str().unwrap_or("")),
            );
        }
        out.push_str("</table>");
    } else {
        let _ = write!(out, "<p>{}</p>", type_of(schema));
    }
    out.push_str("</section>");
}

const STYLE: &str = "body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1d2330}\
header{background:#1d2330;color:#fff;padding:1.2em 2em}header a{color:#9cf}\
main{padding:0 2em 3em;max-width:70em}nav{columns:3;font-size:13px}\
h2{border-bottom:2px solid #dde;margin-top:2em}h3{margin:.2em 0}\
.op,.schema{border:1px solid #dde;border-radius:6px;padding:.6em 1em;margin:1em 0}\
.method{display:inline-block;min-width:4.2em;text-align:center;border-radius:4px;color:#fff;font-size:13px;padding:.1em .4em}\
.get{background:#2a7ab0}.post{background:#2f9e44}.put{background:#d08700}.delete{background:#c92a2a}.patch{background:#7048e8}\
.lock{font-size:12px;color:#a61e4d}.public{font-size:12px;color:#2f9e44}\
table{border-collapse:collapse;margin:.5em 0;width:100%}td,th{border:1px solid #eef;padding:.2em .5em;text-align:left;vertical-align:top}\
th{background:#f4f5fa;font-weight:600}.code{font-family:monospace}.c2{color:#2f9e44}.c4{color:#d08700}.c5{color:#c92a2a}\
.media{color:#778;font-size:12px}code{background:#f4f5fa;padding:0 .2em;border-radius:3px}";

/// The whole page for `doc`.
pub fn render(doc: &Value) -> String {
    let info = &doc["info"];
    let title = info["title"].as_str().unwrap_or("API");
    let mut by_tag: std::collections::BTreeMap<String, Vec<(String, String)>> = Default::default();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    let tag = op["tags"][0].as_str().unwrap_or("other").to_string();
                    by_tag
                        .entry(tag)
                        .or_default()
                        .push((path.clone(), method.to_string()));
                }
            }
        }
    }
    let mut out = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
<title>{t} API</title><style>{STYLE}</style></head><body><header><h1>{t} API <small>{v}</small></h1>\
<p>{d}</p><p>OpenAPI {o}: <a href=\"/api/openapi.json\">/api/openapi.json</a></p></header><main><nav>",
        t = escape(title),
        v = escape(info["version"].as_str().unwrap_or("")),
        d = prose(info["description"].as_str().unwrap_or("")),
        o = escape(doc["openapi"].as_str().unwrap_or("")),
    );
    for (tag, ops) in &by_tag {
        let _ = write!(out, "<b>{}</b><br>", escape(tag));
        for (path, method) in ops {
            let _ = write!(
                out,
                "<a href=\"#{}\">{} {}</a><br>",
                anchor(&format!("{method}-{path}")),
                method.to_uppercase(),
                escape(path)
            );
        }
    }
    out.push_str("</nav>");
    for (tag, ops) in &by_tag {
        let _ = write!(out, "<h2>{}</h2>", escape(tag));
        for (path, method) in ops {
            if let Some(op) = doc["paths"][path][method].as_object() {
                operation_html(&mut out, path, method, op);
            }
        }
    }
    out.push_str("<h2>Schemas</h2>");
    if let Some(schemas) = doc["components"]["schemas"].as_object() {
        for (name, schema) in schemas {
            schema_html(&mut out, name, schema);
        }
    }
    out.push_str("</main></body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_operations_and_escapes() {
        let doc = serde_json::json!({
            "openapi": "3.1.0",
            "info": {"title": "T<x>", "version": "1"},
            "paths": {"/api/a/{id}": {"get": {"tags": ["t"], "description": "see `x`",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}],
                "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/A"}}}}}}}},
            "components": {"schemas": {"A": {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 5}}}}}
        });
        let html = render(&doc);
        assert!(html.contains("T&lt;x&gt; API"));
        assert!(html.contains("<code>/api/a/{id}</code>"));
        assert!(html.contains("<code>x</code>"));
        assert!(html.contains("href=\"#schema-A\""));
        assert!(html.contains("integer 1..5"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "nothing is loaded from elsewhere"
        );
    }
}
