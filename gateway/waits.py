"""Holding an HTTP answer until a job ends, for clients that wait on one call instead of polling.

A waiting request holds a worker thread (the gRPC stubs are blocking), so waits run on their own bounded
thread limiters, apart from the pool that serves every other route.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import grpc
from fastapi import Request

# Requests holding a thread while they wait, per kind; past this an import answers at once (202) and a
# download waits for a free place.
MAX_WAITERS = 16


def last_message(call: Any, ended: Callable[[Any], bool]) -> Any | None:
    """Reads a watch stream (opened with a deadline) until `ended(msg)`; the last message, or None.

    The deadline running out is the expected way a long job leaves this, not an error.
    """
    last = None
    try:
        for msg in call:
            last = msg
            if ended(msg):
                break
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    finally:
        call.cancel()
    return last


def limiter(request: Request, kind: str) -> anyio.CapacityLimiter:
    """The app's limiter for `kind`, made on first use (an anyio limiter needs a running event loop)."""
    limiters: dict[str, anyio.CapacityLimiter] = request.app.state.wait_limiters
    if kind not in limiters:
        limiters[kind] = anyio.CapacityLimiter(MAX_WAITERS)
    return limiters[kind]


async def last_within(request: Request, kind: str, call: Any, ended: Callable[[Any], bool]) -> Any | None:
    """`last_message(call, ended)` on a thread of `kind`'s limiter (waiting for a place when all are taken)."""
    return await anyio.to_thread.run_sync(last_message, call, ended, limiter=limiter(request, kind))
