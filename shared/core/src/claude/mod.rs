//! What claude-runner knows about the Claude Code CLI: the argument vector
//! it takes and the frames it prints. Pure; the process itself is run by
//! `runner_adapters::ClaudeCli`.

mod command;
mod protocol;

pub use command::{CliInvocation, SessionMode, encoded_project_dir};
pub use protocol::{CliSummary, ResultFrame};
