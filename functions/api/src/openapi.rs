//! The API's contract, `shared/openapi.yaml`, served as JSON at `GET /openapi.json`.

use std::sync::OnceLock;

use axum::Json;

const SPEC: &str = include_str!("../../../shared/openapi.yaml");

/// The contract as JSON, converted once per container.
pub async fn document() -> Json<serde_json::Value> {
    static DOCUMENT: OnceLock<serde_json::Value> = OnceLock::new();
    Json(DOCUMENT.get_or_init(|| parse(SPEC)).clone())
}

fn parse(yaml: &str) -> serde_json::Value {
    // A unit test below proves the committed file parses; a broken one could not ship.
    serde_yaml::from_str(yaml).unwrap_or_else(|e| serde_json::json!({"error": format!("openapi.yaml: {e}")}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_contract_is_openapi_3_1() {
        let document: serde_json::Value = serde_yaml::from_str(SPEC).expect("shared/openapi.yaml parses");
        assert_eq!(document["openapi"].as_str().map(|v| &v[..3]), Some("3.1"));
        assert!(document["paths"]["/agent/claude-code/{workflow}/run"]["post"].is_object());
    }
}
