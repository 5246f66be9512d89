"""Follows one run's frames over claude-runner's WebSocket API (shared/asyncapi.yaml).

Connects to `<url>?token=<token>`, sends `subscribe`, reassembles `frame_part` messages, hands
each frame to a callback once and in `seq` order, and stops after the `end` frame. A dropped
connection is reopened and resubscribed after the last `seq` handled.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

log = logging.getLogger(__name__)

#: A callback that receives each frame (the `frame` message as a dict).
FrameCallback = Callable[[dict[str, Any]], None]


def url_with_token(url: str, token: str) -> str:
    """`url` with `token=<token>` added to its query string."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}token={quote(token, safe='')}"


class FrameStream:
    """Streams one run's frames to `on_frame` from a background thread.

    `on_frame` is called on that thread, once per frame, in `seq` order, ending with the frame whose
    `kind` is `end`. `error` holds why the stream stopped early, if it did.
    """

    def __init__(
        self,
        url: str,
        token: str,
        run_id: str,
        on_frame: FrameCallback,
        *,
        max_reconnects: int = 5,
        open_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.run_id = run_id
        self._connect_url = url_with_token(url, token)
        self._on_frame = on_frame
        self._max_reconnects = max_reconnects
        self._open_timeout = open_timeout
        self._stop = threading.Event()
        self._done = threading.Event()
        self._parts: dict[int, dict[int, str]] = {}
        self.last_seq = 0
        self.ended = False
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"claude-runner-frames-{run_id}", daemon=True)

    def start(self) -> None:
        """Connects and streams on a background thread."""
        self._thread.start()

    def wait(self, timeout: float) -> bool:
        """Waits at most `timeout` seconds for the stream to finish; true once it has."""
        return self._done.wait(max(0.0, timeout))

    def stop(self, join_timeout: float = 5.0) -> None:
        """Stops streaming (the thread notices within half a second) and waits for it briefly."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(join_timeout)

    @property
    def done(self) -> bool:
        """True once the stream has ended, failed or been stopped."""
        return self._done.is_set()

    def _run(self) -> None:
        try:
            self._follow()
        except Exception as err:  # the callback or a protocol surprise: never kill the caller
            log.exception("frame stream for run %s failed", self.run_id)
            self.error = self.error or f"{type(err).__name__}: {err}"
        finally:
            self._done.set()

    def _follow(self) -> None:
        failures = 0
        while not self._stop.is_set() and not self.ended and self.error is None:
            try:
                progressed = self._connection()
            except (OSError, TimeoutError, WebSocketException) as err:
                progressed = False
                reason = f"{type(err).__name__}: {err}"
            else:
                reason = "the server closed the connection before the end frame"
            if self.ended or self.error is not None or self._stop.is_set():
                return
            failures = 0 if progressed else failures + 1
            if failures > self._max_reconnects:
                self.error = f"WebSocket stream gave up after {failures} failed connections: {reason}"
                return
            log.info("frame stream for run %s reconnecting after seq %d: %s", self.run_id, self.last_seq, reason)
            self._stop.wait(min(0.25 * 2**failures, 5.0))

    def _connection(self) -> bool:
        """One connection: subscribe after the last seq handled and read until the end or a drop.
        True if it delivered at least one frame."""
        progressed = False
        with connect(self._connect_url, open_timeout=self._open_timeout, close_timeout=2) as ws:
            ws.send(json.dumps({"action": "subscribe", "run_id": self.run_id, "after_seq": self.last_seq}))
            while not self._stop.is_set():
                try:
                    text = ws.recv(timeout=0.5)
                except TimeoutError:
                    continue
                if isinstance(text, bytes):
                    text = text.decode("utf-8")
                if self._message(text):
                    progressed = True
                if self.ended or self.error is not None:
                    return progressed
        return progressed

    def _message(self, text: str) -> bool:
        """Handles one WebSocket message; true if it completed a frame."""
        message = json.loads(text)
        kind = message.get("type")
        if kind == "frame":
            return self._frame(message)
        if kind == "frame_part":
            return self._part(message)
        if kind == "error":
            self.error = f"{message.get('code')}: {message.get('message')}"
        # `subscribed` and `heartbeat` need nothing.
        return False

    def _part(self, message: dict[str, Any]) -> bool:
        seq, part, parts = int(message["seq"]), int(message["part"]), int(message["parts"])
        if seq <= self.last_seq:
            return False
        pieces = self._parts.setdefault(seq, {})
        pieces[part] = message["data"]
        if len(pieces) < parts:
            return False
        del self._parts[seq]
        frame = json.loads("".join(pieces[i] for i in range(1, parts + 1)))
        return self._frame(frame)

    def _frame(self, frame: dict[str, Any]) -> bool:
        seq = int(frame["seq"])
        if seq <= self.last_seq:
            return False  # already handled (a replay after a reconnect)
        self.last_seq = seq
        self._parts = {s: p for s, p in self._parts.items() if s > seq}
        self._on_frame(frame)
        if frame.get("kind") == "end":
            self.ended = True
        return True
