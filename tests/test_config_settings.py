"""The settings models: where values come from, shared groups, validation, and secrets kept out of sight."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from ferry import logs
from ferry.config import ConfigError, GrpcConfig, LogConfig, S3Config, Secret
from ferry.stack import LOCAL_DEV_ORIGINS, ROOT, StackConfig
from ferry.tokens import new_key
from gateway.config import GatewayConfig
from services.catalog.config import CatalogConfig
from services.exporter.config import ExporterConfig
from services.importer.config import ImporterConfig

S3 = {"FERRY_S3_ENDPOINT": "http://127.0.0.1:9", "FERRY_S3_ACCESS_KEY": "AKIA-visible?", "FERRY_S3_SECRET_KEY": "sk-123"}


def test_an_explicit_env_is_the_only_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_GRPC_PORT", "7000")
    monkeypatch.setenv("FERRY_S3_BUCKET", "from-os-environ")
    cfg = ImporterConfig.from_env(S3)
    assert cfg.grpc_port == 50052 and cfg.s3 is not None and cfg.s3.bucket == "ferry"
    assert ImporterConfig.from_env(with_s3=False).grpc_port == 7000  # no env given: os.environ


def test_building_a_model_in_code_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_EXPORT_WAIT_SECONDS", "5")
    monkeypatch.setenv("FERRY_LOG_LEVEL", "ERROR")
    cfg = GatewayConfig(host="127.0.0.1", port=1, catalog_addr="a:1", importer_addr="a:2", exporter_addr="a:3")
    assert cfg.export_wait_seconds == 600 and cfg.log.level == "INFO" and cfg.api_keys == ()
    assert GrpcConfig() == GrpcConfig(host="0.0.0.0", reflection=True)


def test_an_empty_value_counts_as_unset() -> None:
    cfg = ExporterConfig.from_env({**S3, "FERRY_EXPORT_WORKERS": "", "FERRY_S3_BUCKET": "", "FERRY_GRPC_HOST": ""})
    assert (cfg.workers, cfg.s3.bucket, cfg.grpc.host) == (2, "ferry", "0.0.0.0")


def test_models_are_frozen() -> None:
    cfg = CatalogConfig.from_env(S3)
    with pytest.raises(ValidationError):
        cfg.grpc_port = 1  # type: ignore[misc]


def test_the_shared_groups_are_read_by_every_service() -> None:
    env = {**S3, "FERRY_S3_BUCKET": "shared", "FERRY_LOG_LEVEL": "debug", "FERRY_GRPC_REFLECTION": " Off "}
    configs = [CatalogConfig.from_env(env), ImporterConfig.from_env(env), ExporterConfig.from_env(env)]
    assert {c.s3.bucket for c in configs if c.s3} == {"shared"}
    assert {c.log.level for c in configs} == {GatewayConfig.from_env(env).log.level} == {"DEBUG"}
    assert {c.grpc.reflection for c in configs} == {False}
    assert [c.grpc_port for c in configs] == [50051, 50052, 50053]
    assert [c.grpc_workers for c in configs] == [64, 16, 16]
    addrs = {ImporterConfig.from_env(env).catalog_addr, ExporterConfig.from_env(env).catalog_addr,
             GatewayConfig.from_env(env).catalog_addr, StackConfig.from_env(env).catalog_addr}
    assert addrs == {"localhost:50051"}


@pytest.mark.parametrize(("endpoint", "secure", "host", "tls"), [
    ("http://minio:9000/", "", "minio:9000", False),
    ("https://s3.example.com", "", "s3.example.com", True),
    ("https://s3.example.com", "false", "s3.example.com", False),
    ("minio:9000", "yes", "minio:9000", True),
])
def test_s3_endpoint_scheme(endpoint: str, secure: str, host: str, tls: bool) -> None:
    cfg = S3Config.from_env({**S3, "FERRY_S3_ENDPOINT": endpoint, "FERRY_S3_SECURE": secure})
    assert (cfg.endpoint, cfg.secure) == (host, tls)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("FERRY_S3_BUCKET", "ab", "FERRY_S3_BUCKET must be at least 3 characters"),
    ("FERRY_S3_SECURE", "maybe", "FERRY_S3_SECURE must be a boolean"),
    ("FERRY_S3_ENDPOINT", "https://", "FERRY_S3_ENDPOINT must be http://host:port"),
    ("FERRY_GRPC_WORKERS", "0", "FERRY_GRPC_WORKERS must be >= 1"),
    ("FERRY_SHUTDOWN_GRACE_SECONDS", "nan", "FERRY_SHUTDOWN_GRACE_SECONDS must be a finite number"),
    ("FERRY_IMPORT_WORKERS", "two", "FERRY_IMPORT_WORKERS must be an integer, got 'two'"),
    ("FERRY_IMPORT_RESUME_SCAN_SECONDS", "0", "FERRY_IMPORT_RESUME_SCAN_SECONDS must be > 0"),
    ("FERRY_IMPORT_PART_BYTES", "1024", "FERRY_IMPORT_PART_BYTES must be >= 5242880"),
    ("FERRY_ARROW_POOL", "jemalloc", "FERRY_ARROW_POOL must be 'system' or 'default'"),
    ("HF_ENDPOINT", "huggingface.co", "HF_ENDPOINT must be an http:// or https:// URL"),
    ("FERRY_CATALOG_ADDR", "host name:1", "FERRY_CATALOG_ADDR must be a gRPC target"),
    ("FERRY_LOG_LEVEL", "chatty", "FERRY_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL"),
])
def test_bad_importer_values_are_named(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        ImporterConfig.from_env({**S3, name: value})
    assert message in str(err.value)


def test_every_problem_is_reported_on_one_line() -> None:
    with pytest.raises(ConfigError) as err:
        ExporterConfig.from_env({"FERRY_EXPORT_WORKERS": "0", "FERRY_LOG_LEVEL": "x"})
    text = str(err.value)
    assert "\n" not in text
    for name in ("FERRY_S3_ENDPOINT", "FERRY_S3_ACCESS_KEY", "FERRY_S3_SECRET_KEY", "FERRY_EXPORT_WORKERS",
                 "FERRY_LOG_LEVEL"):
        assert name in text


def test_exporter_checks_the_price_overrides_at_start() -> None:
    cfg = ExporterConfig.from_env({**S3, "FERRY_OPENAI_PRICES_JSON": '{"gpt-4o-mini": 1.5}'})
    assert cfg.prices.prices == {"gpt-4o-mini-2024-07-18": 1.5}
    with pytest.raises(ConfigError, match="FERRY_OPENAI_PRICES_JSON is not valid JSON"):
        ExporterConfig.from_env({**S3, "FERRY_OPENAI_PRICES_JSON": "{nope"})
    with pytest.raises(ConfigError, match="FERRY_OPENAI_PRICES_JSON: unknown model 'gpt-9'"):
        ExporterConfig.from_env({**S3, "FERRY_OPENAI_PRICES_JSON": '{"gpt-9": 1}'})


def test_importer_arrow_pool_and_lists() -> None:
    cfg = ImporterConfig.from_env({"FERRY_ARROW_POOL": "default", "FERRY_LOCAL_SOURCE_DIRS": "/a, ,/b,"},
                                  with_s3=False)
    assert cfg.arrow_pool == "default" and cfg.local_source_dirs == ("/a", "/b") and cfg.s3 is None
    assert ImporterConfig.from_env({}, with_s3=False).arrow_pool == "system"
    assert ImporterConfig.from_env({"HF_ENDPOINT": "https://hf-mirror.example/"}, with_s3=False).hf_endpoint == \
        "https://hf-mirror.example"


def test_secrets_never_show() -> None:
    key = new_key()
    hf_token = "hf_" + secrets.token_hex(16)  # made here: nothing token-shaped sits in the repository
    env = {**S3, "HF_TOKEN": hf_token, "FERRY_TOKEN_KEY": key,
           "FERRY_API_KEYS": "k-one,k-two"}
    importer, gateway, catalog = ImporterConfig.from_env(env), GatewayConfig.from_env(env), CatalogConfig.from_env(env)
    shown = " ".join([repr(importer), str(importer), repr(gateway), str(gateway), repr(catalog), str(catalog),
                      str(catalog.model_dump()), catalog.model_dump_json(), str(gateway.model_dump())])
    for secret in ("AKIA-visible?", "sk-123", hf_token, key, "k-one", "k-two"):
        assert secret not in shown
    # ... while the code that needs the value gets a str.
    assert isinstance(importer.hf_token, Secret) and isinstance(importer.hf_token, str)
    assert str(importer.token_key) == key and [str(k) for k in gateway.api_keys] == ["k-one", "k-two"]
    assert catalog.s3.access_key == "AKIA-visible?"


def test_a_bad_secret_value_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as err:
        ImporterConfig.from_env({"FERRY_TOKEN_KEY": "hunter2-hunter2"}, with_s3=False)
    assert "FERRY_TOKEN_KEY" in str(err.value) and "hunter2" not in str(err.value)


def test_make_run_defaults_and_checks() -> None:
    cfg = StackConfig.from_env({})
    assert cfg.data_dir == (ROOT / ".ferry-data").resolve() and cfg.s3_endpoint == ""
    assert (cfg.grpc_host, cfg.cors_origins, cfg.grace, cfg.token_key) == ("127.0.0.1", LOCAL_DEV_ORIGINS, 20, "")
    cfg = StackConfig.from_env({"FERRY_S3_ENDPOINT": "https://s3.example.com", "FERRY_GRPC_HOST": "::1",
                                "FERRY_TOKEN_KEY": "x"})
    assert cfg.s3_endpoint == "https://s3.example.com" and cfg.grpc_host == "[::1]" and cfg.token_key
    for name, value in [("FERRY_IMPORTER_ADDR", "dns:///importer"), ("FERRY_CORS_ORIGINS", "localhost:5173"),
                        ("FERRY_LOCAL_S3_PORT", "-1"), ("FERRY_GRPC_HOST", "a b")]:
        with pytest.raises(ConfigError, match=name):
            StackConfig.from_env({name: value})


@pytest.fixture
def root_level() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_logs_setup_reads_the_declared_level(monkeypatch: pytest.MonkeyPatch, root_level: None) -> None:
    monkeypatch.setenv("FERRY_LOG_LEVEL", "warning")
    logs.setup("t")
    assert logging.getLogger().level == logging.WARNING
    logs.setup("t", LogConfig.from_env({"FERRY_LOG_LEVEL": "debug"}).level)
    assert logging.getLogger().level == logging.DEBUG
    monkeypatch.setenv("FERRY_LOG_LEVEL", "noisy")
    with pytest.raises(ConfigError, match="FERRY_LOG_LEVEL"):
        logs.setup("t")


def test_catalog_db_follows_the_data_dir(tmp_path: Path) -> None:
    assert CatalogConfig.from_env({**S3, "FERRY_DATA_DIR": str(tmp_path)}).db_path == tmp_path / "catalog.db"
    assert CatalogConfig(s3=S3Config.from_env(S3), data_dir=tmp_path).db_path == tmp_path / "catalog.db"
