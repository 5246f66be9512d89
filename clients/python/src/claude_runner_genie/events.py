"""The CloudEvents of claude-runner's queue contract (docs/genie.md, shared/schemas/).

Every message is a CloudEvents 1.0 event in structured JSON mode. These helpers build the two
requests and name the reply types; they do no I/O.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Final

SPECVERSION: Final = "1.0"

RUN_REQUESTED: Final = "dev.claude-runner.run.requested.v1"
CANCEL_REQUESTED: Final = "dev.claude-runner.cancel.requested.v1"

RUN_ACCEPTED: Final = "dev.claude-runner.run.accepted.v1"
RUN_STARTED: Final = "dev.claude-runner.run.started.v1"
RUN_REJECTED: Final = "dev.claude-runner.run.rejected.v1"

TERMINAL_STATUSES: Final = ("completed", "failed", "cancelled", "timed_out")
#: Each terminal reply type and the run status it reports.
TERMINAL_TYPES: Final[dict[str, str]] = {f"dev.claude-runner.run.{s}.v1": s for s in TERMINAL_STATUSES}

#: The JSON Schema (file in shared/schemas/) of each event type.
SCHEMA_FILES: Final[dict[str, str]] = {
    RUN_REQUESTED: "run-requested.v1.json",
    CANCEL_REQUESTED: "cancel-requested.v1.json",
    RUN_ACCEPTED: "run-accepted.v1.json",
    RUN_STARTED: "run-started.v1.json",
    RUN_REJECTED: "run-rejected.v1.json",
    **{t: "run-finished.v1.json" for t in TERMINAL_TYPES},
}

#: The SQS message attribute that carries the correlation id, on requests and replies.
CORRELATION_ATTRIBUTE: Final = "correlation_id"
#: The SQS message attribute that carries a reply's CloudEvents type.
TYPE_ATTRIBUTE: Final = "ce_type"


def new_id() -> str:
    """A fresh event or correlation id."""
    return str(uuid.uuid4())


def now() -> str:
    """The current time in RFC 3339 (UTC, milliseconds, `Z`)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cloud_event(
    event_type: str,
    source: str,
    data: dict[str, Any],
    *,
    event_id: str | None = None,
    subject: str | None = None,
) -> dict[str, Any]:
    """A structured-mode CloudEvent with a fresh `id` (unless given) and the current `time`."""
    event: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": event_id or new_id(),
        "source": source,
        "type": event_type,
        "time": now(),
        "datacontenttype": "application/json",
        "data": data,
    }
    if subject is not None:
        event["subject"] = subject
    return event


def run_requested(
    source: str,
    *,
    workflow: str,
    message: str,
    branch: str,
    max_turns: int | None = None,
    session_id: str | None = None,
    repository_url: str | None = None,
    metadata: dict[str, Any] | None = None,
    max_budget_usd: float | None = None,
    reply_to: str | None = None,
    correlation_id: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """A `run.requested.v1` event; optional fields left as None are omitted."""
    data: dict[str, Any] = {"workflow": workflow, "message": message, "branch": branch}
    optional: dict[str, Any] = {
        "max_turns": max_turns,
        "session_id": session_id,
        "repository_url": repository_url,
        "metadata": metadata,
        "max_budget_usd": max_budget_usd,
        "reply_to": reply_to,
        "correlation_id": correlation_id,
    }
    data.update({k: v for k, v in optional.items() if v is not None})
    return cloud_event(RUN_REQUESTED, source, data, event_id=event_id)


def cancel_requested(
    source: str,
    *,
    run_id: str,
    reply_to: str | None = None,
    correlation_id: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """A `cancel.requested.v1` event for `run_id` (the run id is also the event's `subject`)."""
    data: dict[str, Any] = {"run_id": run_id}
    if reply_to is not None:
        data["reply_to"] = reply_to
    if correlation_id is not None:
        data["correlation_id"] = correlation_id
    return cloud_event(CANCEL_REQUESTED, source, data, event_id=event_id, subject=run_id)
