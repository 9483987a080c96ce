"""Wiring shared by `python -m services.exporter` and the test fixture: storage, catalog client, job pool, core,
gRPC server."""

from __future__ import annotations

from ferry import grpcserver
from ferry.catalog_client import CatalogClient
from ferry.exporter.v1 import exporter_pb2_grpc
from ferry.service import Service
from ferry.storage import ObjectStore
from services.exporter.config import ExporterConfig
from services.exporter.core import ExporterCore
from services.exporter.engine import tune_malloc
from services.exporter.jobs import JobPool
from services.exporter.servicer import SERVICE_NAME, ExporterServicer


def start(cfg: ExporterConfig, store: ObjectStore | None = None, *, host: str | None = None,
          port: int | None = None) -> Service[ExporterCore]:
    """Start the exporter's gRPC server and worker pool; `host`/`port` override the configured ones."""
    tune_malloc()  # the process's allocator, as the benchmark measures it: freed batches go back to the system
    store = store or ObjectStore(cfg.s3)
    catalog = CatalogClient(cfg.catalog_addr)
    pool = JobPool(cfg, catalog, store)
    core = ExporterCore(cfg, catalog, store, pool)
    running = grpcserver.serve(
        [grpcserver.Registration(exporter_pb2_grpc.add_ExporterServiceServicer_to_server, ExporterServicer(core),
                                 SERVICE_NAME)],
        cfg.grpc_port if port is None else port, host=cfg.grpc.host if host is None else host,
        workers=cfg.grpc_workers, grace=cfg.shutdown_grace, reflection_enabled=cfg.grpc.reflection)

    def shutdown() -> None:
        pool.stop()
        catalog.close()

    running.on_stop.append(shutdown)
    pool.start()
    return Service(running, core)
