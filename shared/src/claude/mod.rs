//! What claude-runner knows about the Claude Code CLI (ARCHITECTURE.md §5): the argument vector
//! it takes and the frames it prints. Pure; the process itself is run by
//! `crate::adapters::ClaudeProcess`.

mod command;
mod protocol;

pub use command::{CliInvocation, SessionMode, encoded_project_dir};
pub use protocol::{CliSummary, ResultFrame};
