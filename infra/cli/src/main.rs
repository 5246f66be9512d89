//! `claude-runner`: submit runs and follow them from a terminal.
//!
//! The wiring only: parse the command line, find the API, hand the command to its module, and
//! report what went wrong (text on stderr, or `{"error": …}` on stdout with `--output json`).

mod api;
mod cli;
mod completions;
mod epic;
mod error;
mod logs;
mod mcp;
mod output;
mod progress;
mod render;
mod run;
mod runs;
mod sessions;
mod stream;

use std::process::ExitCode;

use clap::Parser as _;
use serde_json::json;

use api::{Api, Endpoints};
use cli::{Cli, Command};
use error::Error;
use output::Output;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    let output = cli.output;
    match dispatch(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => report(output, &err),
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let Cli { url, ws_url, api_key, output, command } = cli;
    match command {
        // Needs no API.
        Command::Completions(args) => completions::run(output, args)?,
        command => with_api(&Api::new(Endpoints::resolve(url, ws_url, api_key)?)?, output, command).await?,
    }
    Ok(())
}

async fn with_api(api: &Api, output: Output, command: Command) -> Result<(), Error> {
    match command {
        Command::Submit(args) => run::submit(api, output, args).await,
        Command::Status(args) => run::status(api, output, args).await,
        Command::Runs(args) => runs::run(api, output, args).await,
        Command::Tail(args) => run::tail(api, output, args).await,
        Command::Logs(args) => logs::run(api, output, args).await,
        Command::Cancel(args) => run::cancel(api, output, args).await,
        Command::Sessions(args) => sessions::run(api, output, args).await,
        Command::Resume(args) => run::resume(api, output, args).await,
        Command::Epic(args) => epic::run(api, output, args).await,
        Command::Mcp => mcp::serve(api.client().clone(), api.endpoints()).await,
        Command::Completions(args) => completions::run(output, args),
    }
}

/// Exit 1 when a followed run did not complete (its end is already printed), 2 for an error.
fn report(output: Output, err: &anyhow::Error) -> ExitCode {
    let known = err.downcast_ref::<Error>();
    if let Some(Error::Unsuccessful(_)) = known {
        return ExitCode::from(1);
    }
    if output.is_json() {
        let body = known
            .map(Error::to_json)
            .unwrap_or_else(|| json!({"error": {"code": "error", "message": format!("{err:#}")}}));
        if output::json_line(&body).is_err() {
            eprintln!("claude-runner: {err:#}");
        }
    } else {
        eprintln!("claude-runner: {err:#}");
    }
    ExitCode::from(2)
}

/// A command line clap refused: its own message, or in json mode `{"error": {"code": "usage"}}`.
fn usage_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let informational = matches!(err.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
    if informational || !output::requested_json(std::env::args_os()) {
        let _ = err.print();
        return ExitCode::from(if informational { 0 } else { 2 });
    }
    let message = err.render().to_string();
    let message = message.trim().trim_start_matches("error: ");
    let body = json!({"error": {"code": "usage", "message": message}});
    if output::json_line(&body).is_err() {
        let _ = err.print();
    }
    ExitCode::from(2)
}
