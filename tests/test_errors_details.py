"""A domain error's field travels: servicer -> gRPC status details -> a Ferry gRPC client, and -> REST."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from ferry import errors
from ferry.errors import FerryError, InvalidArgument, NotFound, Unavailable
from ferry.grpcserver import Registration, RunningServer, serve
from ferry.rpcerrors import DOMAIN, MAX_MESSAGE_BYTES, from_rpc_error, read_status, status_code
from gateway.errors import MAX_DETAIL, rpc_error_handler
from tests.fixtures.catalog import RunningCatalog
from tests.fixtures.gateway import RunningGateway, start_gateway

SERVICE = "ferry.test.v1.Errors"

ALL_CLASSES = [errors.InvalidArgument, errors.NotFound, errors.AlreadyExists, errors.FailedPrecondition,
               errors.PermissionDenied, errors.Unauthenticated, errors.Unavailable, errors.Cancelled,
               errors.DeadlineExceeded, errors.ResourceExhausted, errors.Aborted, errors.Internal, errors.DataLoss]


class DatasetGone(NotFound):
    """A subclass defined outside ferry.errors: it round-trips as itself, not as NotFound."""


def _raise(request: bytes) -> None:
    """The request names what to raise: {"cls": name, "message": ..., "field": ...}."""
    spec = json.loads(request)
    cls = {c.__name__: c for c in [*ALL_CLASSES, FerryError, DatasetGone]}[spec["cls"]]
    raise cls(spec["message"], field=spec.get("field"))


class _Servicer:
    def unary(self, request: bytes, context: Any) -> bytes:
        _raise(request)
        return b"unreachable"

    def stream(self, request: bytes, context: Any) -> Iterator[bytes]:
        yield b"one"
        _raise(request)

    async def abort(self, request: bytes, context: Any) -> bytes:  # the server is grpc.aio: abort is awaited
        await context.abort(grpc.StatusCode.NOT_FOUND, "aborted by the handler")
        return b"unreachable"


def _add(servicer: _Servicer, server: grpc.Server) -> None:
    ident = bytes
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(servicer.unary, ident, ident),
        "Stream": grpc.unary_stream_rpc_method_handler(servicer.stream, ident, ident),
        "Abort": grpc.unary_unary_rpc_method_handler(servicer.abort, ident, ident),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


@pytest.fixture(scope="module")
def running() -> Iterator[RunningServer]:
    srv = serve([Registration(_add, _Servicer(), SERVICE)], 0, host="127.0.0.1", grace=0)
    yield srv
    srv.stop(0)


@pytest.fixture(scope="module")
def channel(running: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        yield ch


def _spec(cls: type[FerryError], message: str, field: str | None = None) -> bytes:
    return json.dumps({"cls": cls.__name__, "message": message, "field": field}).encode()


def _unary_error(channel: grpc.Channel, request: bytes) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary(f"/{SERVICE}/Unary")(request, timeout=10)
    return err.value


def _stream_error(channel: grpc.Channel, request: bytes) -> grpc.RpcError:
    it = channel.unary_stream(f"/{SERVICE}/Stream")(request, timeout=10)
    assert next(it) == b"one"
    with pytest.raises(grpc.RpcError) as err:
        next(it)
    return err.value


def _details(exc: grpc.RpcError) -> tuple[list[error_details_pb2.BadRequest], list[error_details_pb2.ErrorInfo]]:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None, "no google.rpc.Status in the trailers"
    bad, info = [], []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad.append(error_details_pb2.BadRequest())
            detail.Unpack(bad[-1])
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info.append(error_details_pb2.ErrorInfo())
            detail.Unpack(info[-1])
    return bad, info


@pytest.mark.parametrize("call", [_unary_error, _stream_error], ids=["unary", "mid-stream"])
def test_invalid_argument_carries_a_bad_request_naming_the_field(channel: grpc.Channel, call: Any) -> None:
    exc = call(channel, _spec(InvalidArgument, "x must be positive", "x"))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.details() == "x must be positive"
    bad, info = _details(exc)
    assert [(v.field, v.description) for b in bad for v in b.field_violations] == [("x", "x must be positive")]
    assert [(i.reason, i.domain) for i in info] == [("INVALID_ARGUMENT", DOMAIN)]


def test_an_error_without_a_field_has_error_info_only(channel: grpc.Channel) -> None:
    exc = _unary_error(channel, _spec(NotFound, "dataset 7 not found"))
    assert exc.code() == grpc.StatusCode.NOT_FOUND
    bad, info = _details(exc)
    assert bad == [] and [(i.reason, i.domain) for i in info] == [("NOT_FOUND", DOMAIN)]


def test_a_handlers_own_abort_keeps_its_status(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary(f"/{SERVICE}/Abort")(b"", timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "aborted by the handler"
    assert rpc_status.from_call(err.value) is None  # type: ignore[arg-type]
    assert isinstance(from_rpc_error(err.value), NotFound)  # a plain status maps by its code


@pytest.mark.parametrize("cls", [*ALL_CLASSES, DatasetGone, FerryError], ids=lambda c: c.__name__)
@pytest.mark.parametrize("call", [_unary_error, _stream_error], ids=["unary", "mid-stream"])
def test_the_client_helper_round_trips_class_message_and_field(channel: grpc.Channel, call: Any,
                                                                cls: type[FerryError]) -> None:
    message = f"{cls.__name__} happened: é ✓"
    for field in ("splits[0].name", None):
        exc = call(channel, _spec(cls, message, field))
        assert exc.code() == status_code(cls(message))
        back = from_rpc_error(exc)
        assert type(back) is cls
        assert (back.message, back.field, back.code) == (message, field, cls.code)


def test_the_client_helper_names_an_unavailable_service(channel: grpc.Channel) -> None:
    # As the importer and exporter use it: a dependency that is down is Unavailable naming the service.
    back = from_rpc_error(_unary_error(channel, _spec(errors.DeadlineExceeded, "took too long")), "catalog")
    assert type(back) is Unavailable and back.message == "catalog service is unavailable: took too long"
    with grpc.insecure_channel("127.0.0.1:1") as closed:
        with pytest.raises(grpc.RpcError) as err:
            closed.unary_unary(f"/{SERVICE}/Unary")(b"", timeout=5)
    back = from_rpc_error(err.value, "catalog")
    assert type(back) is Unavailable and back.message.startswith("catalog service is unavailable: ")


def test_ferry_errors_does_not_import_grpc() -> None:
    code = "import sys, ferry.errors; sys.exit(1 if 'grpc' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def _rest(exc: grpc.RpcError) -> tuple[int, dict[str, Any]]:
    """The gateway's answer to a backend's status (its exception handler, given a real RpcError)."""
    resp = asyncio.run(rpc_error_handler(None, exc))  # type: ignore[arg-type]
    return resp.status_code, json.loads(bytes(resp.body))


def test_the_gateway_names_the_field_of_a_4xx(channel: grpc.Channel) -> None:
    status, body = _rest(_unary_error(channel, _spec(InvalidArgument, "page_token is not a token", "page_token")))
    assert status == 400
    assert body == {"detail": "page_token is not a token", "code": "INVALID_ARGUMENT", "field": "page_token",
                    "details": [{"loc": ["page_token"], "msg": "page_token is not a token",
                                 "type": "invalid_argument"}]}
    # A message that does not name the field gets it in front, as a 422's `detail` does ("loc: msg").
    status, body = _rest(_stream_error(channel, _spec(errors.FailedPrecondition, "dataset 5 is being deleted",
                                                      "dataset_id")))
    assert status == 400 and body["detail"] == "dataset_id: dataset 5 is being deleted"
    assert body["field"] == "dataset_id" and body["details"][0]["loc"] == ["dataset_id"]
    # No field: the body stays {detail, code}.
    status, body = _rest(_unary_error(channel, _spec(NotFound, "dataset 7 not found")))
    assert (status, body) == (404, {"detail": "dataset 7 not found", "code": "NOT_FOUND"})


def test_the_gateway_keeps_5xx_and_long_messages_bounded(channel: grpc.Channel) -> None:
    status, body = _rest(_unary_error(channel, _spec(Unavailable, "object storage is down", "splits")))
    assert (status, body) == (503, {"detail": "object storage is down", "code": "UNAVAILABLE"})
    long = "limit " + "x" * 2500
    status, body = _rest(_unary_error(channel, _spec(InvalidArgument, long, "limit")))
    assert status == 400 and body["detail"] == long[:MAX_DETAIL] + "..." and body["field"] == "limit"
    assert len(body["details"][0]["msg"]) <= MAX_DETAIL + 3


@pytest.mark.parametrize("call", [_unary_error, _stream_error], ids=["unary", "mid-stream"])
def test_a_long_message_still_arrives_with_its_details(channel: grpc.Channel, call: Any) -> None:
    # The message travels in the trailers twice (plus a description): unbounded, gRPC would refuse the trailers
    # (RESOURCE_EXHAUSTED, "received metadata size exceeds hard limit") and the status would be lost.
    for long in ("limit " + "x" * 20000, "limit " + "€" * 6000, "limit\n%" * 2000):
        failure = read_status(call(channel, _spec(InvalidArgument, long, "limit")))
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and failure.field == "limit"
        assert failure.message.endswith("...") and long.startswith(failure.message[:-3])
        assert len(failure.message.encode()) <= MAX_MESSAGE_BYTES
        assert long.startswith(failure.violations[0].description[:-3])
    # A lone surrogate (e.g. quoted from a bad request) cannot be encoded: it arrives as "?", with its status.
    failure = read_status(call(channel, b'{"cls": "InvalidArgument", "message": "bad \\udc80", "field": "name"}'))
    assert (failure.code, failure.message, failure.field) == (grpc.StatusCode.INVALID_ARGUMENT, "bad ?", "name")


# -- end to end: REST -> gateway -> the real catalog, which raises InvalidArgument(field=...) ----------------------


@pytest.fixture
def gateway(catalog_server: RunningCatalog) -> Iterator[RunningGateway]:
    with start_gateway(catalog_addr=catalog_server.addr) as gw:
        yield gw


def test_rest_4xx_names_the_field_the_catalog_named(gateway: RunningGateway) -> None:
    resp = gateway.client.get("/api/datasets", params={"page_token": "bogus"})
    assert resp.status_code == 400
    body = resp.json()
    assert body["code"] == "INVALID_ARGUMENT" and body["field"] == "page_token"
    assert body["detail"] == "page_token is not a token this server issued"
    assert body["details"] == [{"loc": ["page_token"], "msg": body["detail"], "type": "invalid_argument"}]
    blank = gateway.client.post("/api/mapping-templates", json={"name": "   ", "training_type": "SL",
                                                                "field_mappings": {"prompt": "q"}})
    assert blank.status_code == 400 and blank.json()["field"] == "name"
    assert [d["loc"] for d in blank.json()["details"]] == [["name"]]
