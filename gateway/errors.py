"""The one gRPC-status-to-HTTP mapping, as google/rpc/code.proto documents it."""

from __future__ import annotations

from typing import Any

import grpc
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from ferry.rpcerrors import read_status

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


# The `code` of an answer the gateway gives itself (not relayed from a gRPC status), by HTTP status.
HTTP_CODE: dict[int, str] = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                             404: "NOT_FOUND", 405: "UNIMPLEMENTED", 409: "ABORTED", 413: "RESOURCE_EXHAUSTED",
                             415: "INVALID_ARGUMENT", 422: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED",
                             502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
# A backend's message is relayed as it is, up to this many characters.
MAX_DETAIL = 2000


def status_body(status: int, detail: str) -> dict[str, object]:
    return {"detail": detail, "code": HTTP_CODE.get(status, "UNKNOWN")}


async def http_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """The gateway's own HTTP errors (401, 404, 413, 415, 504, ...) in the one error shape."""
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return JSONResponse(status_code=exc.status_code, content=status_body(exc.status_code, detail),
                        headers=exc.headers)


def _bounded(text: str) -> str:
    return text[:MAX_DETAIL] + "..." if len(text) > MAX_DETAIL else text


# At most this many of a status's field violations are relayed (Ferry's services send one).
MAX_VIOLATIONS = 20


async def rpc_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """A backend's status in the one error shape. A 4xx whose status names fields (a google.rpc.BadRequest, as
    `ferry.rpcerrors` sends a domain error's `field`) also carries `field` (the first one) and `details` in the
    422 answer's shape ({loc: [field], msg, type}), and `detail` names the field when the message does not."""
    assert isinstance(exc, grpc.RpcError)
    failure = read_status(exc)
    code, details = failure.code, failure.message
    if code == grpc.StatusCode.UNAVAILABLE and not details:
        details = "a backend service is unavailable"
    status = http_status(code)
    body = error_body(code, _bounded(details or code.name))
    if 400 <= status < 500 and failure.violations:
        first = failure.violations[0].field
        if details and first not in details:
            body["detail"] = _bounded(f"{first}: {details}")
        body["field"] = _bounded(first)
        body["details"] = [{"loc": [_bounded(v.field)], "msg": _bounded(v.description or details),
                            "type": code.name.lower()} for v in failure.violations[:MAX_VIOLATIONS]]
    return JSONResponse(status_code=status, content=body)


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


# -- the error answers as the OpenAPI document shows them --------------------------------------------------------


class FieldError(BaseModel):
    loc: list[str] = Field(description="Where the field is: for a 422 its place in the request (query, body, "
                                       "path...) then its name; for a 4xx from a service, the field's name")
    msg: str
    type: str = Field(description="For a 422 pydantic's error type; for a 4xx from a service the gRPC code, "
                                  "lower case (e.g. invalid_argument)")


class ErrorBody(BaseModel):
    detail: str = Field(description="What went wrong, as one readable string naming the field when there is one")
    code: str = Field(description="The gRPC status code name, e.g. NOT_FOUND, INVALID_ARGUMENT, UNAVAILABLE")
    field: str | None = Field(None, description="The offending field, when a service's 4xx names one "
                                                "(e.g. page_token)")
    details: list[FieldError] | None = Field(None, description="Every offending field, when there is one")


class ValidationErrorBody(ErrorBody):
    details: list[FieldError] = Field(description="Every field that failed, with where it is (loc)")


def _doc(description: str, model: type[BaseModel] = ErrorBody) -> dict[str, Any]:
    return {"model": model, "description": description}


ERROR_DOCS: dict[int, dict[str, Any]] = {
    400: _doc("Invalid argument or failed precondition; `field` and `details` name the offending field "
              "when there is one"),
    401: _doc("Missing or invalid API key (when FERRY_API_KEYS is set)"),
    403: _doc("Permission denied (e.g. a gated or private Hub dataset without a token that may read it)"),
    404: _doc("Not found"),
    409: _doc("Already exists, or aborted / cancelled"),
    413: _doc("Request body larger than 1 MiB"),
    415: _doc("Request body that is not JSON (send Content-Type: application/json)"),
    422: _doc("Request shape wrong: types, ranges, lengths, missing fields; `detail` names the field",
              ValidationErrorBody),
    429: _doc("Resource exhausted (e.g. a rate limit of the Hub)"),
    503: _doc("A backend service (or the Hub, or object storage) is unavailable"),
    504: _doc("Deadline exceeded"),
}


def error_docs(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a router or route: the error answers it can give, with their body shape."""
    return {s: ERROR_DOCS[s] for s in statuses}
