//! What a caller asks for, and the rules it must meet before anything is written.

use serde::Deserialize;
use uuid::Uuid;

use super::{BranchName, RepositoryPolicy, ValidationError, Workflow};

/// The fewest turns a request may ask for.
pub const MIN_MAX_TURNS: u32 = 1;
/// The most turns a request may ask for.
pub const MAX_MAX_TURNS: u32 = 200;
/// Used when neither the request nor the workflow's config.json sets max_turns.
pub const DEFAULT_MAX_TURNS: u32 = 2;
/// Default cap on a request's message size, in bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 100 * 1024;
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// The largest `max_budget_usd` a run may ask for.
pub const MAX_BUDGET_USD: f64 = 10_000.0;
/// The smallest budget a run or an epic may ask for: a hundredth of a cent (DynamoDB cannot store
/// numbers below 1e-130, and no model call costs less).
pub const MIN_BUDGET_USD: f64 = 0.0001;

/// The body of `POST /agent/claude-code/{workflow}/run`, as sent. Unknown fields are refused so
/// a typo (`max_turn`) is an error, not a silently ignored setting.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// What to ask Claude; sent to the CLI on stdin.
    pub message: String,
    /// The git branch to clone and, with auto-commit, push to.
    pub branch: String,
    /// Most model turns for the run; `i64` so out-of-range values are refused, not mis-parsed.
    #[serde(default)]
    pub max_turns: Option<i64>,
    /// A session to continue; kept as text so a malformed id gets its own error.
    #[serde(default)]
    pub session_id: Option<String>,
    /// The repository to clone; the deployment's default when absent.
    #[serde(default)]
    pub repository_url: Option<String>,
    /// The caller's own JSON object, stored with the run (at most 16 KB).
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    /// Overrides the workflow's `auto_commit`.
    #[serde(default)]
    pub auto_commit: Option<bool>,
    /// The most the run may spend on the model, in US dollars.
    #[serde(default)]
    pub max_budget_usd: Option<f64>,
}

/// Limits that a deployment configures.
#[derive(Clone, Debug)]
pub struct IntakeLimits {
    /// The largest message accepted, in bytes.
    pub max_message_bytes: usize,
}

impl Default for IntakeLimits {
    fn default() -> Self {
        Self { max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES }
    }
}

/// A request that met every rule, with defaults filled in from the workflow and deployment.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidRunRequest {
    /// The workflow's name.
    pub workflow: String,
    /// The caller's message: not blank, no NUL, within the size cap.
    pub message: String,
    /// The git branch to clone and, with auto-commit, push to.
    pub branch: BranchName,
    /// The turn limit: the request's, else the workflow's, else `DEFAULT_MAX_TURNS`.
    pub max_turns: u32,
    /// The session to continue; `None` starts a new one.
    pub session_id: Option<Uuid>,
    /// The repository to clone, already checked against the deployment's policy.
    pub repository_url: String,
    /// The caller's metadata object as JSON text; `None` when absent or null.
    pub metadata_json: Option<String>,
    /// Overrides the workflow's `auto_commit` when set.
    pub auto_commit: Option<bool>,
    /// The budget for the CLI's `--max-budget-usd`, checked positive and bounded.
    pub max_budget_usd: Option<f64>,
}

impl RunRequest {
    /// Checks every rule and fills in defaults, or says which rule the request broke.
    pub fn validate(
        self,
        workflow: &Workflow,
        limits: &IntakeLimits,
        repositories: &RepositoryPolicy,
    ) -> Result<ValidRunRequest, ValidationError> {
        if self.message.trim().is_empty() {
            return Err(ValidationError::EmptyMessage);
        }
        if self.message.len() > limits.max_message_bytes {
            return Err(ValidationError::MessageTooLarge { actual: self.message.len(), max: limits.max_message_bytes });
        }
        if self.message.contains('\0') {
            return Err(ValidationError::InvalidMessage);
        }
        let branch = BranchName::parse(&self.branch)?;
        let max_turns = match self.max_turns {
            None => workflow.config.max_turns.unwrap_or(DEFAULT_MAX_TURNS),
            Some(n) if (MIN_MAX_TURNS as i64..=MAX_MAX_TURNS as i64).contains(&n) => n as u32,
            Some(n) => {
                return Err(ValidationError::InvalidMaxTurns { actual: n, min: MIN_MAX_TURNS, max: MAX_MAX_TURNS });
            }
        };
        let session_id =
            self.session_id.map(|s| Uuid::parse_str(&s).map_err(|_| ValidationError::InvalidSessionId)).transpose()?;
        let repository_url = repositories.resolve(self.repository_url.as_deref())?;
        let metadata_json = match self.metadata {
            None | Some(serde_json::Value::Null) => None,
            Some(v @ serde_json::Value::Object(_)) => {
                let text = v.to_string();
                if text.len() > MAX_METADATA_BYTES {
                    return Err(ValidationError::MetadataTooLarge { actual: text.len(), max: MAX_METADATA_BYTES });
                }
                Some(text)
            }
            Some(_) => return Err(ValidationError::InvalidMetadata),
        };
        let max_budget_usd = match self.max_budget_usd {
            Some(usd) if !(usd.is_finite() && (MIN_BUDGET_USD..=MAX_BUDGET_USD).contains(&usd)) => {
                return Err(ValidationError::InvalidBudget);
            }
            budget => budget,
        };
        Ok(ValidRunRequest {
            workflow: workflow.name.clone(),
            message: self.message,
            branch,
            max_turns,
            session_id,
            repository_url,
            metadata_json,
            auto_commit: self.auto_commit,
            max_budget_usd,
        })
    }
}

/// Idempotency keys are caller-chosen; printable ASCII keeps them safe as DynamoDB key parts.
pub fn validate_idempotency_key(key: &str) -> Result<(), ValidationError> {
    let ok = !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY_LEN && key.bytes().all(|b| (0x21..=0x7e).contains(&b));
    ok.then_some(()).ok_or(ValidationError::InvalidIdempotencyKey)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::{WorkflowConfig, WorkflowRegistry};
    use serde_json::json;

    /// A workflow named `implement` with this `max_turns`.
    pub(crate) fn workflow(max_turns: Option<u32>) -> Workflow {
        Workflow {
            name: "implement".into(),
            prompt: "p".into(),
            allowed_tools: vec![],
            mcp_config: None,
            config: WorkflowConfig { max_turns, ..WorkflowConfig::default() },
        }
    }

    fn policy() -> RepositoryPolicy {
        RepositoryPolicy::new(
            Some("https://git.example.com/acme/app.git".into()),
            vec!["https://git.example.com/acme/*".into()],
        )
    }

    fn request(body: serde_json::Value) -> RunRequest {
        serde_json::from_value(body).unwrap()
    }

    fn check(body: serde_json::Value) -> Result<ValidRunRequest, ValidationError> {
        request(body).validate(&workflow(Some(7)), &IntakeLimits::default(), &policy())
    }

    #[test]
    fn a_minimal_request_gets_its_defaults() {
        let ok = check(json!({"message": "do it", "branch": "feature/x"})).unwrap();
        assert_eq!(ok.max_turns, 7, "from the workflow");
        assert_eq!(ok.repository_url, "https://git.example.com/acme/app.git");
        assert_eq!(ok.session_id, None);
        assert_eq!(ok.metadata_json, None);
        assert_eq!(ok.branch.as_str(), "feature/x");
    }

    #[test]
    fn max_turns_defaults_to_two_when_the_workflow_sets_none() {
        let ok = request(json!({"message": "m", "branch": "b"}))
            .validate(&workflow(None), &IntakeLimits::default(), &policy())
            .unwrap();
        assert_eq!(ok.max_turns, DEFAULT_MAX_TURNS);
    }

    #[test]
    fn max_turns_bounds() {
        assert_eq!(check(json!({"message": "m", "branch": "b", "max_turns": 1})).unwrap().max_turns, 1);
        assert_eq!(check(json!({"message": "m", "branch": "b", "max_turns": 200})).unwrap().max_turns, 200);
        for bad in [0, -1, 201, 1_000_000] {
            let err = check(json!({"message": "m", "branch": "b", "max_turns": bad})).unwrap_err();
            assert_eq!(err.code(), "invalid_max_turns", "{bad}");
        }
    }

    #[test]
    fn empty_and_blank_messages_are_refused() {
        for m in ["", "  \n\t"] {
            assert_eq!(check(json!({"message": m, "branch": "b"})).unwrap_err(), ValidationError::EmptyMessage);
        }
    }

    #[test]
    fn message_size_cap_is_configurable_and_exact() {
        let limits = IntakeLimits { max_message_bytes: 10 };
        let at = request(json!({"message": "x".repeat(10), "branch": "b"}));
        assert!(at.validate(&workflow(None), &limits, &policy()).is_ok());
        let over = request(json!({"message": "x".repeat(11), "branch": "b"}));
        assert_eq!(
            over.validate(&workflow(None), &limits, &policy()).unwrap_err(),
            ValidationError::MessageTooLarge { actual: 11, max: 10 }
        );
        let default_over = check(json!({"message": "x".repeat(DEFAULT_MAX_MESSAGE_BYTES + 1), "branch": "b"}));
        assert_eq!(default_over.unwrap_err().code(), "message_too_large");
    }

    #[test]
    fn nul_in_message_is_refused() {
        assert_eq!(check(json!({"message": "a\u{0}b", "branch": "b"})).unwrap_err().code(), "invalid_message");
    }

    #[test]
    fn branch_rules_apply() {
        assert_eq!(check(json!({"message": "m", "branch": "a..b"})).unwrap_err().code(), "invalid_branch");
        assert_eq!(check(json!({"message": "m", "branch": "b".repeat(500)})).unwrap_err().code(), "branch_too_long");
    }

    #[test]
    fn session_id_must_be_a_uuid() {
        let id = uuid::Uuid::new_v4();
        assert_eq!(
            check(json!({"message": "m", "branch": "b", "session_id": id.to_string()})).unwrap().session_id,
            Some(id)
        );
        assert_eq!(
            check(json!({"message": "m", "branch": "b", "session_id": "not-a-uuid"})).unwrap_err().code(),
            "invalid_session_id"
        );
    }

    #[test]
    fn metadata_must_be_a_small_object() {
        let ok = check(json!({"message": "m", "branch": "b", "metadata": {"ticket": "ABC-1"}})).unwrap();
        assert_eq!(ok.metadata_json.as_deref(), Some(r#"{"ticket":"ABC-1"}"#));
        for bad in [json!([1]), json!("s"), json!(3)] {
            assert_eq!(
                check(json!({"message": "m", "branch": "b", "metadata": bad})).unwrap_err().code(),
                "invalid_metadata"
            );
        }
        let big = json!({"message": "m", "branch": "b", "metadata": {"k": "v".repeat(MAX_METADATA_BYTES)}});
        assert_eq!(check(big).unwrap_err().code(), "metadata_too_large");
    }

    #[test]
    fn repository_rules_apply() {
        let other = check(json!({"message": "m", "branch": "b", "repository_url": "https://evil.example.com/x.git"}));
        assert_eq!(other.unwrap_err().code(), "repository_not_allowed");
        let allowed =
            check(json!({"message": "m", "branch": "b", "repository_url": "https://git.example.com/acme/lib.git"}));
        assert_eq!(allowed.unwrap().repository_url, "https://git.example.com/acme/lib.git");
    }

    #[test]
    fn unknown_fields_are_refused_when_parsing() {
        let err =
            serde_json::from_value::<RunRequest>(json!({"message": "m", "branch": "b", "max_turn": 3})).unwrap_err();
        assert!(err.to_string().contains("max_turn"));
    }

    #[test]
    fn idempotency_keys() {
        assert!(validate_idempotency_key("order-123_retry").is_ok());
        for bad in ["", "has space", "tab\t", "é", &"k".repeat(256)] {
            assert_eq!(validate_idempotency_key(bad), Err(ValidationError::InvalidIdempotencyKey), "{bad:?}");
        }
    }

    #[test]
    fn shipped_workflows_feed_their_defaults() {
        let registry = WorkflowRegistry::builtin();
        let architect = registry.get("architect").unwrap();
        let ok = request(json!({"message": "m", "branch": "b"}))
            .validate(architect, &IntakeLimits::default(), &policy())
            .unwrap();
        assert_eq!(Some(ok.max_turns), architect.config.max_turns.or(Some(DEFAULT_MAX_TURNS)));
    }
}
