"""Exporter settings, read once at start-up (variable names are literal for the deploy test)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ferry import config as c


@dataclass(frozen=True)
class ExporterConfig:
    grpc_port: int
    catalog_addr: str
    s3: c.S3Config
    # Exports running at once in this replica.
    workers: int = 2
    grpc_workers: int = 16
    shutdown_grace: float = 20.0
    # Lifetime of presigned download URLs.
    url_ttl_seconds: int = 3600
    # Where the train/validation shuffle spools its buckets; empty = the system temp dir.
    tmp_dir: str = ""
    # Seconds between scans for queued or stalled export jobs to pick up; 0 disables.
    poll_seconds: float = 5.0
    # Seconds between heartbeats of a running export (keep well under FERRY_JOB_HEARTBEAT_TIMEOUT_SECONDS).
    heartbeat_seconds: float = 3.0
    # Input read per conversion batch.
    batch_bytes: int = 4 * 1024 * 1024
    # Processes that tokenise an openai export's validation report (each holds a ~200 MB tokenizer).
    report_processes: int = 2
    grpc: c.GrpcConfig = field(default_factory=c.GrpcConfig)

    def __repr__(self) -> str:
        return (f"ExporterConfig(port={self.grpc_port}, catalog={self.catalog_addr}, bucket={self.s3.bucket}, "
                f"workers={self.workers}, poll={self.poll_seconds}s, {self.grpc})")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ExporterConfig:
        return cls(
            grpc_port=c.get_int("FERRY_GRPC_PORT", 50053, env, minimum=0),
            catalog_addr=c.get_str("FERRY_CATALOG_ADDR", "localhost:50051", env),
            s3=c.S3Config.from_env(env),
            workers=c.get_int("FERRY_EXPORT_WORKERS", 2, env, minimum=1),
            grpc_workers=c.get_int("FERRY_GRPC_WORKERS", 16, env, minimum=1),
            shutdown_grace=c.get_float("FERRY_SHUTDOWN_GRACE_SECONDS", 20.0, env),
            url_ttl_seconds=c.get_int("FERRY_EXPORT_URL_TTL_SECONDS", 3600, env, minimum=1),
            tmp_dir=c.get_str("FERRY_EXPORT_TMP_DIR", "", env),
            poll_seconds=c.get_float("FERRY_EXPORT_POLL_SECONDS", 5.0, env),
            heartbeat_seconds=c.get_float("FERRY_EXPORT_HEARTBEAT_SECONDS", 3.0, env),
            batch_bytes=c.get_int("FERRY_EXPORT_BATCH_BYTES", 4 * 1024 * 1024, env, minimum=65536),
            report_processes=c.get_int("FERRY_EXPORT_REPORT_PROCESSES", 2, env, minimum=1),
            grpc=c.GrpcConfig.from_env(env),
        )
