//! The AsyncAPI contract, for checking every message a test receives.

use std::collections::HashMap;

use crate::repo_root;

/// `shared/asyncapi.yaml`, compiled: every server message must match the schema of its `type`.
pub struct Contract {
    schemas: HashMap<String, jsonschema::Validator>,
}

impl Contract {
    pub fn load() -> Self {
        let text = std::fs::read_to_string(repo_root().join("shared/asyncapi.yaml")).expect("asyncapi.yaml");
        let doc: serde_json::Value = serde_yaml::from_str(&text).expect("asyncapi.yaml is YAML");
        let messages = doc["components"]["messages"].as_object().expect("components.messages").clone();
        let schemas = messages
            .into_iter()
            .map(|(name, message)| {
                let validator =
                    jsonschema::validator_for(&message["payload"]).unwrap_or_else(|e| panic!("{name}: {e}"));
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
