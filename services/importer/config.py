"""Importer settings, read once at start-up (variable names are literal for the deploy test)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ferry import config as c
from services.importer.tokens import parse_key


@dataclass(frozen=True)
class ImporterConfig:
    grpc_port: int
    catalog_addr: str
    s3: c.S3Config | None
    hf_endpoint: str
    hf_token: c.Secret
    workers: int
    local_source_dirs: tuple[str, ...]
    grpc_workers: int = 16
    shutdown_grace: float = 20.0
    # Seconds between scans for stalled import jobs to resume.
    resume_scan_seconds: float = 10.0
    # Size of the multipart-upload parts an import writes; a checkpoint follows each part.
    part_bytes: int = 16 * 1024 * 1024
    # Seals per-request HF tokens into the job record so another replica can resume the job (tokens.py).
    token_key: c.Secret = field(default_factory=lambda: c.Secret(""))
    worker_id: str = field(default="")
    grpc: c.GrpcConfig = field(default_factory=c.GrpcConfig)

    def __repr__(self) -> str:
        return (f"ImporterConfig(port={self.grpc_port}, catalog={self.catalog_addr}, hub={self.hf_endpoint}, "
                f"hub credentials {'configured' if self.hf_token else 'not configured'}, workers={self.workers}, "
                f"local_source_dirs={self.local_source_dirs}, {self.grpc})")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, with_s3: bool = True) -> ImporterConfig:
        return cls(
            grpc_port=c.get_int("FERRY_GRPC_PORT", 50052, env, minimum=0),
            catalog_addr=c.get_str("FERRY_CATALOG_ADDR", "localhost:50051", env),
            s3=c.S3Config.from_env(env) if with_s3 else None,
            hf_endpoint=c.get_str("HF_ENDPOINT", "https://huggingface.co", env).rstrip("/"),
            hf_token=c.Secret(c.get_str("HF_TOKEN", "", env)),
            workers=c.get_int("FERRY_IMPORT_WORKERS", 2, env, minimum=1),
            local_source_dirs=c.get_list("FERRY_LOCAL_SOURCE_DIRS", env),
            grpc_workers=c.get_int("FERRY_GRPC_WORKERS", 16, env, minimum=1),
            shutdown_grace=c.get_float("FERRY_SHUTDOWN_GRACE_SECONDS", 20.0, env),
            resume_scan_seconds=c.get_float("FERRY_IMPORT_RESUME_SCAN_SECONDS", 10.0, env),
            part_bytes=c.get_int("FERRY_IMPORT_PART_BYTES", 16 * 1024 * 1024, env, minimum=5 * 1024 * 1024),
            token_key=_token_key(c.get_str("FERRY_TOKEN_KEY", "", env)),
            grpc=c.GrpcConfig.from_env(env),
        )


def _token_key(text: str) -> c.Secret:
    if text:
        parse_key(text)  # fail fast on a malformed key
    return c.Secret(text)
