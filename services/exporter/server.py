"""Wiring shared by `python -m services.exporter` and the test fixture."""

from __future__ import annotations

from ferry import grpcserver
from ferry.exporter.v1 import exporter_pb2_grpc
from ferry.storage import ObjectStore
from services.exporter.config import ExporterConfig
from services.exporter.core import ExporterCore
from services.exporter.servicer import SERVICE_NAME, ExporterServicer


def start(cfg: ExporterConfig, store: ObjectStore | None = None, host: str | None = None
          ) -> tuple[grpcserver.RunningServer, ExporterServicer]:
    """`host` overrides the configured bind address."""
    core = ExporterCore(cfg, store)
    servicer = ExporterServicer(core)
    running = grpcserver.serve(
        [grpcserver.Registration(exporter_pb2_grpc.add_ExporterServiceServicer_to_server, servicer, SERVICE_NAME)],
        cfg.grpc_port, host=cfg.grpc.host if host is None else host, workers=cfg.grpc_workers,
        grace=cfg.shutdown_grace, reflection_enabled=cfg.grpc.reflection)
    running.on_stop.append(core.close)
    return running, servicer
