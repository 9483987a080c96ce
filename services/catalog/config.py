"""Catalog settings, read once from the environment so a bad value fails at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ferry import config as c
from ferry.config import ConfigError, Env, S3Config


@dataclass(frozen=True)
class CatalogConfig:
    grpc_port: int
    data_dir: Path
    db_path: Path
    heartbeat_timeout: float
    grpc_workers: int
    shutdown_grace: float
    s3: S3Config
    grpc: c.GrpcConfig = field(default_factory=c.GrpcConfig)

    @classmethod
    def from_env(cls, env: Env | None = None) -> CatalogConfig:
        port = c.get_int("FERRY_GRPC_PORT", 50051, env, minimum=0)
        if port > 65535:
            raise ConfigError(f"FERRY_GRPC_PORT must be <= 65535, got {port}")
        data_dir = Path(c.get_str("FERRY_DATA_DIR", ".ferry-data", env))
        db_path = Path(c.get_str("FERRY_CATALOG_DB", str(data_dir / "catalog.db"), env))
        heartbeat = c.get_float("FERRY_JOB_HEARTBEAT_TIMEOUT_SECONDS", 30.0, env)
        if heartbeat <= 0:
            raise ConfigError(f"FERRY_JOB_HEARTBEAT_TIMEOUT_SECONDS must be > 0, got {heartbeat}")
        grace = c.get_float("FERRY_SHUTDOWN_GRACE_SECONDS", 20.0, env)
        if grace < 0:
            raise ConfigError(f"FERRY_SHUTDOWN_GRACE_SECONDS must be >= 0, got {grace}")
        return cls(
            grpc_port=port,
            data_dir=data_dir,
            db_path=db_path,
            heartbeat_timeout=heartbeat,
            # Each open WatchJob stream holds a thread, so the catalog needs more than the others.
            grpc_workers=c.get_int("FERRY_GRPC_WORKERS", 64, env, minimum=8),
            shutdown_grace=grace,
            s3=S3Config.from_env(env),
            grpc=c.GrpcConfig.from_env(env),
        )
