//! `runs` (alias `list`): your runs, newest first, once or `--watch`ed.

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use crate::api::Api;
use crate::error::Result;
use crate::output::{Output, json_line};

const RUNS: &str = "/agent/claude-code/runs";
/// Failed fetches in a row that `--watch` rides out before giving up.
const WATCH_FAILURES: u32 = 5;

#[derive(Args)]
pub struct RunsArgs {
    /// Only runs in this status (queued, preparing, running, completed, failed, cancelled,
    /// timed_out).
    #[arg(long)]
    status: Option<String>,
    #[arg(long)]
    workflow: Option<String>,
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Continue a listing (printed at the end of the previous page).
    #[arg(long)]
    cursor: Option<String>,
    /// Fetch again every --interval seconds until Ctrl-C: text redraws the table, json prints
    /// the page again whenever it changed.
    #[arg(long)]
    watch: bool,
    /// With --watch: seconds between fetches.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600), requires = "watch")]
    interval: u64,
    /// With --watch: stop after this many fetches (for tests and scripts).
    #[arg(long, hide = true, requires = "watch", value_parser = clap::value_parser!(u64).range(1..))]
    watch_count: Option<u64>,
}

impl RunsArgs {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = vec![("limit", self.limit.to_string())];
        query.extend(self.cursor.clone().map(|c| ("cursor", c)));
        query.extend(self.status.clone().map(|s| ("status", s)));
        query.extend(self.workflow.clone().map(|w| ("workflow", w)));
        query
    }
}

pub async fn run(api: &Api, output: Output, args: RunsArgs) -> Result<()> {
    if args.watch {
        return watch(api, output, &args).await;
    }
    let page = api.get_query(RUNS, &args.query()).await?;
    if output.is_json() {
        return json_line(&page);
    }
    let mut stdout = std::io::stdout().lock();
    for row in rows(&page) {
        writeln!(stdout, "{row}")?;
    }
    if let Some(cursor) = page["next_cursor"].as_str() {
        eprintln!("(more: --cursor {cursor})");
    }
    Ok(())
}

/// Fetches every `interval` until Ctrl-C (or `--watch-count` fetches). On a terminal the
/// screen is redrawn each time; elsewhere (and in json mode) a page is printed when it changed.
async fn watch(api: &Api, output: Output, args: &RunsArgs) -> Result<()> {
    let query = args.query();
    let redraw = !output.is_json() && std::io::stdout().is_terminal();
    let interval = Duration::from_secs(args.interval);
    let mut last: Option<Value> = None;
    let mut failures = 0;
    let mut fetches = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let fetched = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            fetched = api.get_query(RUNS, &query) => fetched,
        };
        fetches += 1;
        match fetched {
            Ok(page) => {
                failures = 0;
                if redraw {
                    draw_screen(&page, args.interval)?;
                } else if last.as_ref() != Some(&page) {
                    if output.is_json() {
                        json_line(&page)?;
                    } else {
                        print_table(&page)?;
                    }
                }
                last = Some(page);
            }
            // A 4xx (bad filter, bad key) will not get better by asking again.
            Err(err) if err.is_client_error() => return Err(err),
            Err(err) if failures < WATCH_FAILURES => {
                failures += 1;
                eprintln!("could not list the runs ({err}); trying again");
            }
            Err(err) => return Err(err),
        }
        if args.watch_count.is_some_and(|count| fetches >= count) {
            return Ok(());
        }
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// The whole screen: a title with the time, the table.
fn draw_screen(page: &Value, interval: u64) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    let now = chrono::Local::now().format("%H:%M:%S");
    write!(stdout, "\x1b[H\x1b[2J")?;
    writeln!(stdout, "claude-runner runs · every {interval}s · {now} · Ctrl-C to stop\n")?;
    table(&mut stdout, page)?;
    stdout.flush()?;
    Ok(())
}

/// The table once more, after a blank line and the time, for a pipe or a file.
fn print_table(page: &Value) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "# {}", chrono::Local::now().format("%Y-%m-%d %H:%M:%S"))?;
    table(&mut stdout, page)?;
    writeln!(stdout)?;
    stdout.flush()?;
    Ok(())
}

fn table(out: &mut impl std::io::Write, page: &Value) -> Result<()> {
    writeln!(out, "{:<36}  {:<10} {:<10} {:<24} CREATED", "RUN", "STATUS", "WORKFLOW", "BRANCH")?;
    let rows = rows(page);
    if rows.is_empty() {
        writeln!(out, "(no runs)")?;
    }
    for row in rows {
        writeln!(out, "{row}")?;
    }
    Ok(())
}

/// One line per run, as `list` always printed them.
fn rows(page: &Value) -> Vec<String> {
    let text = |value: &Value| value.as_str().unwrap_or("").to_owned();
    page["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|run| {
            format!(
                "{}  {:<10} {:<10} {:<24} {}",
                text(&run["run_id"]),
                text(&run["status"]),
                text(&run["workflow"]),
                text(&run["branch"]),
                text(&run["created_at"]),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_row_per_run_and_a_header_over_them() {
        let page = json!({"runs": [
            {"run_id": "0192", "status": "queued", "workflow": "implement", "branch": "main", "created_at": "2026-01-01T00:00:00Z"},
        ], "next_cursor": null});
        assert_eq!(rows(&page), ["0192  queued     implement  main                     2026-01-01T00:00:00Z"]);
        let mut out = Vec::new();
        table(&mut out, &page).expect("written");
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("RUN "), "{out}");
        assert!(out.contains("0192  queued"), "{out}");
        let mut empty = Vec::new();
        table(&mut empty, &json!({"runs": []})).expect("written");
        assert!(String::from_utf8_lossy(&empty).contains("(no runs)"));
    }
}
