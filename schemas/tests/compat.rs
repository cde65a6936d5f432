//! The schema compatibility check (runs in CI with this crate's tests): every version of
//! every event's JSON Schema is compared with its predecessor. A change that breaks
//! readers of the older version — a property removed, a property's type changed, a
//! property newly required — fails the check unless an upcaster for that (event, older
//! version) is registered (`shop_schemas::UPCASTERS`) and tested by a fixture pair under
//! `schemas/tests/upcasters/`: `<Event>.v<N>.input.json` (valid for vN) and
//! `<Event>.v<N>.expected.json` (what the upcaster makes of it, valid for vN+1).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use shop_schemas::upcast::upcaster;
use shop_schemas::{event_types, schema_path, UPCASTERS};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn schema(service: shop_schemas::Service, name: &str, version: u32) -> Value {
    load(&repository().join(schema_path(service, name, version)))
}

/// What breaks a reader of `old` when the data is written per `new`, property by property
/// (into nested objects and array items), as `path: what` lines.
fn breaking_changes(old: &Value, new: &Value, at: &str) -> Vec<String> {
    let mut found = Vec::new();
    if old.get("type") != new.get("type") {
        found.push(format!(
            "{at}: type {} became {}",
            old.get("type").unwrap_or(&Value::Null),
            new.get("type").unwrap_or(&Value::Null)
        ));
        return found;
    }
    let required = |schema: &Value| -> Vec<String> {
        schema["required"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (old_required, new_required) = (required(old), required(new));
    for name in &new_required {
        if !old_required.contains(name) {
            found.push(format!("{at}.{name}: newly required"));
        }
    }
    let empty = serde_json::Map::new();
    let old_properties = old["properties"].as_object().unwrap_or(&empty);
    let new_properties = new["properties"].as_object().unwrap_or(&empty);
    for (name, old_property) in old_properties {
        match new_properties.get(name) {
            None => found.push(format!("{at}.{name}: removed")),
            Some(new_property) => {
                found.extend(breaking_changes(
                    old_property,
                    new_property,
                    &format!("{at}.{name}"),
                ));
            }
        }
    }
    if let (Some(old_items), Some(new_items)) = (old.get("items"), new.get("items")) {
        found.extend(breaking_changes(old_items, new_items, &format!("{at}[]")));
    }
    found
}

fn fixture(name: &str, version: u32, which: &str) -> PathBuf {
    repository().join(format!(
        "schemas/tests/upcasters/{name}.v{version}.{which}.json"
    ))
}

fn assert_valid(schema: &Value, data: &Value, what: &str) {
    let validator = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap();
    let errors: Vec<String> = validator.iter_errors(data).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{what}: {errors:?}");
}

#[test]
fn every_schema_version_reads_its_predecessors_events_or_has_a_tested_upcaster() {
    let mut failures = Vec::new();
    for event_type in event_types() {
        for from in 1..event_type.version {
            let older = schema(event_type.service, event_type.name, from);
            let newer = schema(event_type.service, event_type.name, from + 1);
            let breaks = breaking_changes(&older, &newer, event_type.name);
            if breaks.is_empty() {
                continue;
            }
            let input = fixture(event_type.name, from, "input");
            let expected = fixture(event_type.name, from, "expected");
            if upcaster(event_type.name, from).is_none() {
                failures.push(format!(
                    "{} v{from} → v{}: {breaks:?} and no upcaster from v{from}",
                    event_type.name,
                    from + 1
                ));
            } else if !input.exists() || !expected.exists() {
                failures.push(format!(
                    "{} v{from} → v{}: {breaks:?}; its upcaster has no fixture pair {} / {}",
                    event_type.name,
                    from + 1,
                    input.display(),
                    expected.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn every_upcaster_turns_its_fixture_into_the_expected_next_version() {
    for upcaster in UPCASTERS {
        let event_type = event_types()
            .find(|t| t.name == upcaster.name)
            .unwrap_or_else(|| panic!("{}: no such event", upcaster.name));
        let input = load(&fixture(upcaster.name, upcaster.from, "input"));
        let expected = load(&fixture(upcaster.name, upcaster.from, "expected"));
        let what = format!("{} v{}", upcaster.name, upcaster.from);
        assert_valid(
            &schema(event_type.service, upcaster.name, upcaster.from),
            &input,
            &format!("{what} input"),
        );
        assert_valid(
            &schema(event_type.service, upcaster.name, upcaster.from + 1),
            &expected,
            &format!("{what} expected"),
        );
        assert_eq!((upcaster.upcast)(input.clone()), expected, "{what}");
        // Data that has the new field already (written by a producer that knew it) keeps it.
        assert_eq!((upcaster.upcast)(expected.clone()), expected, "{what}");
    }
}

#[test]
fn the_check_sees_what_breaks_readers_and_what_does_not() {
    let v1 = json!({"type": "object", "required": ["a", "b"], "properties": {
        "a": {"type": "string"}, "b": {"type": "integer"},
        "lines": {"type": "array", "items": {"type": "object", "properties": {"q": {"type": "integer"}}}}
    }});
    // Compatible: an optional field added, a description changed.
    let added_optional = json!({"type": "object", "required": ["a", "b"], "properties": {
        "a": {"type": "string", "description": "now documented"}, "b": {"type": "integer"}, "c": {"type": "string"},
        "lines": {"type": "array", "items": {"type": "object", "properties": {"q": {"type": "integer"}}}}
    }});
    assert_eq!(
        breaking_changes(&v1, &added_optional, "E"),
        Vec::<String>::new()
    );
    let removed = json!({"type": "object", "required": ["a"], "properties": {
        "a": {"type": "string"},
        "lines": {"type": "array", "items": {"type": "object", "properties": {"q": {"type": "integer"}}}}
    }});
    assert_eq!(breaking_changes(&v1, &removed, "E"), ["E.b: removed"]);
    let retyped = json!({"type": "object", "required": ["a", "b"], "properties": {
        "a": {"type": "string"}, "b": {"type": "string"},
        "lines": {"type": "array", "items": {"type": "object", "properties": {"q": {"type": "string"}}}}
    }});
    assert_eq!(
        breaking_changes(&v1, &retyped, "E"),
        [
            "E.b: type \"integer\" became \"string\"",
            "E.lines[].q: type \"integer\" became \"string\""
        ]
    );
    let newly_required = json!({"type": "object", "required": ["a", "b", "c"], "properties": {
        "a": {"type": "string"}, "b": {"type": "integer"}, "c": {"type": "string"},
        "lines": {"type": "array", "items": {"type": "object", "properties": {"q": {"type": "integer"}}}}
    }});
    assert_eq!(
        breaking_changes(&v1, &newly_required, "E"),
        ["E.c: newly required"]
    );
}
