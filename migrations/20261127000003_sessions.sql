-- Claude sessions, mirrored from DynamoDB by the projector. A session removed there (deleted,
-- expired) is removed here too.
CREATE TABLE claude_cli_sessions (
    session_id      uuid PRIMARY KEY,
    owner           text             NOT NULL,
    workflow        text             NOT NULL,
    repository_url  text             NOT NULL,
    branch          text             NOT NULL,
    run_ids         uuid[]           NOT NULL DEFAULT '{}',
    transcript_key  text,
    cli_session_id  uuid,
    total_turns     integer          NOT NULL DEFAULT 0,
    total_cost_usd  double precision NOT NULL DEFAULT 0,
    input_tokens    bigint           NOT NULL DEFAULT 0,
    output_tokens   bigint           NOT NULL DEFAULT 0,
    run_count       integer          NOT NULL DEFAULT 0,
    version         bigint           NOT NULL,
    created_at      timestamptz      NOT NULL,
    last_used_at    timestamptz      NOT NULL,
    expires_at      timestamptz      NOT NULL
);

CREATE INDEX claude_cli_sessions_owner_last_used ON claude_cli_sessions (owner, last_used_at DESC);
CREATE INDEX claude_cli_sessions_expires ON claude_cli_sessions (expires_at);
