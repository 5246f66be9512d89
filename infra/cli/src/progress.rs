//! The line that says what a followed run is waiting for before its first frame: `queued 3s…`,
//! `preparing workspace 1s…`, redrawn in place on stderr from the status endpoint, polled every
//! second.
//!
//! Shown only in text mode with stderr on a terminal (see `run::follow`): a pipe or a log file
//! gets no carriage-return redraws, and stdout is never touched. It ends by itself once the run
//! is past preparing (or the status cannot be read), and is cleared before the first frame.

use std::io::Write as _;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::api::{Api, run_path};

const POLL_EVERY: Duration = Duration::from_secs(1);
/// Failed status reads in a row after which the line gives up (it is only a courtesy).
const MAX_FAILURES: u32 = 3;
/// Erases the current terminal line.
const CLEAR: &str = "\r\x1b[2K";

/// A progress line being kept up to date; stop it before printing anything else.
pub struct Progress {
    task: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts polling `run_id`'s status and drawing the line on stderr.
    pub fn start(api: Api, run_id: String) -> Self {
        Self { task: Some(tokio::spawn(keep_up(api, run_id))) }
    }

    /// Whether the line may still be on screen.
    pub fn is_active(&self) -> bool {
        self.task.as_ref().is_some_and(|task| !task.is_finished())
    }

    /// Stops the line and clears it (waiting until it can no longer draw).
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            let was_drawing = !task.is_finished();
            task.abort();
            let _ = task.await;
            if was_drawing {
                clear();
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(task) = self.task.take()
            && !task.is_finished()
        {
            task.abort();
            clear();
        }
    }
}

/// What the line says for a status, or `None` once the run no longer waits.
pub fn line(status: &str, waited: Duration) -> Option<String> {
    let what = match status {
        "queued" => "queued",
        "preparing" => "preparing workspace",
        _ => return None,
    };
    Some(format!("{what} {}s…", waited.as_secs()))
}

async fn keep_up(api: Api, run_id: String) {
    let path = run_path(&run_id, "status");
    // The status being waited in, and since when.
    let mut current: Option<(String, Instant)> = None;
    let mut failures = 0;
    let mut drawn = false;
    loop {
        match api.get(&path).await {
            Ok(run) => {
                failures = 0;
                let status = run["status"].as_str().unwrap_or_default().to_owned();
                let since = match &current {
                    Some((seen, since)) if *seen == status => *since,
                    _ => {
                        let since = waiting_since(&run, &status).unwrap_or_else(Instant::now);
                        current = Some((status.clone(), since));
                        since
                    }
                };
                let Some(text) = line(&status, since.elapsed()) else { break };
                draw(&text);
                drawn = true;
            }
            Err(_) => {
                failures += 1;
                if failures >= MAX_FAILURES {
                    break;
                }
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    if drawn {
        clear();
    }
}

/// When a queued run was queued, by the server's clock (close enough to ours for seconds);
/// other statuses are timed from when this client first saw them.
fn waiting_since(run: &Value, status: &str) -> Option<Instant> {
    if status != "queued" {
        return None;
    }
    let created: DateTime<Utc> = run["created_at"].as_str()?.parse().ok()?;
    let ago = Utc::now().signed_duration_since(created).to_std().ok()?;
    Instant::now().checked_sub(ago)
}

fn draw(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "{CLEAR}{text}");
    let _ = stderr.flush();
}

fn clear() {
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "{CLEAR}");
    let _ = stderr.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_line_names_what_the_run_waits_for() {
        assert_eq!(line("queued", Duration::from_millis(3_400)).as_deref(), Some("queued 3s…"));
        assert_eq!(line("preparing", Duration::from_secs(1)).as_deref(), Some("preparing workspace 1s…"));
        for past in ["running", "completed", "failed", "cancelled", "timed_out", ""] {
            assert_eq!(line(past, Duration::ZERO), None, "{past}");
        }
    }

    #[test]
    fn a_queued_run_is_timed_from_its_creation() {
        let created = (Utc::now() - chrono::Duration::seconds(5)).to_rfc3339();
        let since = waiting_since(&json!({"created_at": created}), "queued").expect("a time");
        assert!((4..=6).contains(&since.elapsed().as_secs()), "{:?}", since.elapsed());
        assert!(waiting_since(&json!({"created_at": created}), "preparing").is_none());
        assert!(waiting_since(&json!({"created_at": "not a time"}), "queued").is_none());
        let future = (Utc::now() + chrono::Duration::seconds(60)).to_rfc3339();
        assert!(waiting_since(&json!({"created_at": future}), "queued").is_none(), "a clock ahead of ours");
    }
}
