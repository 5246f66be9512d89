-- Runs, mirrored from DynamoDB by the projector. `version` orders updates: an older version never
-- overwrites a newer one.
CREATE TABLE claude_cli_runs (
    run_id           uuid PRIMARY KEY,
    owner            text        NOT NULL,
    workflow         text        NOT NULL,
    branch           text        NOT NULL,
    repository_url   text        NOT NULL,
    message          text        NOT NULL,
    max_turns        integer     NOT NULL CHECK (max_turns BETWEEN 1 AND 200),
    session_id       uuid,
    metadata         jsonb,
    status           text        NOT NULL CHECK (status IN
                         ('queued', 'preparing', 'running', 'completed', 'failed', 'cancelled', 'timed_out')),
    cancel_requested boolean     NOT NULL DEFAULT false,
    version          bigint      NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz,
    result_summary   text,
    error_code       text,
    error_message    text,
    cost_usd         double precision,
    num_turns        integer,
    usage            jsonb,
    duration_ms      bigint,
    exit_code        integer,
    attempts         integer     NOT NULL DEFAULT 0,
    commits          text[]      NOT NULL DEFAULT '{}',
    files_changed    integer,
    insertions       integer,
    deletions        integer,
    projected_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX claude_cli_runs_owner_created ON claude_cli_runs (owner, created_at DESC);
CREATE INDEX claude_cli_runs_status ON claude_cli_runs (status) WHERE status IN ('queued', 'preparing', 'running');
CREATE INDEX claude_cli_runs_session ON claude_cli_runs (session_id) WHERE session_id IS NOT NULL;
