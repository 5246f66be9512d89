//! What a run is told of its repository's memory: a bounded section appended to its prompt.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::MemoryKind;

/// The most bytes of memory a run's prompt gets, unless configured otherwise.
pub const DEFAULT_MEMORY_PROMPT_BYTES: usize = 4_000;
/// The most memories a run's prompt gets, unless configured otherwise.
pub const DEFAULT_MEMORY_HINTS: usize = 8;

/// The heading of the section.
const HEADING: &str = "\n\n## What this repository has taught earlier runs\n";

/// A stored memory as a run's prompt shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryHint {
    /// The memory's id.
    pub id: Uuid,
    /// What it records.
    pub kind: MemoryKind,
    /// Its text.
    pub text: String,
    /// How many times it was seen (a failure's recurrences); 1 for most.
    pub occurrences: u32,
}

/// The prompt section for `hints`, in their order, at most `max_bytes` long; empty when there
/// are no hints or none fits.
///
/// One bullet a hint: `- [failure, seen 3 times] text` when it was seen more than once, else
/// `- [pattern] text`; the text on one line (its whitespace collapsed). A bullet is never cut:
/// one that does not fit is left out and the next ones still get their chance.
pub fn prompt_section(hints: &[MemoryHint], max_bytes: usize) -> String {
    let mut section = String::from(HEADING);
    let mut bullets = 0;
    for hint in hints {
        let text = hint.text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() {
            continue;
        }
        let bullet = if hint.occurrences > 1 {
            format!("- [{}, seen {} times] {text}\n", hint.kind, hint.occurrences)
        } else {
            format!("- [{}] {text}\n", hint.kind)
        };
        if section.len() + bullet.len() <= max_bytes {
            section.push_str(&bullet);
            bullets += 1;
        }
    }
    if bullets == 0 { String::new() } else { section }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(kind: MemoryKind, text: &str, occurrences: u32) -> MemoryHint {
        MemoryHint { id: Uuid::new_v4(), kind, text: text.into(), occurrences }
    }

    #[test]
    fn no_hints_no_section() {
        assert_eq!(prompt_section(&[], DEFAULT_MEMORY_PROMPT_BYTES), "");
        assert_eq!(prompt_section(&[hint(MemoryKind::Pattern, " \n ", 1)], DEFAULT_MEMORY_PROMPT_BYTES), "");
    }

    #[test]
    fn hints_are_bullets_in_their_order() {
        let hints = [
            hint(MemoryKind::Failure, "implement failed with cli_failed: cargo test failed", 3),
            hint(MemoryKind::Pattern, "flaky test → run with --test-threads=1", 1),
            hint(MemoryKind::Learning, "Fixtures assume UTC.\nPrevention:  set TZ.", 0),
            hint(MemoryKind::Decision, "We use sqlx, not diesel.", 2),
        ];
        assert_eq!(
            prompt_section(&hints, DEFAULT_MEMORY_PROMPT_BYTES),
            "\n\n## What this repository has taught earlier runs\n\
             - [failure, seen 3 times] implement failed with cli_failed: cargo test failed\n\
             - [pattern] flaky test → run with --test-threads=1\n\
             - [learning] Fixtures assume UTC. Prevention: set TZ.\n\
             - [decision, seen 2 times] We use sqlx, not diesel.\n"
        );
    }

    #[test]
    fn the_bound_is_kept_without_cutting_a_bullet() {
        let hints: Vec<MemoryHint> =
            (0..20).map(|i| hint(MemoryKind::Pattern, &format!("hint number {i:02} {}", "x".repeat(50)), 1)).collect();
        let whole = prompt_section(&hints, usize::MAX);
        for max in [0, HEADING.len(), HEADING.len() + 10, 300, 1_000, whole.len() - 1, whole.len()] {
            let section = prompt_section(&hints, max);
            assert!(section.len() <= max, "{max}");
            assert!(whole.starts_with(&section), "whole bullets, in order ({max})");
            assert!(section.is_empty() || section.ends_with('\n'));
        }
        assert_eq!(prompt_section(&hints, HEADING.len()), "", "a heading alone is no section");
        assert_eq!(prompt_section(&hints, whole.len() - 1).lines().count(), whole.lines().count() - 1);
    }

    #[test]
    fn a_hint_too_long_is_left_out_and_the_next_still_fit() {
        let hints = [
            hint(MemoryKind::Pattern, "first", 1),
            hint(MemoryKind::Learning, &"long ".repeat(100), 1),
            hint(MemoryKind::Failure, "third", 1),
        ];
        let section = prompt_section(&hints, 200);
        assert!(section.len() <= 200);
        assert!(section.ends_with("- [pattern] first\n- [failure] third\n"), "{section}");
    }
}
