"""The one gRPC-status-to-HTTP mapping, as google/rpc/code.proto documents it."""

from __future__ import annotations

from typing import Any

import grpc
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)


def error_body(code: grpc.StatusCode, message: str) -> dict[str, object]:
    return {"detail": message, "code": code.name}


async def rpc_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, grpc.RpcError)
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else ""
    if code == grpc.StatusCode.UNAVAILABLE and not details:
        details = "a backend service is unavailable"
    return JSONResponse(status_code=http_status(code), content=error_body(code, details or code.name))


def _loc(loc: list[str]) -> str:
    parts = list(loc)
    return ".".join(parts[1:] if len(parts) > 1 and parts[0] in ("body", "query", "path", "header") else parts)


async def validation_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """422 whose `detail` is one readable string naming the field (clients show `detail` as text), with the
    per-field list in `details` ({loc, msg, type}; the offending input is left out, so NaN or a lone
    surrogate cannot break the answer)."""
    assert isinstance(exc, RequestValidationError)
    details: list[dict[str, Any]] = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
                                      "type": str(e.get("type", ""))} for e in exc.errors()]
    text = "; ".join(f"{_loc(d['loc'])}: {d['msg']}" if d["loc"] else d["msg"] for d in details[:5])
    body = {"detail": text or "invalid request", "code": grpc.StatusCode.INVALID_ARGUMENT.name, "details": details}
    return JSONResponse(status_code=422, content=body)
