//! `claude-runner epic …`: start an epic (one goal carried through several workflow runs on one
//! branch), follow it, and decide its approvals (docs/epics.md).
//!
//! Every command is one or two calls to `/agent/claude-code/epics`; `--json` prints the API's
//! answer (pretty-printed) instead of the summary, and `--output json` prints it on one line.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::api::{self, segment};
use crate::error::{Error, Result};
use crate::output::{Output, json_line};

const EPICS: &str = "/agent/claude-code/epics";
const POLL_EVERY: Duration = Duration::from_secs(2);
/// Failed polls in a row that `watch` tolerates before giving up.
const POLL_FAILURES: u32 = 5;
/// The longest `watch --timeout` (30 days), so the deadline cannot overflow.
const MAX_WATCH_SECONDS: u64 = 30 * 86_400;

#[derive(Args)]
pub struct EpicArgs {
    /// Print the API's JSON instead of a summary (`watch`: one line per change of the epic);
    /// `--output json` does the same with one line per answer.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: EpicCommand,
}

#[derive(Subcommand)]
enum EpicCommand {
    /// Start an epic; prints its id.
    Start {
        #[arg(long)]
        title: String,
        /// The goal; every step gets it.
        #[arg(long)]
        message: String,
        #[arg(long)]
        branch: String,
        /// The most the epic may spend on the model, in US dollars.
        #[arg(long)]
        budget: f64,
        /// Workflow names and `approval`, comma-separated (default: architect,approval,implement,test,review).
        #[arg(long, value_delimiter = ',')]
        steps: Option<Vec<String>>,
        /// `manual`: every approval step waits for a person; `auto`: only when a trigger fires.
        #[arg(long, value_parser = ["manual", "auto"])]
        approval: Option<String>,
        /// How long an approval waits, in seconds.
        #[arg(long)]
        approval_timeout: Option<u64>,
        /// The most fix → check rounds after a failed test or review.
        #[arg(long)]
        max_fix_rounds: Option<u32>,
        /// Add a `pr` step at the end.
        #[arg(long)]
        pr: bool,
        /// Move the branch back to where the epic found it when a step fails for good.
        #[arg(long)]
        rollback_on_failure: bool,
        /// The repository (default: the deployment's).
        #[arg(long)]
        repository: Option<String>,
        /// Turn limit of each step's run.
        #[arg(long)]
        max_turns: Option<u32>,
    },
    /// An epic: its steps, budget and pending approval.
    Status { epic_id: String },
    /// Your epics, newest first.
    List {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Continue a listing (printed at the end of the previous page).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Approve the epic's pending approval: it goes on.
    Approve {
        epic_id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Deny the epic's pending approval: it ends `denied`, nothing more runs.
    Deny {
        epic_id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Answer the pending approval with an amendment: the design step runs again with the comment.
    Amend {
        epic_id: String,
        #[arg(long)]
        comment: String,
    },
    /// Move the branch back to step N's rollback point (the head before that step ran).
    /// While an approval is pending this is its decision; refused while a step runs.
    Rollback {
        epic_id: String,
        #[arg(long)]
        to_step: u64,
    },
    /// Cancel an epic: the running step is abandoned, nothing more runs.
    Cancel { epic_id: String },
    /// Follow an epic until it ends: one line per step change, the approvals it asks for, the
    /// final status. Exits 0 only if it completed.
    Watch {
        epic_id: String,
        /// Stop watching after this many seconds.
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=MAX_WATCH_SECONDS))]
        timeout: u64,
    },
}

/// The API's epic routes.
struct Api<'a> {
    http: &'a api::Api,
}

impl Api<'_> {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let mut request = self.http.request(method, &format!("{EPICS}{path}"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.http.send(request).await
    }

    async fn get(&self, epic_id: &str) -> Result<Value> {
        self.send(reqwest::Method::GET, &format!("/{}", segment(epic_id)), None).await
    }

    async fn post(&self, path: &str, body: Option<Value>) -> Result<Value> {
        self.send(reqwest::Method::POST, path, body).await
    }

    /// Decides the epic's pending approval (`epic` as just read, for the approval's id).
    async fn decide(
        &self,
        epic: &Value,
        decision: &str,
        comment: Option<String>,
        to_step: Option<u64>,
    ) -> Result<Value> {
        let epic_id = text(&epic["epic_id"]);
        let approval_id = pending_approval_id(epic)?;
        let mut body = json!({"decision": decision});
        if let Some(comment) = comment {
            body["comment"] = json!(comment);
        }
        if let Some(to_step) = to_step {
            body["to_step"] = json!(to_step);
        }
        self.post(&format!("/{}/approvals/{}", segment(epic_id), segment(&approval_id)), Some(body)).await
    }
}

/// The pending approval's id, or why there is none.
fn pending_approval_id(epic: &Value) -> Result<String> {
    match &epic["pending_approval"]["approval_id"] {
        Value::Number(n) => Ok(n.to_string()),
        Value::String(s) => Ok(s.clone()),
        _ => Err(Error::Refused(format!(
            "epic {} is not awaiting approval (status: {})",
            text(&epic["epic_id"]),
            text(&epic["status"])
        ))),
    }
}

/// How the API's answers are printed instead of a summary: `--json` pretty, `--output json` on
/// one line.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Json {
    No,
    Pretty,
    Line,
}

impl Json {
    fn on(self) -> bool {
        self != Self::No
    }
}

pub async fn run(http: &api::Api, output: Output, args: EpicArgs) -> Result<()> {
    let api = Api { http };
    let json_out = match (output, args.json) {
        (Output::Json, _) => Json::Line,
        (Output::Text, true) => Json::Pretty,
        (Output::Text, false) => Json::No,
    };
    match args.command {
        EpicCommand::Start {
            title,
            message,
            branch,
            budget,
            steps,
            approval,
            approval_timeout,
            max_fix_rounds,
            pr,
            rollback_on_failure,
            repository,
            max_turns,
        } => {
            let mut body = json!({"title": title, "message": message, "branch": branch, "budget_usd": budget});
            if let Some(steps) = steps {
                let steps: Vec<&str> = steps.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
                body["steps"] = json!(steps);
            }
            if let Some(approval) = approval {
                body["approval"] = json!(approval);
            }
            if let Some(seconds) = approval_timeout {
                body["approval_timeout_seconds"] = json!(seconds);
            }
            if let Some(n) = max_fix_rounds {
                body["max_fix_rounds"] = json!(n);
            }
            if pr {
                body["pr"] = json!(true);
            }
            if rollback_on_failure {
                body["rollback_on_failure"] = json!(true);
            }
            if let Some(url) = repository {
                body["repository_url"] = json!(url);
            }
            if let Some(n) = max_turns {
                body["max_turns"] = json!(n);
            }
            let epic = api.post("", Some(body)).await?;
            if json_out.on() {
                return print_json(&epic, json_out);
            }
            let epic_id = epic["epic_id"]
                .as_str()
                .ok_or_else(|| Error::InvalidResponse("no epic id in the API's answer".to_owned()))?;
            println!("{epic_id}");
            eprintln!("plan: {} · follow it with: claude-runner epic watch {epic_id}", plan(&epic));
        }
        EpicCommand::Status { epic_id } => {
            let epic = api.get(&epic_id).await?;
            if json_out.on() {
                return print_json(&epic, json_out);
            }
            summary(&epic);
        }
        EpicCommand::List { limit, cursor } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(cursor.map(|c| ("cursor", c)));
            let page = http.get_query(EPICS, &query).await?;
            if json_out.on() {
                return print_json(&page, json_out);
            }
            for epic in page["epics"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:<17} ${:>9.4} / ${:<9.4} {:<24} {}  {}",
                    text(&epic["epic_id"]),
                    text(&epic["status"]),
                    epic["spent_usd"].as_f64().unwrap_or(0.0),
                    epic["budget_usd"].as_f64().unwrap_or(0.0),
                    text(&epic["branch"]),
                    text(&epic["created_at"]),
                    text(&epic["title"]),
                );
            }
            if let Some(cursor) = page["next_cursor"].as_str() {
                eprintln!("(more: --cursor {cursor})");
            }
        }
        EpicCommand::Approve { epic_id, comment } => {
            let epic = api.get(&epic_id).await?;
            decided(&api.decide(&epic, "approve", comment, None).await?, "approve", json_out)?;
        }
        EpicCommand::Deny { epic_id, comment } => {
            let epic = api.get(&epic_id).await?;
            decided(&api.decide(&epic, "deny", comment, None).await?, "deny", json_out)?;
        }
        EpicCommand::Amend { epic_id, comment } => {
            let epic = api.get(&epic_id).await?;
            decided(&api.decide(&epic, "amend", Some(comment), None).await?, "amend", json_out)?;
        }
        EpicCommand::Rollback { epic_id, to_step } => {
            // While an approval is pending the API answers it with this rollback.
            let path = format!("/{}/rollback", segment(&epic_id));
            let answer = api.post(&path, Some(json!({"to_step": to_step}))).await?;
            decided(&answer, &format!("rollback to step {to_step}"), json_out)?;
        }
        EpicCommand::Cancel { epic_id } => {
            let epic = api.post(&format!("/{}/cancel", segment(&epic_id)), None).await?;
            if json_out.on() {
                return print_json(&epic, json_out);
            }
            println!("{} {}", text(&epic["epic_id"]), text(&epic["status"]));
        }
        EpicCommand::Watch { epic_id, timeout } => return watch(&api, &epic_id, timeout, json_out.on()).await,
    }
    Ok(())
}

fn print_json(value: &Value, json_out: Json) -> Result<()> {
    if json_out == Json::Line {
        return json_line(value);
    }
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// After a decision or rollback: the epic moves on by itself.
fn decided(epic: &Value, what: &str, json_out: Json) -> Result<()> {
    if json_out.on() {
        return print_json(epic, json_out);
    }
    // The answer is the epic as it was when the decision was handed over.
    let epic_id = text(&epic["epic_id"]);
    println!("epic {epic_id}: {what} accepted; it moves on by itself (claude-runner epic watch {epic_id})");
    Ok(())
}

/// Follows the epic until it ends or `timeout_seconds` pass; `Unsuccessful` (exit 1) unless it
/// completed.
async fn watch(api: &Api<'_>, epic_id: &str, timeout_seconds: u64, json_out: bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(timeout_seconds);
    let mut printed_steps: HashMap<u64, String> = HashMap::new();
    let mut asked: Option<String> = None;
    let mut last: Option<Value> = None;
    let mut failures = 0;
    loop {
        let epic = match api.get(epic_id).await {
            Ok(epic) => {
                failures = 0;
                epic
            }
            // A 4xx (unknown epic, bad key) will not get better by asking again.
            Err(err) if err.is_client_error() => return Err(err),
            Err(err) if failures < POLL_FAILURES => {
                failures += 1;
                eprintln!("could not read the epic ({err:#}); trying again");
                tokio::time::sleep(POLL_EVERY).await;
                continue;
            }
            Err(err) => return Err(err),
        };
        let status = text(&epic["status"]).to_owned();
        if json_out {
            if last.as_ref() != Some(&epic) {
                json_line(&epic)?;
            }
        } else {
            if last.is_none() {
                println!(
                    "epic {} \"{}\" on {} · budget ${:.4} · plan: {}",
                    text(&epic["epic_id"]),
                    text(&epic["title"]),
                    text(&epic["branch"]),
                    epic["budget_usd"].as_f64().unwrap_or(0.0),
                    plan(&epic)
                );
            }
            for step in epic["steps"].as_array().into_iter().flatten() {
                let line = step_line(step);
                let index = step["index"].as_u64().unwrap_or(0);
                if printed_steps.get(&index) != Some(&line) {
                    println!("{line}");
                    printed_steps.insert(index, line);
                }
            }
            let pending = &epic["pending_approval"];
            let approval_id = pending_approval_id(&epic).ok();
            if approval_id.is_some() && approval_id != asked {
                print_pending(&epic, pending);
            }
            asked = approval_id;
        }
        if !matches!(status.as_str(), "running" | "awaiting_approval") {
            if !json_out {
                final_line(&epic);
            }
            if status == "completed" {
                return Ok(());
            }
            return Err(Error::Unsuccessful(status));
        }
        last = Some(epic);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::TimedOut(format!(
                "stopped watching after {timeout_seconds} s; epic {epic_id} is still {status}"
            )));
        }
        tokio::time::sleep(POLL_EVERY.min(left)).await;
    }
}

/// `step 2 implement: running (run 01…)`, and what a finished step did.
fn step_line(step: &Value) -> String {
    let mut line =
        format!("step {} {}: {}", step["index"].as_u64().unwrap_or(0), step_name(step), text(&step["status"]));
    let mut details: Vec<String> = Vec::new();
    if let Some(run_id) = step["run_id"].as_str() {
        details.push(format!("run {run_id}"));
    }
    if step["kind"] == "run" && step["finished_at"].is_string() {
        details.push(format!("${:.4}", step["cost_usd"].as_f64().unwrap_or(0.0)));
        details.push(format!("{} turns", step["num_turns"].as_u64().unwrap_or(0)));
        let commits = step["commits"].as_array().map_or(0, Vec::len);
        details.push(format!("{commits} commit{}", if commits == 1 { "" } else { "s" }));
    }
    if !details.is_empty() {
        line.push_str(&format!(" ({})", details.join(", ")));
    }
    let decision = &step["decision"];
    if decision.is_object() {
        if step["status"] == "approved" {
            line.push_str(&format!(" by {}", text(&decision["by"])));
        } else {
            line.push_str(&format!(" ({} by {})", text(&decision["decision"]), text(&decision["by"])));
        }
        if let Some(comment) = decision["comment"].as_str() {
            line.push_str(&format!(": {comment}"));
        }
    }
    if step["error"].is_object() {
        line.push_str(&format!(": {}", error(&step["error"])));
    }
    line
}

fn print_pending(epic: &Value, pending: &Value) {
    let epic_id = text(&epic["epic_id"]);
    println!(
        "approval {} asked: {} (expires {})",
        pending_approval_id(epic).unwrap_or_default(),
        text(&pending["asked"]),
        text(&pending["expires_at"])
    );
    println!("  approve: claude-runner epic approve {epic_id} [--comment …]");
    println!(
        "  or:      claude-runner epic deny {epic_id} | amend {epic_id} --comment … | rollback {epic_id} --to-step N"
    );
}

fn final_line(epic: &Value) {
    println!(
        "epic {}: spent ${:.4} of ${:.4}, {} turns, {} fix round{}",
        text(&epic["status"]),
        epic["spent_usd"].as_f64().unwrap_or(0.0),
        epic["budget_usd"].as_f64().unwrap_or(0.0),
        epic["totals"]["num_turns"].as_u64().unwrap_or(0),
        epic["fix_rounds"].as_u64().unwrap_or(0),
        if epic["fix_rounds"] == 1 { "" } else { "s" },
    );
    if epic["error"].is_object() {
        println!("  {}", error(&epic["error"]));
    }
    if epic["rollback"].is_object() {
        println!("  {}", rollback(&epic["rollback"]));
    }
}

/// `epic status`: the epic as a person reads it.
fn summary(epic: &Value) {
    let epic_id = text(&epic["epic_id"]);
    println!("{epic_id}  {}  {}", text(&epic["status"]), text(&epic["title"]));
    println!("  branch {} of {}", text(&epic["branch"]), text(&epic["repository_url"]));
    println!(
        "  budget ${:.4}: spent ${:.4}, left ${:.4} · {} turns · approvals {} · fix rounds {}/{}",
        epic["budget_usd"].as_f64().unwrap_or(0.0),
        epic["spent_usd"].as_f64().unwrap_or(0.0),
        epic["remaining_usd"].as_f64().unwrap_or(0.0),
        epic["totals"]["num_turns"].as_u64().unwrap_or(0),
        text(&epic["approval"]),
        epic["fix_rounds"].as_u64().unwrap_or(0),
        epic["max_fix_rounds"].as_u64().unwrap_or(0),
    );
    println!("  plan: {}", plan(epic));
    for step in epic["steps"].as_array().into_iter().flatten() {
        println!("  {}", step_line(step));
    }
    let pending = &epic["pending_approval"];
    if pending.is_object() {
        print_pending(epic, pending);
    }
    if epic["error"].is_object() {
        println!("  error: {}", error(&epic["error"]));
    }
    if epic["rollback"].is_object() {
        println!("  {}", rollback(&epic["rollback"]));
    }
}

fn plan(epic: &Value) -> String {
    let names: Vec<&str> = epic["plan"].as_array().into_iter().flatten().map(step_name).collect();
    names.join(" → ")
}

/// A plan entry's or step's name: the plan holds names; tolerate `{name}` or `{workflow}` too.
fn step_name(step: &Value) -> &str {
    step.as_str()
        .or_else(|| step["name"].as_str())
        .or_else(|| step["workflow"].as_str())
        .or_else(|| step["kind"].as_str())
        .unwrap_or("?")
}

fn error(error: &Value) -> String {
    format!("{}: {}", text(&error["code"]), text(&error["message"]))
}

fn rollback(rollback: &Value) -> String {
    let discarded: Vec<&str> = rollback["discarded"].as_array().into_iter().flatten().map(|c| short(text(c))).collect();
    format!(
        "rolled back to step {} ({} → {}); discarded: {}",
        rollback["to_step"].as_u64().unwrap_or(0),
        short(text(&rollback["from_commit"])),
        short(text(&rollback["to_commit"])),
        if discarded.is_empty() { "nothing".to_owned() } else { discarded.join(", ") }
    )
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}
