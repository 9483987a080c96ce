"""Gateway settings, read once from the environment."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ferry import config as c


@dataclass(frozen=True)
class GatewayConfig:
    host: str
    port: int
    api_keys: tuple[c.Secret, ...]
    catalog_addr: str
    importer_addr: str
    exporter_addr: str
    # Browser origins allowed to call /api/* ("*" = any, without credentials); empty = no CORS headers.
    cors_origins: tuple[str, ...] = ()
    # How long POST /api/huggingface/import holds its answer for an import that finishes (0 = answer at once).
    import_wait_seconds: int = 30
    # Longest GET /api/datasets/{id}/export waits for its export before answering 504 with the export id.
    export_wait_seconds: int = 600

    def __repr__(self) -> str:
        return (f"GatewayConfig(host={self.host!r}, port={self.port}, api_keys=<{len(self.api_keys)} keys>, "
                f"catalog={self.catalog_addr}, importer={self.importer_addr}, exporter={self.exporter_addr}, "
                f"cors_origins={self.cors_origins}, import_wait_seconds={self.import_wait_seconds}, "
                f"export_wait_seconds={self.export_wait_seconds})")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewayConfig:
        return cls(
            host=c.get_str("FERRY_GATEWAY_HOST", "0.0.0.0", env),
            port=c.get_int("FERRY_GATEWAY_PORT", 8000, env, minimum=0),
            api_keys=tuple(c.Secret(k) for k in c.get_list("FERRY_API_KEYS", env)),
            catalog_addr=c.get_str("FERRY_CATALOG_ADDR", "localhost:50051", env),
            importer_addr=c.get_str("FERRY_IMPORTER_ADDR", "localhost:50052", env),
            exporter_addr=c.get_str("FERRY_EXPORTER_ADDR", "localhost:50053", env),
            cors_origins=_origins(c.get_list("FERRY_CORS_ORIGINS", env)),
            import_wait_seconds=_at_most("FERRY_IMPORT_WAIT_SECONDS",
                                         c.get_int("FERRY_IMPORT_WAIT_SECONDS", 30, env, minimum=0), 600),
            export_wait_seconds=_at_most("FERRY_EXPORT_WAIT_SECONDS",
                                         c.get_int("FERRY_EXPORT_WAIT_SECONDS", 600, env, minimum=1), 3600),
        )


def _at_most(name: str, value: int, maximum: int) -> int:
    if value > maximum:
        raise c.ConfigError(f"{name} must be <= {maximum}, got {value}")
    return value


def _origins(items: tuple[str, ...]) -> tuple[str, ...]:
    """Each origin is "*" or scheme://host[:port] exactly as browsers send it (no path, no trailing slash)."""
    for item in items:
        if item == "*":
            continue
        if not re.fullmatch(r"https?://[^/\s]+", item):
            raise c.ConfigError(f"FERRY_CORS_ORIGINS: {item!r} is not an origin like http://localhost:5173 or *")
    if "*" in items and len(items) > 1:
        raise c.ConfigError("FERRY_CORS_ORIGINS: '*' allows every origin; list origins or give '*' alone")
    return items
