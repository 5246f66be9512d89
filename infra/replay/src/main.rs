//! `claude-replay`: a stand-in for the `claude` CLI that prints a recorded stream-json run, so
//! benchmarks of many concurrent runs measure claude-runner, not as many model processes.
//!
//! The executor starts it exactly as it starts `claude`: the CLI's argument vector, the message on
//! stdin, a scrubbed environment. Its own options therefore come from a wrapper script used as
//! `CLAUDE_BIN`:
//!
//! ```sh
//! #!/bin/sh
//! exec /abs/path/claude-replay --recording /abs/run.ndjson --pace recorded -- "$@"
//! ```
//!
//! Everything after `--` is the real CLI's arguments: the id of `--session-id ID` or `--resume ID`
//! replaces every line's top-level `session_id`; the rest is ignored. A recording is a real run's
//! stdout, one JSON object per line. A top-level `_replay_offset_ms` says when the line goes out,
//! counted from the start (`--pace recorded`; without it, at once), and is stripped. Otherwise each
//! line is written byte for byte, flushed, and the process exits 0 after the last one.

use std::io::{Read as _, Write as _};
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

/// The top-level member that times a line; it never reaches the output.
const OFFSET_KEY: &str = "_replay_offset_ms";

#[derive(Parser)]
#[command(name = "claude-replay", about = "Replays a recorded `claude -p --output-format stream-json` run")]
struct Args {
    /// The recording: a real run's stdout, one JSON object per line.
    #[arg(long)]
    recording: PathBuf,
    /// `recorded`: each line at its `_replay_offset_ms`; `fast`: every line as soon as it can.
    #[arg(long, value_enum, default_value = "recorded")]
    pace: Pace,
    /// The real CLI's arguments, after `--`; only the session id is read from them.
    #[arg(last = true)]
    cli: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Pace {
    Recorded,
    Fast,
}

fn main() -> ExitCode {
    let started = Instant::now();
    let args = Args::parse();
    match replay(&args, started) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("claude-replay: {err}");
            ExitCode::FAILURE
        }
    }
}

fn replay(args: &Args, started: Instant) -> Result<(), String> {
    // The message: read to its end like the CLI does, so the executor's writer never blocks.
    let mut message = Vec::new();
    std::io::stdin().read_to_end(&mut message).map_err(|e| format!("reading the message from stdin: {e}"))?;
    let path = args.recording.display();
    let recording = std::fs::read_to_string(&args.recording).map_err(|e| format!("{path}: {e}"))?;
    let session = requested_session(&args.cli);
    let mut stdout = std::io::stdout().lock();
    for (index, line) in recording.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (mut out, offset_ms) =
            rewrite(line, session.as_deref()).map_err(|e| format!("{path}:{}: {e}", index + 1))?;
        if args.pace == Pace::Recorded
            && let Some(wait) = Duration::from_millis(offset_ms).checked_sub(started.elapsed())
        {
            std::thread::sleep(wait);
        }
        // One write per line, newline included, so the reader never sees a line in two pieces.
        out.push('\n');
        stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()).map_err(|e| format!("writing stdout: {e}"))?;
    }
    Ok(())
}

/// The session id the executor asked for: the value of `--session-id` or `--resume` (or of their
/// `--flag=value` form), whichever comes first. The CLI's other arguments are not looked at.
fn requested_session(cli: &[String]) -> Option<String> {
    for (index, arg) in cli.iter().enumerate() {
        for flag in ["--session-id", "--resume"] {
            if arg == flag {
                return cli.get(index + 1).cloned();
            }
            if let Some(value) = arg.strip_prefix(flag).and_then(|rest| rest.strip_prefix('=')) {
                return Some(value.to_owned());
            }
        }
    }
    None
}

/// One top-level member of a JSON object line: where its key starts, and its value's bytes.
#[derive(Debug)]
struct Member {
    key: String,
    start: usize,
    value: Range<usize>,
}

/// `line` with its offset member removed and its top-level `session_id` string replaced by
/// `session`, and the line's offset in milliseconds (0 without one). Every other byte is kept; a
/// line that is not a JSON object is written as it is.
fn rewrite(line: &str, session: Option<&str>) -> Result<(String, u64), String> {
    let Some(members) = top_level_members(line) else {
        return Ok((line.to_owned(), 0));
    };
    let mut offset_ms = 0;
    // (bytes, replacement), applied from the end of the line so earlier positions stay valid.
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    for (index, member) in members.iter().enumerate() {
        match member.key.as_str() {
            OFFSET_KEY => {
                let value: serde_json::Value =
                    serde_json::from_str(&line[member.value.clone()]).map_err(|e| format!("{OFFSET_KEY}: {e}"))?;
                offset_ms = value
                    .as_f64()
                    .filter(|ms| ms.is_finite() && *ms >= 0.0)
                    .map(|ms| ms.round() as u64)
                    .ok_or_else(|| format!("{OFFSET_KEY} is not a number of milliseconds: {value}"))?;
                // The member goes with one comma: the one after it, or the one before the last member.
                let previous = index.checked_sub(1).and_then(|p| members.get(p));
                let cut = match (members.get(index + 1), previous) {
                    (Some(next), _) => member.start..next.start,
                    (None, Some(previous)) => previous.value.end..member.value.end,
                    (None, None) => member.start..member.value.end,
                };
                edits.push((cut, String::new()));
            }
            "session_id" => {
                if let Some(id) = session
                    && line[member.value.clone()].starts_with('"')
                {
                    edits.push((member.value.clone(), serde_json::Value::from(id).to_string()));
                }
            }
            _ => {}
        }
    }
    edits.sort_by_key(|(bytes, _)| std::cmp::Reverse(bytes.start));
    let mut out = line.to_owned();
    for (bytes, replacement) in edits {
        out.replace_range(bytes, &replacement);
    }
    Ok((out, offset_ms))
}

/// The top-level members of `line` in order, when it is one JSON object (`None` otherwise).
fn top_level_members(line: &str) -> Option<Vec<Member>> {
    // Valid JSON first, so the scan below can trust the syntax.
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line).ok()?;
    let bytes = line.as_bytes();
    let mut at = skip_whitespace(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    at += 1;
    let mut members = Vec::new();
    loop {
        at = skip_whitespace(bytes, at);
        match bytes.get(at).copied()? {
            b'}' => return Some(members),
            b',' => {
                at += 1;
                continue;
            }
            b'"' => {}
            _ => return None,
        }
        let start = at;
        let key_end = string_end(bytes, start)?;
        let key: String = serde_json::from_str(&line[start..key_end]).ok()?;
        at = skip_whitespace(bytes, key_end);
        if bytes.get(at) != Some(&b':') {
            return None;
        }
        let value_start = skip_whitespace(bytes, at + 1);
        let value_end = value_end(bytes, value_start)?;
        members.push(Member { key, start, value: value_start..value_end });
        at = value_end;
    }
}

fn skip_whitespace(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

/// Just past the string whose opening quote is at `at`.
fn string_end(bytes: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Just past the value that starts at `at`: a string, an object or an array, or a scalar (which
/// ends at the whitespace, `,` or `}` after it).
fn value_end(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at).copied()? {
        b'"' => string_end(bytes, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            while i < bytes.len() {
                match bytes[i] {
                    b'"' => {
                        i = string_end(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let mut end = at;
            while end < bytes.len() && !matches!(bytes[end], b',' | b'}') && !bytes[end].is_ascii_whitespace() {
                end += 1;
            }
            Some(end)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0196f1c2-3d4e-7f50-8a9b-0c1d2e3f4a5b";

    #[test]
    fn the_offset_is_read_and_stripped_wherever_it_stands() {
        let cases: [(&str, &str, u64); 7] = [
            (r#"{"_replay_offset_ms":180,"type":"assistant"}"#, r#"{"type":"assistant"}"#, 180),
            (
                r#"{"type":"assistant", "_replay_offset_ms": 7 , "x":[1,{"y":"}],"}]}"#,
                r#"{"type":"assistant", "x":[1,{"y":"}],"}]}"#,
                7,
            ),
            (r#"{"type":"result","_replay_offset_ms":390}"#, r#"{"type":"result"}"#, 390),
            (r#"{"a":1 , "_replay_offset_ms":2.4 }"#, r#"{"a":1 }"#, 2),
            (r#"{"_replay_offset_ms":5}"#, "{}", 5),
            (r#"{"a\"b":"x\\","_replay_offset_ms":1}"#, r#"{"a\"b":"x\\"}"#, 1),
            (r#"{"type":"user","n":1.5e3}"#, r#"{"type":"user","n":1.5e3}"#, 0),
        ];
        for (line, expected, offset) in cases {
            assert_eq!(rewrite(line, None).unwrap(), (expected.to_owned(), offset), "{line}");
        }
        assert!(rewrite(r#"{"_replay_offset_ms":"soon"}"#, None).is_err());
        assert!(rewrite(r#"{"_replay_offset_ms":-1}"#, None).is_err());
    }

    #[test]
    fn only_the_top_level_session_id_string_is_replaced() {
        let line = r#"{"type":"system","subtype":"init","session_id":"old","message":{"session_id":"nested"},"é":"✓"}"#;
        let expected = format!(
            r#"{{"type":"system","subtype":"init","session_id":"{ID}","message":{{"session_id":"nested"}},"é":"✓"}}"#
        );
        assert_eq!(rewrite(line, Some(ID)).unwrap(), (expected, 0_u64));
        assert_eq!(rewrite(line, None).unwrap(), (line.to_owned(), 0_u64));
        let null = r#"{"type":"x","session_id":null}"#;
        assert_eq!(rewrite(null, Some(ID)).unwrap(), (null.to_owned(), 0_u64));
        // Replaced and stripped in one line, side by side.
        let both = r#"{"session_id":"old","_replay_offset_ms":3}"#;
        assert_eq!(rewrite(both, Some(ID)).unwrap(), (format!(r#"{{"session_id":"{ID}"}}"#), 3_u64));
    }

    #[test]
    fn lines_that_are_not_json_objects_go_out_as_they_are() {
        for line in ["not json", "[1,2]", r#"{"open":"#, "42"] {
            assert_eq!(rewrite(line, Some(ID)).unwrap(), (line.to_owned(), 0_u64));
        }
    }

    #[test]
    fn the_session_comes_from_session_id_or_resume() {
        let args = |list: &[&str]| list.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        let real = args(&["-p", "--max-turns", "7", "--session-id", ID, "--append-system-prompt", "--resume x"]);
        assert_eq!(requested_session(&real).as_deref(), Some(ID));
        assert_eq!(requested_session(&args(&["--resume", ID, "--allowedTools", "Read"])).as_deref(), Some(ID));
        assert_eq!(requested_session(&args(&["--resume=abc"])).as_deref(), Some("abc"));
        assert_eq!(requested_session(&args(&["-p", "--resume"])), None);
        assert_eq!(requested_session(&args(&["-p", "--verbose"])), None);
    }

    #[test]
    fn the_clis_arguments_after_the_separator_are_taken_whatever_they_look_like() {
        let args = Args::try_parse_from([
            "claude-replay",
            "--recording",
            "/r.ndjson",
            "--pace",
            "fast",
            "--",
            "-p",
            "--output-format",
            "stream-json",
            "--session-id",
            ID,
            "--recording",
            "ignored",
        ])
        .unwrap();
        assert_eq!((args.recording, args.pace), (PathBuf::from("/r.ndjson"), Pace::Fast));
        assert_eq!(args.cli.len(), 7);
        assert_eq!(requested_session(&args.cli).as_deref(), Some(ID));
        let defaults = Args::try_parse_from(["claude-replay", "--recording", "/r.ndjson"]).unwrap();
        assert_eq!((defaults.pace, defaults.cli.len()), (Pace::Recorded, 0));
    }

    #[test]
    fn the_checked_in_recordings_are_successful_runs_kept_byte_for_byte() {
        let recordings =
            [include_str!("../recordings/two-call-run.ndjson"), include_str!("../recordings/chatty-run.ndjson")];
        for recording in recordings {
            let mut last_offset = 0;
            let mut frames = Vec::new();
            for line in recording.lines() {
                let (out, offset) = rewrite(line, None).unwrap();
                assert!(offset >= last_offset, "offsets never go back: {line}");
                last_offset = offset;
                // Only the leading offset member is gone.
                assert_eq!(format!("{{\"{OFFSET_KEY}\":{offset},{}", &out[1..]), line);
                let (replaced, _) = rewrite(line, Some(ID)).unwrap();
                let frame: serde_json::Value = serde_json::from_str(&replaced).unwrap();
                assert_eq!(frame["session_id"], ID);
                assert!(frame.get(OFFSET_KEY).is_none());
                frames.push(frame);
            }
            assert_eq!(frames[0]["type"], "system");
            assert_eq!(frames[0]["subtype"], "init");
            let result = frames.last().unwrap();
            assert_eq!(result["type"], "result");
            assert_eq!(result["subtype"], "success");
            assert_eq!(result["is_error"], false);
        }
    }
}
