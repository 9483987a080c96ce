"""One domain error hierarchy for every service.

Each class carries its status as a plain domain value: `code`, the name of its google.rpc.Code
(google/rpc/code.proto: "INVALID_ARGUMENT", "NOT_FOUND", ...). Core modules raise these and never
import grpc, and neither does this module: the gRPC layer (`ferry.rpcerrors`, used by
`ferry.grpcserver`'s interceptor and by the services' gRPC clients) turns them into statuses with
details (the offending `field` travels as a google.rpc.BadRequest) and back, and the gateway maps
statuses to HTTP the way google/rpc/code.proto does.
"""

from __future__ import annotations

from typing import Literal

# The google.rpc.Code names a domain error can carry (grpc.StatusCode has the same names).
Code = Literal["CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
               "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
               "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"]


class FerryError(Exception):
    """Base class: an error whose message is safe to show to the caller."""

    code: Code = "INTERNAL"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message


class InvalidArgument(FerryError):
    """The request is malformed; `field` names the offending field."""

    code = "INVALID_ARGUMENT"


class NotFound(FerryError):
    code = "NOT_FOUND"


class AlreadyExists(FerryError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(FerryError):
    """The request is valid but the system is not in a state to serve it."""

    code = "FAILED_PRECONDITION"


class PermissionDenied(FerryError):
    code = "PERMISSION_DENIED"


class Unauthenticated(FerryError):
    code = "UNAUTHENTICATED"


class Unavailable(FerryError):
    """A dependency (the Hub, object storage, another service) failed or is down."""

    code = "UNAVAILABLE"


class Cancelled(FerryError):
    code = "CANCELLED"


class DeadlineExceeded(FerryError):
    code = "DEADLINE_EXCEEDED"


class ResourceExhausted(FerryError):
    code = "RESOURCE_EXHAUSTED"


class Aborted(FerryError):
    """A concurrency conflict (e.g. a stale worker); the caller may retry."""

    code = "ABORTED"


class Internal(FerryError):
    code = "INTERNAL"


class DataLoss(FerryError):
    """Stored data no longer matches its record (size or checksum): serving it would be silently wrong."""

    code = "DATA_LOSS"
