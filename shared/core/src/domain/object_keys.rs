//! Where things live in the artifact store. The one place that knows the key layout:
//!
//! ```text
//! runs/<run_id>/output.ndjson          the run's complete frame log
//! runs/<run_id>/workspace.tar.zst      the checkout as the run left it
//! sessions/<lineage>/transcript.jsonl  the latest transcript of a session
//! sessions/<lineage>/files/…           the CLI's per-session folder
//! cache/repos/<hash>.bundle            a git bundle that seeds a repository mirror
//! ```

use uuid::Uuid;

use super::RunId;

/// The prefix of every run's objects.
pub const RUNS_PREFIX: &str = "runs/";

/// The run's frame log.
pub fn run_log(run_id: RunId) -> String {
    format!("{RUNS_PREFIX}{run_id}/output.ndjson")
}

/// The run's workspace archive.
pub fn run_archive(run_id: RunId) -> String {
    format!("{RUNS_PREFIX}{run_id}/workspace.tar.zst")
}

/// The run a key under `runs/` belongs to, as written in the key.
pub fn run_of(key: &str) -> Option<&str> {
    key.strip_prefix(RUNS_PREFIX)?.split('/').next().filter(|id| !id.is_empty())
}

/// The prefix of a session's objects (what `Session::transcript_prefix` records).
pub fn session_prefix(lineage: Uuid) -> String {
    format!("sessions/{lineage}/")
}

/// The transcript under a session prefix.
pub fn transcript(session_prefix: &str) -> String {
    format!("{session_prefix}transcript.jsonl")
}

/// The folder of the CLI's per-session files under a session prefix.
pub fn transcript_files(session_prefix: &str) -> String {
    format!("{session_prefix}files/")
}

/// The bundle that seeds the mirror of the repository whose URL hashes to `hash`.
pub fn repository_bundle(hash: &str) -> String {
    format!("cache/repos/{hash}.bundle")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_keys_name_their_run() {
        let run_id = RunId::new();
        for key in [run_log(run_id), run_archive(run_id)] {
            assert_eq!(run_of(&key), Some(run_id.to_string().as_str()));
        }
        assert_eq!(run_of("sessions/x/transcript.jsonl"), None);
        assert_eq!(run_of("runs/"), None);
    }

    #[test]
    fn session_keys_sit_under_the_session_prefix() {
        let prefix = session_prefix(Uuid::nil());
        assert!(transcript(&prefix).starts_with(&prefix));
        assert!(transcript_files(&prefix).starts_with(&prefix));
    }
}
