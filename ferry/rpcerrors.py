"""Domain errors <-> gRPC statuses: the one translation between `ferry.errors` and gRPC.

A FerryError becomes a status whose google.rpc.Status (the `grpc-status-details-bin` trailer, grpcio-status)
carries a google.rpc.ErrorInfo (reason: the error class in UPPER_SNAKE_CASE, domain DOMAIN) and, when the
error names its field, a google.rpc.BadRequest with one FieldViolation(field, description). A gRPC client
inside Ferry turns such a status back into the same class, message and field with `from_rpc_error`; the
gateway reads the violations with `read_status`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ferry.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    FerryError,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger("ferry.grpc")

# ErrorInfo.domain of the errors Ferry's services raise (AIP-193: the service's name or domain).
DOMAIN = "ferry.dev"
# The message travels twice (grpc-message, percent-encoded: a byte outside printable ASCII counts 3, and
# google.rpc.Status.message, which must equal it) and a FieldViolation's description once more, all in trailers:
# gRPC refuses trailers over 8 KiB at random and over 16 KiB always (RESOURCE_EXHAUSTED instead of the status).
# Bounded so (in bytes as grpc-message spells them), the whole stays under 8 KiB; the gateway shows at most 2000
# characters of a message anyway.
MAX_MESSAGE_BYTES = 3000
MAX_DESCRIPTION_BYTES = 1024
MAX_FIELD_BYTES = 256

_BY_CODE: dict[str, type[FerryError]] = {
    cls.code: cls
    for cls in (InvalidArgument, NotFound, AlreadyExists, FailedPrecondition, PermissionDenied, Unauthenticated,
                Unavailable, Cancelled, DeadlineExceeded, ResourceExhausted, Aborted, Internal, DataLoss)
}


def status_code(err: FerryError) -> grpc.StatusCode:
    """The grpc.StatusCode of a domain error (its `code` is the google.rpc.Code name, as grpc's enum names it)."""
    return grpc.StatusCode[err.code]


def reason(cls: type[FerryError]) -> str:
    """ErrorInfo.reason of an error class: its name in UPPER_SNAKE_CASE (InvalidArgument -> INVALID_ARGUMENT)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", cls.__name__).upper()


def _subclasses(cls: type[FerryError]) -> list[type[FerryError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_subclasses(sub))
    return out


def _class_for(reason_: str, code: str) -> type[FerryError] | None:
    """The FerryError class with this reason and code (subclasses defined anywhere count), if any."""
    for cls in _subclasses(FerryError):
        if reason(cls) == reason_ and cls.code == code:
            return cls
    return None


def _pack(msg: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


def _wire_len(text: str) -> int:
    """Length of `text` as grpc-message carries it (UTF-8, percent-encoding all but printable ASCII and %)."""
    return sum(1 if 0x20 <= b <= 0x7E and b != 0x25 else 3 for b in text.encode())


def clip(text: str, max_bytes: int) -> str:
    """`text` cut (on a character boundary, "..." marking the cut) to at most `max_bytes` as grpc-message spells
    it; a lone surrogate, which neither grpc nor protobuf can encode, becomes "?"."""
    text = text.encode(errors="replace").decode()
    if len(text) * 12 <= max_bytes or _wire_len(text) <= max_bytes:
        return text
    used = 0
    for i, ch in enumerate(text):
        used += _wire_len(ch)
        if used > max_bytes - 3:
            return text[:i] + "..."
    return text  # pragma: no cover - the total above was over max_bytes


def to_status(err: FerryError) -> grpc.Status:
    """The status a servicer ends with for `err` (for `context.abort_with_status`)."""
    message = clip(err.message, MAX_MESSAGE_BYTES)
    details = [_pack(error_details_pb2.ErrorInfo(reason=reason(type(err)), domain=DOMAIN))]
    if err.field:
        violation = error_details_pb2.BadRequest.FieldViolation(field=clip(err.field, MAX_FIELD_BYTES),
                                                                description=clip(message, MAX_DESCRIPTION_BYTES))
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
    status = status_pb2.Status(code=code_pb2.Code.Value(err.code), message=message, details=details)
    return rpc_status.to_status(status)


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


@dataclass(frozen=True)
class RpcFailure:
    """What a failed call said: its code and message, and the google.rpc details Ferry's servers send."""

    code: grpc.StatusCode
    message: str
    reason: str = ""  # ErrorInfo.reason, when its domain is DOMAIN
    violations: list[FieldViolation] = field(default_factory=list)  # from a google.rpc.BadRequest

    @property
    def field(self) -> str | None:
        """The first violation's field: the one a domain error names."""
        return self.violations[0].field if self.violations else None


def read_status(exc: grpc.RpcError) -> RpcFailure:
    """The code, message and details of a failed call (a status without details, or with details that do not
    match the call, has just its code and message)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    message = (exc.details() if hasattr(exc, "details") else str(exc)) or ""
    try:
        status = rpc_status.from_call(exc) if hasattr(exc, "trailing_metadata") else None
    except Exception:  # noqa: BLE001 - a malformed or mismatched trailer is no reason to lose the status itself
        log.warning("ignoring the unreadable status details of a %s status", code.name, exc_info=True)
        status = None
    if status is None:
        return RpcFailure(code, message)
    reason_ = ""
    violations: list[FieldViolation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == DOMAIN:
                reason_ = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations if v.field)
    return RpcFailure(code, message, reason_, violations)


def from_rpc_error(exc: grpc.RpcError, service: str | None = None) -> FerryError:
    """The domain error another Ferry service's status stands for: same class, message and field.

    Used when one service calls another (importer -> catalog), so a NOT_FOUND from the catalog reaches the user
    as NOT_FOUND naming the same field, not as INTERNAL. With `service` (the callee's name), an UNAVAILABLE or
    DEADLINE_EXCEEDED call becomes Unavailable("<service> service is unavailable: ..."): the dependency is down
    as far as this caller is concerned. Codes no domain error carries (UNKNOWN, UNIMPLEMENTED, ...) become
    Internal.
    """
    failure = read_status(exc)
    code = failure.code
    if service and code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(f"{service} service is unavailable: {failure.message}", field=failure.field)
    cls = _class_for(failure.reason, code.name) if failure.reason else None
    if cls is None:
        cls = _BY_CODE.get(code.name, Internal)
    message = failure.message or (f"{service} service failed ({code.name})" if service else code.name)
    return cls(message, field=failure.field)
