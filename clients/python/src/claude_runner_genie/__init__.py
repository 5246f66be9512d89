"""Genie's client for claude-runner: run Claude Code workflows over SQS as a model tool.

    from claude_runner_genie import ClaudeCodeTool

    tool = ClaudeCodeTool(requests_queue_url, reply_queue_url)
    result = tool.run("implement", "Add a /health route", "main")
    print(result.to_text())

The queue contract is docs/genie.md in the claude-runner repository.
"""

from . import events
from .stream import FrameStream
from .tool import ClaudeCodeTool, ToolResult

__all__ = ["ClaudeCodeTool", "FrameStream", "ToolResult", "events"]
__version__ = "0.1.0"
