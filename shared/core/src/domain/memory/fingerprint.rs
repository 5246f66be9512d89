//! Failure fingerprints: the same failure, seen again, keyed the same.
//!
//! [`normalise_error_text`] removes what changes from one occurrence of a failure to the next
//! (where the checkout was, line numbers, commit ids, ids, clocks, durations, addresses, counts)
//! and keeps what tells failures apart (error codes, messages, test names, file names).
//! [`failure_fingerprint`] hashes the normalised parts.
//!
//! Two decisions worth knowing:
//! - A path keeps its file name and loses its directories: `src/a.rs` and `crates/x/src/a.rs`
//!   are the same file to a fingerprint, `src/a.rs` and `src/b.rs` are not, and a path that
//!   ends in a directory (a temporary directory, say) is `<path>` whatever it is.
//! - A number right after `signal`, `code`, `status`, `errno`, `error`, `exit` or `http` is kept
//!   when it has at most three digits: exit code 137 (killed) is not exit code 1, SIGKILL is not
//!   SIGSEGV, `os error 28` is not `os error 111`.

use sha2::{Digest, Sha256};

use super::{MAX_MEMORY_TEXT_BYTES, MemoryKind, NewMemory};
use crate::domain::truncate_bytes;
use crate::domain::{Run, RunStatus};

/// How much of the normalised error text a fingerprint hashes, in characters.
pub const FINGERPRINT_ERROR_CHARS: usize = 500;
/// How much of a run's error message a failure memory's text quotes, in characters.
pub const FAILURE_MESSAGE_CHARS: usize = 500;

/// Words after which a short number is an identity (a signal, an exit code), not a count.
const KEEP_NUMBER_AFTER: [&str; 7] = ["signal", "code", "status", "errno", "error", "exit", "http"];
/// Duration units written right after a number (`300ms`, `12.5s`, `1m30s`).
const TIGHT_UNITS: &[&str] = &["ns", "us", "µs", "ms", "s", "sec", "secs", "m", "min", "mins", "h", "hr", "hrs"];
/// Duration units written as a word after a number (`30 seconds`).
const SPACED_UNITS: &[&str] = &[
    "ms",
    "millisecond",
    "milliseconds",
    "sec",
    "secs",
    "second",
    "seconds",
    "min",
    "mins",
    "minute",
    "minutes",
    "hour",
    "hours",
];

/// Error text with what varies between occurrences of the same failure replaced by placeholders.
///
/// Lower-cased; URLs keep their scheme and host (`https://github.com/<path>`); file paths keep
/// only their file name (`<path>/main.rs`, or `<path>` when the last part is no file name);
/// UUIDs become `<uuid>`, hex hashes and commit ids of 7 to 64 digits `<hash>`, dates and times
/// `<time>`, durations (`12.5s`, `300ms`, `30 seconds`) `<duration>`, IPv4 addresses,
/// `localhost` and `[ipv6]` with their ports `<addr>`, and other numbers `<n>` (`:12:5` is
/// `:<n>:<n>`); numbers inside words (`E0308`, `test_2`) stay. Whitespace is collapsed.
pub fn normalise_error_text(text: &str) -> String {
    let lower: Vec<char> = text.to_lowercase().chars().collect();
    let mut out = String::with_capacity(text.len());
    Scanner { s: &lower, paths: true }.run(&mut out);
    out
}

/// The fingerprint of a failure: hex SHA-256 of its code, the tool and command that failed (if
/// known), the files involved and the error text, all normalised.
///
/// The files are normalised, sorted and deduplicated, so their order does not matter; only the
/// first [`FINGERPRINT_ERROR_CHARS`] characters of the normalised error text count.
pub fn failure_fingerprint(
    code: &str,
    tool: Option<&str>,
    command: Option<&str>,
    files: &[String],
    error_text: &str,
) -> String {
    let mut files: Vec<String> = files.iter().map(|file| normalise_error_text(file)).collect();
    files.sort();
    files.dedup();
    let error: String = normalise_error_text(error_text).chars().take(FINGERPRINT_ERROR_CHARS).collect();
    let canonical = [
        code.trim().to_owned(),
        tool.unwrap_or_default().trim().to_owned(),
        command.map(normalise_error_text).unwrap_or_default(),
        files.join("\t"),
        error,
    ]
    .join("\n");
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// The failure memory a run leaves, if it failed or timed out with an error.
///
/// Its text is `<workflow> failed with <code>: <message>` (and the failing tool call, when the
/// error names one), the message cut to [`FAILURE_MESSAGE_CHARS`] characters; its fields are the
/// code, the workflow, the message and the tool call; the tool, its command and its files are
/// part of the fingerprint.
pub fn failure_from_run(run: &Run) -> Option<NewMemory> {
    if !matches!(run.status, RunStatus::Failed | RunStatus::TimedOut) {
        return None;
    }
    let error = run.error.as_ref()?;
    let message: String = error.message.chars().take(FAILURE_MESSAGE_CHARS).collect();
    let tool = error.tool.as_ref();
    let mut text = format!("{} failed with {}: {message}", run.workflow, error.code);
    if let Some(call) = tool {
        let what = call.command.as_deref().or(call.files.first().map(String::as_str)).unwrap_or_default();
        let what: String = what.chars().take(200).collect();
        text.push_str(&format!(" (in {} {what})", call.name));
    }
    let files = tool.map(|t| t.files.clone()).unwrap_or_default();
    Some(NewMemory {
        kind: MemoryKind::Failure,
        text: truncate_bytes(&text, MAX_MEMORY_TEXT_BYTES),
        fields: {
            let mut fields = serde_json::json!({
                "code": error.code,
                "workflow": run.workflow,
                "message": truncate_bytes(&error.message, MAX_MEMORY_TEXT_BYTES),
            });
            if let Some(call) = tool {
                fields["tool"] = serde_json::to_value(call).unwrap_or_default();
            }
            fields
        },
        fingerprint: Some(failure_fingerprint(
            &error.code,
            tool.map(|t| t.name.as_str()),
            tool.and_then(|t| t.command.as_deref()),
            &files,
            &error.message,
        )),
    })
}

/// A word character: letters, digits and `_`.
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// A character a file path is made of.
fn is_path_char(c: char) -> bool {
    is_word(c) || matches!(c, '.' | '-' | '/' | '\\' | '~' | '+' | '@' | '%')
}

/// One pass over lower-cased text, writing the normalised text.
struct Scanner<'a> {
    s: &'a [char],
    /// Whether paths are recognised (not inside a path's file name).
    paths: bool,
}

impl Scanner<'_> {
    fn at(&self, i: usize) -> Option<char> {
        self.s.get(i).copied()
    }

    fn run(&self, out: &mut String) {
        let mut i = 0;
        while i < self.s.len() {
            let c = self.s[i];
            if c.is_whitespace() {
                while self.at(i).is_some_and(char::is_whitespace) {
                    i += 1;
                }
                if !out.is_empty() && i < self.s.len() {
                    out.push(' ');
                }
                continue;
            }
            let prev = i.checked_sub(1).map(|p| self.s[p]);
            let path_start = !prev.is_some_and(is_path_char);
            let word_start = !prev.is_some_and(is_word);
            let scheme_start = !prev.is_some_and(|p| p.is_alphanumeric() || matches!(p, '+' | '.' | '-'));
            if scheme_start && let Some(end) = self.url(i, out) {
                i = end;
            } else if self.paths
                && path_start
                && let Some(end) = self.path(i, out)
            {
                i = end;
            } else if c == '['
                && let Some(end) = self.bracketed_address(i)
            {
                out.push_str("<addr>");
                i = end;
            } else if word_start && is_word(c) {
                i = self.word(i, out);
            } else {
                out.push(c);
                i += 1;
            }
        }
    }

    /// The end of the run of word characters starting at `i`.
    fn word_end(&self, i: usize) -> usize {
        let mut end = i;
        while self.at(end).is_some_and(is_word) {
            end += 1;
        }
        end
    }

    /// `scheme://host/…`: writes the scheme and host (an address normalised) and `/<path>` for
    /// anything after it.
    fn url(&self, i: usize, out: &mut String) -> Option<usize> {
        let mut j = i;
        while self.at(j).is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-')) {
            j += 1;
        }
        if j == i || !self.s[i].is_ascii_alphabetic() || self.s.get(j..j + 3) != Some(&[':', '/', '/']) {
            return None;
        }
        let scheme: String = self.s[i..j].iter().collect();
        let host_start = j + 3;
        let mut end = host_start;
        let stop = |c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '`' | '<' | '>' | ')' | ']' | '(');
        let mut host_end = None;
        while let Some(c) = self.at(end) {
            if stop(c) {
                break;
            }
            if host_end.is_none() && matches!(c, '/' | '?' | '#') {
                host_end = Some(end);
            }
            end += 1;
        }
        // A sentence's full stop or comma after a URL is not part of it.
        while end > host_start && matches!(self.s[end - 1], '.' | ',' | ';' | ':') {
            end -= 1;
        }
        let host_end = host_end.unwrap_or(end).min(end);
        out.push_str(&scheme);
        out.push_str("://");
        let host = Scanner { s: &self.s[host_start..host_end], paths: false };
        host.run(out);
        let rest = &self.s[host_end..end];
        if !rest.is_empty() && rest != ['/'] {
            out.push_str("/<path>");
        }
        Some(end)
    }

    /// A file path (a run of path characters with a `/` or `\` and a letter in it): writes
    /// `<path>` and, if the last part is a file name, `/` and that name.
    fn path(&self, i: usize, out: &mut String) -> Option<usize> {
        let mut end = i;
        while self.at(end).is_some_and(is_path_char) {
            end += 1;
        }
        // A full stop or dash ending the run ends the sentence, not the path.
        while end > i && matches!(self.s[end - 1], '.' | '-') {
            end -= 1;
        }
        let run = &self.s[i..end];
        let separated = run.iter().any(|&c| c == '/' || c == '\\');
        if !separated || !run.iter().any(|c| c.is_alphabetic()) {
            return None;
        }
        out.push_str("<path>");
        let name_start = run.iter().rposition(|&c| c == '/' || c == '\\').map_or(0, |p| p + 1);
        let name = &run[name_start..];
        if is_file_name(name) {
            out.push('/');
            Scanner { s: name, paths: false }.run(out);
        }
        Some(end)
    }

    /// `[::1]`, `[2001:db8::1]:8080` or all eight groups: the end, if `i` starts a bracketed IPv6
    /// address (`[12:00:01]` is a time).
    fn bracketed_address(&self, i: usize) -> Option<usize> {
        let close =
            (i + 1..self.s.len()).find(|&j| !(self.s[j].is_ascii_hexdigit() || matches!(self.s[j], ':' | '.')))?;
        let inside = &self.s[i + 1..close];
        let colons = inside.iter().filter(|&&c| c == ':').count();
        let abbreviated = inside.windows(2).any(|pair| pair == [':', ':']);
        if self.s[close] != ']' || !(abbreviated || colons == 7) {
            return None;
        }
        Some(self.port(close + 1))
    }

    /// Past `:<digits>` at `i`, if there is one.
    fn port(&self, i: usize) -> usize {
        if self.at(i) == Some(':') && self.at(i + 1).is_some_and(|c| c.is_ascii_digit()) {
            let mut end = i + 1;
            while self.at(end).is_some_and(|c| c.is_ascii_digit()) {
                end += 1;
            }
            if !self.at(end).is_some_and(is_word) {
                return end;
            }
        }
        i
    }

    /// A word starting at `i`: a UUID, a date or time, a hash, `localhost:port`, a number, a
    /// duration or an address, or else copied as it is. Returns where it ends.
    fn word(&self, i: usize, out: &mut String) -> usize {
        let end = self.word_end(i);
        let word = &self.s[i..end];
        if let Some(end) = self.uuid(i) {
            out.push_str("<uuid>");
            return end;
        }
        if let Some(end) = self.date_time(i) {
            out.push_str("<time>");
            return end;
        }
        if is_hash(word) {
            out.push_str("<hash>");
            return end;
        }
        if word == ['l', 'o', 'c', 'a', 'l', 'h', 'o', 's', 't'] {
            let past = self.port(end);
            if past > end {
                out.push_str("<addr>");
                return past;
            }
        }
        if word[0].is_ascii_digit() {
            return self.number(i, out);
        }
        out.extend(word);
        end
    }

    /// The end of `n` ASCII digits at `i`, if they are there.
    fn digits(&self, i: usize, n: usize) -> Option<usize> {
        (i..i + n).all(|j| self.at(j).is_some_and(|c| c.is_ascii_digit())).then_some(i + n)
    }

    /// The end of 8-4-4-4-12 hex digits at `i`, if they are there.
    fn uuid(&self, i: usize) -> Option<usize> {
        let mut j = i;
        for (index, len) in [8, 4, 4, 4, 12].into_iter().enumerate() {
            if index > 0 {
                (self.at(j) == Some('-')).then_some(())?;
                j += 1;
            }
            (j..j + len).all(|k| self.at(k).is_some_and(|c| c.is_ascii_hexdigit())).then_some(())?;
            j += len;
        }
        (!self.at(j).is_some_and(is_word)).then_some(j)
    }

    /// The end of a date (`2024-05-01`, optionally with a time after `t` or a space) or a time
    /// (`12:34:56`, optionally with fractions and a zone) at `i`, if one is there.
    fn date_time(&self, i: usize) -> Option<usize> {
        if let Some(date_end) = self.date(i) {
            let time = matches!(self.at(date_end), Some('t' | ' ')).then(|| self.time(date_end + 1)).flatten();
            return Some(time.unwrap_or(date_end));
        }
        if i > 0 && matches!(self.s[i - 1], ':' | '.') {
            return None;
        }
        self.time(i)
    }

    fn date(&self, i: usize) -> Option<usize> {
        let j = self.digits(i, 4)?;
        (self.at(j) == Some('-')).then_some(())?;
        let j = self.digits(j + 1, 2)?;
        (self.at(j) == Some('-')).then_some(())?;
        let j = self.digits(j + 1, 2)?;
        (!self.at(j).is_some_and(|c| c.is_ascii_digit())).then_some(j)
    }

    /// `h:mm:ss` or `hh:mm:ss`, with optional `.fraction` and zone (`z`, `+02:00`, `-0500`).
    fn time(&self, i: usize) -> Option<usize> {
        let j = self.digits(i, 2).or_else(|| self.digits(i, 1))?;
        (self.at(j) == Some(':')).then_some(())?;
        let j = self.digits(j + 1, 2)?;
        (self.at(j) == Some(':')).then_some(())?;
        let mut j = self.digits(j + 1, 2)?;
        if matches!(self.at(j), Some('.' | ',')) && self.at(j + 1).is_some_and(|c| c.is_ascii_digit()) {
            j += 1;
            while self.at(j).is_some_and(|c| c.is_ascii_digit()) {
                j += 1;
            }
        }
        if self.at(j) == Some('z') && !self.at(j + 1).is_some_and(is_word) {
            j += 1;
        } else if matches!(self.at(j), Some('+' | '-'))
            && let Some(hours) = self.digits(j + 1, 2)
        {
            j = hours;
            if self.at(j) == Some(':') && self.digits(j + 1, 2).is_some() {
                j += 3;
            } else if let Some(minutes) = self.digits(j, 2) {
                j = minutes;
            }
        }
        (!self.at(j).is_some_and(|c| is_word(c) || c == ':')).then_some(j)
    }

    /// `\d+(\.\d+)*` at `i`: an IPv4 address (with its port), a duration, a kept identity number or
    /// `<n>`; a number running into letters that are no unit (`64bit`) is copied as it is.
    fn number(&self, i: usize, out: &mut String) -> usize {
        let (end, parts) = self.dotted_number(i);
        if parts.len() == 4 && parts.iter().all(|part| part.parse::<u32>().is_ok_and(|n| n <= 255)) {
            out.push_str("<addr>");
            return self.port(end);
        }
        if let Some(end) = self.tight_duration(end) {
            out.push_str("<duration>");
            return end;
        }
        if self.at(end).is_some_and(is_word) {
            let word_end = self.word_end(i);
            out.extend(&self.s[i..word_end]);
            return word_end;
        }
        if let Some(end) = self.spaced_duration(end) {
            out.push_str("<duration>");
            return end;
        }
        if parts.len() == 1 && parts[0].len() <= 3 && follows_identity_word(out) {
            out.push_str(&parts[0]);
        } else {
            out.push_str("<n>");
        }
        end
    }

    /// Digits, then any `.digits`: where they end and the parts.
    fn dotted_number(&self, i: usize) -> (usize, Vec<String>) {
        let mut parts = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while self.at(j).is_some_and(|c| c.is_ascii_digit()) {
                j += 1;
            }
            parts.push(self.s[start..j].iter().collect());
            if self.at(j) == Some('.') && self.at(j + 1).is_some_and(|c| c.is_ascii_digit()) {
                j += 1;
            } else {
                return (j, parts);
            }
        }
    }

    /// After a number ending at `i`: the end of a unit written against it and of any further
    /// number-unit pairs (`1m30s`), if a unit is there.
    fn tight_duration(&self, mut i: usize) -> Option<usize> {
        loop {
            let unit_end = self.word_end_letters(i);
            let unit: String = self.s[i..unit_end].iter().collect();
            if !TIGHT_UNITS.contains(&unit.as_str()) {
                return None;
            }
            if !self.at(unit_end).is_some_and(|c| c.is_ascii_digit()) {
                return (!self.at(unit_end).is_some_and(is_word)).then_some(unit_end);
            }
            i = self.dotted_number(unit_end).0;
        }
    }

    /// The end of the letters starting at `i`.
    fn word_end_letters(&self, i: usize) -> usize {
        let mut end = i;
        while self.at(end).is_some_and(char::is_alphabetic) {
            end += 1;
        }
        end
    }

    /// After a number ending at `i`: the end of ` seconds` and the like, if it is there.
    fn spaced_duration(&self, i: usize) -> Option<usize> {
        (self.at(i) == Some(' ')).then_some(())?;
        let end = self.word_end(i + 1);
        let unit: String = self.s[i + 1..end].iter().collect();
        SPACED_UNITS.contains(&unit.as_str()).then_some(end)
    }
}

/// Whether the output so far ends with a word after which a short number is kept
/// (`exit code 137`, `signal: 9`, `(exit status: 101)`).
fn follows_identity_word(out: &str) -> bool {
    let trimmed = out.trim_end_matches(|c: char| c.is_whitespace() || matches!(c, ':' | '=' | '('));
    let start = trimmed.rfind(|c: char| !c.is_alphabetic()).map_or(0, |p| p + 1);
    KEEP_NUMBER_AFTER.contains(&&trimmed[start..])
}

/// Whether a path's last part names a file: a stem with a letter, a dot, and a short
/// alphanumeric extension (`main.rs`, `app.test.js`; not `.tmpabc123`, not `v1.2`).
fn is_file_name(name: &[char]) -> bool {
    let Some(dot) = name.iter().rposition(|&c| c == '.') else { return false };
    let (stem, extension) = (&name[..dot], &name[dot + 1..]);
    !stem.is_empty()
        && stem[0] != '.'
        && stem.iter().any(|c| c.is_alphabetic())
        && (1..=8).contains(&extension.len())
        && extension.iter().all(|c| c.is_ascii_alphanumeric())
        && extension.iter().any(|c| c.is_ascii_alphabetic())
}

/// A hex hash or commit id: `0x` and hex digits, or 7 to 64 hex digits with a digit and a letter
/// among them (so `deadbeef`-like words and plain numbers are not hashes).
fn is_hash(word: &[char]) -> bool {
    if word.len() > 2 && word[0] == '0' && word[1] == 'x' && word[2..].iter().all(char::is_ascii_hexdigit) {
        return true;
    }
    (7..=64).contains(&word.len())
        && word.iter().all(char::is_ascii_hexdigit)
        && word.iter().any(char::is_ascii_digit)
        && word.iter().any(char::is_ascii_alphabetic)
}
