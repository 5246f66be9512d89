//! The AsyncAPI contract, for checking every message a test receives.

use std::collections::HashMap;

use crate::repo_root;

/// `shared/asyncapi.yaml`, compiled: every server message must match the schema of its `type`.
pub struct Contract {
    schemas: HashMap<String, jsonschema::Validator>,
}

impl Contract {
    /// Compiles the schema of every message the contract documents.
    pub fn load() -> Self {
        let text = std::fs::read_to_string(repo_root().join("shared/asyncapi.yaml")).expect("asyncapi.yaml");
        let doc: serde_json::Value = serde_yaml::from_str(&text).expect("asyncapi.yaml is YAML");
        let messages = doc["components"]["messages"].as_object().expect("components.messages").clone();
        let schemas = messages
            .into_iter()
            .map(|(name, message)| {
                // Formats (`uuid`, `date-time`) are only annotations by default in 2020-12: enforce
                // them, since the contract promises them.
                let validator = jsonschema::options()
                    .should_validate_formats(true)
                    .build(&message["payload"])
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                (name, validator)
            })
            .collect();
        Self { schemas }
    }

    /// Panics with the violations when `message` does not match its documented schema.
    pub fn check(&self, message: &serde_json::Value) {
        let kind = message["type"].as_str().or(message["action"].as_str()).expect("a type");
        let schema = self.schemas.get(kind).unwrap_or_else(|| panic!("undocumented message type {kind}: {message}"));
        let errors: Vec<String> =
            schema.iter_errors(message).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{kind} message breaks the contract: {errors:?}\n{message}");
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn formats_the_contract_names_are_enforced() {
        let contract = super::Contract::load();
        contract
            .check(&json!({"type": "subscribed", "run_id": "0193f2c4-8a1b-7c3d-9e4f-5a6b7c8d9e0f", "after_seq": 0}));
        let bad_id = json!({"type": "subscribed", "run_id": "not-a-uuid", "after_seq": 0});
        assert!(
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| contract.check(&bad_id))).is_err(),
            "a run_id that is no UUID"
        );
        let bad_time = json!({"type": "heartbeat", "ts": "yesterday"});
        assert!(
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| contract.check(&bad_time))).is_err(),
            "a ts that is no date-time"
        );
    }
}
