//! `--output text|json`: what goes to stdout.
//!
//! In json mode stdout carries JSON only: one object per line (the API's answer as-is, or one
//! frame per line for the streaming commands), and a failure is one `{"error": {"code",
//! "message"}}` line on stdout too, so a script reads one stream. Notes for people (reconnects,
//! `--cursor` hints, progress) go to stderr in either mode.

use std::io::Write as _;

use serde_json::Value;

use crate::error::Result;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// For people: tables, rendered frames.
    #[default]
    Text,
    /// For programs: JSON only on stdout, one object per line.
    Json,
}

impl Output {
    pub fn is_json(self) -> bool {
        self == Self::Json
    }
}

/// One JSON value on one line of stdout.
pub fn json_line(value: &Value) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, value)?;
    stdout.write_all(b"\n")?;
    stdout.flush()?;
    Ok(())
}

/// Whether the raw arguments ask for json output, for reporting an error clap found before
/// there are parsed arguments to ask (`-o json`, `-ojson`, `-o=json`, `--output json`,
/// `--output=json`; nothing after `--`).
pub fn requested_json<I: IntoIterator<Item = std::ffi::OsString>>(args: I) -> bool {
    let args: Vec<String> = args.into_iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut json = false;
    let mut iter = args.iter().skip(1).peekable();
    while let Some(arg) = iter.next() {
        let value = match arg.as_str() {
            "--" => break,
            "-o" | "--output" => iter.next().map(String::as_str),
            other => other
                .strip_prefix("--output=")
                .or_else(|| other.strip_prefix("-o="))
                .or_else(|| other.strip_prefix("-o").filter(|v| !v.is_empty())),
        };
        if let Some(value) = value {
            json = value == "json";
        }
    }
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<std::ffi::OsString> {
        std::iter::once("claude-runner").chain(list.iter().copied()).map(Into::into).collect()
    }

    #[test]
    fn json_is_found_in_every_spelling() {
        for spelling in [&["-o", "json"][..], &["-ojson"], &["-o=json"], &["--output", "json"], &["--output=json"]] {
            let mut list = vec!["status"];
            list.extend_from_slice(spelling);
            assert!(requested_json(args(&list)), "{list:?}");
        }
        assert!(!requested_json(args(&["status", "x"])));
        assert!(!requested_json(args(&["-o", "json", "-o", "text", "status"])), "the last one wins");
        assert!(!requested_json(args(&["submit", "implement", "--", "-o", "json"])), "after -- it is a value");
    }
}
