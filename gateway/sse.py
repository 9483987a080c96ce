"""A gRPC watch stream as Server-Sent Events: one `data: {json}` per message until a terminal one.

Watches only send changes, so a job that waits, or works without visible progress, leaves the connection
silent: idle proxies cut it, and a client that has gone away goes unnoticed while the watch (and a catalog
thread behind it) stays open. So a comment line (`: keep-alive`) goes out after KEEPALIVE_SECONDS of quiet, and
the stream ends as soon as the client is seen to have disconnected, cancelling the watch upstream.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from fastapi import HTTPException, Request
from fastapi.responses import StreamingResponse

TERMINAL = ("complete", "error", "cancelled")
KEEPALIVE_SECONDS = 15.0
_END = object()


def watch_as_sse(call: Any, to_json: Callable[[Any], dict[str, Any]], what: str, request: Request
                 ) -> StreamingResponse:
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

    async def events() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[Any] = asyncio.Queue()

        def pump() -> None:
            """Reads the blocking gRPC stream in a thread and hands each message to the event loop."""
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

        reader: threading.Thread | None = None
        try:
            msg = first
            while True:
                body = to_json(msg)
                yield f"data: {json.dumps(body)}\n\n".encode()
                if body.get("status") in TERMINAL:
                    return
                if reader is None:
                    reader = threading.Thread(target=pump, name="sse-watch", daemon=True)
                    reader.start()
                while True:
                    try:
                        msg = await asyncio.wait_for(inbox.get(), KEEPALIVE_SECONDS)
                        break
                    except TimeoutError:
                        if await request.is_disconnected():
                            return
                        yield b": keep-alive\n\n"
                if msg is _END or await request.is_disconnected():
                    return
                if isinstance(msg, grpc.RpcError):
                    raise msg
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            err = {"status": "error", "error": exc.details() or exc.code().name, "stream_error": True}
            yield f"event: error\ndata: {json.dumps(err)}\n\n".encode()
        finally:
            call.cancel()  # ends the watch upstream, and with it the reader thread

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
