-- Every stdout line of a run, as a frame. `output_type` is the CLI's own message type string
-- (system, assistant, user, result, stream_event, and whatever later versions add): never an enum.
-- No foreign key to claude_cli_runs: frames can land before the projector has mirrored the run.
CREATE TABLE claude_cli_outputs (
    id              bigserial   PRIMARY KEY,
    run_id          uuid        NOT NULL,
    sequence_number bigint      NOT NULL CHECK (sequence_number >= 0),
    output_type     text        NOT NULL,
    subtype         text,
    ts              timestamptz NOT NULL,
    data            jsonb       NOT NULL,
    byte_size       integer     NOT NULL,
    truncated       boolean     NOT NULL DEFAULT false,
    CONSTRAINT claude_cli_outputs_run_seq UNIQUE (run_id, sequence_number)
);
