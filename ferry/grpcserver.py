"""gRPC serving shared by every service: errors, health, reflection, graceful stop.

Servicers stay thin (protobuf in, core call, protobuf out) and raise domain
errors; `ErrorInterceptor` is the one place those become statuses.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ferry import procs
from ferry.errors import FerryError

log = logging.getLogger("ferry.grpc")


def _status_for(exc: BaseException, method: str) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, FerryError):
        return exc.code, exc.message
    ref = uuid.uuid4().hex[:12]
    # Full traceback stays in the server log; the caller only gets a reference.
    log.exception("unhandled error in %s (ref %s)", method, ref)
    return grpc.StatusCode.INTERNAL, f"internal error (ref {ref})"


def _is_abort(exc: BaseException) -> bool:
    # grpc's context.abort() raises a bare, argument-less Exception; let it through.
    return type(exc) is Exception and not exc.args


class ErrorInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Turns FerryError into its status, anything else into INTERNAL without internals."""

    def intercept_service(self, continuation: Callable[..., Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method

        def wrap_unary(fn: Callable[..., Any]) -> Callable[..., Any]:
            def inner(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    return fn(request, context)
                except Exception as exc:  # noqa: BLE001 - this is the one catch-all
                    if _is_abort(exc):
                        raise
                    # abort() raises, so grpc never tries to serialize a missing response.
                    context.abort(*_status_for(exc, method))

            return inner

        def wrap_stream(fn: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
            def inner(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                try:
                    yield from fn(request, context)
                except Exception as exc:  # noqa: BLE001
                    if _is_abort(exc):
                        raise
                    code, details = _status_for(exc, method)
                    context.set_code(code)
                    context.set_details(details)

            return inner

        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                wrap_unary(handler.unary_unary), handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                wrap_stream(handler.unary_stream), handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                wrap_unary(handler.stream_unary), handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                wrap_stream(handler.stream_stream), handler.request_deserializer, handler.response_serializer
            )
        return handler


@dataclass
class Registration:
    """One servicer: the generated add_*_to_server function and its full service name."""

    add: Callable[[Any, grpc.Server], None]
    servicer: Any
    service_name: str


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    host: str
    health: health.HealthServicer
    service_names: Sequence[str]
    grace: float
    _stopped: threading.Event = field(default_factory=threading.Event)
    on_stop: list[Callable[[], None]] = field(default_factory=list)

    def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, let in-flight calls finish for `grace` seconds, then stop."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        for hook in self.on_stop:
            try:
                hook()
            except Exception:  # noqa: BLE001 - shutdown must go on
                log.exception("shutdown hook failed")
        self.server.stop(self.grace if grace is None else grace).wait()

    def wait(self) -> None:
        self.server.wait_for_termination()


def serve(
    registrations: Iterable[Registration],
    port: int,
    *,
    host: str = "0.0.0.0",
    workers: int = 16,
    grace: float = 20.0,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
    reflection_enabled: bool = True,
) -> RunningServer:
    """Start a server with health (and reflection unless `reflection_enabled` is false) bound to `host`
    (an address as ferry.config.GrpcConfig gives it: IPv6 in brackets); `port=0` picks a free port."""
    regs = list(registrations)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        interceptors=[ErrorInterceptor(), *interceptors],
        options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
            # Clients reconnect (and re-resolve DNS) every few minutes, so replicas added by an
            # autoscaler get traffic; the grace is unlimited, so open streams are never cut.
            ("grpc.max_connection_age_ms", 5 * 60 * 1000),
        ],
    )
    for reg in regs:
        reg.add(reg.servicer, server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [reg.service_name for reg in regs]
    for name in [*names, ""]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if reflection_enabled:
        reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise RuntimeError(f"could not bind gRPC port {host}:{port}")
    server.start()
    return RunningServer(server=server, port=bound, host=host, health=health_servicer, service_names=names, grace=grace)


def run_until_signalled(running: RunningServer, name: str) -> None:
    """Block until SIGTERM/SIGINT, then drain gracefully."""
    stop = procs.StopSignals()
    print(f"{name} listening on {running.host} port {running.port}", flush=True)
    stop.wait()
    log.info("%s received signal %d, draining", name, stop.signum)
    running.stop()
    log.info("%s stopped", name)
