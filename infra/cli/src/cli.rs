//! The command line: global flags and the commands, each command's arguments in its module.

use clap::{Parser, Subcommand};

use crate::output::Output;
use crate::{completions, epic, logs, run, runs, sessions};

const AFTER_HELP: &str = "\
Output:
  --output text (the default) is for people. --output json (-o json) is for programs: stdout
  carries JSON only, one object per line: the API's answer as-is, or for the streaming commands
  (submit --follow, resume --follow, tail, logs) one frame per line, and for runs --watch one page
  per change. A failure is one line {\"error\": {\"code\", \"message\"}} on stdout as well (API
  errors carry the API's code and an http_status), and the exit status is 2. Messages for people
  (reconnects, hints, the progress line) go to stderr.

Exit status:
  0 done; 1 a followed run (or epic) ended but did not complete; 2 an error.";

#[derive(Parser)]
#[command(
    name = "claude-runner",
    version,
    about = "Run Claude Code workflows on claude-runner and follow them live",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// HTTP API base URL.
    #[arg(long, global = true, env = "CLAUDE_RUNNER_URL")]
    pub url: Option<String>,
    /// WebSocket URL.
    #[arg(long, global = true, env = "CLAUDE_RUNNER_WS_URL")]
    pub ws_url: Option<String>,
    #[arg(long, global = true, env = "CLAUDE_RUNNER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// `text` for people; `json` for programs: JSON only on stdout, errors included (see below).
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Queue a run; prints its id (and follows it with --follow).
    Submit(run::SubmitArgs),
    /// A run's status.
    Status(run::RunIdArgs),
    /// Your runs, newest first (--watch: keep the table up to date).
    #[command(visible_alias = "list")]
    Runs(runs::RunsArgs),
    /// Follow a run's frames live (replaying what came before); exits 0 only if it completed.
    Tail(run::TailArgs),
    /// A finished run's complete log (json: the stored frames, one per line).
    Logs(logs::LogsArgs),
    /// Cancel a run.
    Cancel(run::RunIdArgs),
    /// Your sessions, newest first.
    Sessions(sessions::SessionsArgs),
    /// Continue a session's conversation with a new message (same workflow, repository and branch).
    Resume(run::ResumeArgs),
    /// Epics: one goal carried through several workflow runs on one branch, with approvals, a
    /// budget, a fix loop and rollback points (docs/epics.md).
    Epic(epic::EpicArgs),
    /// Serve the API as MCP tools on stdin/stdout (run_workflow, get_workflow_status, …), for an
    /// MCP client such as an orchestrating agent.
    Mcp,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions(completions::CompletionsArgs),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn list_is_runs_and_output_is_global() {
        let cli = Cli::try_parse_from(["claude-runner", "list", "-o", "json"]).expect("parses");
        assert!(matches!(cli.command, Command::Runs(_)));
        assert_eq!(cli.output, Output::Json);
        let cli = Cli::try_parse_from(["claude-runner", "--output", "json", "status", "r1"]).expect("parses");
        assert_eq!(cli.output, Output::Json);
        assert!(Cli::try_parse_from(["claude-runner", "runs", "--interval", "5"]).is_err(), "--interval needs --watch");
        assert!(Cli::try_parse_from(["claude-runner", "runs", "--watch", "--interval", "0"]).is_err());
    }
}
