-- Trace correlation: each frame row names the trace of the request that asked for its run, so
-- one id finds a run's log lines, frames, replies and metrics.
ALTER TABLE claude_cli_outputs ADD COLUMN trace_id text;
ALTER TABLE claude_cli_runs ADD COLUMN trace_id text;
