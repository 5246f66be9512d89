//! Memory's rules, case by case: names, normalised error texts, fingerprints (a table of real
//! error texts that must or must not collapse together) and the failure a run leaves.

use chrono::Utc;
use serde_json::json;

use super::*;
use crate::domain::{BranchName, Owner, Run, RunError, RunStatus, ValidRunRequest};

#[test]
fn kinds_and_statuses_have_snake_case_names() {
    for kind in MemoryKind::ALL {
        assert_eq!(kind.as_str().parse::<MemoryKind>(), Ok(kind));
        assert_eq!(serde_json::to_value(kind).unwrap(), json!(kind.as_str()));
        assert_eq!(kind.to_string(), kind.as_str());
    }
    for status in MemoryStatus::ALL {
        assert_eq!(status.as_str().parse::<MemoryStatus>(), Ok(status));
        assert_eq!(serde_json::to_value(status).unwrap(), json!(status.as_str()));
    }
    assert_eq!(
        "Failure".parse::<MemoryKind>(),
        Err("unknown memory kind `Failure`; expected one of: decision, failure, pattern, learning".into())
    );
    assert_eq!(
        "done".parse::<MemoryStatus>(),
        Err("unknown memory status `done`; expected one of: proposed, accepted, retired".into())
    );
}

#[test]
fn error_texts_are_normalised() {
    let cases = [
        (
            "error[E0308]: mismatched types\n  --> src/main.rs:12:5",
            "error[e0308]: mismatched types --> <path>/main.rs:<n>:<n>",
        ),
        (
            "thread 'main' panicked at /tmp/.tmpAbC123/src/lib.rs:42:9:",
            "thread 'main' panicked at <path>/lib.rs:<n>:<n>:",
        ),
        ("cd /tmp/.tmpAbC123 && make", "cd <path> && make"),
        ("C:\\Users\\ci\\app\\main.rs:3", "c:<path>/main.rs:<n>"),
        (
            "fatal: unable to access 'https://github.com/acme/app.git/': Could not resolve host: github.com",
            "fatal: unable to access 'https://github.com/<path>': could not resolve host: github.com",
        ),
        ("GET http://127.0.0.1:8080/health", "get http://<addr>/<path>"),
        ("HEAD is now at 3f78685 fix", "head is now at <hash> fix"),
        ("abc1234..def5678  main -> main", "<hash>..<hash> main -> main"),
        ("segfault at 0x7ffd5a2b", "segfault at <hash>"),
        ("run 0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b not found", "run <uuid> not found"),
        ("2025-06-01T12:00:03.123Z ERROR lease lost", "<time> error lease lost"),
        ("2025-06-01 12:00:03,123 ERROR", "<time> error"),
        ("[12:00:01] started on 2025-06-01", "[<time>] started on <time>"),
        (
            "timed out after 30.2s (budget 300ms, 1m30s, 2 minutes)",
            "timed out after <duration> (budget <duration>, <duration>, <duration>)",
        ),
        ("connect ECONNREFUSED 127.0.0.1:5432", "connect econnrefused <addr>"),
        ("connect to localhost:5432 and [::1]:6379", "connect to <addr> and <addr>"),
        ("Process completed with exit code 137.", "process completed with exit code 137."),
        ("(signal: 9, SIGKILL: kill) after 12 attempts", "(signal: 9, sigkill: kill) after <n> attempts"),
        ("(exit status: 101) 4096 bytes", "(exit status: 101) <n> bytes"),
        ("web@1.4.2 test_2 x86_64 E0425 64bit", "web@<n> test_2 x86_64 e0425 64bit"),
        ("build-3f9a2c1b.log in /var/log/ci/build-3f9a2c1b.log", "build-<hash>.log in <path>/build-<hash>.log"),
        ("  many   spaces\t\tand\nlines  ", "many spaces and lines"),
        ("accepted deadbeef facade", "accepted deadbeef facade"),
    ];
    for (text, normalised) in cases {
        assert_eq!(normalise_error_text(text), normalised, "{text:?}");
    }
}

/// Pairs of error texts and whether they are the same failure (the same fingerprint).
///
/// Decided here: the same error in files of different names is not the same failure; the same
/// file name in different directories is.
const SAME_OR_NOT: &[(&str, &str, bool)] = &[
    // rustc: the same error moved, or in another checkout, is the same failure…
    (
        "error[E0308]: mismatched types\n --> src/main.rs:12:5\n  |\n12 |     let x: u32 = \"a\";",
        "error[E0308]: mismatched types\n --> /tmp/.tmpAbC123/src/main.rs:48:17\n  |\n48 |     let x: u32 = \"a\";",
        true,
    ),
    // …another error code is not…
    (
        "error[E0308]: mismatched types\n --> src/main.rs:12:5",
        "error[E0425]: cannot find value `x` in this scope\n --> src/main.rs:12:5",
        false,
    ),
    // …nor the same error in a file of another name…
    ("error[E0308]: mismatched types\n --> src/a.rs:3:1", "error[E0308]: mismatched types\n --> src/b.rs:3:1", false),
    // …but a file of the same name elsewhere is.
    (
        "error[E0308]: mismatched types\n --> src/lib.rs:3:1",
        "error[E0308]: mismatched types\n --> crates/core/src/lib.rs:30:9",
        true,
    ),
    // cargo test: counts and durations change, the failing test does not.
    (
        "test tests::it_adds ... FAILED\n\ntest result: FAILED. 41 passed; 1 failed; 0 ignored; finished in 0.42s",
        "test tests::it_adds ... FAILED\n\ntest result: FAILED. 40 passed; 1 failed; 2 ignored; finished in 1.37s",
        true,
    ),
    ("test tests::it_adds ... FAILED", "test tests::it_subtracts ... FAILED", false),
    // The same panic at another line is the same failure; a panic in another test is not.
    (
        "thread 'main' panicked at src/lib.rs:42:9:\nassertion `left == right` failed\n  left: 4\n right: 5",
        "thread 'main' panicked at src/lib.rs:57:13:\nassertion `left == right` failed\n  left: 4\n right: 5",
        true,
    ),
    (
        "thread 'tests::it_adds' panicked at src/lib.rs:42:9:\nattempt to add with overflow",
        "thread 'tests::it_parses' panicked at src/lib.rs:42:9:\nattempt to add with overflow",
        false,
    ),
    // pytest
    (
        "FAILED tests/test_api.py::test_create_user - AssertionError: assert 404 == 201",
        "FAILED /home/ci/work/tests/test_api.py::test_create_user - AssertionError: assert 404 == 201",
        true,
    ),
    ("=== 1 failed, 12 passed in 3.21s ===", "=== 1 failed, 13 passed, 1 warning in 4.02s ===", false),
    ("=== 1 failed, 12 passed in 3.21s ===", "=== 2 failed, 11 passed in 4.02s ===", true),
    ("E   KeyError: 'user_id'", "E   TypeError: 'NoneType' object is not subscriptable", false),
    (
        "File \"/usr/lib/python3.11/site-packages/requests/adapters.py\", line 519, in send\nrequests.exceptions.ConnectionError: HTTPConnectionPool(host='localhost', port=8000): Max retries exceeded with url: /api/users",
        "File \"/opt/venv/lib/python3.12/site-packages/requests/adapters.py\", line 520, in send\nrequests.exceptions.ConnectionError: HTTPConnectionPool(host='localhost', port=8001): Max retries exceeded with url: /api/users",
        true,
    ),
    // jest and npm
    (
        "FAIL src/components/Button.test.tsx\n  ● Button › renders the label\n    expect(received).toBe(expected)\n    at Object.<anonymous> (src/components/Button.test.tsx:14:23)",
        "FAIL /builds/acme/web/src/components/Button.test.tsx\n  ● Button › renders the label\n    expect(received).toBe(expected)\n    at Object.<anonymous> (/builds/acme/web/src/components/Button.test.tsx:18:5)",
        true,
    ),
    (
        "npm ERR! code ELIFECYCLE\nnpm ERR! errno 1\nnpm ERR! web@1.4.2 test: `jest --ci`\nnpm ERR! Exit status 1",
        "npm ERR! code ELIFECYCLE\nnpm ERR! errno 1\nnpm ERR! web@1.5.0 test: `jest --ci`\nnpm ERR! Exit status 1",
        true,
    ),
    (
        "npm ERR! code ELIFECYCLE\nnpm ERR! errno 1",
        "npm ERR! code ERESOLVE\nnpm ERR! ERESOLVE unable to resolve dependency tree",
        false,
    ),
    // git
    (
        "fatal: unable to access 'https://github.com/acme/app.git/': Could not resolve host: github.com",
        "fatal: unable to access 'https://github.com/acme/other.git/': Could not resolve host: github.com",
        true,
    ),
    (
        "fatal: unable to access 'https://github.com/acme/app.git/': Could not resolve host: github.com",
        "fatal: unable to access 'https://github.com/acme/app.git/': Failed to connect to github.com port 443 after 130 ms: Connection refused",
        false,
    ),
    (
        " ! [rejected]        main -> main (fetch first)\nerror: failed to push some refs to 'https://github.com/acme/app.git'",
        " ! [rejected]  main -> main (fetch first)\nerror: failed to push some refs to 'https://github.com/acme/web.git'",
        true,
    ),
    (" ! [rejected]        main -> main (fetch first)", " ! [rejected]        main -> main (non-fast-forward)", false),
    (
        "CONFLICT (content): Merge conflict in src/a.rs\nAutomatic merge failed; fix conflicts and then commit the result.",
        "CONFLICT (content): Merge conflict in src/b.rs\nAutomatic merge failed; fix conflicts and then commit the result.",
        false,
    ),
    (
        "fatal: bad object 3f786850e387550fdab836ed7e6dc881de23001b",
        "fatal: bad object 89e6c98d92887913cadf06b2adb97f26cde4849b",
        true,
    ),
    // timeouts
    ("operation timed out after 30.2s", "operation timed out after 29.8s", true),
    ("deadline exceeded after 300ms", "deadline exceeded after 1.5s", true),
    ("operation timed out after 30.2s", "deadline exceeded after 300ms", false),
    ("Timed out after 30 seconds waiting for the lock", "Timed out after 45 seconds waiting for the lock", true),
    // memory and signals
    (
        "memory allocation of 1073741824 bytes failed\nerror: process didn't exit successfully: `target/debug/deps/app-3f9a2c1b7d8e4f60` (signal: 6, SIGABRT: process abort signal)",
        "memory allocation of 536870912 bytes failed\nerror: process didn't exit successfully: `target/debug/deps/app-0a1b2c3d4e5f6a7b` (signal: 6, SIGABRT: process abort signal)",
        true,
    ),
    (
        "error: process didn't exit successfully: `/tmp/.tmpX1/target/debug/app` (signal: 9, SIGKILL: kill)",
        "error: process didn't exit successfully: `/tmp/.tmpY2/target/debug/app` (signal: 11, SIGKILL: kill)",
        false,
    ),
    ("Process completed with exit code 137.", "Process completed with exit code 1.", false),
    ("failed to spawn `git`: (os error 2)", "failed to spawn `git`: (os error 13)", false),
    ("Killed (pid 41235) after 12m3s", "Killed (pid 873) after 9m58s", true),
    // network
    (
        "Connection refused (os error 111) connecting to 127.0.0.1:5432",
        "Connection refused (os error 111) connecting to 10.0.3.7:6379",
        true,
    ),
    ("connect ECONNREFUSED localhost:5432", "connect ECONNREFUSED localhost:8080", true),
    (
        "could not connect to server: Connection refused\n\tIs the server running on host \"db\" and accepting TCP/IP connections on port 5432?",
        "could not translate host name \"db\" to address: Name or service not known",
        false,
    ),
    // ids and clocks
    ("run 0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b not found", "run 6f1c2e3d-4b5a-4978-8a6b-5c4d3e2f1a0b not found", true),
    ("2025-06-01T12:00:03.123Z ERROR worker: lease lost", "2025-06-02T08:15:44.901Z ERROR worker: lease lost", true),
    ("2025-06-01T12:00:03.123Z ERROR worker: lease lost", "2025-06-01T12:00:03.123Z ERROR worker: queue full", false),
    // the same failure in different temporary directories
    (
        "error: failed to write /tmp/.tmpAbC123/target/debug/libapp.rlib: No space left on device (os error 28)",
        "error: failed to write /tmp/.tmpXyZ789/target/debug/libapp.rlib: No space left on device (os error 28)",
        true,
    ),
];

#[test]
fn fingerprints_collapse_what_varies_and_keep_what_differs() {
    assert!(SAME_OR_NOT.len() >= 24);
    let mut wrong = Vec::new();
    for &(a, b, same) in SAME_OR_NOT {
        let (fa, fb) = (
            failure_fingerprint("cli_failed", None, None, &[], a),
            failure_fingerprint("cli_failed", None, None, &[], b),
        );
        if (fa == fb) != same {
            wrong.push(format!(
                "expected {}:\n  {a:?}\n  → {:?}\n  {b:?}\n  → {:?}",
                if same { "the same" } else { "different" },
                normalise_error_text(a),
                normalise_error_text(b)
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_fingerprint_weighs_code_tool_command_and_files() {
    let files = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    let base = failure_fingerprint(
        "cli_failed",
        Some("Bash"),
        Some("cargo test -p app"),
        &files(&["src/a.rs", "src/b.rs"]),
        "boom",
    );
    assert_eq!(base.len(), 64);
    assert!(base.chars().all(|c| c.is_ascii_hexdigit()));
    // Files in any order, in any checkout, repeated.
    assert_eq!(
        base,
        failure_fingerprint(
            "cli_failed",
            Some("Bash"),
            Some("cargo   test -p app"),
            &files(&["/tmp/.tmpQ/src/b.rs", "src/a.rs", "src/b.rs"]),
            "boom"
        )
    );
    assert_ne!(
        base,
        failure_fingerprint(
            "push_failed",
            Some("Bash"),
            Some("cargo test -p app"),
            &files(&["src/a.rs", "src/b.rs"]),
            "boom"
        )
    );
    assert_ne!(
        base,
        failure_fingerprint(
            "cli_failed",
            Some("Edit"),
            Some("cargo test -p app"),
            &files(&["src/a.rs", "src/b.rs"]),
            "boom"
        )
    );
    assert_ne!(
        base,
        failure_fingerprint(
            "cli_failed",
            Some("Bash"),
            Some("cargo test -p web"),
            &files(&["src/a.rs", "src/b.rs"]),
            "boom"
        )
    );
    assert_ne!(
        base,
        failure_fingerprint("cli_failed", Some("Bash"), Some("cargo test -p app"), &files(&["src/a.rs"]), "boom")
    );
    assert_ne!(base, failure_fingerprint("cli_failed", None, None, &[], "boom"));
    // Only the start of the error text counts.
    let long = "x ".repeat(FINGERPRINT_ERROR_CHARS);
    assert_eq!(
        failure_fingerprint("c", None, None, &[], &format!("{long} first ending")),
        failure_fingerprint("c", None, None, &[], &format!("{long} second ending"))
    );
}

fn run(status: RunStatus, error: Option<RunError>) -> Run {
    let request = ValidRunRequest {
        workflow: "implement".into(),
        message: "add search".into(),
        branch: BranchName::parse("main").unwrap(),
        max_turns: 2,
        session_id: None,
        repository_url: "https://example.com/r.git".into(),
        metadata_json: None,
        auto_commit: None,
        max_budget_usd: None,
    };
    Run { status, error, ..Run::queued(Owner::new("team-a"), request, None, Utc::now()) }
}

#[test]
fn a_failed_or_timed_out_run_leaves_a_failure() {
    let error = RunError::new("cli_failed", "error[E0308]: mismatched types --> src/main.rs:12:5");
    let memory = failure_from_run(&run(RunStatus::Failed, Some(error.clone()))).unwrap();
    assert_eq!(memory.kind, MemoryKind::Failure);
    assert_eq!(memory.text, "implement failed with cli_failed: error[E0308]: mismatched types --> src/main.rs:12:5");
    assert_eq!(memory.fields, json!({"code": "cli_failed", "workflow": "implement", "message": error.message}));
    assert_eq!(memory.fingerprint, Some(failure_fingerprint("cli_failed", None, None, &[], &error.message)));
    // Another line of the same file is a recurrence of the same failure.
    let moved = RunError::new("cli_failed", "error[E0308]: mismatched types --> src/main.rs:14:5");
    assert_eq!(failure_from_run(&run(RunStatus::Failed, Some(moved))).unwrap().fingerprint, memory.fingerprint);

    let timed_out =
        failure_from_run(&run(RunStatus::TimedOut, Some(RunError::new("idle_timeout", "no output for 300s"))));
    assert_eq!(timed_out.unwrap().text, "implement failed with idle_timeout: no output for 300s");

    let long = RunError::new("cli_failed", "é".repeat(FAILURE_MESSAGE_CHARS + 100));
    let memory = failure_from_run(&run(RunStatus::Failed, Some(long))).unwrap();
    assert_eq!(memory.text.chars().count(), "implement failed with cli_failed: ".len() + FAILURE_MESSAGE_CHARS);
}

#[test]
fn other_runs_leave_no_failure() {
    let error = || Some(RunError::new("cli_failed", "boom"));
    assert_eq!(failure_from_run(&run(RunStatus::Failed, None)), None);
    for status in [RunStatus::Completed, RunStatus::Cancelled, RunStatus::Running, RunStatus::Queued] {
        assert_eq!(failure_from_run(&run(status, error())), None, "{status}");
    }
}

#[test]
fn long_and_odd_texts_are_normalised_with_bounded_output() {
    for text in [
        "a-".repeat(50_000),
        "1.".repeat(50_000),
        "[1".repeat(50_000),
        "a/".repeat(50_000),
        "http://".repeat(20_000),
        "(".repeat(50_000) + "1",
        "2025-06-01t".repeat(10_000),
    ] {
        let normalised = normalise_error_text(&text);
        assert!(normalised.len() <= text.len() * 4);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    #[test]
    fn normalising_never_panics_and_collapses_whitespace(text in "[a-f0-9xz:./\\\\ \\[\\]()'\"@_Tµé-]{0,80}") {
        let normalised = normalise_error_text(&text);
        proptest::prop_assert!(!normalised.contains("  "));
        proptest::prop_assert_eq!(normalised.trim(), normalised.as_str());
        let _ = failure_fingerprint("c", None, Some(&text), std::slice::from_ref(&text), &text);
    }

    #[test]
    fn a_block_never_panics(text in "(```memory\n)?[{}\\[\\]\":,a-z0-9 .`\n]{0,80}(```)?") {
        let _ = parse_memory_block(&text);
    }
}
