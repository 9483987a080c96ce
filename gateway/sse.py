"""A gRPC watch stream as Server-Sent Events: one `data: {json}` per message until a terminal one.

sse-starlette does the protocol: the keep-alive comment (`: keep-alive`) after KEEPALIVE_SECONDS of quiet, so
idle proxies keep the connection, and the end of the stream as soon as the client disconnects, which cancels
the watch upstream (and frees the catalog's watch behind it).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from fastapi import HTTPException
from sse_starlette import EventSourceResponse, ServerSentEvent

from ferry.jobs import TERMINAL_STATUSES

KEEPALIVE_SECONDS = 15.0
_END = object()


def _event(body: dict[str, Any], event: str | None = None) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(body), event=event, sep="\n")


def watch_as_sse(call: Any, to_json: Callable[[Any], dict[str, Any]], what: str) -> EventSourceResponse:
    """Relay `call` (a server-streaming gRPC call) as SSE; `to_json` turns a message into the event body.

    The first message is read before answering, so an unknown id or a backend that is
    down becomes an HTTP status instead of an event stream that fails at once.
    """
    try:
        first = next(call)
    except StopIteration:
        raise HTTPException(status_code=404, detail=f"{what} not found") from None
    except grpc.RpcError:
        call.cancel()
        raise

    async def events() -> AsyncIterator[ServerSentEvent]:
        inbox = _pump(call)
        try:
            msg = first
            while msg is not _END:
                if isinstance(msg, grpc.RpcError):
                    raise msg
                body = to_json(msg)
                yield _event(body)
                if body.get("status") in TERMINAL_STATUSES:
                    return
                msg = await inbox.get()
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                yield _event({"status": "error", "error": exc.details() or exc.code().name, "stream_error": True},
                             event="error")
        finally:
            call.cancel()  # ends the watch upstream, and with it the reader thread

    return _response(events())


def _pump(call: Any) -> asyncio.Queue[Any]:
    """Reads the blocking gRPC stream in a thread of its own and hands each message to the event loop.

    A thread, not anyio's pool: a watch can stay open for hours, and the pool's 40 threads also serve every
    sync route. (Replaced by a grpc.aio stream once the gateway watches jobs at the catalog.)
    """
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Any] = asyncio.Queue()

    def run() -> None:
        item: Any = _END
        try:
            for msg in call:
                loop.call_soon_threadsafe(inbox.put_nowait, msg)
        except grpc.RpcError as exc:
            item = exc
        try:
            loop.call_soon_threadsafe(inbox.put_nowait, item)
        except RuntimeError:
            pass  # the loop is gone (shutdown)

    threading.Thread(target=run, name="sse-watch", daemon=True).start()
    return inbox


async def follow_as_sse(call: Any, to_json: Callable[[Any], dict[str, Any]], what: str) -> EventSourceResponse:
    """Relay `call` (a grpc.aio server-streaming call) as SSE, waiting on the event loop rather than a thread.

    As watch_as_sse, the first message is read before answering: an unknown id is a 404, a backend down a 503.
    """
    try:
        first = await call.read()
    except grpc.RpcError:
        call.cancel()
        raise
    if first is grpc.aio.EOF:
        raise HTTPException(status_code=404, detail=f"{what} not found")

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

    return _response(events())


def _response(events: AsyncIterator[ServerSentEvent]) -> EventSourceResponse:
    return EventSourceResponse(
        events, ping=KEEPALIVE_SECONDS, sep="\n",
        ping_message_factory=lambda: ServerSentEvent(comment="keep-alive", sep="\n"),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
