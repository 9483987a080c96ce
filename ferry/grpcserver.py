"""gRPC serving shared by every service: errors, health, reflection, graceful stop.

Servicers stay thin (protobuf in, core call, protobuf out) and raise domain
errors; `ErrorInterceptor` is the one place those become statuses.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_interceptor import AsyncServerInterceptor
from grpc_reflection.v1alpha import reflection

from ferry import procs, rpcerrors
from ferry.errors import FerryError

log = logging.getLogger("ferry.grpc")
# The health-service name under which the catalog reports the object store (the gateway's /healthz asks it).
STORE_HEALTH = "ferry.storage"
T = TypeVar("T")


class ErrorInterceptor(AsyncServerInterceptor):
    """Runs sync handlers on the server's thread pool and turns errors into statuses with details.

    Built on grpc_interceptor.AsyncServerInterceptor (which wraps every handler kind) rather than its
    ExceptionToStatusInterceptor, which aborts with code and message only and answers an unknown exception with
    its repr (internals). A FerryError becomes its status (ferry.rpcerrors), anything else INTERNAL with only a
    reference; an error raised mid-stream ends the stream the same way.

    The server is grpc.aio, so a handler written `async def` (the catalog's WatchJob) waits on the event loop
    and holds no thread; the services' other handlers are plain functions over blocking cores, run here on the
    pool (a sync generator one item at a time), as grpc's sync server ran them.
    """

    def __init__(self, pool: futures.ThreadPoolExecutor) -> None:
        self.pool = pool

    def intercept(self, method: Callable[..., Any], request_or_iterator: Any, context: grpc.aio.ServicerContext,
                  method_name: str) -> Any:
        # A coroutine for a unary handler, an async generator for a streaming one (the base class takes both).
        if inspect.isasyncgenfunction(method) or inspect.isgeneratorfunction(method):
            return self._stream(method, request_or_iterator, context, method_name)
        return self._unary(method, request_or_iterator, context, method_name)

    async def _unary(self, method: Callable[..., Any], request: Any, context: grpc.aio.ServicerContext,
                     method_name: str) -> Any:
        try:
            if inspect.iscoroutinefunction(method):
                return await method(request, context)
            return await asyncio.wrap_future(self.pool.submit(method, request, context))
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - this is the one catch-all
            await _abort(exc, context, method_name)

    async def _stream(self, method: Callable[..., Any], request: Any, context: grpc.aio.ServicerContext,
                      method_name: str) -> AsyncIterator[Any]:
        try:
            if inspect.isasyncgenfunction(method):
                async for item in method(request, context):
                    yield item
            else:
                async for item in self._pooled(method(request, context)):
                    yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001
            await _abort(exc, context, method_name)

    async def _pooled(self, gen: Generator[Any, None, None]) -> AsyncIterator[Any]:
        """A sync generator's items, each produced on the pool; closed there once the call ends either way."""
        step: futures.Future[Any] | None = None
        try:
            while True:
                step = self.pool.submit(next, gen, _DONE)
                item = await asyncio.wrap_future(step)
                if item is _DONE:
                    return
                yield item
        finally:
            # After the step in flight (a cancelled call leaves one running): a generator runs in one thread at once.
            close = lambda _step=None: self.pool.submit(gen.close)  # noqa: E731
            if step is None:
                close()
            else:
                step.add_done_callback(close)


_DONE = object()


async def _abort(exc: Exception, context: grpc.aio.ServicerContext, method_name: str) -> NoReturn:
    """End the call with the status `exc` stands for; always raises."""
    if isinstance(exc, FerryError):
        await context.abort_with_status(rpcerrors.to_status(exc))
    code = context.code()
    if code is not None and code not in (grpc.StatusCode.OK, 0):
        # The handler chose its status (set_code) and then failed: keep the code, never the exception's text.
        await context.abort(code if isinstance(code, grpc.StatusCode) else _status(code),
                            _internal_details(exc, method_name))
    await context.abort(grpc.StatusCode.INTERNAL, _internal_details(exc, method_name))
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


def _status(value: int) -> grpc.StatusCode:
    return next((c for c in grpc.StatusCode if c.value[0] == value), grpc.StatusCode.UNKNOWN)


def _internal_details(exc: Exception, method_name: str) -> str:
    ref = uuid.uuid4().hex[:12]
    # Full traceback stays in the server log; the caller only gets a reference.
    log.error("unhandled error in %s (ref %s)", method_name, ref, exc_info=exc)
    return f"internal error (ref {ref})"


@dataclass
class Registration:
    """One servicer: the generated add_*_to_server function and its full service name."""

    add: Callable[[Any, Any], None]
    servicer: Any
    service_name: str


@dataclass
class RunningServer:
    """A grpc.aio server on an event loop of its own thread, driven from plain (blocking) code."""

    server: grpc.aio.Server
    pool: futures.ThreadPoolExecutor
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    port: int
    host: str
    health: health.aio.HealthServicer
    service_names: Sequence[str]
    grace: float
    _stopped: threading.Event = field(default_factory=threading.Event)
    on_stop: list[Callable[[], None]] = field(default_factory=list)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def enter_graceful_shutdown(self) -> None:
        """Health reports NOT_SERVING (readiness drops) while calls are still served."""
        self.run(self.health.enter_graceful_shutdown())

    def set_serving(self, name: str, serving: bool) -> None:
        """Report `name` (a service, or a dependency such as STORE_HEALTH) SERVING or NOT_SERVING."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        self.run(self.health.set(name, status))

    def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, let in-flight calls finish for `grace` seconds, then stop."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.enter_graceful_shutdown()
        for hook in self.on_stop:
            try:
                hook()
            except Exception:  # noqa: BLE001 - shutdown must go on
                log.exception("shutdown hook failed")
        self.run(self.server.stop(self.grace if grace is None else grace))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.pool.shutdown(wait=False)

    def wait(self) -> None:
        self.thread.join()


def serve(
    registrations: Iterable[Registration],
    port: int,
    *,
    host: str = "0.0.0.0",
    workers: int = 16,
    grace: float = 20.0,
    reflection_enabled: bool = True,
) -> RunningServer:
    """Start a server with health (and reflection unless `reflection_enabled` is false) bound to `host`
    (an address as ferry.config.GrpcConfig gives it: IPv6 in brackets); `port=0` picks a free port.
    `workers` threads run the sync handlers; async handlers (watches) take none."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="grpc-loop", daemon=True)
    thread.start()
    try:
        return asyncio.run_coroutine_threadsafe(
            _start(list(registrations), port, host, workers, grace, reflection_enabled, loop, thread), loop).result()
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        raise


async def _start(regs: list[Registration], port: int, host: str, workers: int, grace: float,
                 reflection_enabled: bool, loop: asyncio.AbstractEventLoop, thread: threading.Thread
                 ) -> RunningServer:
    pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc")
    server = grpc.aio.server(
        interceptors=[ErrorInterceptor(pool)],
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
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [reg.service_name for reg in regs]
    for name in [*names, ""]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if reflection_enabled:
        reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise RuntimeError(f"could not bind gRPC port {host}:{port}")
    await server.start()
    return RunningServer(server=server, pool=pool, loop=loop, thread=thread, port=bound, host=host, health=health_servicer,
                         service_names=names, grace=grace)


def run_until_signalled(running: RunningServer, name: str) -> None:
    """Block until SIGTERM/SIGINT, then drain gracefully."""
    stop = procs.StopSignals()
    print(f"{name} listening on {running.host} port {running.port}", flush=True)
    stop.wait()
    log.info("%s received signal %d, draining", name, stop.signum)
    running.stop()
    log.info("%s stopped", name)
