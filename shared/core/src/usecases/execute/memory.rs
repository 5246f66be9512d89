//! What a run takes from the repository's memory, and what it leaves there: the accepted
//! entries most relevant to its message go into its system prompt; a failure is recorded (the
//! same failure again counts once more); a completed run's `memory` block is stored as proposed.
//! Memory never fails a run: a store that cannot answer is logged and the run goes on.

use uuid::Uuid;

use super::RunExecutor;
use crate::domain::memory::{MemoryStatus, failure_from_run, parse_memory_block, prompt_section};
use crate::domain::{Run, RunStatus};
use crate::ports::MemorySource;

/// How much memory a run gets, and which repositories take proposals as accepted.
#[derive(Clone, Debug)]
pub struct MemorySettings {
    /// The most entries a run's prompt gets.
    pub hints: usize,
    /// The most bytes they take in the prompt.
    pub prompt_bytes: usize,
    /// Repositories whose proposed entries are accepted at once (`*` at the end matches a prefix).
    pub auto_accept: Vec<String>,
}

impl Default for MemorySettings {
    fn default() -> Self {
        Self {
            hints: crate::domain::memory::DEFAULT_MEMORY_HINTS,
            prompt_bytes: crate::domain::memory::DEFAULT_MEMORY_PROMPT_BYTES,
            auto_accept: Vec::new(),
        }
    }
}

impl MemorySettings {
    fn accepts(&self, repository_url: &str) -> bool {
        self.auto_accept.iter().any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => repository_url.starts_with(prefix),
            None => pattern == repository_url,
        })
    }
}

fn source(run: &Run) -> MemorySource {
    MemorySource {
        owner: run.owner.clone(),
        repository_url: run.repository_url.clone(),
        workflow: Some(run.workflow.clone()),
        epic_id: run.epic.as_ref().map(|e| e.epic_id.as_uuid()),
        run_id: Some(run.run_id.as_uuid()),
        session_id: run.session_id,
    }
}

impl RunExecutor {
    /// The prompt section of the accepted entries most relevant to the run, and their ids.
    pub(super) async fn recall(&self, run: &Run) -> (String, Vec<Uuid>) {
        let Some(memory) = &self.ports.memory else { return (String::new(), Vec::new()) };
        let settings = &self.settings.memory;
        let query = format!("{} {}", run.workflow, run.message);
        let hints = match memory.relevant(&run.owner, &run.repository_url, &query, settings.hints).await {
            Ok(hints) => hints,
            Err(err) => {
                tracing::warn!(run_id = %run.run_id, error = %err, "memory lookup failed; the run goes on without it");
                return (String::new(), Vec::new());
            }
        };
        let section = prompt_section(&hints, settings.prompt_bytes);
        // Only what fitted in the prompt counts as given (the section puts each text on one line).
        let given = hints
            .iter()
            .filter(|h| section.contains(&h.text.split_whitespace().collect::<Vec<_>>().join(" ")))
            .map(|h| h.id)
            .collect();
        (section, given)
    }

    /// Stores the entries a completed run's result proposes in its `memory` block.
    pub(super) async fn remember_block(&self, run: &Run, result: &str) -> Vec<Uuid> {
        let Some(memory) = &self.ports.memory else { return Vec::new() };
        let entries = match parse_memory_block(result) {
            Ok(entries) => entries,
            Err(err) => {
                tracing::warn!(run_id = %run.run_id, error = %err, "the run's memory block was ignored");
                return Vec::new();
            }
        };
        let status = if self.settings.memory.accepts(&run.repository_url) {
            MemoryStatus::Accepted
        } else {
            MemoryStatus::Proposed
        };
        let mut stored = Vec::new();
        for entry in &entries {
            match memory.record(&source(run), entry, status).await {
                Ok(id) => stored.push(id),
                Err(err) => tracing::warn!(run_id = %run.run_id, error = %err, "a memory entry was not stored"),
            }
        }
        stored
    }

    /// Records the failure of a run that failed or timed out: a fact, so accepted at once.
    pub(super) async fn remember_failure(&self, run: &Run) -> Option<Uuid> {
        let memory = self.ports.memory.as_ref()?;
        if !matches!(run.status, RunStatus::Failed | RunStatus::TimedOut) {
            return None;
        }
        let failure = failure_from_run(run)?;
        match memory.record(&source(run), &failure, MemoryStatus::Accepted).await {
            Ok(id) => Some(id),
            Err(err) => {
                tracing::warn!(run_id = %run.run_id, error = %err, "the run's failure was not remembered");
                None
            }
        }
    }
}
