-- What a run was given is kept on the run itself (`memory.used` in its status); this second copy
-- was written before every run and read by nothing.
DROP TABLE IF EXISTS claude_runner_memory_uses;
