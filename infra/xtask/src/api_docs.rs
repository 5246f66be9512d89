//! `cargo xtask docs`: the API reference (`docs/api.md`) generated from the OpenAPI contract
//! (`shared/openapi.yaml`), so the two never disagree. `cargo xtask tidy` fails when the
//! committed reference is not what the contract generates.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde_yaml::Value;

pub const CONTRACT: &str = "shared/openapi.yaml";
pub const REFERENCE: &str = "docs/api.md";

/// Writes the reference from the contract.
pub fn write(root: &Path) -> Result<()> {
    let text = generate(root)?;
    std::fs::write(root.join(REFERENCE), text).context("write docs/api.md")
}

/// The reference the contract generates.
pub fn generate(root: &Path) -> Result<String> {
    let spec: Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join(CONTRACT))?).context("parse the contract")?;
    Ok(render(&spec))
}

fn render(spec: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# API reference\n");
    let _ =
        writeln!(out, "<!-- Generated from {CONTRACT} by `cargo xtask docs`; edit the contract, not this file. -->\n");
    let _ = writeln!(out, "{}\n", text(&spec["info"]["description"]).trim_end());
    let _ = writeln!(out, "The contract itself is served at `GET /openapi.json`.\n");
    let tags = spec["tags"].as_sequence().cloned().unwrap_or_default();
    let paths = spec["paths"].as_mapping().cloned().unwrap_or_default();
    for tag in &tags {
        let name = text(&tag["name"]);
        let _ = writeln!(out, "## {name}\n\n{}\n", text(&tag["description"]).trim_end());
        for (path, item) in &paths {
            for method in ["get", "post", "put", "patch", "delete"] {
                let operation = &item[method];
                let tagged = operation["tags"].as_sequence().is_some_and(|t| t.iter().any(|v| text(v) == name));
                if operation.is_mapping() && tagged {
                    operation_section(&mut out, spec, method, text(path), operation);
                }
            }
        }
    }
    let _ = writeln!(out, "## Schemas\n");
    for (name, schema) in spec["components"]["schemas"].as_mapping().into_iter().flatten() {
        schema_section(&mut out, spec, text(name), schema);
    }
    out
}

fn operation_section(out: &mut String, spec: &Value, method: &str, path: &str, operation: &Value) {
    let _ = writeln!(out, "### `{} {path}`\n", method.to_uppercase());
    let _ = writeln!(out, "{} (`{}`)\n", text(&operation["summary"]).trim_end(), text(&operation["operationId"]));
    let description = text(&operation["description"]).trim_end();
    if !description.is_empty() {
        let _ = writeln!(out, "{description}\n");
    }
    if operation["security"].as_sequence().is_some_and(|s| s.is_empty()) {
        let _ = writeln!(out, "No API key needed.\n");
    }
    let parameters: Vec<Value> =
        operation["parameters"].as_sequence().into_iter().flatten().map(|p| resolve(spec, p).clone()).collect();
    if !parameters.is_empty() {
        let _ = writeln!(out, "| Parameter | In | Required | Type | Description |\n|---|---|---|---|---|");
        for p in &parameters {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                text(&p["name"]),
                text(&p["in"]),
                if p["required"].as_bool() == Some(true) { "yes" } else { "no" },
                type_of(&p["schema"]),
                cell(text(&p["description"]))
            );
        }
        let _ = writeln!(out);
    }
    let body = &operation["requestBody"]["content"]["application/json"]["schema"];
    if !body.is_null() {
        let _ = writeln!(out, "Body: {}.\n", type_of(body));
    }
    let _ = writeln!(out, "| Status | Meaning |\n|---|---|");
    for (status, response) in operation["responses"].as_mapping().into_iter().flatten() {
        let response = resolve(spec, response);
        let schema = &response["content"]["application/json"]["schema"];
        let returns = if schema.is_null() { String::new() } else { format!(" Returns {}.", type_of(schema)) };
        let _ = writeln!(out, "| {} | {}{returns} |", text(status), cell(text(&response["description"])));
    }
    let _ = writeln!(out);
}

fn schema_section(out: &mut String, spec: &Value, name: &str, schema: &Value) {
    let _ = writeln!(out, "### {name}\n");
    let description = text(&schema["description"]).trim_end();
    if !description.is_empty() {
        let _ = writeln!(out, "{description}\n");
    }
    let Some(properties) = schema["properties"].as_mapping() else {
        let _ = writeln!(out, "Type: {}.\n", type_of(schema));
        return;
    };
    let required: Vec<&str> = schema["required"].as_sequence().into_iter().flatten().map(text).collect();
    let _ = writeln!(out, "| Field | Type | Required | Description |\n|---|---|---|---|");
    for (field, property) in properties {
        let field = text(field);
        let _ = writeln!(
            out,
            "| `{field}` | {} | {} | {} |",
            type_of(property),
            if required.contains(&field) { "yes" } else { "no" },
            cell(text(&resolve(spec, property)["description"]))
        );
    }
    let _ = writeln!(out);
}

/// A schema in a few words: `RunView`, `string`, `array of Frame`, `string or null`.
fn type_of(schema: &Value) -> String {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        return format!("[`{name}`](#{})", name.to_lowercase());
    }
    for combinator in ["oneOf", "anyOf", "allOf"] {
        if let Some(options) = schema[combinator].as_sequence() {
            let joiner = if combinator == "allOf" { " and " } else { " or " };
            return options.iter().map(type_of).collect::<Vec<_>>().join(joiner);
        }
    }
    let kind = match &schema["type"] {
        Value::Sequence(kinds) => kinds.iter().map(text).collect::<Vec<_>>().join(" or "),
        other => text(other).to_owned(),
    };
    match kind.as_str() {
        "array" => format!("array of {}", type_of(&schema["items"])),
        "" if schema.is_mapping() && !schema["enum"].is_null() => enum_of(schema),
        "" => "any".into(),
        "string" if !schema["enum"].is_null() => enum_of(schema),
        _ => kind,
    }
}

fn enum_of(schema: &Value) -> String {
    let values: Vec<String> =
        schema["enum"].as_sequence().into_iter().flatten().map(|v| format!("`{}`", text(v))).collect();
    format!("one of {}", values.join(", "))
}

/// A `$ref` followed to what it names (one level is all the contract uses for parameters and
/// responses).
fn resolve<'a>(spec: &'a Value, item: &'a Value) -> &'a Value {
    let Some(reference) = item["$ref"].as_str() else { return item };
    reference.trim_start_matches("#/").split('/').fold(spec, |node, key| &node[key])
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// A description as one table cell.
fn cell(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "\\|")
}
