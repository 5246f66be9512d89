//! `logs <run_id>`: a finished run's complete frame log.
//!
//! `GET /agent/claude-code/run/{run_id}/output` answers with the body itself, not a link:
//! `{"run_id", "status", "frames": [...]}`, the frames parsed from the run's stored NDJSON log
//! (`runs/<run_id>/output.ndjson`), or `409 output_not_ready` while the run has not ended.

use std::io::Write as _;

use clap::Args;
use serde_json::json;

use crate::api::{Api, run_path};
use crate::error::{Error, Result};
use crate::output::{Output, json_line};
use crate::render;

#[derive(Args)]
pub struct LogsArgs {
    run_id: String,
}

pub async fn run(api: &Api, output: Output, args: LogsArgs) -> Result<()> {
    let body = api.get(&run_path(&args.run_id, "output")).await.map_err(|err| not_ready(err, &args.run_id))?;
    let frames =
        body["frames"].as_array().ok_or_else(|| Error::InvalidResponse("the API's answer has no frames".to_owned()))?;
    if output.is_json() {
        // The log as stored: one frame per line.
        for frame in frames {
            json_line(frame)?;
        }
        return Ok(());
    }
    if frames.is_empty() {
        eprintln!("(the run left no log)");
    }
    for frame in frames {
        render::frame(frame);
    }
    // The log ends before the stream's `end` frame; say how the run ended, as `tail` does.
    render::frame(&json!({"kind": "end", "status": body["status"]}));
    std::io::stdout().flush()?;
    Ok(())
}

/// `output_not_ready` said plainly: what to do instead.
fn not_ready(err: Error, run_id: &str) -> Error {
    match err {
        Error::Api { status, code, .. } if code == "output_not_ready" => Error::Api {
            status,
            code,
            message: format!(
                "run {run_id} has not ended yet; its log is complete once it ends \
                 (follow it live with: claude-runner tail {run_id})"
            ),
        },
        other => other,
    }
}
