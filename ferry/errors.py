"""One domain error hierarchy for every service.

Each class carries the gRPC status code it becomes; `ferry.grpcserver`'s
interceptor turns them into statuses, and the gateway maps those to HTTP the way
google/rpc/code.proto does. Core modules raise these and never import grpc.
"""

from __future__ import annotations

import grpc


class FerryError(Exception):
    """Base class: an error whose message is safe to show to the caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message


class InvalidArgument(FerryError):
    """The request is malformed; `field` names the offending field."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(FerryError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(FerryError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(FerryError):
    """The request is valid but the system is not in a state to serve it."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(FerryError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(FerryError):
    code = grpc.StatusCode.UNAUTHENTICATED


class Unavailable(FerryError):
    """A dependency (the Hub, object storage, another service) failed or is down."""

    code = grpc.StatusCode.UNAVAILABLE


class Cancelled(FerryError):
    code = grpc.StatusCode.CANCELLED


class DeadlineExceeded(FerryError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ResourceExhausted(FerryError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Aborted(FerryError):
    """A concurrency conflict (e.g. a stale worker); the caller may retry."""

    code = grpc.StatusCode.ABORTED


class Internal(FerryError):
    code = grpc.StatusCode.INTERNAL


class DataLoss(FerryError):
    """Stored data no longer matches its record (size or checksum): serving it would be silently wrong."""

    code = grpc.StatusCode.DATA_LOSS


_BY_CODE: dict[grpc.StatusCode, type[FerryError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        PermissionDenied,
        Unauthenticated,
        Unavailable,
        Cancelled,
        DeadlineExceeded,
        ResourceExhausted,
        Aborted,
        Internal,
        DataLoss,
    )
}


def from_rpc_error(err: grpc.RpcError, service: str) -> FerryError:
    """Re-raise another service's status as our own domain error, keeping its code.

    Used when one service calls another (importer -> catalog) so a NOT_FOUND from
    the catalog reaches the user as NOT_FOUND, not as INTERNAL.
    """
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(f"{service} service is unavailable: {details}")
    cls = _BY_CODE.get(code, Internal)
    return cls(details or f"{service} service failed ({code.name})")
