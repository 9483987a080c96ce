"""Gateway settings, read once from the environment."""

from __future__ import annotations

from pydantic import Field

from ferry import config as c


class GatewayConfig(c.Settings):
    host: str = Field("0.0.0.0", min_length=1, validation_alias="FERRY_GATEWAY_HOST",
                      description="gateway listen address", json_schema_extra={"kind": "IP address or host name"})
    port: c.Port = c.gateway_port()
    api_keys: c.Secrets = Field((), validation_alias="FERRY_API_KEYS",
                                description="comma-separated keys accepted on `/api/*`; empty: no auth")
    catalog_addr: c.Address = c.catalog_addr()
    importer_addr: c.Address = c.importer_addr()
    exporter_addr: c.Address = c.exporter_addr()
    # Browser origins allowed to call /api/* ("*" = any, without credentials); empty = no CORS headers.
    cors_origins: c.Origins = c.cors_origins()
    import_wait_seconds: int = Field(30, ge=0, le=600, validation_alias="FERRY_IMPORT_WAIT_SECONDS",
                                     description="how long `POST /api/huggingface/import` holds its answer for an "
                                                 "import that finishes (0: answer at once)")
    export_wait_seconds: int = Field(600, ge=1, le=3600, validation_alias="FERRY_EXPORT_WAIT_SECONDS",
                                     description="how long `GET /api/datasets/{id}/export` waits for its export "
                                                 "before answering 504 with the export id")
    log: c.LogConfig = c.group(c.LogConfig)

    def __repr__(self) -> str:
        return (f"GatewayConfig(host={self.host!r}, port={self.port}, api_keys=<{len(self.api_keys)} keys>, "
                f"catalog={self.catalog_addr}, importer={self.importer_addr}, exporter={self.exporter_addr}, "
                f"cors_origins={self.cors_origins}, import_wait_seconds={self.import_wait_seconds}, "
                f"export_wait_seconds={self.export_wait_seconds})")
