"""The shared gRPC scaffolding: error mapping, health, reflection and graceful stop."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ferry.config import ConfigError, GrpcConfig
from ferry.errors import InvalidArgument, NotFound
from ferry.grpcserver import Registration, RunningServer, serve
from ferry.rpcerrors import read_status
from services.catalog.config import CatalogConfig
from services.exporter.config import ExporterConfig
from services.importer.config import ImporterConfig

SERVICE = "ferry.test.v1.Probe"


class _Servicer:
    def missing(self, request: bytes, context: Any) -> bytes:
        raise NotFound("dataset 42 not found")

    def boom(self, request: bytes, context: Any) -> bytes:
        raise ValueError("secret internals /etc/passwd")

    def slow(self, request: bytes, context: Any) -> bytes:
        time.sleep(1.0)
        return b"done"

    def stream(self, request: bytes, context: Any) -> Iterator[bytes]:
        yield b"one"
        raise InvalidArgument("offset must be >= 0", field="offset")

    # A handler that sets its status itself is written for grpc.aio (the server's kind): `async def`, awaiting.
    async def abort_stream(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield b"one"
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not yours")

    async def coded_boom(self, request: bytes, context: Any) -> bytes:
        context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
        raise ValueError("secret internals /etc/passwd")


def _add(servicer: _Servicer, server: grpc.Server) -> None:
    ident = bytes
    handlers = {
        "Missing": grpc.unary_unary_rpc_method_handler(servicer.missing, ident, ident),
        "Boom": grpc.unary_unary_rpc_method_handler(servicer.boom, ident, ident),
        "Slow": grpc.unary_unary_rpc_method_handler(servicer.slow, ident, ident),
        "Stream": grpc.unary_stream_rpc_method_handler(servicer.stream, ident, ident),
        "AbortStream": grpc.unary_stream_rpc_method_handler(servicer.abort_stream, ident, ident),
        "CodedBoom": grpc.unary_unary_rpc_method_handler(servicer.coded_boom, ident, ident),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


@pytest.fixture
def running() -> Iterator[RunningServer]:
    srv = serve([Registration(_add, _Servicer(), SERVICE)], 0, host="127.0.0.1", grace=5)
    yield srv
    srv.stop(0)


def _call(channel: grpc.Channel, method: str) -> Any:
    return channel.unary_unary(f"/{SERVICE}/{method}")(b"", timeout=10)


def test_domain_errors_keep_their_code(running: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        with pytest.raises(grpc.RpcError) as err:
            _call(ch, "Missing")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert err.value.details() == "dataset 42 not found"


def test_unknown_errors_become_internal_without_internals(running: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        with pytest.raises(grpc.RpcError) as err:
            _call(ch, "Boom")
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert "passwd" not in err.value.details() and "Traceback" not in err.value.details()
        assert err.value.details().startswith("internal error (ref ")


def test_stream_errors_mid_stream(running: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        it = ch.unary_stream(f"/{SERVICE}/Stream")(b"", timeout=10)
        assert next(it) == b"one"
        with pytest.raises(grpc.RpcError) as err:
            next(it)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "offset" in err.value.details()
        # The field travels as a google.rpc.BadRequest in the status details.
        assert read_status(err.value).field == "offset"


def test_a_handlers_abort_mid_stream_keeps_its_status(running: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        it = ch.unary_stream(f"/{SERVICE}/AbortStream")(b"", timeout=10)
        assert next(it) == b"one"
        with pytest.raises(grpc.RpcError) as err:
            next(it)
        assert (err.value.code(), err.value.details()) == (grpc.StatusCode.PERMISSION_DENIED, "not yours")


def test_a_code_set_before_an_unknown_error_stays_without_internals(running: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        with pytest.raises(grpc.RpcError) as err:
            _call(ch, "CodedBoom")
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "passwd" not in err.value.details() and err.value.details().startswith("internal error (ref ")


def test_health_and_reflection(running: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", SERVICE):
            resp = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        out = list(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in out[0].list_services_response.service}
        assert {SERVICE, "grpc.health.v1.Health"} <= names


def test_graceful_stop_finishes_in_flight_calls(running: RunningServer) -> None:
    result: list[Any] = []
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        t = threading.Thread(target=lambda: result.append(_call(ch, "Slow")))
        t.start()
        time.sleep(0.3)
        running.stop()
        t.join(10)
    assert result == [b"done"]


def listen_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on TCP `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table, width in (("tcp", 4), ("tcp6", 16)):
        path = Path("/proc/net") / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            addr_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A = LISTEN
                continue
            raw = bytes.fromhex(addr_hex)
            # The kernel prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, width, 4))
            ip = ipaddress.ip_address(raw)
            # gRPC may bind an IPv4 address through an IPv6 socket (::ffff:127.0.0.1).
            mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
            found.add(str(mapped or ip))
    return found


def other_ipv4_addresses() -> list[str]:
    """This machine's IPv4 addresses outside 127.0.0.0/8 (may be none in a sandbox)."""
    return sorted({a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                   if a.family == socket.AF_INET and not a.address.startswith("127.")})


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


def test_loopback_host_is_not_reachable_on_other_addresses() -> None:
    srv = serve([Registration(_add, _Servicer(), SERVICE)], 0, host="127.0.0.1", grace=0)
    wide = serve([Registration(_add, _Servicer(), SERVICE)], 0, host="0.0.0.0", grace=0)
    try:
        assert listen_addresses(srv.port) == {"127.0.0.1"}
        assert listen_addresses(wide.port) & {"0.0.0.0", "::"}  # gRPC binds 0.0.0.0 as dual-stack [::]
        assert _reachable("127.0.0.1", srv.port)
        others = other_ipv4_addresses()
        for addr in others:
            assert not _reachable(addr, srv.port), f"{addr}:{srv.port} answers though bound to 127.0.0.1"
            # The same probe does reach a server bound to every interface: the check above means something.
            assert _reachable(addr, wide.port)
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        srv.stop(0)
        wide.stop(0)


def test_reflection_can_be_turned_off() -> None:
    srv = serve([Registration(_add, _Servicer(), SERVICE)], 0, host="127.0.0.1", grace=0, reflection_enabled=False)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            refl = reflection_pb2_grpc.ServerReflectionStub(ch)
            with pytest.raises(grpc.RpcError) as err:
                list(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                               timeout=5))
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
            # Everything else still works.
            health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as err:
                _call(ch, "Missing")
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        srv.stop(0)


@pytest.mark.parametrize(("env", "host", "reflection"), [
    ({}, "0.0.0.0", True),
    ({"FERRY_GRPC_HOST": "127.0.0.1", "FERRY_GRPC_REFLECTION": "false"}, "127.0.0.1", False),
    ({"FERRY_GRPC_HOST": "::"}, "[::]", True),
    ({"FERRY_GRPC_HOST": "[::1]", "FERRY_GRPC_REFLECTION": "0"}, "[::1]", False),
    ({"FERRY_GRPC_HOST": "ferry-catalog.ferry.svc"}, "ferry-catalog.ferry.svc", True),
])
def test_grpc_config_from_env(env: dict[str, str], host: str, reflection: bool) -> None:
    cfg = GrpcConfig.from_env(env)
    assert (cfg.host, cfg.reflection) == (host, reflection)


@pytest.mark.parametrize("env", [{"FERRY_GRPC_HOST": "0.0.0.0:50051"}, {"FERRY_GRPC_HOST": "a b"},
                                 {"FERRY_GRPC_REFLECTION": "maybe"}])
def test_grpc_config_refuses_bad_values(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=next(iter(env))):
        GrpcConfig.from_env(env)


def test_every_service_reads_the_grpc_settings() -> None:
    """One declaration (ferry.config.GrpcConfig), read by each service's config."""
    env = {"FERRY_S3_ENDPOINT": "http://127.0.0.1:1", "FERRY_S3_ACCESS_KEY": "k", "FERRY_S3_SECRET_KEY": "s",
           "FERRY_GRPC_HOST": "127.0.0.1", "FERRY_GRPC_REFLECTION": "false"}
    for cfg in (CatalogConfig.from_env(env), ImporterConfig.from_env(env), ExporterConfig.from_env(env)):
        assert cfg.grpc == GrpcConfig(host="127.0.0.1", reflection=False), cfg
