"""Catalog settings, read once from the environment so a bad value fails at start-up."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ferry import config as c
from ferry.config import S3Config
from services.catalog.jobs import RETRY_BACKOFF_CAP


class CatalogConfig(c.Settings):
    grpc_port: c.Port = c.grpc_port(c.CATALOG_PORT)
    data_dir: Path = c.data_dir()
    db_path: Path = Field(default_factory=lambda data: Path(data.get("data_dir", Path())) / "catalog.db",
                          validation_alias="FERRY_CATALOG_DB", description="SQLite file",
                          json_schema_extra={"doc_default": "`$FERRY_DATA_DIR/catalog.db`"})
    heartbeat_timeout: float = Field(30.0, gt=0, allow_inf_nan=False, validation_alias="FERRY_JOB_HEARTBEAT_TIMEOUT_SECONDS",
                                     description="a running job whose worker is silent this long is marked stalled "
                                                 "and can be claimed again")
    max_attempts: int = Field(5, ge=1, le=100, validation_alias="FERRY_JOB_MAX_ATTEMPTS",
                              description="times a job may be claimed: a job whose worker stopped (crashed, was "
                                          "OOM-killed) this often ends in ERROR instead of being claimed again")
    retry_backoff: float = Field(5.0, ge=0, le=RETRY_BACKOFF_CAP, allow_inf_nan=False,
                                 validation_alias="FERRY_JOB_RETRY_BACKOFF_SECONDS",
                                 description="a stalled job can be claimed again this long after it stalled, "
                                             f"doubled for each attempt it used (at most {RETRY_BACKOFF_CAP:.0f} s); "
                                             "0: at once")
    # Every worker's heartbeats and every page of examples: more concurrent calls than the other services see.
    grpc_workers: int = c.grpc_workers(64, minimum=8)
    max_watchers: int = Field(1000, ge=1, le=100_000, validation_alias="FERRY_CATALOG_MAX_WATCHERS",
                              description="open WatchJob streams at once (each waits on the event loop, no thread); "
                                          "past this a watch gets RESOURCE_EXHAUSTED")
    store_probe_seconds: float = Field(10.0, gt=0, le=3600, allow_inf_nan=False,
                                       validation_alias="FERRY_STORE_PROBE_SECONDS",
                                       description="how often the catalog checks the object store for its health "
                                                   "report (the gateway's /healthz shows it as `store`)")
    shutdown_grace: float = c.shutdown_grace()
    s3: S3Config = c.group(S3Config)
    grpc: c.GrpcConfig = c.group(c.GrpcConfig)
    log: c.LogConfig = c.group(c.LogConfig)
