"""Importer settings, read once at start-up (variable names are literal for the deploy test)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import Field, field_validator

from ferry import config as c
from ferry.config import ConfigError
from ferry.tokens import parse_key


class ImporterConfig(c.Settings):
    grpc_port: c.Port = c.grpc_port(c.IMPORTER_PORT)
    catalog_addr: c.Address = c.catalog_addr()
    s3: c.S3Config | None = c.group(c.S3Config)
    hf_endpoint: c.Url = Field("https://huggingface.co", validation_alias="HF_ENDPOINT",
                               description="the Hub, or a mirror")
    hf_token: c.Secret = Field(c.Secret(""), validation_alias="HF_TOKEN",
                               description="token for gated/private datasets; a request's `X-HF-Token` takes "
                                           "precedence")
    workers: int = Field(2, ge=1, validation_alias="FERRY_IMPORT_WORKERS",
                         description="imports running at once in one replica")
    local_source_dirs: c.Names = Field((), validation_alias="FERRY_LOCAL_SOURCE_DIRS",
                                       description="directories local imports may read; empty: local sources off")
    grpc_workers: int = c.grpc_workers(16)
    shutdown_grace: float = c.shutdown_grace()
    resume_scan_seconds: float = Field(10.0, gt=0, allow_inf_nan=False,
                                       validation_alias="FERRY_IMPORT_RESUME_SCAN_SECONDS",
                                       description="how often to look for stalled imports to resume")
    part_bytes: int = Field(16 * 1024 * 1024, ge=5 * 1024 * 1024, validation_alias="FERRY_IMPORT_PART_BYTES",
                            description="size of the multipart-upload parts an import writes; a checkpoint "
                                        "follows each part")
    download_deadline_seconds: float = Field(
        600.0, gt=0, allow_inf_nan=False, validation_alias="FERRY_IMPORT_DOWNLOAD_DEADLINE_SECONDS",
        description="how long a ranged read of a Hub file may keep reconnecting after dropped connections "
                    "(download time from its first drop) before the import fails naming the file, the byte reached "
                    "and the reconnects")
    download_max_reconnects: int = Field(
        1000, ge=1, validation_alias="FERRY_IMPORT_DOWNLOAD_MAX_RECONNECTS",
        description="how many times the download of one file (all its ranged reads) may reconnect after dropped "
                    "connections before the import fails")
    # Seals per-request HF tokens into the job record so another replica can resume the job (tokens.py).
    token_key: c.Secret = c.token_key()
    arrow_pool: Literal["system", "default"] = Field(
        "system", validation_alias="FERRY_ARROW_POOL",
        description="Arrow memory pool: `system` (malloc; keeps peak RSS low) or `default` (Arrow's own)")
    worker_id: str = ""
    grpc: c.GrpcConfig = c.group(c.GrpcConfig)
    log: c.LogConfig = c.group(c.LogConfig)

    def __repr__(self) -> str:
        return (f"ImporterConfig(port={self.grpc_port}, catalog={self.catalog_addr}, hub={self.hf_endpoint}, "
                f"hub credentials {'configured' if self.hf_token else 'not configured'}, workers={self.workers}, "
                f"local_source_dirs={self.local_source_dirs}, {self.grpc!r})")

    @field_validator("token_key")
    @classmethod
    def _token_key(cls, key: c.Secret) -> c.Secret:
        if key:
            try:
                parse_key(key)  # fail fast on a malformed key
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return key

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, with_s3: bool = True, **overrides: Any) -> Self:
        if not with_s3:
            overrides["s3"] = None
        return super().from_env(env, **overrides)
