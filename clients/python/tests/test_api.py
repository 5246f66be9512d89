"""`ClaudeRunnerApi` against a live local stack's HTTP API.

The Rust end-to-end test that runs test_tool.py also sets:

- CLAUDE_RUNNER_API_URL: the stack's HTTP API;
- CLAUDE_RUNNER_API_KEY: an API key of the Genie queue's owner.
"""

from __future__ import annotations

import os
import uuid

import pytest

API_URL = os.environ.get("CLAUDE_RUNNER_API_URL", "")
if not API_URL:
    pytest.skip(
        "CLAUDE_RUNNER_API_URL is unset: these tests need a live local stack "
        "(the Rust end-to-end test starts one and runs them with its coordinates)",
        allow_module_level=True,
    )

from claude_runner_genie import ApiError, ClaudeRunnerApi


def test_a_memory_added_is_found_by_searching_for_it() -> None:
    api = ClaudeRunnerApi(API_URL, os.environ["CLAUDE_RUNNER_API_KEY"])
    marker = uuid.uuid4().hex
    text = f"Run the zebra-{marker} migration check before pushing: CI rejects unchecked migrations."

    entry = api.add_memory(text, kind="decision", fields={"source": "pytest"})

    assert uuid.UUID(entry["memory_id"])
    assert (entry["text"], entry["kind"], entry["status"]) == (text, "decision", "accepted"), entry
    assert entry["repository_url"], entry

    found = api.search_memory(f"zebra-{marker} migration check", repository=entry["repository_url"], limit=5)
    assert entry["memory_id"] in [e["memory_id"] for e in found], found
    assert all(e["kind"] == "decision" for e in api.search_memory(kind="decision", limit=100))

    with pytest.raises(ApiError) as refused:
        api.add_memory("A note of no kind.", kind="no-such-kind")
    assert refused.value.http_status == 400 and refused.value.code, refused.value
