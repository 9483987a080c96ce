"""Exporter settings, read once at start-up (variable names are literal for the deploy test)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, field_validator

from ferry import config as c
from services.exporter.openai_report import _parse_prices


class OpenAIPrices(c.Settings):
    """Overrides of the OpenAI price table (read again by every report, so a test can set it per report)."""

    prices: dict[str, float] = Field(
        {}, validation_alias="FERRY_OPENAI_PRICES_JSON",
        description='overrides the OpenAI price table: `{"model": USD per 1M training tokens}`; empty: built-in',
        json_schema_extra={"kind": "JSON object"})

    @field_validator("prices", mode="before")
    @classmethod
    def _parse(cls, raw: Any) -> Any:
        if not isinstance(raw, str):
            return raw
        if not raw.strip():
            return {}
        try:
            parsed = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"is not valid JSON: {exc}") from None
        return _parse_prices(parsed, "FERRY_OPENAI_PRICES_JSON", ValueError)


class ExporterConfig(c.Settings):
    grpc_port: c.Port = c.grpc_port(c.EXPORTER_PORT)
    catalog_addr: c.Address = c.catalog_addr()
    s3: c.S3Config = c.group(c.S3Config)
    workers: int = Field(2, ge=1, validation_alias="FERRY_EXPORT_WORKERS",
                         description="exports running at once in one replica")
    grpc_workers: int = c.grpc_workers(16)
    shutdown_grace: float = c.shutdown_grace()
    url_ttl_seconds: int = Field(3600, ge=1, validation_alias="FERRY_EXPORT_URL_TTL_SECONDS",
                                 description="lifetime of presigned download URLs")
    tmp_dir: str = Field("", validation_alias="FERRY_EXPORT_TMP_DIR",
                         description="where the seeded train/validation shuffle spools its buckets",
                         json_schema_extra={"doc_default": "system temp dir", "kind": "path"})
    poll_seconds: float = Field(5.0, ge=0, allow_inf_nan=False, validation_alias="FERRY_EXPORT_POLL_SECONDS",
                                description="how often to look for queued or stalled exports (0 disables)")
    heartbeat_seconds: float = Field(3.0, gt=0, allow_inf_nan=False, validation_alias="FERRY_EXPORT_HEARTBEAT_SECONDS",
                                     description="heartbeat of a running export (keep well under the catalog's "
                                                 "`FERRY_JOB_HEARTBEAT_TIMEOUT_SECONDS`)")
    batch_bytes: int = Field(4 * 1024 * 1024, ge=65536, validation_alias="FERRY_EXPORT_BATCH_BYTES",
                             description="input read per conversion batch, counting one copy of the system_message "
                                         "per row (memory vs. speed)")
    report_processes: int = Field(2, ge=1, validation_alias="FERRY_EXPORT_REPORT_PROCESSES",
                                  description="processes that tokenise an openai export's validation report side by "
                                              "side (its tokenizer holds the GIL); each holds ~220 MB")
    prices: OpenAIPrices = c.group(OpenAIPrices)  # checked at start-up; each report reads them again
    grpc: c.GrpcConfig = c.group(c.GrpcConfig)
    log: c.LogConfig = c.group(c.LogConfig)

    def __repr__(self) -> str:
        return (f"ExporterConfig(port={self.grpc_port}, catalog={self.catalog_addr}, bucket={self.s3.bucket}, "
                f"workers={self.workers}, poll={self.poll_seconds}s, {self.grpc!r})")
