//! The `memory` block a run's final answer may end with: the patterns and learnings the run
//! offers to later runs of its repository.
//!
//! The workflows' prompts ask for a fenced block of JSON at the end of the answer:
//!
//! ````text
//! ```memory
//! {"patterns": [{"problem": "…", "solution": "…", "context": "…", "confidence": 0.8}],
//!  "learnings": [{"insight": "…", "impact": "…", "prevention": "…"}]}
//! ```
//! ````
//!
//! The last such block counts (an answer may quote the instructions before it). No block is no
//! memory; a malformed block is an error the caller may report, never a panic.

use serde_json::{Map, Value};

use super::{MAX_MEMORY_TEXT_BYTES, MemoryKind, NewMemory};
use crate::domain::truncate_bytes;

/// The most entries (patterns and learnings together) one block may hold.
pub const MAX_MEMORY_BLOCK_ENTRIES: usize = 20;

/// The opening fence of a memory block.
const OPENING: &str = "```memory";
/// The closing fence.
const CLOSING: &str = "```";

/// Why a `memory` block was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum MemoryBlockError {
    /// The block has no closing fence.
    #[error("the memory block is not closed with ```")]
    Unclosed,
    /// The block's content does not parse as JSON.
    #[error("the memory block is not JSON: {0}")]
    NotJson(String),
    /// The JSON is not the object of `patterns` and `learnings` the prompt asks for.
    #[error("the memory block has the wrong shape: {0}")]
    WrongShape(String),
    /// More entries than [`MAX_MEMORY_BLOCK_ENTRIES`].
    #[error("the memory block has {count} entries; at most {max} are allowed")]
    TooManyEntries {
        /// How many entries the block has.
        count: usize,
        /// The most allowed.
        max: usize,
    },
    /// A field longer than [`MAX_MEMORY_TEXT_BYTES`].
    #[error("`{field}` of a memory entry is {bytes} bytes; at most {max} are allowed")]
    TextTooLong {
        /// The field, such as `patterns[0].solution`.
        field: String,
        /// Its length in bytes.
        bytes: usize,
        /// The most allowed.
        max: usize,
    },
    /// A pattern's confidence outside 0 to 1.
    #[error("`{field}` is {value}; a confidence is between 0 and 1")]
    Confidence {
        /// The field, such as `patterns[0].confidence`.
        field: String,
        /// The value given.
        value: f64,
    },
}

/// The memories in the last `memory` block of a run's result: none when there is no block.
///
/// Each pattern becomes a [`MemoryKind::Pattern`] whose text is `<problem> → <solution>` (the
/// problem alone when there is no solution); each learning a [`MemoryKind::Learning`] whose
/// text is the insight, followed by ` Prevention: <prevention>` when there is one. Texts are cut
/// to [`MAX_MEMORY_TEXT_BYTES`]; the fields keep the entry's known keys, trimmed. An entry with
/// no problem (or no insight) is skipped. Absent and `null` fields count as empty; unknown keys
/// are ignored.
pub fn parse_memory_block(result: &str) -> Result<Vec<NewMemory>, MemoryBlockError> {
    let Some(content) = last_block(result)? else { return Ok(Vec::new()) };
    let value: Value = serde_json::from_str(content).map_err(|e| MemoryBlockError::NotJson(e.to_string()))?;
    let Value::Object(block) = value else {
        return Err(MemoryBlockError::WrongShape("expected an object with `patterns` and `learnings`".into()));
    };
    let patterns = entries(&block, "patterns")?;
    let learnings = entries(&block, "learnings")?;
    let count = patterns.len() + learnings.len();
    if count > MAX_MEMORY_BLOCK_ENTRIES {
        return Err(MemoryBlockError::TooManyEntries { count, max: MAX_MEMORY_BLOCK_ENTRIES });
    }
    let mut memories = Vec::with_capacity(count);
    for (index, entry) in patterns.iter().enumerate() {
        memories.extend(pattern(index, entry)?);
    }
    for (index, entry) in learnings.iter().enumerate() {
        memories.extend(learning(index, entry)?);
    }
    Ok(memories)
}

/// The content of the last `memory` block, if there is one.
fn last_block(result: &str) -> Result<Option<&str>, MemoryBlockError> {
    // An opening fence is ```memory with nothing but blanks after it on its line.
    let opening = result.rmatch_indices(OPENING).find_map(|(at, _)| {
        let rest = &result[at + OPENING.len()..];
        let line_end = rest.find('\n').unwrap_or(rest.len());
        rest[..line_end].trim().is_empty().then(|| at + OPENING.len() + line_end)
    });
    let Some(start) = opening else { return Ok(None) };
    let content = result.get(start + 1..).unwrap_or_default();
    // The closing fence starts a line (after any indentation), or ends the JSON's last line.
    let mut offset = 0;
    for line in content.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with(CLOSING) {
            return Ok(Some(&content[..offset]));
        }
        if let Some(at) = line.trim_end().strip_suffix(CLOSING).map(str::len) {
            return Ok(Some(&content[..offset + at]));
        }
        offset += line.len();
    }
    Err(MemoryBlockError::Unclosed)
}

/// The array under `key`; empty when the key is absent or `null`.
fn entries<'a>(block: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], MemoryBlockError> {
    match block.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(MemoryBlockError::WrongShape(format!("`{key}` must be an array"))),
    }
}

/// The entry as an object.
fn object<'a>(list: &str, index: usize, entry: &'a Value) -> Result<&'a Map<String, Value>, MemoryBlockError> {
    entry.as_object().ok_or_else(|| MemoryBlockError::WrongShape(format!("`{list}[{index}]` must be an object")))
}

/// The string field `key` of an entry, trimmed; empty when absent or `null`.
fn text<'a>(entry: &'a Map<String, Value>, list: &str, index: usize, key: &str) -> Result<&'a str, MemoryBlockError> {
    let field = || format!("{list}[{index}].{key}");
    let text = match entry.get(key) {
        None | Some(Value::Null) => "",
        Some(Value::String(text)) => text.trim(),
        Some(_) => return Err(MemoryBlockError::WrongShape(format!("`{}` must be a string", field()))),
    };
    if text.len() > MAX_MEMORY_TEXT_BYTES {
        return Err(MemoryBlockError::TextTooLong { field: field(), bytes: text.len(), max: MAX_MEMORY_TEXT_BYTES });
    }
    Ok(text)
}

/// Puts the non-empty texts into `fields` under their keys.
fn keep(fields: &mut Map<String, Value>, texts: &[(&str, &str)]) {
    for (key, text) in texts {
        if !text.is_empty() {
            fields.insert((*key).to_owned(), Value::String((*text).to_owned()));
        }
    }
}

fn pattern(index: usize, entry: &Value) -> Result<Option<NewMemory>, MemoryBlockError> {
    let entry = object("patterns", index, entry)?;
    let problem = text(entry, "patterns", index, "problem")?;
    let solution = text(entry, "patterns", index, "solution")?;
    let context = text(entry, "patterns", index, "context")?;
    let confidence = match entry.get("confidence") {
        None | Some(Value::Null) => None,
        Some(Value::Number(number)) => {
            let value = number.as_f64().unwrap_or(f64::NAN);
            if !(0.0..=1.0).contains(&value) {
                return Err(MemoryBlockError::Confidence { field: format!("patterns[{index}].confidence"), value });
            }
            Some(value)
        }
        Some(_) => {
            return Err(MemoryBlockError::WrongShape(format!("`patterns[{index}].confidence` must be a number")));
        }
    };
    if problem.is_empty() {
        return Ok(None);
    }
    let mut fields = Map::new();
    keep(&mut fields, &[("problem", problem), ("solution", solution), ("context", context)]);
    if let Some(confidence) = confidence {
        fields.insert("confidence".into(), confidence.into());
    }
    let text = if solution.is_empty() { problem.to_owned() } else { format!("{problem} → {solution}") };
    Ok(Some(NewMemory {
        kind: MemoryKind::Pattern,
        text: truncate_bytes(&text, MAX_MEMORY_TEXT_BYTES),
        fields: Value::Object(fields),
        fingerprint: None,
    }))
}

fn learning(index: usize, entry: &Value) -> Result<Option<NewMemory>, MemoryBlockError> {
    let entry = object("learnings", index, entry)?;
    let insight = text(entry, "learnings", index, "insight")?;
    let impact = text(entry, "learnings", index, "impact")?;
    let prevention = text(entry, "learnings", index, "prevention")?;
    if insight.is_empty() {
        return Ok(None);
    }
    let mut fields = Map::new();
    keep(&mut fields, &[("insight", insight), ("impact", impact), ("prevention", prevention)]);
    let text = if prevention.is_empty() { insight.to_owned() } else { format!("{insight} Prevention: {prevention}") };
    Ok(Some(NewMemory {
        kind: MemoryKind::Learning,
        text: truncate_bytes(&text, MAX_MEMORY_TEXT_BYTES),
        fields: Value::Object(fields),
        fingerprint: None,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const VALID: &str = r#"Done: the parser now handles empty input.

```memory
{"patterns": [{"problem": "cargo test hangs on the integration suite", "solution": "run it with --test-threads=1", "context": "tests share a Postgres schema", "confidence": 0.8}],
 "learnings": [{"insight": "The fixtures assume UTC.", "impact": "tests fail near midnight", "prevention": "Set TZ=UTC in CI."}]}
```
"#;

    fn err(result: &str) -> MemoryBlockError {
        parse_memory_block(result).expect_err("the block should be refused")
    }

    fn block(json: &str) -> String {
        format!("Summary.\n\n```memory\n{json}\n```\n")
    }

    #[test]
    fn a_valid_block_yields_its_patterns_then_its_learnings() {
        let memories = parse_memory_block(VALID).unwrap();
        assert_eq!(memories.len(), 2);
        assert_eq!(memories[0].kind, MemoryKind::Pattern);
        assert_eq!(memories[0].text, "cargo test hangs on the integration suite → run it with --test-threads=1");
        assert_eq!(
            memories[0].fields,
            json!({"problem": "cargo test hangs on the integration suite", "solution": "run it with --test-threads=1",
                   "context": "tests share a Postgres schema", "confidence": 0.8})
        );
        assert_eq!(memories[0].fingerprint, None);
        assert_eq!(memories[1].kind, MemoryKind::Learning);
        assert_eq!(memories[1].text, "The fixtures assume UTC. Prevention: Set TZ=UTC in CI.");
        assert_eq!(
            memories[1].fields,
            json!({"insight": "The fixtures assume UTC.", "impact": "tests fail near midnight",
                   "prevention": "Set TZ=UTC in CI."})
        );
    }

    #[test]
    fn no_block_is_no_memory() {
        assert_eq!(parse_memory_block(""), Ok(vec![]));
        assert_eq!(parse_memory_block("All done, tests pass."), Ok(vec![]));
        assert_eq!(parse_memory_block("```json\n{\"patterns\": []}\n```"), Ok(vec![]));
        // `memoryless` is another info string, not a memory block.
        assert_eq!(parse_memory_block("```memoryless\n{}\n```"), Ok(vec![]));
        assert_eq!(parse_memory_block(&block("{}")), Ok(vec![]));
        assert_eq!(parse_memory_block(&block(r#"{"patterns": null, "learnings": []}"#)), Ok(vec![]));
    }

    #[test]
    fn malformed_blocks_are_errors() {
        assert!(matches!(err(&block("{\"patterns\": [")), MemoryBlockError::NotJson(_)));
        assert!(matches!(err(&block("")), MemoryBlockError::NotJson(_)));
        assert!(matches!(err(&block("[]")), MemoryBlockError::WrongShape(_)));
        assert!(matches!(err(&block(r#"{"patterns": {}}"#)), MemoryBlockError::WrongShape(_)));
        assert!(matches!(err(&block(r#"{"learnings": ["just text"]}"#)), MemoryBlockError::WrongShape(_)));
        let shape = err(&block(r#"{"patterns": [{"problem": 3, "solution": "x"}]}"#));
        assert_eq!(shape.to_string(), "the memory block has the wrong shape: `patterns[0].problem` must be a string");
        assert!(matches!(
            err(&block(r#"{"patterns": [{"problem": "p", "confidence": "high"}]}"#)),
            MemoryBlockError::WrongShape(_)
        ));
        assert_eq!(err("```memory\n{\"patterns\": []}\n"), MemoryBlockError::Unclosed);
        let message = err(&block("not json")).to_string();
        assert!(message.starts_with("the memory block is not JSON: "), "{message}");
    }

    #[test]
    fn confidence_is_between_zero_and_one() {
        for good in ["0", "1", "0.5", "1.0"] {
            let json = format!(r#"{{"patterns": [{{"problem": "p", "solution": "s", "confidence": {good}}}]}}"#);
            assert_eq!(parse_memory_block(&block(&json)).unwrap().len(), 1, "{good}");
        }
        for bad in ["1.01", "-0.1", "80"] {
            let json = format!(r#"{{"patterns": [{{"problem": "p", "solution": "s", "confidence": {bad}}}]}}"#);
            assert!(matches!(err(&block(&json)), MemoryBlockError::Confidence { .. }), "{bad}");
        }
        let message = err(&block(r#"{"patterns": [{"problem": "p", "confidence": 2}]}"#)).to_string();
        assert_eq!(message, "`patterns[0].confidence` is 2; a confidence is between 0 and 1");
    }

    #[test]
    fn the_last_block_wins() {
        let result = format!(
            "The prompt asked for:\n```memory\n{}\n```\nand here it is:\n{}",
            r#"{"learnings": [{"insight": "first"}]}"#,
            block(r#"{"learnings": [{"insight": "second"}]}"#)
        );
        let memories = parse_memory_block(&result).unwrap();
        assert_eq!(memories.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["second"]);
    }

    #[test]
    fn a_block_inside_other_text_is_found() {
        let result = "I fixed the flaky test.\n\n  ```memory\n  {\"learnings\": [{\"insight\": \"Retry the mirror fetch.\"}]}\n  ```\n\nAnything else? Tell me.\n```rust\nfn main() {}\n```\n";
        let memories = parse_memory_block(result).unwrap();
        assert_eq!(memories.len(), 1);
        assert_eq!(memories[0].text, "Retry the mirror fetch.");
        // A closing fence right after the JSON, on its line.
        let tight = "Done.\n```memory\n{\"learnings\": [{\"insight\": \"tight\"}]}```";
        assert_eq!(parse_memory_block(tight).unwrap()[0].text, "tight");
        // Windows line ends.
        let crlf = "Done.\r\n```memory\r\n{\"learnings\": [{\"insight\": \"crlf\"}]}\r\n```\r\n";
        assert_eq!(parse_memory_block(crlf).unwrap()[0].text, "crlf");
    }

    #[test]
    fn empty_entries_are_skipped_and_texts_are_trimmed() {
        let json = r#"{"patterns": [{"problem": "  ", "solution": "x"}, {"problem": " only a problem "},
                                    {"solution": "no problem"}],
                       "learnings": [{"insight": "", "prevention": "p"}, {"insight": "i", "prevention": null},
                                     {"insight": "j", "unknown": 1}]}"#;
        let memories = parse_memory_block(&block(json)).unwrap();
        let texts: Vec<&str> = memories.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["only a problem", "i", "j"]);
        assert_eq!(memories[0].fields, json!({"problem": "only a problem"}));
        assert_eq!(memories[2].fields, json!({"insight": "j"}), "unknown keys are not kept");
    }

    #[test]
    fn entries_and_texts_are_bounded() {
        let entry = r#"{"insight": "i"}"#;
        let at_most = format!(r#"{{"learnings": [{}]}}"#, [entry; MAX_MEMORY_BLOCK_ENTRIES].join(","));
        assert_eq!(parse_memory_block(&block(&at_most)).unwrap().len(), MAX_MEMORY_BLOCK_ENTRIES);
        let pattern = r#"{"problem": "p", "solution": "s"}"#;
        let too_many =
            format!(r#"{{"patterns": [{}], "learnings": [{}]}}"#, [pattern; 11].join(","), [entry; 10].join(","));
        assert_eq!(err(&block(&too_many)), MemoryBlockError::TooManyEntries { count: 21, max: 20 });

        let long = "x".repeat(MAX_MEMORY_TEXT_BYTES + 1);
        let json = format!(r#"{{"patterns": [{{"problem": "p", "solution": "{long}"}}]}}"#);
        assert_eq!(
            err(&block(&json)),
            MemoryBlockError::TextTooLong {
                field: "patterns[0].solution".into(),
                bytes: MAX_MEMORY_TEXT_BYTES + 1,
                max: MAX_MEMORY_TEXT_BYTES
            }
        );

        // Each field fits, but together they are cut to the bound, on a character boundary.
        let half = "é".repeat(MAX_MEMORY_TEXT_BYTES / 2);
        let json = format!(r#"{{"patterns": [{{"problem": "{half}", "solution": "{half}"}}]}}"#);
        let memories = parse_memory_block(&block(&json)).unwrap();
        assert!(memories[0].text.len() <= MAX_MEMORY_TEXT_BYTES);
        assert!(memories[0].text.len() > MAX_MEMORY_TEXT_BYTES - 4);
    }
}
