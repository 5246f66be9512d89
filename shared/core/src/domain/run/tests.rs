//! The run state machine, case by case.

use super::*;
use RunStatus::*;

pub(crate) fn run_in(status: RunStatus) -> Run {
    let request = ValidRunRequest {
        workflow: "implement".into(),
        message: "hi".into(),
        branch: crate::domain::BranchName::parse("main").unwrap(),
        max_turns: 2,
        session_id: None,
        repository_url: "https://example.com/r.git".into(),
        metadata_json: None,
        auto_commit: None,
        max_budget_usd: None,
    };
    Run { status, ..Run::queued(Owner::new("team-a"), request, None, Utc::now()) }
}

const ALLOWED: &[(RunStatus, RunStatus)] = &[
    (Queued, Preparing),
    (Queued, Cancelled),
    (Queued, Failed),
    (Preparing, Running),
    (Preparing, Queued),
    (Preparing, Failed),
    (Preparing, Cancelled),
    (Preparing, TimedOut),
    (Running, Completed),
    (Running, Failed),
    (Running, Cancelled),
    (Running, TimedOut),
];

#[test]
fn a_lost_run_goes_again_before_the_cli_started_and_fails_after() {
    let now = Utc::now();
    let mut preparing = run_in(Preparing);
    preparing.lease_owner = Some("executor-a".into());
    preparing.lease_expires_at = Some(now + chrono::Duration::seconds(30));
    assert_eq!(preparing.recover_lost(now), None, "the lease still holds");
    preparing.lease_expires_at = Some(now - chrono::Duration::seconds(1));
    assert_eq!(preparing.recover_lost(now), Some(LostRun::Requeued));
    assert_eq!((preparing.status, preparing.lease_owner.as_deref()), (Queued, None));

    let mut running = run_in(Running);
    running.lease_expires_at = Some(now - chrono::Duration::seconds(1));
    assert_eq!(running.recover_lost(now), Some(LostRun::Failed));
    assert_eq!((running.status, running.error.map(|e| e.code)), (Failed, Some("executor_lost".to_owned())));

    assert_eq!(run_in(Completed).recover_lost(now), None, "an ended run has no lease to lose");
}

#[test]
fn every_pair_of_states_is_allowed_exactly_when_the_table_says_so() {
    for from in RunStatus::ALL {
        for to in RunStatus::ALL {
            let mut run = run_in(from);
            let result = run.transition(to, Utc::now());
            if ALLOWED.contains(&(from, to)) {
                assert!(result.is_ok(), "{from} -> {to} should be allowed");
                assert_eq!(run.status, to);
                assert_eq!(run.version, 2, "{from} -> {to} bumps the version");
            } else {
                assert_eq!(result, Err(TransitionError { from, to }), "{from} -> {to} should be refused");
                assert_eq!(run.status, from, "a refused transition leaves the run as it was");
                assert_eq!(run.version, 1);
            }
        }
    }
}

#[test]
fn terminal_states_accept_nothing() {
    for from in [Completed, Failed, Cancelled, TimedOut] {
        assert!(from.is_terminal());
        assert!(RunStatus::ALL.iter().all(|to| !from.can_become(*to)));
    }
    for live in [Queued, Preparing, Running] {
        assert!(!live.is_terminal());
    }
}

#[test]
fn transitions_stamp_start_and_finish_times() {
    let mut run = run_in(Queued);
    run.transition(Preparing, Utc::now()).unwrap();
    assert!(run.started_at.is_none());
    run.transition(Running, Utc::now()).unwrap();
    assert!(run.started_at.is_some());
    assert!(run.finished_at.is_none());
    run.transition(Completed, Utc::now()).unwrap();
    assert!(run.finished_at.is_some());
}

#[test]
fn fail_records_the_reason_only_when_the_transition_is_legal() {
    let mut run = run_in(Queued);
    run.fail(RunError::new("enqueue_failed", "queue down"), Utc::now()).unwrap();
    assert_eq!(run.status, Failed);
    assert_eq!(run.error.as_ref().unwrap().code, "enqueue_failed");

    let mut done = run_in(Completed);
    assert!(done.fail(RunError::new("x", "y"), Utc::now()).is_err());
    assert!(done.error.is_none());
}

#[test]
fn cancelling_a_queued_run_ends_it_at_once() {
    let mut run = run_in(Queued);
    assert_eq!(run.request_cancel(Utc::now()), Ok(CancelOutcome::Cancelled));
    assert_eq!(run.status, Cancelled);
    assert!(run.finished_at.is_some());
}

#[test]
fn cancelling_a_live_run_sets_the_flag_once() {
    for status in [Preparing, Running] {
        let mut run = run_in(status);
        assert_eq!(run.request_cancel(Utc::now()), Ok(CancelOutcome::Requested));
        assert_eq!(run.status, status);
        assert!(run.cancel_requested);
        assert_eq!(run.version, 2);
        assert_eq!(run.request_cancel(Utc::now()), Ok(CancelOutcome::AlreadyRequested));
        assert_eq!(run.version, 2, "a repeated cancel writes nothing");
    }
}

#[test]
fn cancelling_a_finished_run_is_refused() {
    for status in [Completed, Failed, Cancelled, TimedOut] {
        let mut run = run_in(status);
        assert_eq!(run.request_cancel(Utc::now()), Err(TransitionError { from: status, to: Cancelled }));
    }
}

#[test]
fn claiming_takes_a_lease_and_counts_the_attempt() {
    let now = Utc::now();
    let mut run = run_in(Queued);
    run.claim("exec-1", now + chrono::Duration::seconds(30), now).unwrap();
    assert_eq!(run.status, Preparing);
    assert_eq!(run.lease_owner.as_deref(), Some("exec-1"));
    assert_eq!(run.attempts, 1);
    assert!(!run.lease_expired(now));
    assert!(run.lease_expired(now + chrono::Duration::seconds(31)));
    let mut taken = run_in(Running);
    assert!(taken.claim("exec-2", now, now).is_err(), "a claimed run cannot be claimed again");
}

#[test]
fn finishing_records_the_outcome_and_drops_the_lease() {
    let now = Utc::now();
    let mut run = run_in(Running);
    run.lease_owner = Some("exec".into());
    let session = Uuid::now_v7();
    let outcome = RunOutcome {
        status: Completed,
        result_summary: Some("done".into()),
        error: None,
        session_id: Some(session),
        cost_usd: Some(0.25),
        num_turns: Some(3),
        usage_json: Some("{}".into()),
        duration_ms: Some(1200),
        exit_code: Some(0),
    };
    run.finish(outcome, now).unwrap();
    assert_eq!((run.status, run.session_id, run.num_turns), (Completed, Some(session), Some(3)));
    assert!(run.lease_owner.is_none() && run.finished_at.is_some());
    assert!(!run.lease_expired(now), "a finished run has no lease to expire");
    let mut queued = run_in(Queued);
    assert!(queued.finish(RunOutcome::failed(RunError::new("x", "y")), now).is_ok(), "queued may fail");
    let mut done = run_in(Completed);
    assert!(done.finish(RunOutcome::failed(RunError::new("x", "y")), now).is_err());
}

#[test]
fn run_ids_are_v7_and_time_ordered() {
    let a = RunId::new();
    let b = RunId::new();
    assert_eq!(a.as_uuid().get_version_num(), 7);
    assert!(a < b);
    assert_eq!(a.to_string().parse::<RunId>().unwrap(), a);
}

#[test]
fn status_names_round_trip() {
    for s in RunStatus::ALL {
        assert_eq!(s.as_str().parse::<RunStatus>(), Ok(s));
        assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
    }
    assert!("done".parse::<RunStatus>().is_err());
}

#[test]
fn a_run_queued_too_long_is_sent_again_a_bounded_number_of_times_then_failed() {
    let mut run = run_in(RunStatus::Queued);
    run.time_limit_seconds = 600;
    let start = run.updated_at;
    let bound = chrono::Duration::seconds(QUEUED_GRACE_SECONDS + 600);
    assert_eq!(run.recover_stranded(start + bound - chrono::Duration::seconds(1)), None, "still waiting its turn");
    let mut at = start;
    for n in 1..=MAX_REQUEUES {
        at += bound;
        let version = run.version;
        assert_eq!(run.recover_stranded(at), Some(StrandedRun::Requeued));
        assert_eq!((run.requeues, run.status), (n, RunStatus::Queued));
        assert!(run.version > version, "a new version, so the queue takes the message again");
    }
    assert_eq!(run.recover_stranded(at + chrono::Duration::seconds(1)), None, "measured from the last resend");
    at += bound;
    assert_eq!(run.recover_stranded(at), Some(StrandedRun::Failed));
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error.as_ref().map(|e| e.code.as_str()), Some("dead_lettered"));
    let mut running = run_in(RunStatus::Running);
    assert_eq!(running.recover_stranded(at + bound * 10), None, "only queued runs are stranded");
}
