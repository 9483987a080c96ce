"""Following a job at the catalog: holding an HTTP answer until it ends, and its Server-Sent Events.

Imports and exports are catalog jobs, so the gateway watches them where they live (CatalogService.WatchJob)
over grpc.aio: an open watch waits on the event loop, not in a thread, and no service relays it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import grpc
from fastapi import HTTPException, Request
from sse_starlette import EventSourceResponse

from ferry import wire
from ferry.catalog.v1 import catalog_pb2 as cpb
from ferry.jobs import Job, JobKind
from gateway.sse import follow_as_sse

# Answers held open waiting for a job to end, per kind and gateway: each holds one of the catalog's open watches
# (FERRY_CATALOG_MAX_WATCHERS). Past this an import answers at once (202) and a download waits for a free place.
MAX_WAITERS = 16


def limiter(request: Request, kind: str) -> anyio.CapacityLimiter:
    """The app's limiter for `kind`, made on first use (an anyio limiter needs a running event loop)."""
    limiters: dict[str, anyio.CapacityLimiter] = request.app.state.wait_limiters
    if kind not in limiters:
        limiters[kind] = anyio.CapacityLimiter(MAX_WAITERS)
    return limiters[kind]


def _watch(request: Request, job_id: str, timeout: float | None = None) -> Any:
    return request.app.state.clients.catalog_aio().WatchJob(cpb.WatchJobRequest(job_id=job_id), timeout=timeout)


async def last_state(request: Request, kind: JobKind, job_id: str, wait: float) -> Job | None:
    """The job's state when it ended, or its last state seen within `wait` seconds (None: none seen).

    The deadline running out is the expected way a long job leaves this, not an error.
    """
    async with limiter(request, kind.value):
        call = _watch(request, job_id, wait)
        last: Job | None = None
        try:
            async for resp in call:
                last = wire.job_from_pb(resp.job)
                if last.phase.terminal:
                    break
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
        finally:
            call.cancel()
        return last


async def events(request: Request, kind: JobKind, job_id: str, to_json: Callable[[Job], dict[str, Any]]
                 ) -> EventSourceResponse:
    """The job's Server-Sent Events: `to_json(job)` per change until it ends; 404 for a job of another kind."""
    what = f"{kind.value.lower()} {job_id}"

    def body(resp: cpb.WatchJobResponse) -> dict[str, Any]:
        return to_json(wire.job_from_pb(resp.job))

    def of_kind(resp: cpb.WatchJobResponse) -> None:
        if wire.job_kind_from_pb(resp.job.kind) is not kind:
            raise HTTPException(status_code=404, detail=f"{what} not found")

    return await follow_as_sse(_watch(request, job_id), body, what, check=of_kind)
