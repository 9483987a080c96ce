"""What every service's `server.start(cfg, ...)` returns: its running gRPC server and its core.

The three services have the same shape (services/<name>/: config.py, core.py, servicer.py, server.py,
__main__.py), and a test fixture, a benchmark or a __main__ handles any of them the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ferry.grpcserver import RunningServer

C = TypeVar("C")


@dataclass
class Service(Generic[C]):
    server: RunningServer
    core: C
    # Run once after the server has stopped (drained): what must outlive every in-flight call, e.g. a database.
    after_stop: list[Callable[[], None]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.port

    def stop(self, grace: float | None = None) -> None:
        """Stop serving (in-flight calls get `grace` seconds, the configured grace by default), then close."""
        self.server.stop(grace)
        self.close()

    def close(self) -> None:
        hooks, self.after_stop = self.after_stop, []
        for hook in hooks:
            hook()
