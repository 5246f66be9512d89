//! What the CLI runs inside: `.env` values kept out of every frame and every push, a scrubbed
//! environment, rlimits and a private workspace (seen from the real CLI's own `Bash` tool), and
//! the janitor's re-queue of runs lost before their CLI started, a batch per sweep.
//!
//! Only `Bash(<prefix>:*)` rules are in the shipped workflows' allowed tools, no plain `Bash`. The
//! pinned CLI runs read-only commands inside its working directory (`cat .env`) without a rule,
//! but asks for anything else (`env`, `ulimit`, a path outside the checkout), and a `-p` run
//! refuses what it would ask for. So the sandbox probe is a Makefile the model writes and runs
//! with `make`, which `implement` allows (`Bash(make:*)`, permission mode `acceptEdits`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use e2e::{RunnerFixture, TestStack};
use local::model::Turn;
use runner_adapters::{ClaudeCliConfig, DynamoRunStore, DynamoSessionStore, S3ObjectStore, SqsRunQueue, aws};
use runner_core::domain::{BranchName, Owner, Run, RunId, RunStatus, ValidRunRequest};
use runner_core::ports::{ObjectStore as _, RunStore as _};
use runner_core::usecases::{Janitor, JanitorReport};
use serde_json::{Value, json};

const SECRET: &str = "s3cr3t-value-123";

/// Prints the CLI's environment, the modes of the run's directories (its cwd is `<run>/work`,
/// so `..` is the run's own directory) and the process's rlimits. Recipe lines start with a tab.
const PROBE_MAKEFILE: &str = "probe:\n\
    \t@env\n\
    \t@for d in .. ../home ../tmp ../claude; do echo \"mode $$d: $$(stat -c %a $$d)\"; done\n\
    \t@cat /proc/self/limits\n";

/// Name prefixes of variables the executor's process has in a test run (cargo's and nextest's,
/// the test harness's `CLAUDE_RUNNER_TEST_*`, any AWS or database settings) and that nothing in
/// the CLI sets by itself: if one shows up in the CLI with the same value, it leaked.
const EXECUTOR_ONLY: &[&str] =
    &["CARGO", "RUST", "NEXTEST", "CLAUDE_RUNNER_", "AWS_", "DATABASE_URL", "LD_LIBRARY_PATH"];

fn objects(t: &TestStack) -> S3ObjectStore {
    S3ObjectStore::new(aws::s3(&t.stack.sdk), &t.stack.settings.artifacts_bucket)
}

/// Every frame of the run as Postgres stores it (`data` as JSON text), in order.
async fn stored_frames(f: &RunnerFixture, run_id: &str) -> Vec<String> {
    sqlx::query_scalar::<_, String>(
        "SELECT data::text FROM claude_cli_outputs WHERE run_id = $1 ORDER BY sequence_number",
    )
    .bind(uuid::Uuid::parse_str(run_id).unwrap())
    .fetch_all(&f.t.stack.pool)
    .await
    .unwrap()
}

/// The text of every tool result in these frames, in order.
fn tool_results(frames: &[String]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|text| serde_json::from_str::<Value>(text).ok())
        .filter(|frame| frame["type"] == "user")
        .flat_map(|frame| frame["message"]["content"].as_array().cloned().unwrap_or_default())
        .filter(|block| block["type"] == "tool_result")
        .map(|block| match &block["content"] {
            Value::String(text) => text.clone(),
            Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n"),
            other => other.to_string(),
        })
        .collect()
}

#[tokio::test]
async fn dotenv_values_are_redacted_from_every_frame_and_the_env_file_is_never_pushed() {
    let f = RunnerFixture::start(
        vec![
            Turn::tool("Bash", json!({"command": "cat .env"})),
            Turn::write("notes.txt", "read the environment\n"),
            Turn::text("Read the .env and took notes."),
        ],
        &[("WORKSPACE_DOTENV", "API_TOKEN=s3cr3t-value-123\n")],
        true,
    )
    .await;
    let run_id = f.submit("implement", json!({"message": "Show me the .env", "branch": "main"})).await;
    let run = f.wait_until_finished(&run_id).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert!(!run.to_string().contains(SECRET), "the run's record: {run}");

    // Postgres: the tool ran and printed the file, and what was stored has the value replaced.
    let frames = stored_frames(&f, &run_id).await;
    assert!(!frames.is_empty());
    let leaking: Vec<&String> = frames.iter().filter(|fr| fr.contains(SECRET)).collect();
    assert!(leaking.is_empty(), "frames in Postgres carry the secret: {leaking:?}");
    let results = tool_results(&frames);
    assert!(
        results.iter().any(|r| r.contains("API_TOKEN=[REDACTED]")),
        "`cat .env` ran and its output was redacted: {results:?}\n{frames:#?}"
    );

    // The S3 frame log alike.
    let log = objects(&f.t).get(&format!("runs/{run_id}/output.ndjson")).await.unwrap().expect("the S3 log exists");
    let log = String::from_utf8(log).unwrap();
    assert!(!log.contains(SECRET), "the S3 frame log carries the secret");
    assert!(log.contains("API_TOKEN=[REDACTED]"), "the S3 frame log has the redacted tool output");

    // The session's transcript (what a resume restores, and what the history API serves) alike.
    let session = run["session_id"].as_str().expect("the run started a session");
    let (status, history) =
        f.t.get_json(&format!("/agent/claude-code/sessions/{session}/history?limit=200"), f.t.key()).await;
    assert_eq!(status, 200, "{history}");
    let history = history.to_string();
    assert!(!history.contains(SECRET), "the stored transcript carries the secret");
    assert!(history.contains("[REDACTED]"), "the transcript has the redacted tool output: {history}");

    // The run pushed its work, and the .env stayed behind.
    assert_eq!(f.origin.file("main", "notes.txt").as_deref(), Some("read the environment\n"), "the run pushed");
    assert_eq!(f.origin.file("main", ".env"), None, "the .env is never committed");
    f.stop().await;
}

#[tokio::test]
async fn the_cli_runs_with_a_scrubbed_environment_its_rlimits_and_a_private_workspace() {
    let f = RunnerFixture::start(
        vec![
            Turn::write("Makefile", PROBE_MAKEFILE),
            Turn::tool("Bash", json!({"command": "make -s probe"})),
            Turn::text("Probed."),
        ],
        &[],
        true,
    )
    .await;
    let run_id =
        f.submit("implement", json!({"message": "Probe the sandbox", "branch": "main", "auto_commit": false})).await;
    let run = f.wait_until_finished(&run_id).await;
    assert_eq!(run["status"], "completed", "{run}");
    let results = tool_results(&stored_frames(&f, &run_id).await);
    let output = results
        .iter()
        .find(|r| r.contains("Max open files"))
        .unwrap_or_else(|| panic!("the probe ran through the CLI's Bash tool: {results:?}"));
    let env: Vec<&str> = output.lines().filter(|line| line.contains('=')).collect();

    // It is the CLI's environment: its own directories under the run's, the checkout as cwd.
    let run_dir = f.workspace_root.path().join("runs").join(&run_id);
    for (name, dir) in [("HOME", "home"), ("TMPDIR", "tmp"), ("CLAUDE_CONFIG_DIR", "claude")] {
        let expected = format!("{name}={}", run_dir.join(dir).display());
        assert!(env.contains(&expected.as_str()), "{expected} in the CLI's environment: {env:?}");
    }
    // The shell's PWD is the cwd as the CLI resolved it (a symlinked temp dir may be resolved).
    let resolved = std::fs::canonicalize(f.workspace_root.path()).unwrap().join("runs").join(&run_id);
    let cwd = [run_dir.join("work"), resolved.join("work")].map(|dir| format!("PWD={}", dir.display()));
    assert!(cwd.iter().any(|line| env.contains(&line.as_str())), "the CLI's cwd is the checkout: {env:?}");
    // The model key never enters the sandbox: the CLI holds this run's placeholder, and its
    // endpoint is the run's own proxy on loopback, which adds the real key.
    let key = env.iter().find_map(|line| line.strip_prefix("ANTHROPIC_API_KEY=")).unwrap_or_default();
    assert!(key.starts_with("sk-ant-run-"), "the CLI holds a per-run placeholder: {env:?}");
    assert!(!output.contains("sk-test-scripted"), "the real key is nowhere in the CLI's environment");
    let endpoint = env.iter().find_map(|line| line.strip_prefix("ANTHROPIC_BASE_URL=")).unwrap_or_default();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "the model endpoint is the run's proxy: {endpoint}");
    let upstream = f.model.requests_with_headers();
    assert!(
        upstream.iter().all(|(headers, _)| headers.get("x-api-key").map(String::as_str) == Some("sk-test-scripted")),
        "the model got the real key on every request"
    );

    // Scrubbed: no AWS settings or database URL, nothing of the executor's own environment.
    let names: Vec<&str> = env.iter().filter_map(|line| line.split_once('=').map(|(name, _)| name)).collect();
    assert!(
        !names.iter().any(|name| name.starts_with("AWS_") || *name == "DATABASE_URL"),
        "AWS or database settings reached the CLI: {names:?}"
    );
    let executor_vars: Vec<String> = std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .filter(|(name, value)| {
            EXECUTOR_ONLY.iter().any(|prefix| name.starts_with(prefix)) && !value.is_empty() && !value.contains('\n')
        })
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    assert!(!executor_vars.is_empty(), "the test process has variables of its own to look for (run it under cargo)");
    let leaked: Vec<&String> = executor_vars.iter().filter(|var| env.contains(&var.as_str())).collect();
    assert!(leaked.is_empty(), "the executor's environment reached the CLI: {leaked:?}");

    // Private: the CLI's home, temp and config dirs are the run's alone; the run's directory is
    // the executor's, open to the run's own group only where runs have users of their own.
    let run_users = nix::unistd::geteuid().is_root();
    for dir in ["..", "../home", "../tmp", "../claude"] {
        let prefix = format!("mode {dir}: ");
        let mode = output.lines().find_map(|line| line.strip_prefix(prefix.as_str()));
        let expected = if dir == ".." && run_users { "710" } else { "700" };
        assert_eq!(mode, Some(expected), "{dir} (the run's directory is `..` of the CLI's cwd): {output}");
    }

    // The rlimits the launcher sets (soft and hard), as the CLI's tools inherit them.
    let limits = ClaudeCliConfig::default();
    let limit = |name: &str| -> Vec<String> {
        let line = output.lines().find(|line| line.starts_with(name)).unwrap_or_else(|| panic!("{name}: {output}"));
        line[name.len()..].split_whitespace().take(2).map(str::to_owned).collect()
    };
    let open_files = limits.max_open_files.to_string();
    assert_eq!(limit("Max open files"), [open_files.clone(), open_files]);
    let file_size = limits.max_file_bytes.to_string();
    assert_eq!(limit("Max file size"), [file_size.clone(), file_size]);
    // CPU time: the run's time limit on every core, at most the configured cap.
    let cpu: Vec<u64> = limit("Max cpu time").iter().map(|n| n.parse().unwrap()).collect();
    assert!(cpu[0] <= limits.max_cpu_seconds && cpu[1] == cpu[0] + 30, "{cpu:?}");
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    assert_eq!(cpu[0] % cores, 0, "a multiple of the {cores} cores: {cpu:?}");
    let address_space = limits.max_address_space_bytes.to_string();
    assert_eq!(limit("Max address space"), [address_space.clone(), address_space]);
    if run_users {
        let processes = limits.max_processes.to_string();
        assert_eq!(limit("Max processes"), [processes.clone(), processes]);
    }
    f.stop().await;
}

/// A run an executor claimed (`preparing`) ten minutes ago, its lease ending at `lease_until`.
fn claimed_run(lease_until: DateTime<Utc>) -> Run {
    let request = ValidRunRequest {
        workflow: "implement".into(),
        message: "lost on the way".into(),
        branch: BranchName::parse("main").unwrap(),
        max_turns: 2,
        session_id: None,
        repository_url: e2e::DEFAULT_REPOSITORY.into(),
        metadata_json: None,
        auto_commit: None,
        max_budget_usd: None,
    };
    let claimed_at = Utc::now() - chrono::Duration::minutes(10);
    let mut run = Run::queued(Owner::new("local"), request, None, claimed_at);
    run.claim("executor-gone", lease_until, claimed_at).expect("a queued run can be claimed");
    run
}

/// Run ids of the messages waiting on the runs queue, sorted; they are taken off it.
async fn take_queued(t: &TestStack) -> Vec<String> {
    let sqs = aws::sqs(&t.stack.sdk);
    let mut ids = Vec::new();
    for message in t.queued_run_messages().await {
        let body: Value = serde_json::from_str(message.body().unwrap()).unwrap();
        ids.push(body["run_id"].as_str().unwrap().to_owned());
        let receipt = message.receipt_handle().unwrap();
        sqs.delete_message().queue_url(&t.stack.settings.runs_queue_url).receipt_handle(receipt).send().await.unwrap();
    }
    ids.sort();
    ids
}

fn sorted_ids(ids: &[RunId]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(RunId::to_string).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn the_janitor_requeues_lost_runs_that_never_started_a_batch_per_sweep_and_fails_started_ones() {
    let t = TestStack::start().await;
    let (sdk, settings) = (&t.stack.sdk, &t.stack.settings);
    let runs = Arc::new(DynamoRunStore::new(aws::dynamodb(sdk), &settings.runs_table, &settings.idempotency_table));
    let janitor = Janitor::new(
        runs.clone(),
        Arc::new(DynamoSessionStore::new(aws::dynamodb(sdk), &settings.sessions_table)),
        Arc::new(S3ObjectStore::new(aws::s3(sdk), &settings.artifacts_bucket)),
        Arc::new(SqsRunQueue::new(aws::sqs(sdk), &settings.runs_queue_url, settings.long_runs_queue_url.clone())),
        2,
    );
    // Five runs whose executor vanished while preparing, and one whose executor is alive.
    let expired = Utc::now() - chrono::Duration::minutes(5);
    let lost: Vec<Run> = (0..5).map(|_| claimed_run(expired)).collect();
    let live = claimed_run(Utc::now() + chrono::Duration::hours(1));
    for run in lost.iter().chain([&live]) {
        assert!(runs.create(run).await.unwrap());
    }
    assert!(take_queued(&t).await.is_empty(), "nothing is queued yet");

    let mut requeued: Vec<RunId> = Vec::new();
    for sweep in 1..=2 {
        let report = janitor.sweep(Utc::now()).await.unwrap();
        assert_eq!(report, JanitorReport { requeued_runs: 2, ..JanitorReport::default() }, "sweep {sweep}");
        let mut this_sweep = Vec::new();
        for run in &lost {
            let stored = runs.get(run.run_id).await.unwrap().expect("the run exists");
            match stored.status {
                RunStatus::Queued => {
                    assert_eq!(stored.version, run.version + 1, "re-queued once, in one write");
                    assert_eq!((stored.lease_owner.as_deref(), stored.lease_expires_at), (None, None));
                    assert_eq!(stored.attempts, 1);
                    if !requeued.contains(&run.run_id) {
                        this_sweep.push(run.run_id);
                    }
                }
                RunStatus::Preparing => assert_eq!(stored.version, run.version, "a run past the batch is untouched"),
                other => panic!("sweep {sweep}: a lost preparing run became {other}"),
            }
        }
        assert_eq!(this_sweep.len(), 2, "sweep {sweep} re-queued its batch, and only it");
        assert_eq!(take_queued(&t).await, sorted_ids(&this_sweep), "sweep {sweep}: each re-queued run is queued again");
        requeued.extend(this_sweep);
    }

    // The last lost preparing run, and one whose CLI had started: that one cannot go again.
    let last = lost.iter().find(|run| !requeued.contains(&run.run_id)).expect("one left").run_id;
    let mut started = claimed_run(expired);
    started.transition(RunStatus::Running, started.updated_at).unwrap();
    assert!(runs.create(&started).await.unwrap());
    let report = janitor.sweep(Utc::now()).await.unwrap();
    assert_eq!(report, JanitorReport { requeued_runs: 1, failed_runs: 1, ..JanitorReport::default() });
    assert_eq!(runs.get(last).await.unwrap().unwrap().status, RunStatus::Queued);
    let failed = runs.get(started.run_id).await.unwrap().unwrap();
    assert_eq!(
        (failed.status, failed.error.as_ref().map(|e| e.code.as_str())),
        (RunStatus::Failed, Some("executor_lost"))
    );
    assert!(failed.finished_at.is_some() && failed.lease_owner.is_none(), "{failed:?}");
    // The ended run's message lets an executor send its end to whoever still subscribes.
    assert_eq!(take_queued(&t).await, sorted_ids(&[last, started.run_id]));

    // Nothing left to do; the run whose lease holds was never touched.
    assert_eq!(janitor.sweep(Utc::now()).await.unwrap(), JanitorReport::default());
    let alive = runs.get(live.run_id).await.unwrap().unwrap();
    assert_eq!((alive.status, alive.version), (RunStatus::Preparing, live.version));
    assert!(take_queued(&t).await.is_empty());
    t.stop().await;
}

/// Whether `pid` is gone (or a zombie waiting for whoever reaps it) within `seconds`; a process
/// still running then is killed, so a failing test leaves nothing behind.
async fn gone_within_seconds(pid: i32, seconds: u64) -> bool {
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
            .is_some_and(|zombie| !zombie)
    };
    let timeout = std::time::Duration::from_secs(seconds);
    let gone = e2e::TestStack::eventually(timeout, || async { (!running()).then_some(()) }).await;
    if gone.is_none() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    gone.is_some()
}

/// Starts a process in a session of its own (out of the CLI's process group) and prints its pid.
const ESCAPE_MAKEFILE: &str = "escape:\n\t@setsid sleep 300 < /dev/null > /dev/null 2>&1 & echo \"DETACHED=$$!\"\n";

#[tokio::test]
async fn a_process_the_run_detached_from_its_group_does_not_outlive_the_run() {
    let f = RunnerFixture::start(
        vec![
            Turn::write("Makefile", ESCAPE_MAKEFILE),
            Turn::tool("Bash", json!({"command": "make -s escape"})),
            Turn::text("Left something running."),
        ],
        &[],
        true,
    )
    .await;
    let run_id = f.submit("implement", json!({"message": "Escape", "branch": "main", "auto_commit": false})).await;
    let run = f.wait_until_finished(&run_id).await;
    assert_eq!(run["status"], "completed", "{run}");
    let results = tool_results(&stored_frames(&f, &run_id).await);
    let pid: i32 = results
        .iter()
        .find_map(|r| r.lines().find_map(|line| line.trim().strip_prefix("DETACHED=")?.parse().ok()))
        .unwrap_or_else(|| panic!("the detached pid was printed: {results:?}"));
    assert!(gone_within_seconds(pid, 10).await, "process {pid}, detached with setsid, outlived its run");
    f.stop().await;
}

/// Run `alpha` keeps a private file in its checkout, says where, and waits for `beta` to finish.
const ALPHA_MAKEFILE: &str = "hold:\n\
    \t@echo alpha-private > private.txt\n\
    \t@echo \"$$PWD\" > @RENDEZVOUS@/alpha-path\n\
    \t@echo \"ALPHA_UID=$$(id -u)\"\n\
    \t@for i in $$(seq 1 600); do [ -f @RENDEZVOUS@/beta-done ] && break; sleep 0.1; done\n";

/// Run `beta`, while `alpha` runs, tries what an attacker's command would: read alpha's file and
/// list the workspaces, write the repository cache, read the executor's environment, leave a
/// file in /tmp and a process with a cleared environment in a session of its own.
const BETA_MAKEFILE: &str = "probe:\n\
    \t@for i in $$(seq 1 600); do [ -f @RENDEZVOUS@/alpha-path ] && break; sleep 0.1; done\n\
    \t@echo \"BETA_UID=$$(id -u)\"\n\
    \t@cat \"$$(cat @RENDEZVOUS@/alpha-path)/private.txt\" >/dev/null 2>&1 && echo READ_ALPHA || echo READ_REFUSED\n\
    \t@ls \"$$(dirname \"$$(dirname \"$$(cat @RENDEZVOUS@/alpha-path)\")\")\" >/dev/null 2>&1 && echo LISTED || echo LIST_REFUSED\n\
    \t@touch @CACHE@/planted 2>/dev/null && echo CACHE_WRITTEN || echo CACHE_REFUSED\n\
    \t@for m in @CACHE@/*.git; do echo '[url \"file:///elsewhere\"]' >> \"$$m/config\"; done 2>/dev/null && echo MIRROR_WRITTEN || echo MIRROR_REFUSED\n\
    \t@cat /proc/@EXECUTOR@/environ >/dev/null 2>&1 && echo ENVIRON_READ || echo ENVIRON_REFUSED\n\
    \t@echo left > /tmp/@LEFTOVER@\n\
    \t@setsid env -i /bin/sleep 300 < /dev/null > /dev/null 2>&1 & echo \"DETACHED=$$!\"\n\
    \t@touch @RENDEZVOUS@/beta-done\n";

#[tokio::test]
async fn runs_have_users_of_their_own_and_cannot_reach_each_other_the_cache_or_the_executor() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("per-run users need an executor running as root; this test runs as root in CI");
        return;
    }
    use std::os::unix::fs::PermissionsExt as _;
    let rendezvous = tempfile::tempdir().unwrap();
    std::fs::set_permissions(rendezvous.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let leftover = format!("cr-leftover-{}", uuid::Uuid::new_v4());
    let f = RunnerFixture::start(vec![], &[], true).await;
    let cache = f.workspace_root.path().join("cache");
    let fill = |text: &str| {
        text.replace("@RENDEZVOUS@", &rendezvous.path().display().to_string())
            .replace("@CACHE@", &cache.display().to_string())
            .replace("@EXECUTOR@", &std::process::id().to_string())
            .replace("@LEFTOVER@", &leftover)
    };
    for (word, makefile, target) in [("alpha", ALPHA_MAKEFILE, "hold"), ("beta", BETA_MAKEFILE, "probe")] {
        f.model.script(
            word,
            vec![
                Turn::write("Makefile", &fill(makefile)),
                Turn::tool("Bash", json!({"command": format!("make -s {target}")})),
                Turn::text("Done."),
            ],
        );
    }
    let body = |word: &str| json!({"message": format!("Run {word}"), "branch": "main", "auto_commit": false});
    let alpha = f.submit("implement", body("alpha")).await;
    let beta = f.submit("implement", body("beta")).await;
    for run_id in [&alpha, &beta] {
        let run = f.wait_until_finished(run_id).await;
        assert_eq!(run["status"], "completed", "{run}");
    }
    let alpha_out = tool_results(&stored_frames(&f, &alpha).await).join("\n");
    let beta_out = tool_results(&stored_frames(&f, &beta).await).join("\n");
    let uid = |text: &str, name: &str| -> u32 {
        let prefix = format!("{name}=");
        text.lines()
            .find_map(|line| line.trim().strip_prefix(prefix.as_str())?.parse().ok())
            .unwrap_or_else(|| panic!("{name} printed: {text}"))
    };
    let range = runner_adapters::RunUserRange::DEFAULT;
    let (alpha_uid, beta_uid) = (uid(&alpha_out, "ALPHA_UID"), uid(&beta_out, "BETA_UID"));
    for id in [alpha_uid, beta_uid] {
        assert!((range.first..range.first + range.count).contains(&id), "uid {id} is a run user's");
    }
    assert_ne!(alpha_uid, beta_uid, "each run its own user");
    for refused in ["READ_REFUSED", "LIST_REFUSED", "CACHE_REFUSED", "MIRROR_REFUSED", "ENVIRON_REFUSED"] {
        assert!(beta_out.contains(refused), "{refused}: {beta_out}");
    }
    assert!(!cache.join("planted").exists());

    // Nothing of beta's outlived it: the process that left its group and cleared its
    // environment (out of reach of the per-run mark) is gone, and so is its file in /tmp.
    let pid: i32 = uid(&beta_out, "DETACHED") as i32;
    assert!(gone_within_seconds(pid, 10).await, "process {pid}, detached with a cleared environment, outlived its run");
    assert!(!std::path::Path::new("/tmp").join(&leftover).exists(), "the run's file in /tmp was removed");
    f.stop().await;
}
