//! `cargo xtask tidy`: the invariants the compiler cannot hold, checked like rust-analyzer's tidy
//! test does. Runs first in `cargo xtask test`.
//!
//! - The core crate (`shared/core`) depends on no AWS SDK, sqlx, nix, tar or zstd, and its code
//!   names no file-system, process or network API: it reaches the outside through its ports.
//! - No module doc cites a section number of an architecture document (sections move; the
//!   citations rot).
//! - The API reference (`docs/api.md`) is what the contract (`shared/openapi.yaml`) generates.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// Crates the core must not depend on, by name prefix.
const FORBIDDEN_CRATES: [&str; 6] = ["aws-", "aws_", "sqlx", "nix", "tar", "zstd"];
/// Paths the core must not name.
const FORBIDDEN_PATHS: [&str; 6] = ["std::fs", "tokio::fs", "std::process", "tokio::process", "std::net", "tokio::net"];

/// Checks the whole tree under `root`; every problem is listed before it fails.
pub fn check(root: &Path) -> Result<()> {
    let mut problems = Vec::new();
    let tree = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args(["tree", "--quiet", "-p", "runner-core", "-e", "normal", "--prefix", "none", "--format", "{p}"])
        .output()
        .context("cargo tree")?;
    if !tree.status.success() {
        bail!("cargo tree failed: {}", String::from_utf8_lossy(&tree.stderr));
    }
    for name in forbidden_crates(&String::from_utf8_lossy(&tree.stdout)) {
        problems.push(format!("shared/core depends on `{name}`: move that code to shared/adapters"));
    }
    for file in rust_files(&root.join("shared/core/src")) {
        let text = std::fs::read_to_string(&file)?;
        for (line, path) in forbidden_uses(&text) {
            problems.push(format!("{}:{line}: the core names `{path}`; use a port", relative(root, &file)));
        }
    }
    for dir in ["shared", "functions", "infra", "tests"] {
        for file in rust_files(&root.join(dir)) {
            let text = std::fs::read_to_string(&file)?;
            for line in cited_sections(&text) {
                problems.push(format!("{}:{line}: a module doc cites a section number", relative(root, &file)));
            }
        }
    }
    let reference = crate::api_docs::generate(root)?;
    if std::fs::read_to_string(root.join(crate::api_docs::REFERENCE)).ok().as_deref() != Some(reference.as_str()) {
        problems.push("docs/api.md is not what shared/openapi.yaml generates: run `cargo xtask docs`".into());
    }
    if problems.is_empty() {
        return Ok(());
    }
    for problem in &problems {
        eprintln!("tidy: {problem}");
    }
    bail!("{} tidy problem(s)", problems.len())
}

fn relative(root: &Path, file: &Path) -> String {
    file.strip_prefix(root).unwrap_or(file).display().to_string()
}

/// Every `.rs` file below `dir`, skipping build output.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() && entry.file_name() != "target" => stack.push(path),
                Ok(kind) if kind.is_file() && path.extension().is_some_and(|e| e == "rs") => files.push(path),
                _ => {}
            }
        }
    }
    files.sort();
    files
}

/// Package names in `cargo tree --format {p}` output (`name v1.2.3 …`) that the core must not have.
fn forbidden_crates(tree: &str) -> Vec<String> {
    let mut found: Vec<String> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| FORBIDDEN_CRATES.iter().any(|f| name.starts_with(f) && (f.ends_with(['-', '_']) || name == f)))
        .map(str::to_owned)
        .collect();
    found.sort();
    found.dedup();
    found
}

/// `(line number, path)` of every forbidden path the code names, comments aside; `use std::{fs, …}`
/// counts too.
fn forbidden_uses(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        let compact: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        for path in FORBIDDEN_PATHS {
            let (krate, module) = path.split_once("::").expect("a path");
            let grouped = compact.contains(&format!("{krate}::{{"))
                && compact.split_once(&format!("{krate}::{{")).is_some_and(|(_, rest)| {
                    rest.split(['}', ',']).any(|item| item == module || item.starts_with(&format!("{module}::")))
                });
            let named = code.match_indices(path).any(|(at, _)| {
                let before = code[..at].chars().last();
                let after = code[at + path.len()..].chars().next();
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
                    && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
            });
            if named || grouped {
                found.push((index + 1, path.to_owned()));
            }
        }
    }
    found
}

/// Line numbers of module docs (`//!`) that cite a section number (`§4`).
fn cited_sections(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.trim_start().starts_with("//!"))
        .filter(|(_, line)| {
            line.split('§').skip(1).any(|rest| rest.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        })
        .map(|(index, _)| index + 1)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_core_may_not_depend_on_adapter_crates() {
        let tree = "runner-core v0.1.0 (/x/shared/core)\nserde v1.0.0\naws-sdk-s3 v1.0.0\nsqlx v0.9.0\ntar v0.4.0\ntarget-lexicon v0.12.0\nnix v0.30.0\nnixpkgs-ish v1\n";
        assert_eq!(forbidden_crates(tree), ["aws-sdk-s3", "nix", "sqlx", "tar"]);
        assert!(forbidden_crates("runner-core v0.1.0\nserde v1\ntokio v1\n").is_empty());
    }

    #[test]
    fn file_system_and_process_apis_are_found_however_they_are_named() {
        let planted = "use std::fs;\nlet x = tokio::fs::read(p);\nuse std::{collections::HashMap, process::Command};\n\
                       // std::fs in a comment is fine\nuse tokio::{sync::mpsc, net};\nlet s = my_std::fs_like;\n\
                       use std::fs as planted;\n";
        let found: Vec<(usize, String)> = forbidden_uses(planted);
        assert_eq!(
            found,
            [
                (1, "std::fs".into()),
                (2, "tokio::fs".into()),
                (3, "std::process".into()),
                (5, "tokio::net".into()),
                (7, "std::fs".into())
            ]
        );
        assert!(forbidden_uses("use std::sync::Arc;\nuse tokio::sync::watch;\n").is_empty());
    }

    #[test]
    fn section_numbers_in_module_docs_are_found() {
        let text = "//! The run (ARCHITECTURE.md §4).\n//! Plain prose.\n/// An item doc § 5 is not a module doc.\n";
        assert_eq!(cited_sections(text), [1]);
        assert!(cited_sections("//! See the code map in ARCHITECTURE.md.\n").is_empty());
    }
}
