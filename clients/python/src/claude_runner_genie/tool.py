"""`ClaudeCodeTool`: runs a claude-runner workflow over SQS and waits for its result.

The queue contract is docs/genie.md: a `run.requested.v1` CloudEvent goes to the requests queue,
and the replies (`run.accepted`, `run.started`, one terminal reply, or `run.rejected`) come back
on this client's own reply queue, matched by a correlation id.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from . import events
from .stream import FrameCallback, FrameStream

log = logging.getLogger(__name__)

#: A boto3 SQS client (typed as `mypy_boto3_sqs.SQSClient` where those stubs are installed).
SQSClient = Any
#: Called with every reply event the client receives and its SQS message attributes.
ReplyHook = Callable[[dict[str, Any], dict[str, str]], None]
#: Called with every request event the client sends.
SendHook = Callable[[dict[str, Any]], None]

#: SQS's longest long poll.
MAX_WAIT_SECONDS = 20
#: How many finished correlation ids the client remembers, to delete their late replies.
RETIRED_CAPACITY = 4096

_DESCRIPTION = (
    "Runs a Claude Code workflow (for example implement, fix, review, test, document) on a git branch "
    "and returns its result when the run has ended. The agent works in a fresh clone of the repository; "
    "workflows that change code commit and push to the branch. Pass session_id (from an earlier result) "
    "to continue that conversation. Runs can take minutes."
)

_INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "workflow": {
            "type": "string",
            "pattern": "^[a-z0-9_-]+$",
            "description": "The deployed workflow to run, e.g. implement, fix, review, test, document.",
        },
        "message": {"type": "string", "minLength": 1, "description": "The task for the agent, in plain words."},
        "branch": {"type": "string", "minLength": 1, "description": "The git branch to work on, e.g. main."},
        "max_turns": {
            "type": "integer",
            "minimum": 1,
            "maximum": 200,
            "default": 2,
            "description": "Most agent turns the run may take.",
        },
        "session_id": {
            "type": "string",
            "format": "uuid",
            "description": "Continue this session (the session_id of an earlier result).",
        },
        "repository_url": {
            "type": "string",
            "description": "The git repository; the deployment's default repository when omitted.",
        },
        "metadata": {"type": "object", "description": "Free-form JSON kept with the run (at most 16 KiB)."},
        "max_budget_usd": {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "Stop the run once it has cost this many US dollars.",
        },
    },
    "required": ["workflow", "message", "branch"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class ToolResult:
    """How a workflow run ended, as the terminal reply (or a rejection, or a client timeout) said."""

    #: The run; None when the request was rejected (no run was created) or timed out unanswered.
    run_id: str | None
    #: completed, failed, cancelled or timed_out (`failed` for a rejected request).
    status: str
    #: True when the run completed.
    ok: bool = field(init=False)
    #: The CLI's final result text.
    result: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    cost_usd: float | None = None
    num_turns: int | None = None
    #: The session the run continued or started: pass it back to continue the conversation.
    session_id: str | None = None
    #: Commits the run pushed to its branch, oldest first.
    commits: list[str] = field(default_factory=list)
    duration_ms: int | None = None
    #: The terminal (or `run.rejected`) reply's `data`, verbatim; empty after a client timeout.
    raw: dict[str, Any] = field(default_factory=dict)
    #: Why frame streaming stopped early, when `on_frame` was given and it did.
    stream_error: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ok", self.status == "completed")

    @classmethod
    def from_terminal(cls, data: Mapping[str, Any], *, stream_error: str | None = None) -> ToolResult:
        """The result a terminal reply's `data` describes."""
        error = data.get("error") or {}
        return cls(
            run_id=data.get("run_id"),
            status=str(data.get("status")),
            result=data.get("result"),
            error_code=error.get("code"),
            error_message=error.get("message"),
            cost_usd=data.get("cost_usd"),
            num_turns=data.get("num_turns"),
            session_id=data.get("session_id"),
            commits=list(data.get("commits") or []),
            duration_ms=data.get("duration_ms"),
            raw=dict(data),
            stream_error=stream_error,
        )

    @classmethod
    def from_rejection(cls, data: Mapping[str, Any]) -> ToolResult:
        """A failed result for a `run.rejected` reply's `data`: no run was created."""
        error = data.get("error") or {}
        return cls(
            run_id=None,
            status="failed",
            error_code=error.get("code"),
            error_message=error.get("message"),
            raw=dict(data),
        )

    def to_text(self) -> str:
        """The result as a model's tool-result text."""
        if self.run_id is None and "request_type" in self.raw:  # a run.rejected reply
            return f"The workflow request was rejected ({self.error_code}): {self.error_message}"
        lines: list[str] = []
        head = f"Workflow run {self.run_id or '(not started)'} {self.status}"
        facts = []
        if self.num_turns is not None:
            facts.append(f"{self.num_turns} turns")
        if self.duration_ms is not None:
            facts.append(f"{self.duration_ms / 1000:.1f} s")
        if self.cost_usd is not None:
            facts.append(f"${self.cost_usd:.4f}")
        lines.append(head + (f" ({', '.join(facts)})." if facts else "."))
        if self.error_code is not None:
            lines.append(f"Error ({self.error_code}): {self.error_message}")
        if self.session_id is not None:
            lines.append(f"session_id: {self.session_id} (pass it to continue this session)")
        if self.commits:
            lines.append("Commits pushed: " + ", ".join(self.commits))
        stats = self.raw.get("diff_stats")
        if isinstance(stats, dict):
            lines.append(
                f"Diff: {stats.get('files_changed')} files changed, "
                f"+{stats.get('insertions')} -{stats.get('deletions')}"
            )
        if self.result:
            lines.extend(["", "Result:", self.result])
        return "\n".join(lines)


class _Call:
    """The state of one `run` call: its replies so far and its frame stream."""

    def __init__(self, correlation_id: str, on_frame: FrameCallback | None) -> None:
        self.correlation_id = correlation_id
        self.on_frame = on_frame
        self.seen_ids: set[str] = set()
        self.run_id: str | None = None
        self.session_id: str | None = None
        self.accepted: dict[str, Any] | None = None
        self.terminal: dict[str, Any] | None = None
        self.rejected: dict[str, Any] | None = None
        self.stream: FrameStream | None = None
        self.stream_error: str | None = None

    def handle(self, event: Mapping[str, Any]) -> None:
        event_type = event.get("type")
        data = event.get("data")
        if not isinstance(data, dict):
            return
        if event_type == events.RUN_REJECTED:
            if self.rejected is None:
                self.rejected = data
            return
        if data.get("run_id") is not None:
            self.run_id = str(data["run_id"])
        if data.get("session_id") is not None:
            self.session_id = str(data["session_id"])
        if event_type == events.RUN_ACCEPTED and self.accepted is None:
            self.accepted = data
            self._follow(data)
        elif event_type in events.TERMINAL_TYPES and self.terminal is None:
            self.terminal = data

    def _follow(self, accepted: Mapping[str, Any]) -> None:
        if self.on_frame is None or self.run_id is None:
            return
        stream = accepted.get("stream")
        if not isinstance(stream, dict) or not stream.get("url") or not stream.get("token"):
            self.stream_error = "the deployment has no WebSocket API: run.accepted carries no stream"
            return
        self.stream = FrameStream(str(stream["url"]), str(stream["token"]), self.run_id, self.on_frame)
        self.stream.start()

    def finished(self) -> bool:
        """A rejection; or the terminal reply, and (when frames are wanted) the accepted reply
        that says where to stream them from."""
        if self.rejected is not None:
            return True
        if self.terminal is None:
            return False
        return self.on_frame is None or self.accepted is not None

    def close(self) -> None:
        if self.stream is not None:
            self.stream.stop()


class ClaudeCodeTool:
    """Runs claude-runner workflows through its Genie queues; usable as a model tool.

    One reply queue per client: every reply for this client's requests goes to `reply_queue_url`
    (which must be on the deployment's reply allowlist). Replies for another `run` call in flight
    are left on the queue for it; late replies of this client's finished calls are deleted.
    """

    name: ClassVar[str] = "claude_code_workflow"

    def __init__(
        self,
        requests_queue_url: str,
        reply_queue_url: str,
        sqs_client: SQSClient | None = None,
        source: str = "urn:genie",
        poll_seconds: int = MAX_WAIT_SECONDS,
        *,
        stream_grace_seconds: float = 30.0,
        on_reply: ReplyHook | None = None,
        on_send: SendHook | None = None,
    ) -> None:
        """`sqs_client` defaults to `boto3.client("sqs")`. `poll_seconds` is the long-poll wait
        (at most 20). After the terminal reply, `run` waits up to `stream_grace_seconds` for the
        frame stream to reach its end frame. `on_reply` sees every reply received (before it is
        matched) and `on_send` every request sent; an exception from either propagates."""
        if not source:
            raise ValueError("source must not be empty")
        self.requests_queue_url = requests_queue_url
        self.reply_queue_url = reply_queue_url
        self.sqs: SQSClient = sqs_client if sqs_client is not None else boto3.client("sqs")
        self.source = source
        self.poll_seconds = max(0, min(int(poll_seconds), MAX_WAIT_SECONDS))
        self.stream_grace_seconds = stream_grace_seconds
        self.on_reply = on_reply
        self.on_send = on_send
        self._lock = threading.Lock()
        self._retired: OrderedDict[str, None] = OrderedDict()
        self._orphans: set[str] = set()

    # -- the model-facing surface ------------------------------------------------------------

    @classmethod
    def definition(cls, workflows: Sequence[str] | None = None) -> dict[str, Any]:
        """The tool's definition for a model's tool-use API: name, description, input_schema.
        With `workflows`, the schema lists them as the only accepted workflow names."""
        schema = copy.deepcopy(_INPUT_SCHEMA)
        if workflows:
            schema["properties"]["workflow"]["enum"] = list(workflows)
        return {"name": cls.name, "description": _DESCRIPTION, "input_schema": schema}

    def invoke(
        self,
        arguments: Mapping[str, Any],
        *,
        on_frame: FrameCallback | None = None,
        timeout: float = 900.0,
    ) -> ToolResult:
        """Runs with a model's tool input (the arguments `definition()` describes)."""
        unknown = set(arguments) - set(_INPUT_SCHEMA["properties"])
        if unknown:
            raise ValueError(f"unknown argument(s): {', '.join(sorted(unknown))}")
        missing = [k for k in _INPUT_SCHEMA["required"] if k not in arguments]
        if missing:
            raise ValueError(f"missing argument(s): {', '.join(missing)}")
        args = dict(arguments)
        return self.run(
            str(args.pop("workflow")),
            str(args.pop("message")),
            str(args.pop("branch")),
            **args,
            on_frame=on_frame,
            timeout=timeout,
        )

    # -- runs --------------------------------------------------------------------------------

    def run(
        self,
        workflow: str,
        message: str,
        branch: str,
        max_turns: int = 2,
        session_id: str | None = None,
        *,
        repository_url: str | None = None,
        metadata: dict[str, Any] | None = None,
        max_budget_usd: float | None = None,
        on_frame: FrameCallback | None = None,
        timeout: float = 900.0,
    ) -> ToolResult:
        """Requests a run and waits (at most `timeout` seconds) for its terminal reply.

        With `on_frame`, the run's frames are streamed over the WebSocket API and passed to it,
        from a background thread, in `seq` order, ending with the `end` frame (before `run`
        returns, unless the stream fails: then `ToolResult.stream_error` says why). On timeout
        the run is cancelled and the result has status `timed_out`, error code `client_timeout`.
        """
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        deadline = time.monotonic() + timeout
        correlation_id = events.new_id()
        request = events.run_requested(
            self.source,
            workflow=workflow,
            message=message,
            branch=branch,
            max_turns=max_turns,
            session_id=session_id,
            repository_url=repository_url,
            metadata=metadata,
            max_budget_usd=max_budget_usd,
            reply_to=self.reply_queue_url,
            correlation_id=correlation_id,
        )
        call = _Call(correlation_id, on_frame)
        try:
            self._send(request, correlation_id)
            return self._await(call, deadline, timeout)
        finally:
            call.close()
            self._retire(correlation_id)

    def cancel(self, run_id: str) -> str:
        """Asks claude-runner to cancel `run_id`; returns the cancel event's id. The run's own
        terminal reply goes to whoever requested the run; a refusal of the cancel (the run has
        already ended) is dropped."""
        correlation_id = events.new_id()
        self._retire(correlation_id)
        event = events.cancel_requested(
            self.source, run_id=run_id, reply_to=self.reply_queue_url, correlation_id=correlation_id
        )
        self._send(event, correlation_id)
        return str(event["id"])

    # -- internals ---------------------------------------------------------------------------

    def _send(self, event: dict[str, Any], correlation_id: str) -> None:
        if self.on_send is not None:
            self.on_send(event)
        self.sqs.send_message(
            QueueUrl=self.requests_queue_url,
            MessageBody=json.dumps(event),
            MessageAttributes={
                events.CORRELATION_ATTRIBUTE: {"DataType": "String", "StringValue": correlation_id},
            },
        )

    def _await(self, call: _Call, deadline: float, timeout: float) -> ToolResult:
        backoff = 0.0
        while not call.finished():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if call.terminal is not None:  # ended, but no run.accepted to stream from arrived
                    call.stream_error = call.stream_error or "run.accepted never arrived: no frames streamed"
                    break
                return self._timed_out(call, timeout)
            messages = self._receive(remaining)
            handled = [self._dispatch(m, call) for m in messages]
            if messages and not any(handled):
                # Only other calls' replies: give them a moment rather than spin on them.
                backoff = min(max(backoff * 2, 0.1), 2.0)
                time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
            else:
                backoff = 0.0
        if call.rejected is not None:
            return ToolResult.from_rejection(call.rejected)
        assert call.terminal is not None
        stream_error = call.stream_error
        if call.stream is not None:
            grace = min(self.stream_grace_seconds, max(0.0, deadline - time.monotonic()))
            if not call.stream.wait(grace):
                call.stream.stop()
                stream_error = f"the frame stream did not reach the end frame within {grace:.0f} s"
            elif call.stream.error is not None:
                stream_error = call.stream.error
        return ToolResult.from_terminal(call.terminal, stream_error=stream_error)

    def _receive(self, remaining: float) -> list[dict[str, Any]]:
        wait = max(0, min(self.poll_seconds, int(remaining)))
        response = self.sqs.receive_message(
            QueueUrl=self.reply_queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=wait,
            MessageAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        return messages

    def _dispatch(self, message: Mapping[str, Any], call: _Call) -> bool:
        """Handles one received message; false if it belongs to someone else (it is left on the
        queue, visible again at once)."""
        attributes = {
            name: str(value.get("StringValue"))
            for name, value in (message.get("MessageAttributes") or {}).items()
            if value.get("StringValue") is not None
        }
        event: dict[str, Any] | None
        try:
            parsed = json.loads(message["Body"])
            event = parsed if isinstance(parsed, dict) else None
        except (ValueError, KeyError):
            event = None
        if event is not None and self.on_reply is not None:
            self.on_reply(event, attributes)
        data = event.get("data") if event is not None else None
        correlation_id = data.get("correlation_id") if isinstance(data, dict) else None
        if correlation_id is None:
            correlation_id = attributes.get(events.CORRELATION_ATTRIBUTE)

        if event is not None and correlation_id == call.correlation_id:
            self._delete(message)
            event_id = str(event.get("id"))
            if event_id not in call.seen_ids:  # a reply is sent at least once
                call.seen_ids.add(event_id)
                call.handle(event)
            return True
        if event is not None and correlation_id is not None and self._is_retired(correlation_id):
            self._delete(message)
            self._cancel_orphan(correlation_id, event)
            return True
        self._release(message)
        return False

    def _timed_out(self, call: _Call, timeout: float) -> ToolResult:
        note = "cancel requested"
        if call.run_id is not None:
            try:
                self.cancel(call.run_id)
            except (BotoCoreError, ClientError) as err:
                note = f"the cancel request failed: {err}"
        else:
            # No run id yet: cancel the run when its run.accepted turns up.
            with self._lock:
                self._orphans.add(call.correlation_id)
            note = "no run.accepted yet; the run is cancelled when it is accepted"
        return ToolResult(
            run_id=call.run_id,
            status="timed_out",
            error_code="client_timeout",
            error_message=f"no terminal reply within {timeout:g} s; {note}",
            session_id=call.session_id,
        )

    def _cancel_orphan(self, correlation_id: str, event: Mapping[str, Any]) -> None:
        data = event.get("data")
        if event.get("type") != events.RUN_ACCEPTED or not isinstance(data, dict):
            return
        with self._lock:
            if correlation_id not in self._orphans:
                return
            self._orphans.discard(correlation_id)
        if data.get("run_id") and data.get("status") not in events.TERMINAL_STATUSES:
            try:
                self.cancel(str(data["run_id"]))
            except (BotoCoreError, ClientError):
                log.exception("could not cancel abandoned run %s", data["run_id"])

    def _retire(self, correlation_id: str) -> None:
        with self._lock:
            self._retired[correlation_id] = None
            self._retired.move_to_end(correlation_id)
            while len(self._retired) > RETIRED_CAPACITY:
                self._retired.popitem(last=False)

    def _is_retired(self, correlation_id: str) -> bool:
        with self._lock:
            return correlation_id in self._retired

    def _delete(self, message: Mapping[str, Any]) -> None:
        self.sqs.delete_message(QueueUrl=self.reply_queue_url, ReceiptHandle=message["ReceiptHandle"])

    def _release(self, message: Mapping[str, Any]) -> None:
        try:
            self.sqs.change_message_visibility(
                QueueUrl=self.reply_queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
        except ClientError as err:  # e.g. the receipt expired; it becomes visible anyway
            log.debug("could not release a reply: %s", err)
