//! Branch names, accepted exactly as `git check-ref-format --branch` accepts them.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ValidationError;

/// Longest branch name accepted, in bytes. Git itself has no limit, but the name becomes a
/// path component on disk and part of DynamoDB keys, so it is capped well under 255.
pub const MAX_BRANCH_BYTES: usize = 200;

/// A validated branch name: accepted by git and at most `MAX_BRANCH_BYTES` bytes long.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BranchName(String);

impl BranchName {
    /// Checks `name` against git's branch-name rules and the length cap.
    pub fn parse(name: &str) -> Result<Self, ValidationError> {
        if name.len() > MAX_BRANCH_BYTES {
            return Err(ValidationError::BranchTooLong { max: MAX_BRANCH_BYTES });
        }
        match ref_format_violation(name) {
            Some(reason) => Err(ValidationError::InvalidBranch { reason }),
            None => Ok(Self(name.to_owned())),
        }
    }

    /// The name, for git commands, paths and keys.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BranchName {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<BranchName> for String {
    fn from(b: BranchName) -> String {
        b.0
    }
}

impl fmt::Display for BranchName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The first rule of git-check-ref-format(1) that `name` breaks, as `refs/heads/<name>` with
/// `--branch` (one-level names allowed, no leading `-`, not `HEAD`; a lone `@` is fine there,
/// since the rule against it applies to whole ref names and this one is `refs/heads/@`).
fn ref_format_violation(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("must not be empty");
    }
    if name.starts_with('-') {
        return Some("must not start with '-'");
    }
    if name == "HEAD" {
        return Some("must not be HEAD");
    }
    if name.contains("@{") {
        return Some("must not contain '@{'");
    }
    if name.contains("..") {
        return Some("must not contain '..'");
    }
    if let Some(c) = name.chars().find(|c| c.is_ascii_control() || " ~^:?*[\\".contains(*c)) {
        return Some(if c.is_ascii_control() {
            "must not contain control characters"
        } else if c == ' ' {
            "must not contain spaces"
        } else {
            "must not contain any of ~ ^ : ? * [ \\"
        });
    }
    if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Some("must not start or end with '/' or contain '//'");
    }
    if name.ends_with('.') {
        return Some("must not end with '.'");
    }
    for component in name.split('/') {
        if component.starts_with('.') {
            return Some("no path component may start with '.'");
        }
        if component.ends_with(".lock") {
            return Some("no path component may end with '.lock'");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_long_names_have_their_own_error() {
        let long = "b".repeat(MAX_BRANCH_BYTES + 1);
        assert_eq!(BranchName::parse(&long), Err(ValidationError::BranchTooLong { max: MAX_BRANCH_BYTES }));
        assert!(BranchName::parse(&"b".repeat(MAX_BRANCH_BYTES)).is_ok());
    }

    #[test]
    fn rejected_names_say_why() {
        let err = BranchName::parse("a..b").unwrap_err();
        assert_eq!(err.code(), "invalid_branch");
        assert!(err.to_string().contains(".."), "{err}");
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<BranchName>("\"ok/name\"").is_ok());
        assert!(serde_json::from_str::<BranchName>("\"bad name\"").is_err());
    }
}
