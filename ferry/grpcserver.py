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
from typing import Any, NoReturn

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_interceptor import ServerInterceptor
from grpc_reflection.v1alpha import reflection

from ferry import procs, rpcerrors
from ferry.errors import FerryError

log = logging.getLogger("ferry.grpc")


class ErrorInterceptor(ServerInterceptor):
    """Turns FerryError into its status with details, anything else into INTERNAL without internals.

    Built on grpc_interceptor.ServerInterceptor (which wraps every handler kind) rather than its
    ExceptionToStatusInterceptor, which aborts with code and message only, tells streaming handlers by an
    `Iterable` result (a unary handler answering bytes would be taken for a stream) and answers an unknown
    exception with its repr (internals). A server-streaming handler's generator is wrapped, so an error raised
    mid-stream ends the stream with the same status.
    """

    def intercept(self, method: Callable[..., Any], request_or_iterator: Any, context: grpc.ServicerContext,
                  method_name: str) -> Any:
        try:
            result = method(request_or_iterator, context)
        except Exception as exc:  # noqa: BLE001 - this is the one catch-all
            _abort(exc, context, method_name)
        # grpc iterates a streaming handler's answer with next(): an Iterator (a generator), never a message.
        if isinstance(result, Iterator):
            return _guard_stream(result, context, method_name)
        return result


def _guard_stream(responses: Iterator[Any], context: grpc.ServicerContext, method_name: str) -> Iterator[Any]:
    try:
        yield from responses
    except Exception as exc:  # noqa: BLE001
        _abort(exc, context, method_name)


def _abort(exc: Exception, context: grpc.ServicerContext, method_name: str) -> NoReturn:
    """End the call with the status `exc` stands for; always raises."""
    if isinstance(exc, FerryError):
        # abort_with_status raises, so grpc never tries to serialize a missing response.
        context.abort_with_status(rpcerrors.to_status(exc))
    code = context.code()
    if code is not None and code != grpc.StatusCode.OK:
        # The handler chose its status itself (context.abort / abort_with_status raise after setting it).
        if not context.details():
            # ...though a set_code() without details would let grpc quote the exception: give a reference instead.
            context.set_details(_internal_details(exc, method_name))
        raise exc
    context.abort(grpc.StatusCode.INTERNAL, _internal_details(exc, method_name))
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


def _internal_details(exc: Exception, method_name: str) -> str:
    ref = uuid.uuid4().hex[:12]
    # Full traceback stays in the server log; the caller only gets a reference.
    log.error("unhandled error in %s (ref %s)", method_name, ref, exc_info=exc)
    return f"internal error (ref {ref})"


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
