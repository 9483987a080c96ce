"""A grpc.aio watch stream as Server-Sent Events: one `data: {json}` per message until a terminal one.

sse-starlette does the protocol: the keep-alive comment (`: keep-alive`) after KEEPALIVE_SECONDS of quiet, so
idle proxies keep the connection, and the end of the stream as soon as the client disconnects, which cancels
the watch upstream (and frees the catalog's watch behind it).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from fastapi import HTTPException
from sse_starlette import EventSourceResponse, ServerSentEvent

from ferry.jobs import TERMINAL_STATUSES

KEEPALIVE_SECONDS = 15.0


def _event(body: dict[str, Any], event: str | None = None) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(body), event=event, sep="\n")


async def follow_as_sse(call: Any, to_json: Callable[[Any], dict[str, Any]], what: str,
                        check: Callable[[Any], None] = lambda _msg: None) -> EventSourceResponse:
    """Relay `call` (a grpc.aio server-streaming call) as SSE; `to_json` turns a message into the event body.

    The first message is read (and given to `check`, which may raise) before answering, so an unknown id
    becomes a 404 and a backend that is down a 503, not an event stream that fails at once.
    """
    try:
        first = await call.read()
        if first is grpc.aio.EOF:
            raise HTTPException(status_code=404, detail=f"{what} not found")
        check(first)
    except BaseException:
        call.cancel()
        raise

    async def events() -> AsyncIterator[ServerSentEvent]:
        msg = first
        try:
            while msg is not grpc.aio.EOF:
                body = to_json(msg)
                yield _event(body)
                if body.get("status") in TERMINAL_STATUSES:
                    return
                msg = await call.read()
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                yield _event({"status": "error", "error": exc.details() or exc.code().name, "stream_error": True},
                             event="error")
        finally:
            call.cancel()  # the client left or the job ended: the catalog's watch ends with it

    return EventSourceResponse(
        events(), ping=KEEPALIVE_SECONDS, sep="\n",
        ping_message_factory=lambda: ServerSentEvent(comment="keep-alive", sep="\n"),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
