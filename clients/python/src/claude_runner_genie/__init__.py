"""Genie's client for claude-runner: run Claude Code workflows over SQS as a model tool.

    from claude_runner_genie import ClaudeCodeTool

    tool = ClaudeCodeTool(requests_queue_url, reply_queue_url)
    result = tool.run("implement", "Add a /health route", "main")
    print(result.to_text())

`ClaudeRunnerApi` calls the HTTP API for what the queues do not carry: memory, what earlier runs
of a repository taught.

    api = ClaudeRunnerApi(http_api_url, api_key)
    api.add_memory("Run `make check` before pushing: CI runs it.", repository=repo_url)
    api.search_memory("CI failed on formatting", repository=repo_url)

The queue contract is docs/genie.md in the claude-runner repository.
"""

from . import events
from .api import ApiError, ClaudeRunnerApi
from .stream import FrameStream
from .tool import ClaudeCodeTool, ToolResult

__all__ = ["ApiError", "ClaudeCodeTool", "ClaudeRunnerApi", "FrameStream", "ToolResult", "events"]
__version__ = "0.1.0"
