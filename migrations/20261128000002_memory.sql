-- Memory: what earlier runs of a repository taught (decisions, failures, patterns, learnings),
-- per owner and repository. Accepted entries relevant to a run's message are given to it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE claude_runner_memory (
    memory_id       uuid PRIMARY KEY,
    owner           text        NOT NULL,
    repository_url  text        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('decision', 'failure', 'pattern', 'learning')),
    status          text        NOT NULL CHECK (status IN ('proposed', 'accepted', 'retired')),
    text            text        NOT NULL,
    fields          jsonb       NOT NULL DEFAULT '{}',
    workflow        text,
    epic_id         uuid,
    run_id          uuid,
    session_id      uuid,
    -- Failures only: the normalised failure, so the same one twice is one entry.
    fingerprint     text,
    occurrences     integer     NOT NULL DEFAULT 1,
    first_seen      timestamptz NOT NULL,
    last_seen       timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    search          tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED
);

CREATE UNIQUE INDEX claude_runner_memory_failure ON claude_runner_memory (owner, repository_url, fingerprint)
    WHERE fingerprint IS NOT NULL;
CREATE INDEX claude_runner_memory_scope ON claude_runner_memory (owner, repository_url, status, last_seen DESC);
CREATE INDEX claude_runner_memory_trgm ON claude_runner_memory USING gin (text gin_trgm_ops);
CREATE INDEX claude_runner_memory_search ON claude_runner_memory USING gin (search);
CREATE INDEX claude_runner_memory_run ON claude_runner_memory (run_id);

-- Which entries each run was given.
CREATE TABLE claude_runner_memory_uses (
    run_id     uuid        NOT NULL,
    memory_id  uuid        NOT NULL REFERENCES claude_runner_memory (memory_id) ON DELETE CASCADE,
    used_at    timestamptz NOT NULL,
    PRIMARY KEY (run_id, memory_id)
);
