"""Helpers for reading environment variables once, failing fast on bad values.

Each service declares a frozen dataclass with a `from_env()` built on these, so
configuration is read in one place and a typo fails at start-up, not mid-request.
`ferry.config.ENV_VARS` lists every variable any service reads; the deploy test
checks the Kubernetes manifests against it.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass


class ConfigError(RuntimeError):
    """A required variable is missing or a value does not parse."""


Env = Mapping[str, str]


def _env(env: Env | None) -> Env:
    return os.environ if env is None else env


def get_str(name: str, default: str | None = None, env: Env | None = None) -> str:
    value = _env(env).get(name, "")
    if value == "":
        if default is None:
            raise ConfigError(f"environment variable {name} is required")
        return default
    return value


def get_int(name: str, default: int, env: Env | None = None, minimum: int | None = None) -> int:
    raw = _env(env).get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def get_float(name: str, default: float, env: Env | None = None) -> float:
    raw = _env(env).get(name, "")
    if raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def get_bool(name: str, default: bool, env: Env | None = None) -> bool:
    raw = _env(env).get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be a boolean, got {raw!r}")


def get_list(name: str, env: Env | None = None) -> tuple[str, ...]:
    raw = _env(env).get(name, "")
    return tuple(item.strip() for item in raw.split(",") if item.strip())


class Secret(str):
    """A string whose repr never shows the value, so a logged config leaks nothing."""

    def __repr__(self) -> str:
        return "Secret('***')" if self else "Secret('')"


@dataclass(frozen=True)
class S3Config:
    """Object storage settings shared by every service that touches the bucket."""

    endpoint: str
    access_key: Secret
    secret_key: Secret
    bucket: str
    secure: bool
    region: str
    # Where users outside the deployment reach the same store (https://files.example.com); presigned download
    # URLs are signed for it, since a signature is bound to the host. "" = sign for `endpoint`.
    public_endpoint: str = ""

    @classmethod
    def from_env(cls, env: Env | None = None) -> S3Config:
        endpoint = get_str("FERRY_S3_ENDPOINT", env=env)
        secure = get_bool("FERRY_S3_SECURE", endpoint.startswith("https://"), env=env)
        for scheme in ("http://", "https://"):
            if endpoint.startswith(scheme):
                endpoint = endpoint[len(scheme):]
        bucket = get_str("FERRY_S3_BUCKET", "ferry", env=env)
        if len(bucket) < 3:
            raise ConfigError("FERRY_S3_BUCKET must be at least 3 characters")
        return cls(
            endpoint=endpoint.rstrip("/"),
            access_key=Secret(get_str("FERRY_S3_ACCESS_KEY", env=env)),
            secret_key=Secret(get_str("FERRY_S3_SECRET_KEY", env=env)),
            bucket=bucket,
            secure=secure,
            region=get_str("FERRY_S3_REGION", "us-east-1", env=env),
            public_endpoint=_public_endpoint(get_str("FERRY_S3_PUBLIC_ENDPOINT", "", env=env)),
        )


def _public_endpoint(url: str) -> str:
    url = url.strip().rstrip("/")
    if url and (not url.startswith(("http://", "https://")) or "/" in url.split("://", 1)[1]):
        raise ConfigError(f"FERRY_S3_PUBLIC_ENDPOINT must be a scheme and host, like https://files.example.com "
                          f"(got {url!r})")
    return url


_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


@dataclass(frozen=True)
class GrpcConfig:
    """How a gRPC service listens; the same two variables for catalog, importer and exporter.

    host: the address the server binds. `0.0.0.0` (every interface) suits a pod; `make run` sets 127.0.0.1
    so a dev machine's gRPC ports are loopback-only. reflection: whether grpc.reflection is served.
    """

    host: str = "0.0.0.0"
    reflection: bool = True

    @classmethod
    def from_env(cls, env: Env | None = None) -> GrpcConfig:
        return cls(host=_grpc_host(get_str("FERRY_GRPC_HOST", "0.0.0.0", env)),
                   reflection=get_bool("FERRY_GRPC_REFLECTION", True, env))


def _grpc_host(raw: str) -> str:
    """An IPv4/IPv6 address (brackets optional) or a host name; IPv6 comes back in brackets, ready for host:port."""
    host = raw.strip()
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        addr = ipaddress.ip_address(bare)
    except ValueError:
        if _HOSTNAME.match(bare):
            return bare
        raise ConfigError(f"FERRY_GRPC_HOST must be an IP address or a host name, got {raw!r}") from None
    return f"[{addr}]" if addr.version == 6 else str(addr)


# Every variable a Ferry process reads, with its default ("" = required or unset).
# Keep in sync with the services' config classes; tests/test_config_vars.py checks.
ENV_VARS: dict[str, str] = {
    "FERRY_S3_ENDPOINT": "",
    "FERRY_S3_ACCESS_KEY": "",
    "FERRY_S3_SECRET_KEY": "",
    "FERRY_S3_BUCKET": "ferry",
    "FERRY_S3_SECURE": "false",
    "FERRY_S3_REGION": "us-east-1",
    "FERRY_S3_PUBLIC_ENDPOINT": "",
    "FERRY_TOKEN_KEY": "",
    "FERRY_EXPORT_REPORT_PROCESSES": "2",
    "FERRY_DATA_DIR": ".ferry-data",
    "FERRY_LOCAL_S3_PORT": "8333",
    "FERRY_LOG_LEVEL": "INFO",
    "FERRY_GATEWAY_HOST": "0.0.0.0",
    "FERRY_GATEWAY_PORT": "8000",
    "FERRY_API_KEYS": "",
    "FERRY_CORS_ORIGINS": "",
    "FERRY_IMPORT_WAIT_SECONDS": "30",
    "FERRY_EXPORT_WAIT_SECONDS": "600",
    "FERRY_CATALOG_ADDR": "localhost:50051",
    "FERRY_IMPORTER_ADDR": "localhost:50052",
    "FERRY_EXPORTER_ADDR": "localhost:50053",
    "FERRY_GRPC_PORT": "",
    "FERRY_GRPC_HOST": "0.0.0.0 (make run: 127.0.0.1)",
    "FERRY_GRPC_REFLECTION": "true",
    "FERRY_GRPC_WORKERS": "16 (catalog: 64)",
    "FERRY_SHUTDOWN_GRACE_SECONDS": "20",
    "FERRY_CATALOG_DB": "$FERRY_DATA_DIR/catalog.db",
    "FERRY_JOB_HEARTBEAT_TIMEOUT_SECONDS": "30",
    "FERRY_OPENAI_PRICES_JSON": "",
    "FERRY_EXPORT_WORKERS": "2",
    "FERRY_EXPORT_URL_TTL_SECONDS": "3600",
    "FERRY_EXPORT_TMP_DIR": "",
    "FERRY_EXPORT_POLL_SECONDS": "5",
    "FERRY_EXPORT_HEARTBEAT_SECONDS": "3",
    "FERRY_EXPORT_BATCH_BYTES": "4194304",
    "FERRY_IMPORT_WORKERS": "2",
    "FERRY_LOCAL_SOURCE_DIRS": "",
    "FERRY_IMPORT_RESUME_SCAN_SECONDS": "10",
    "FERRY_IMPORT_PART_BYTES": "16777216",
    "FERRY_ARROW_POOL": "system",
    "HF_ENDPOINT": "https://huggingface.co",
    "HF_TOKEN": "",
    "HF_HOME": "~/.cache/huggingface",
}
