//! `BranchName`'s rules checked against git's own `check-ref-format --branch`, name by name:
//! the domain decides without running git, and this keeps the two in agreement.

use std::process::Command;

use runner_core::domain::{BranchName, MAX_BRANCH_BYTES};

/// Names git accepts and rejects, covering every rule; each is checked against git itself.
const TABLE: &[&str] = &[
    "main",
    "feature/login",
    "feature/deep/nested/name",
    "release-1.2.3",
    "fix_underscore",
    "UPPER/lower",
    "unicodé-branch",
    "a",
    "with@sign",
    "x.y",
    "a..b",
    "..",
    ".hidden",
    "feature/.hidden",
    "feature.lock",
    "feature/x.lock/y",
    "x.lock.y",
    "trailing.",
    "trailing/",
    "/leading",
    "double//slash",
    "-leading-dash",
    "mid-dash-",
    "has space",
    "tab\there",
    "new\nline",
    "del\u{7f}char",
    "nul-less\u{1}",
    "tilde~1",
    "caret^2",
    "colon:name",
    "question?",
    "star*",
    "bracket[",
    "back\\slash",
    "at@{brace",
    "@",
    "@@",
    "HEAD",
    "head",
    "",
];

fn git_accepts(name: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    Command::new("git")
        .args(["check-ref-format", "--branch", name])
        .current_dir(dir.path())
        .output()
        .map(|o| o.status.success())
        .expect("git is installed")
}

#[test]
fn agrees_with_git_check_ref_format_on_every_name_in_the_table() {
    let mut disagreements = Vec::new();
    for name in TABLE {
        let ours = BranchName::parse(name).is_ok();
        if ours != git_accepts(name) {
            disagreements.push(format!("{name:?}: ours={ours}"));
        }
    }
    assert!(disagreements.is_empty(), "disagreements with git: {disagreements:?}");
}

#[test]
fn the_table_holds_both_good_and_bad_names() {
    let accepted = TABLE.iter().filter(|n| BranchName::parse(n).is_ok()).count();
    assert!(accepted >= 8 && accepted <= TABLE.len() - 25);
}

#[test]
fn git_has_no_length_limit_and_ours_is_deliberate() {
    let long = "b".repeat(MAX_BRANCH_BYTES + 1);
    assert!(git_accepts(&long));
    assert!(BranchName::parse(&long).is_err());
}
