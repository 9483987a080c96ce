"""Wiring shared by `python -m services.catalog` and the test fixture: storage, core, gRPC server."""

from __future__ import annotations

import logging
import threading

from ferry import grpcserver
from ferry.catalog.v1 import catalog_pb2_grpc
from ferry.errors import FerryError
from ferry.service import Service
from ferry.storage import ObjectStore
from services.catalog.config import CatalogConfig
from services.catalog.core import CatalogCore
from services.catalog.servicer import SERVICE_NAME, CatalogServicer

log = logging.getLogger("ferry.catalog")

class StorageUnavailable(RuntimeError):
    pass


def ensure_bucket(store: ObjectStore, timeout: float = 15.0) -> None:
    """Create the bucket, retrying while storage comes up; then fail saying what is wrong."""
    try:
        store.ensure_bucket(wait=timeout)
    except FerryError as exc:
        raise StorageUnavailable(
            f"object storage is not usable after {timeout:.0f}s (bucket {store.bucket}): {exc}"
        ) from None


class StoreProbe:
    """Checks the bucket every `every` seconds and reports it as the health service STORE_HEALTH, so /healthz
    says when the store is down (the catalog itself keeps serving what needs no store)."""

    def __init__(self, running: grpcserver.RunningServer, store: ObjectStore, every: float) -> None:
        self.running, self.store, self.every = running, store, every
        self._stop = threading.Event()
        self._up: bool | None = None
        self._check()
        threading.Thread(target=self._loop, name="store-probe", daemon=True).start()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self._check()

    def _check(self) -> None:
        try:
            self.store.ensure_bucket()
            up = True
        except FerryError as exc:
            up = False
            if self._up is not False:
                log.warning("object storage is unreachable: %s", exc)
        if up and self._up is False:
            log.info("object storage is reachable again")
        if up != self._up and not self._stop.is_set():
            self._up = up
            self.running.set_serving(grpcserver.STORE_HEALTH, up)

    def stop(self) -> None:
        self._stop.set()


def start(cfg: CatalogConfig, store: ObjectStore | None = None, *, host: str | None = None,
          port: int | None = None, storage_timeout: float = 15.0) -> Service[CatalogCore]:
    """Start the catalog core and its gRPC server; `host`/`port` override the configured ones (tests bind
    127.0.0.1:0). The core (its database) is closed once the server has drained."""
    store = store or ObjectStore(cfg.s3)
    ensure_bucket(store, storage_timeout)
    catalog = CatalogCore(cfg.db_path, store, cfg.heartbeat_timeout, max_watchers=cfg.max_watchers,
                          max_attempts=cfg.max_attempts, retry_backoff=cfg.retry_backoff)
    catalog.start()
    try:
        running = grpcserver.serve(
            [grpcserver.Registration(catalog_pb2_grpc.add_CatalogServiceServicer_to_server,
                                     CatalogServicer(catalog), SERVICE_NAME)],
            cfg.grpc_port if port is None else port,
            host=cfg.grpc.host if host is None else host,
            workers=cfg.grpc_workers,
            grace=cfg.shutdown_grace,
            reflection_enabled=cfg.grpc.reflection,
        )
    except BaseException:
        catalog.close()
        raise
    # Watch streams end first, so draining is not held up for the whole grace period.
    running.on_stop.append(catalog.jobs.close)
    probe = StoreProbe(running, store, cfg.store_probe_seconds)
    running.on_stop.append(probe.stop)
    return Service(running, catalog, after_stop=[catalog.close])
