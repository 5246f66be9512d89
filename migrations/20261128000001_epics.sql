-- Epics, mirrored from DynamoDB by the projector: the history of each epic (its steps with their
-- runs, costs, decisions and rollback points), kept after the operational record is gone.
CREATE TABLE claude_cli_epics (
    epic_id         uuid PRIMARY KEY,
    owner           text             NOT NULL,
    title           text             NOT NULL,
    repository_url  text             NOT NULL,
    branch          text             NOT NULL,
    status          text             NOT NULL,
    approval        text             NOT NULL,
    budget_usd      double precision NOT NULL,
    cost_usd        double precision NOT NULL DEFAULT 0,
    num_turns       integer          NOT NULL DEFAULT 0,
    duration_ms     bigint           NOT NULL DEFAULT 0,
    fix_rounds      integer          NOT NULL DEFAULT 0,
    steps           jsonb            NOT NULL DEFAULT '[]',
    error           jsonb,
    rollback        jsonb,
    version         bigint           NOT NULL,
    created_at      timestamptz      NOT NULL,
    updated_at      timestamptz      NOT NULL,
    finished_at     timestamptz
);

CREATE INDEX claude_cli_epics_owner_created ON claude_cli_epics (owner, created_at DESC);
-- Each step's run, to go from a run to its epic.
CREATE INDEX claude_cli_epics_steps ON claude_cli_epics USING gin (steps jsonb_path_ops);
