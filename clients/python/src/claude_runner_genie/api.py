"""`ClaudeRunnerApi`: calls to claude-runner's HTTP API that the queues do not carry.

Today that is memory: what earlier runs of a repository taught (decisions, failures, patterns,
learnings), to read before a run and to add to after one. Requests carry the caller's API key
(`x-api-key`); an error answer (`{"error": {"code", "message"}}`) raises `ApiError`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

#: The kinds of memory entry.
MEMORY_KINDS = ("decision", "failure", "pattern", "learning")


class ApiError(Exception):
    """The API refused a call (its error `code` and `message`), or did not answer."""

    def __init__(self, code: str, message: str, http_status: int | None = None) -> None:
        super().__init__(f"{code}: {message}" if http_status is None else f"{code} (HTTP {http_status}): {message}")
        #: The API's error code (e.g. `memory_not_found`, `invalid_memory`), `http_<status>` when
        #: the answer named none, or `api_unreachable` when there was no answer.
        self.code = code
        self.message = message
        #: The answer's HTTP status; None when the API did not answer.
        self.http_status = http_status

    @property
    def retryable(self) -> bool:
        """True for a failure that may pass on its own (no answer, or a 5xx)."""
        return self.http_status is None or self.http_status >= 500


class ClaudeRunnerApi:
    """claude-runner's HTTP API, as the owner of `api_key`.

    `base_url` is the API's URL (the stack's `HttpApiUrl`); `timeout` bounds each call, in seconds.
    """

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0) -> None:
        if not base_url:
            raise ValueError("base_url must not be empty")
        if not api_key:
            raise ValueError("api_key must not be empty")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    # -- memory ------------------------------------------------------------------------------

    def search_memory(
        self,
        query: str | None = None,
        repository: str | None = None,
        kind: str | None = None,
        limit: int = 20,
    ) -> list[dict[str, Any]]:
        """Memory entries, the most similar to `query` first (the most recently seen first
        without it), optionally of one `repository` (its URL, as runs name it) and one `kind`
        (decision, failure, pattern or learning); at most `limit` (1 to 100).

        Each entry is a dict with memory_id, repository_url, kind, status (proposed, accepted or
        retired), text, fields, workflow, epic_id, run_id, session_id, occurrences, first_seen and
        last_seen."""
        params: dict[str, str] = {"limit": str(limit)}
        if query is not None:
            params["q"] = query
        if repository is not None:
            params["repository"] = repository
        if kind is not None:
            params["kind"] = kind
        answer = self._call("GET", "/agent/claude-code/memory", params=params)
        entries = answer.get("memory") if isinstance(answer, dict) else None
        if not isinstance(entries, list):
            raise ApiError("bad_response", "the API's answer has no memory list")
        return entries

    def add_memory(
        self,
        text: str,
        repository: str | None = None,
        kind: str = "learning",
        fields: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Records `text` (a lesson a later run should know) as a memory entry of `kind` about
        `repository` (the deployment's default repository when None), with optional structured
        `fields`. It is accepted at once; returns the new entry."""
        if not text.strip():
            raise ValueError("text must not be empty")
        body: dict[str, Any] = {"text": text, "kind": kind}
        if repository is not None:
            body["repository_url"] = repository
        if fields is not None:
            body["fields"] = dict(fields)
        answer = self._call("POST", "/agent/claude-code/memory", body=body)
        if not isinstance(answer, dict) or "memory_id" not in answer:
            raise ApiError("bad_response", "the API's answer is not a memory entry")
        return answer

    # -- internals ---------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """One call: the parsed JSON of a 2xx answer (None when it has no body)."""
        url = self.base_url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        headers = {"x-api-key": self.api_key, "accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            raise _api_error(err.code, err.read()) from None
        except (urllib.error.URLError, OSError) as err:
            raise ApiError("api_unreachable", f"the API did not answer: {err}") from err
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as err:
            raise ApiError("bad_response", f"the API's answer is not JSON: {err}") from err


def _api_error(status: int, raw: bytes) -> ApiError:
    """The error an error answer describes."""
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return ApiError(
        str(code) if code else f"http_{status}",
        str(message) if message else raw.decode("utf-8", "replace")[:500],
        status,
    )
