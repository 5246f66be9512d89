//! `sessions`: your sessions, newest first.

use clap::Args;

use crate::api::Api;
use crate::error::Result;
use crate::output::{Output, json_line};

#[derive(Args)]
pub struct SessionsArgs {
    #[arg(long, default_value_t = 20)]
    limit: u32,
}

pub async fn run(api: &Api, output: Output, args: SessionsArgs) -> Result<()> {
    let page = api.get_query("/agent/claude-code/sessions", &[("limit", args.limit.to_string())]).await?;
    if output.is_json() {
        return json_line(&page);
    }
    for session in page["sessions"].as_array().into_iter().flatten() {
        println!(
            "{}  {:<10} {:>3} runs {:>4} turns  ${:<8.4} {:<20} {}",
            session["session_id"].as_str().unwrap_or(""),
            session["workflow"].as_str().unwrap_or(""),
            session["runs"].as_u64().unwrap_or(0),
            session["total_turns"].as_u64().unwrap_or(0),
            session["total_cost_usd"].as_f64().unwrap_or(0.0),
            session["branch"].as_str().unwrap_or(""),
            session["last_used_at"].as_str().unwrap_or(""),
        );
    }
    Ok(())
}
