//! `completions <shell>`: the shell completion script, on stdout.
//!
//! ```sh
//! claude-runner completions bash > ~/.local/share/bash-completion/completions/claude-runner
//! claude-runner completions zsh > "${fpath[1]}/_claude-runner"
//! claude-runner completions fish > ~/.config/fish/completions/claude-runner.fish
//! ```

use std::io::Write as _;

use clap::{Args, CommandFactory as _};
use clap_complete::Shell;
use serde_json::json;

use crate::cli::Cli;
use crate::error::Result;
use crate::output::{Output, json_line};

#[derive(Args)]
pub struct CompletionsArgs {
    shell: Shell,
}

/// Writes the script (json mode: `{"shell", "script"}`).
pub fn run(output: Output, args: CompletionsArgs) -> Result<()> {
    let script = script(args.shell);
    if output.is_json() {
        return json_line(&json!({"shell": args.shell.to_string(), "script": String::from_utf8_lossy(&script)}));
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&script)?;
    stdout.flush()?;
    Ok(())
}

fn script(shell: Shell) -> Vec<u8> {
    let mut command = Cli::command();
    let name = command.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_naming_the_commands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish, Shell::Elvish, Shell::PowerShell] {
            let script = String::from_utf8(script(shell)).expect("utf-8");
            for command in ["submit", "runs", "logs", "tail", "completions"] {
                assert!(script.contains(command), "{shell}: no {command}");
            }
        }
    }
}
