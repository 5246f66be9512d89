"""The Genie client against a live local stack (docs/genie.md).

The Rust end-to-end test starts the stack (SQS on moto, the genie function, an executor running the
real CLI against a scripted model, the WebSocket API), creates and allowlists a reply queue, and runs
these tests with:

- AWS_ENDPOINT_URL, AWS_DEFAULT_REGION (us-east-1), AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (any);
- CLAUDE_RUNNER_REQUESTS_QUEUE_URL: the Genie requests queue;
- CLAUDE_RUNNER_REPLY_QUEUE_URL: this client's reply queue, on the reply allowlist;
- CLAUDE_RUNNER_SCHEMAS_DIR: shared/schemas (default: the one in this checkout);
- CLAUDE_RUNNER_EXPECTED_RESULT: the text the model is scripted to answer;
- CLAUDE_RUNNER_WORKFLOW (optional, default `implement`): a deployed workflow;
- CLAUDE_RUNNER_TEST_TIMEOUT (optional, default 180): seconds a run may take.

Every reply the client receives and every request it sends is checked against its JSON Schema
(with format checking) when the `jsonschema` package is installed.
"""

from __future__ import annotations

import json
import os
import pathlib
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

REQUESTS_QUEUE_URL = os.environ.get("CLAUDE_RUNNER_REQUESTS_QUEUE_URL", "")
if not REQUESTS_QUEUE_URL:
    pytest.skip(
        "CLAUDE_RUNNER_REQUESTS_QUEUE_URL is unset: these tests need a live local stack "
        "(the Rust end-to-end test starts one and runs them with its coordinates)",
        allow_module_level=True,
    )

import boto3

from claude_runner_genie import ClaudeCodeTool, events

REPLY_QUEUE_URL = os.environ.get("CLAUDE_RUNNER_REPLY_QUEUE_URL", "")
SCHEMAS_DIR = pathlib.Path(
    os.environ.get("CLAUDE_RUNNER_SCHEMAS_DIR") or pathlib.Path(__file__).resolve().parents[3] / "shared" / "schemas"
)
WORKFLOW = os.environ.get("CLAUDE_RUNNER_WORKFLOW", "implement")
TIMEOUT = float(os.environ.get("CLAUDE_RUNNER_TEST_TIMEOUT", "180"))


class Contract:
    """The JSON Schemas of shared/schemas, with format checking; a no-op (with a warning) when
    `jsonschema` is not installed."""

    def __init__(self, schemas_dir: pathlib.Path) -> None:
        self.validators: dict[str, Any] | None = None
        try:
            import jsonschema  # type: ignore[import-untyped,unused-ignore]
        except ImportError:
            warnings.warn("jsonschema is not installed: messages are not checked against shared/schemas")
            return
        checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
        unchecked = {"date-time", "uuid", "uri"} - set(checker.checkers)
        if unchecked:
            warnings.warn(
                f"formats {sorted(unchecked)} are not checked "
                "(install rfc3339-validator and rfc3986-validator beside jsonschema)"
            )
        self.validators = {}
        for name in sorted(set(events.SCHEMA_FILES.values())):
            schema = json.loads((schemas_dir / name).read_text())
            jsonschema.Draft202012Validator.check_schema(schema)
            self.validators[name] = jsonschema.Draft202012Validator(schema, format_checker=checker)

    def problems(self, event: dict[str, Any]) -> list[str]:
        """Why `event` breaks its type's schema (empty if it does not)."""
        name = events.SCHEMA_FILES.get(str(event.get("type")))
        if name is None:
            return [f"an event of unknown type {event.get('type')!r}"]
        if self.validators is None:
            return []
        return [
            f"{name}: {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in self.validators[name].iter_errors(event)
        ]


class Recorder:
    """Every request the client sends and every reply it receives, with what is wrong with them."""

    def __init__(self, contract: Contract) -> None:
        self.contract = contract
        self.sent: list[dict[str, Any]] = []
        self.replies: list[tuple[dict[str, Any], dict[str, str]]] = []
        self.problems: list[str] = []

    def on_send(self, event: dict[str, Any]) -> None:
        self.sent.append(event)
        self.problems += [f"request {event.get('id')}: {p}" for p in self.contract.problems(event)]

    def on_reply(self, event: dict[str, Any], attributes: dict[str, str]) -> None:
        self.replies.append((event, attributes))
        where = f"reply {event.get('id')} ({event.get('type')})"
        self.problems += [f"{where}: {p}" for p in self.contract.problems(event)]
        raw_data = event.get("data")
        data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
        if attributes.get(events.TYPE_ATTRIBUTE) != event.get("type"):
            self.problems.append(f"{where}: ce_type attribute is {attributes.get(events.TYPE_ATTRIBUTE)!r}")
        if data.get("correlation_id") is not None and attributes.get(events.CORRELATION_ATTRIBUTE) != data.get(
            "correlation_id"
        ):
            self.problems.append(f"{where}: correlation_id attribute differs from data.correlation_id")
        if data.get("run_id") is not None and event.get("subject") != data.get("run_id"):
            self.problems.append(f"{where}: subject {event.get('subject')!r} is not the run id")

    def types_for(self, correlation_id: str) -> list[str]:
        """The types of the distinct replies (by id: a reply may arrive twice) received for one
        request, in arrival order."""
        seen: dict[str, str] = {}
        for e, _ in self.replies:
            if isinstance(e.get("data"), dict) and e["data"].get("correlation_id") == correlation_id:
                seen.setdefault(str(e.get("id")), str(e.get("type")))
        return list(seen.values())

    def assert_valid(self) -> None:
        assert not self.problems, "messages break the contract:\n" + "\n".join(self.problems)


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract(SCHEMAS_DIR)


@pytest.fixture(scope="module")
def shared_tool() -> ClaudeCodeTool:
    """One client for the module, as in production: late replies of an earlier test's run are
    recognised as its own and deleted, not bounced between tests."""
    assert REPLY_QUEUE_URL, "CLAUDE_RUNNER_REPLY_QUEUE_URL must name the allowlisted reply queue"
    sqs = boto3.client(
        "sqs",
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL"),
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    )
    return ClaudeCodeTool(REQUESTS_QUEUE_URL, REPLY_QUEUE_URL, sqs_client=sqs, source="urn:genie:pytest")


@pytest.fixture
def recorder(contract: Contract) -> Recorder:
    return Recorder(contract)


@pytest.fixture
def tool(shared_tool: ClaudeCodeTool, recorder: Recorder) -> Iterator[ClaudeCodeTool]:
    shared_tool.on_send, shared_tool.on_reply = recorder.on_send, recorder.on_reply
    yield shared_tool
    shared_tool.on_send, shared_tool.on_reply = None, None


def test_run_returns_the_scripted_result_and_streams_every_frame(tool: ClaudeCodeTool, recorder: Recorder) -> None:
    expected = os.environ.get("CLAUDE_RUNNER_EXPECTED_RESULT")
    assert expected, "CLAUDE_RUNNER_EXPECTED_RESULT must hold the scripted answer"
    frames: list[dict[str, Any]] = []

    result = tool.run(WORKFLOW, "Answer with the scripted text", "main", on_frame=frames.append, timeout=TIMEOUT)

    assert result.status == "completed", result.to_text()
    assert result.ok
    assert result.result == expected
    assert result.error_code is None
    assert result.run_id is not None and uuid.UUID(result.run_id)
    assert result.raw["run_id"] == result.run_id and result.raw["log_key"]

    # The frames: every one once, gap-free from seq 1, all of this run, ending with `end`.
    assert result.stream_error is None, result.stream_error
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(1, len(frames) + 1)), seqs
    assert all(f["run_id"] == result.run_id for f in frames)
    assert any(f["kind"] == "result" for f in frames), [f["kind"] for f in frames]
    assert frames[-1]["kind"] == "end" and frames[-1]["status"] == "completed", frames[-1]

    # The replies: accepted and exactly one terminal one for our request, all within the contract.
    [request] = recorder.sent
    assert request["type"] == events.RUN_REQUESTED and request["data"]["reply_to"] == REPLY_QUEUE_URL
    correlation_id = request["data"]["correlation_id"]
    assert result.raw["correlation_id"] == correlation_id
    types = recorder.types_for(correlation_id)
    assert events.RUN_ACCEPTED in types, types
    assert [t for t in types if t in events.TERMINAL_TYPES] == ["dev.claude-runner.run.completed.v1"], types
    assert events.RUN_REJECTED not in types, types
    recorder.assert_valid()


def test_an_unknown_workflow_is_a_failed_result_with_its_code(tool: ClaudeCodeTool, recorder: Recorder) -> None:
    result = tool.run("no-such-workflow", "Anything", "main", timeout=TIMEOUT)

    assert not result.ok
    assert result.status == "failed", result.to_text()
    assert result.error_code == "unknown_workflow", result.to_text()
    assert result.run_id is None
    [request] = recorder.sent
    assert result.raw["request_id"] == request["id"]
    assert result.raw["request_type"] == events.RUN_REQUESTED
    assert result.raw["correlation_id"] == request["data"]["correlation_id"]
    assert "unknown_workflow" in result.to_text()
    assert recorder.types_for(request["data"]["correlation_id"]) == [events.RUN_REJECTED]
    recorder.assert_valid()


def test_the_definition_names_the_tool_and_requires_its_arguments() -> None:
    definition = ClaudeCodeTool.definition()

    assert definition["name"] == "claude_code_workflow" == ClaudeCodeTool.name
    assert definition["description"]
    schema = definition["input_schema"]
    assert schema["type"] == "object"
    assert sorted(schema["required"]) == ["branch", "message", "workflow"]
    assert {"workflow", "message", "branch", "max_turns", "session_id"} <= set(schema["properties"])
    assert "on_frame" not in schema["properties"] and "timeout" not in schema["properties"]
    assert ClaudeCodeTool.definition(["implement", "review"])["input_schema"]["properties"]["workflow"]["enum"] == [
        "implement",
        "review",
    ]
    try:
        import jsonschema  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid({"workflow": "implement", "message": "Add a test", "branch": "main"})
    assert not validator.is_valid({"workflow": "implement", "message": "Add a test"})
