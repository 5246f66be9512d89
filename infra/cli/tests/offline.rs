//! What `claude-runner` does without a stack: completion scripts, and errors in json mode.

use std::process::Output;

use serde_json::Value;

/// Runs the CLI with no endpoint anywhere: no flags, no environment, no `.local/endpoints.json`.
fn claude_runner(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_claude-runner"))
        .args(args)
        .current_dir(dir.path())
        .env_remove("CLAUDE_RUNNER_URL")
        .env_remove("CLAUDE_RUNNER_WS_URL")
        .env_remove("CLAUDE_RUNNER_API_KEY")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The only line of stdout, parsed.
fn one_json_line(output: &Output) -> Value {
    let text = stdout(output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stdout: {text}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn bash_completions_name_every_subcommand() {
    let output = claude_runner(&["completions", "bash"]);
    assert!(output.status.success(), "{output:?}");
    let script = stdout(&output);
    assert!(script.contains("complete -F _claude__runner"), "a bash completion function: {script}");
    for command in
        ["submit", "status", "runs", "list", "tail", "logs", "cancel", "sessions", "resume", "epic", "completions"]
    {
        assert!(script.contains(command), "no {command} in the script");
    }
    assert!(script.contains("--output"), "the global flags are completed too");
}

#[test]
fn every_shell_gets_a_script_and_json_mode_wraps_it() {
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let output = claude_runner(&["completions", shell]);
        assert!(output.status.success() && stdout(&output).contains("logs"), "{shell}: {output:?}");
    }
    let wrapped = one_json_line(&claude_runner(&["-o", "json", "completions", "fish"]));
    assert_eq!(wrapped["shell"], "fish");
    assert!(wrapped["script"].as_str().is_some_and(|s| s.contains("complete -c claude-runner")), "{wrapped}");
    let unknown = claude_runner(&["completions", "tcsh"]);
    assert_eq!(unknown.status.code(), Some(2), "{unknown:?}");
}

#[test]
fn errors_in_json_mode_are_one_json_object_on_stdout() {
    // No endpoint configured: the error is the client's own.
    let output = claude_runner(&["--output", "json", "status", "0192"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let error = one_json_line(&output);
    assert_eq!(error["error"]["code"], "no_endpoint", "{error}");
    assert!(error["error"]["message"].as_str().is_some_and(|m| m.contains("--url")), "{error}");
    assert!(output.stderr.is_empty(), "nothing on stderr: {}", String::from_utf8_lossy(&output.stderr));

    // A command line clap refuses.
    let output = claude_runner(&["-o", "json", "status"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let error = one_json_line(&output);
    assert_eq!(error["error"]["code"], "usage", "{error}");
    assert!(error["error"]["message"].as_str().is_some_and(|m| m.contains("RUN_ID")), "{error}");

    // The same in text mode: a message on stderr, nothing on stdout.
    let output = claude_runner(&["status", "0192"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no endpoint"), "{output:?}");
}

#[test]
fn help_names_the_new_commands_and_documents_json_errors() {
    let output = claude_runner(&["--help"]);
    assert!(output.status.success(), "{output:?}");
    let help = stdout(&output);
    for needle in ["runs", "[alias: list]", "logs", "completions", "--output", "{\"error\""] {
        assert!(help.contains(needle), "no {needle} in: {help}");
    }
}
