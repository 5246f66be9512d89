//! Sessions: a conversation that later runs continue (`--resume`), with its totals and expiry.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Owner, RunId};

/// How long an unused session is kept, unless configured otherwise.
pub const DEFAULT_SESSION_TTL_DAYS: i64 = 30;

/// A conversation that later runs can continue, with its owner, scope, running totals and expiry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The lineage id: what callers pass as `session_id`, and the FIFO message group.
    pub session_id: Uuid,
    /// Who the session belongs to; to anyone else it does not exist.
    pub owner: Owner,
    /// The workflow every run of the session must use.
    pub workflow: String,
    /// The repository every run of the session must work on.
    pub repository_url: String,
    /// The branch the session was reserved or first run on.
    pub branch: String,
    /// Runs of this session, oldest first.
    #[serde(default)]
    pub run_ids: Vec<RunId>,
    /// The id the CLI knows the conversation by now (it may hand back a new one on resume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cli_session_id: Option<Uuid>,
    /// Object key prefix of the latest transcript (`…/transcript.jsonl`, `…/files/…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript_prefix: Option<String>,
    /// Agent turns, summed over the session's runs.
    #[serde(default)]
    pub total_turns: u64,
    /// Cost in US dollars as the CLI reported it, summed over the session's runs.
    #[serde(default)]
    pub total_cost_usd: f64,
    /// Input tokens, summed over the session's runs.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens, summed over the session's runs.
    #[serde(default)]
    pub output_tokens: u64,
    /// When the session was reserved or its first run created it.
    pub created_at: DateTime<Utc>,
    /// When a run last used the session (its creation time until one has).
    pub last_used_at: DateTime<Utc>,
    /// After this the session counts as unknown; every run pushes it out by the TTL.
    pub expires_at: DateTime<Utc>,
    /// Bumped by every change; the optimistic-concurrency token of conditional writes.
    pub version: u64,
    /// Set on the record of an id the CLI handed back on resume: the lineage it belongs to, so
    /// later runs may name either id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias_of: Option<Uuid>,
}

/// Why a run may not use a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionRefusal {
    /// Unknown, another owner's, or expired: all look the same to the caller.
    Unknown(&'static str),
    /// Exists, but for another workflow or repository.
    Conflict(String),
}

/// What one run added to a session.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionUse {
    /// The run that used the session; listed in `run_ids` once however often it is recorded.
    pub run_id: Option<RunId>,
    /// The id the CLI reported for the conversation, when it reported one.
    pub cli_session_id: Option<Uuid>,
    /// Where the run's transcript was kept, when it was saved.
    pub transcript_prefix: Option<String>,
    /// Agent turns the run took.
    pub turns: u64,
    /// What the run cost, in US dollars.
    pub cost_usd: f64,
    /// Input tokens the run used, from the CLI's `usage`.
    pub input_tokens: u64,
    /// Output tokens the run used, from the CLI's `usage`.
    pub output_tokens: u64,
}

impl Session {
    /// A new, empty session of `owner`, tied to one workflow and repository, expiring `ttl` from `now`.
    pub fn reserve(
        session_id: Uuid,
        owner: Owner,
        workflow: &str,
        repository_url: &str,
        branch: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Self {
        Self {
            session_id,
            owner,
            workflow: workflow.to_owned(),
            repository_url: repository_url.to_owned(),
            branch: branch.to_owned(),
            run_ids: Vec::new(),
            cli_session_id: None,
            transcript_prefix: None,
            total_turns: 0,
            total_cost_usd: 0.0,
            input_tokens: 0,
            output_tokens: 0,
            created_at: now,
            last_used_at: now,
            expires_at: now + ttl,
            version: 1,
            alias_of: None,
        }
    }

    /// A record under `alias` that points at this session.
    pub fn alias(&self, alias: Uuid) -> Self {
        Self { session_id: alias, alias_of: Some(self.session_id), run_ids: Vec::new(), version: 1, ..self.clone() }
    }

    /// Whether the session has lapsed at `now`; an expired session is refused like an unknown one.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at <= now
    }

    /// Whether a run of `owner` on `workflow` and `repository_url` may continue this session.
    pub fn admits(
        &self,
        owner: &Owner,
        workflow: &str,
        repository_url: &str,
        now: DateTime<Utc>,
    ) -> Result<(), SessionRefusal> {
        if &self.owner != owner {
            return Err(SessionRefusal::Unknown("not found"));
        }
        if self.is_expired(now) {
            return Err(SessionRefusal::Unknown("expired"));
        }
        if self.workflow != workflow {
            return Err(SessionRefusal::Conflict(format!("the session belongs to workflow {}", self.workflow)));
        }
        if self.repository_url != repository_url {
            return Err(SessionRefusal::Conflict(format!("the session belongs to repository {}", self.repository_url)));
        }
        Ok(())
    }

    /// Whether a run continues the conversation (`--resume`) rather than starting it.
    pub fn has_transcript(&self) -> bool {
        self.transcript_prefix.is_some()
    }

    /// Folds a finished run in, and extends the expiry from now. A run already folded in (a
    /// retried write) changes nothing: false.
    pub fn record(&mut self, used: &SessionUse, now: DateTime<Utc>, ttl: Duration) -> bool {
        if let Some(run_id) = used.run_id {
            if self.run_ids.contains(&run_id) {
                return false;
            }
            self.run_ids.push(run_id);
        }
        if used.cli_session_id.is_some() {
            self.cli_session_id = used.cli_session_id;
        }
        if used.transcript_prefix.is_some() {
            self.transcript_prefix = used.transcript_prefix.clone();
        }
        self.total_turns += used.turns;
        self.total_cost_usd += used.cost_usd;
        self.input_tokens += used.input_tokens;
        self.output_tokens += used.output_tokens;
        self.last_used_at = now;
        self.expires_at = now + ttl;
        self.version += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session::reserve(
            Uuid::now_v7(),
            Owner::new("a"),
            "implement",
            "https://h/r.git",
            "main",
            Utc::now(),
            Duration::days(30),
        )
    }

    #[test]
    fn a_reserved_session_has_no_transcript_and_admits_its_owner() {
        let s = session();
        assert!(!s.has_transcript());
        assert_eq!(s.admits(&Owner::new("a"), "implement", "https://h/r.git", Utc::now()), Ok(()));
    }

    #[test]
    fn strangers_expiry_and_mismatches_are_refused() {
        let s = session();
        let now = Utc::now();
        assert_eq!(
            s.admits(&Owner::new("b"), "implement", "https://h/r.git", now),
            Err(SessionRefusal::Unknown("not found"))
        );
        assert_eq!(
            s.admits(&Owner::new("a"), "implement", "https://h/r.git", now + Duration::days(31)),
            Err(SessionRefusal::Unknown("expired"))
        );
        assert!(matches!(
            s.admits(&Owner::new("a"), "review", "https://h/r.git", now),
            Err(SessionRefusal::Conflict(_))
        ));
        assert!(matches!(
            s.admits(&Owner::new("a"), "implement", "https://h/x.git", now),
            Err(SessionRefusal::Conflict(_))
        ));
    }

    #[test]
    fn recording_a_run_adds_totals_and_extends_the_expiry() {
        let mut s = session();
        let run = RunId::new();
        let cli = Uuid::now_v7();
        let used = SessionUse {
            run_id: Some(run),
            cli_session_id: Some(cli),
            transcript_prefix: Some("sessions/x/".into()),
            turns: 3,
            cost_usd: 0.5,
            input_tokens: 10,
            output_tokens: 20,
        };
        let later = Utc::now() + Duration::days(10);
        assert!(s.record(&used, later, Duration::days(30)));
        assert!(!s.record(&used, later + Duration::days(1), Duration::days(30)), "the same run again is a retry");
        assert_eq!(s.run_ids, vec![run], "a run is listed once");
        assert_eq!((s.total_turns, s.input_tokens, s.output_tokens), (3, 10, 20), "and counted once");
        assert!(s.has_transcript());
        assert_eq!(s.cli_session_id, Some(cli));
        assert_eq!(s.expires_at, later + Duration::days(30));
        assert_eq!(s.version, 2);
        let next = SessionUse { run_id: Some(RunId::new()), ..used };
        assert!(s.record(&next, later, Duration::days(30)));
        assert_eq!((s.run_ids.len(), s.total_turns, s.input_tokens), (2, 6, 20), "another run adds up");
    }
}
