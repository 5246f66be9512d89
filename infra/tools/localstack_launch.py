"""Starts LocalStack in host mode (no Docker) for `cargo xtask test --localstack`.

LocalStack 4.8.1's hypercorn server stops its asyncio loop from the shutdown thread without
waking it, so after SIGTERM the loop can sleep in epoll forever with its socket already closed.
Waking the loop when it is asked to stop makes SIGTERM reliable.
"""
from localstack.runtime.server import hypercorn as server

_stop = server.HypercornRuntimeServer.shutdown


def _stop_and_wake(self):
    _stop(self)
    self.loop.call_soon_threadsafe(self.loop.stop)


server.HypercornRuntimeServer.shutdown = _stop_and_wake

from localstack.runtime.main import main  # noqa: E402  (after the patch, on purpose)

main()
