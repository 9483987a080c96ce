"""Wiring shared by `python -m services.importer` and the test fixture: storage, hub client, catalog client, job
pool, core, gRPC server."""

from __future__ import annotations

import ctypes
import logging

import pyarrow as pa

from ferry.catalog_client import CatalogClient
from ferry.errors import FerryError
from ferry.grpcserver import Registration, serve
from ferry.importer.v1 import importer_pb2_grpc
from ferry.service import Service
from ferry.storage import ObjectStore
from ferry.tokens import parse_key
from services.importer.config import ImporterConfig
from services.importer.core import ImporterCore
from services.importer.hub import HubClient
from services.importer.jobs import JobPool
from services.importer.servicer import SERVICE_NAME, ImporterServicer
from services.importer.tokens import TokenSealer

log = logging.getLogger("ferry.importer")


def _bound_allocators(arrow_pool: str) -> None:
    """Keep RSS flat under threads: glibc's per-thread malloc arenas and Arrow's caching pool both hoard memory."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass
    if arrow_pool == "system":
        pa.set_memory_pool(pa.system_memory_pool())


def start(cfg: ImporterConfig, store: ObjectStore | None = None, *, host: str | None = None,
          port: int | None = None) -> Service[ImporterCore]:
    """Start the importer's gRPC server and worker pool (which resumes waiting imports at once); `host`/`port`
    override the configured ones."""
    _bound_allocators(cfg.arrow_pool)
    assert cfg.s3 is not None
    store = store or ObjectStore(cfg.s3)
    try:
        store.ensure_bucket()
    except FerryError as exc:
        # Storage may come up after us; imports fail with a clear error until it does.
        log.warning("object storage is not ready yet: %s", exc)
    hub = HubClient(cfg.hf_endpoint, str(cfg.hf_token), download_deadline=cfg.download_deadline_seconds,
                    max_reconnects=cfg.download_max_reconnects)
    catalog = CatalogClient(cfg.catalog_addr)
    sealer = TokenSealer(parse_key(str(cfg.token_key))) if cfg.token_key else None
    pool = JobPool(catalog, store, hub, cfg.workers, cfg.local_source_dirs, cfg.resume_scan_seconds,
                   cfg.part_bytes, sealer)
    core = ImporterCore(hub, catalog, pool, cfg.local_source_dirs)
    running = serve([Registration(importer_pb2_grpc.add_ImporterServiceServicer_to_server, ImporterServicer(core),
                                  SERVICE_NAME)], cfg.grpc_port if port is None else port,
                    host=cfg.grpc.host if host is None else host, workers=cfg.grpc_workers, grace=cfg.shutdown_grace,
                    reflection_enabled=cfg.grpc.reflection)

    def shutdown() -> None:
        pool.stop()
        core.close()
        catalog.close()
        hub.close()

    running.on_stop.append(shutdown)
    pool.start()
    return Service(running, core)
