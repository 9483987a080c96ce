"""What the gateway accepts: bounds on every value, the JSON body rules, and the body size limit.

Bad input is answered here, with a 4xx naming the field, before it can reach gRPC: an integer outside its
proto type, a string no real request needs that long (it would end up in gRPC metadata or a status message),
a lone UTF-16 surrogate (not encodable as the UTF-8 protobuf strings are), a body that is not JSON (415) or
is too large (413).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ferry.limits import MAX_ENTRIES, MAX_KEY, MAX_NAME, MAX_SPEC, MAX_TEXT, PREFIX, short  # noqa: F401 - re-exported
from gateway.errors import status_body

# Integer ranges of the proto fields the values end up in.
INT32_MAX = 2**31 - 1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# String lengths (characters). Real values are far shorter; past these a request is malformed.
MAX_DATASET_NAME = 1024  # a Hub repo id (at most 96) or a local directory / file path under FERRY_LOCAL_SOURCE_DIRS
MAX_REPO_ID = 200  # a Hub repo id, as a filter or a template's repo
MAX_JOB_ID = 64  # import ids (UUIDs), export ids, template ids
MAX_SPLIT = 200  # split and config (subset) names
MAX_FILENAME = 1000  # export output names and exported file names
MAX_QUERY = 500  # free-text search queries
MAX_TOKEN = 1000  # page tokens
MAX_WORD = 100  # short query words: sort keys, categories, languages, format names, training types
MAX_HF_TOKEN = 512
MAX_IDEMPOTENCY_KEY = 255

# Largest request body. The largest real one (an import with 100 mappings, or an export with a 64 KiB system
# message and its parameters) is well under 100 KiB; 1 MiB leaves room without letting a client make the
# gateway buffer an unbounded body. Past it: 413, answered before the rest of the body is read.
MAX_BODY_BYTES = 1024 * 1024
# Largest request line plus headers h11 buffers. Its 16 KiB default refuses (400, then a reset that can race
# the answer) a GET /api/datasets/{id}/export whose query carries a system_message near MAX_TEXT, percent-encoded;
# the same bound as a body keeps both forms of the request valid.
MAX_HEAD_BYTES = MAX_BODY_BYTES

DatasetIdPath = Annotated[int, Path(ge=INT64_MIN, le=INT64_MAX, description="Dataset id")]
JobIdPath = Annotated[str, Path(max_length=MAX_JOB_ID)]
# X-HF-Token: visible ASCII only (gRPC metadata takes nothing else), empty = no token.
HF_TOKEN_PATTERN = r"^[\x21-\x7E]*$"
def check_text(loc: tuple[str, ...], value: str, max_length: int) -> None:
    """422 naming `loc` when `value` is longer than `max_length`."""
    if len(value) > max_length:
        raise RequestValidationError([{"loc": loc, "type": "string_too_long",
                                       "msg": f"String should have at most {max_length} characters"}])


JSON_TYPE = re.compile(r"^application/([\w.+-]+\+)?json\s*(;.*)?$", re.IGNORECASE)


def _surrogate_at(value: Any, loc: tuple[str, ...]) -> tuple[str, ...] | None:
    """Where in a parsed JSON document a string (or key) holds a lone UTF-16 surrogate, if anywhere."""
    if isinstance(value, str):
        return loc if _has_surrogate(value) else None
    if isinstance(value, dict):
        for k, v in value.items():
            key = str(k)
            if _has_surrogate(key):
                return (*loc, key.encode("utf-8", "replace").decode()[:PREFIX])
            found = _surrogate_at(v, (*loc, key))
            if found is not None:
                return found
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = _surrogate_at(v, (*loc, str(i)))
            if found is not None:
                return found
    return None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


async def check_json_body(request: Request) -> None:
    """Routes taking a JSON body: a body of another media type is 415, a lone surrogate in it 422 naming where.

    FastAPI has read (and bounded, see BodyLimit) the body already; a body that is not valid JSON it answers
    itself with a 422.
    """
    route = request.scope.get("route")
    if getattr(route, "body_field", None) is None:
        return
    body = await request.body()
    if not body:
        return
    if not JSON_TYPE.match(request.headers.get("content-type", "")):
        raise HTTPException(status_code=415, detail="the request body must be JSON: send Content-Type: "
                            "application/json")
    try:
        data = await request.json()
    except ValueError:
        return
    loc = _surrogate_at(data, ("body",))
    if loc is not None:
        raise RequestValidationError([{"loc": loc, "type": "string_unicode",
                                       "msg": "String holds a lone UTF-16 surrogate (not valid Unicode text)"}])


class BodyLimit:
    """ASGI middleware: a body over MAX_BODY_BYTES is 413, by its Content-Length before anything is read, or
    as soon as the bytes streamed so far pass the limit (chunked bodies, or a Content-Length that lies)."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.detail = f"the request body is larger than {max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    response = JSONResponse(status_code=413, content=status_body(413, self.detail),
                                            headers={"Connection": "close"})
                    await response(scope, receive, send)
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # FastAPI passes an HTTPException raised while it reads the body on to the app's handler.
                    raise HTTPException(status_code=413, detail=self.detail)
            return message

        await self.app(scope, limited, send)
