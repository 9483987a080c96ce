"""Every entry point refuses a bad configuration the same way: one line naming the variable, exit code 2, no
traceback, before it starts anything (run as real processes, as an operator would)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
S3 = {"FERRY_S3_ENDPOINT": "http://127.0.0.1:9", "FERRY_S3_ACCESS_KEY": "a", "FERRY_S3_SECRET_KEY": "b"}


def run(module: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # Only what the test gives: none of the caller's FERRY_*/HF_* settings.
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FERRY_", "HF_"))}
    return subprocess.run([sys.executable, "-m", module], cwd=tmp_path, text=True, capture_output=True, timeout=120,
                          env={**base, "PYTHONPATH": str(ROOT), "FERRY_DATA_DIR": str(tmp_path / "data"), **env})


def assert_refused(done: subprocess.CompletedProcess[str], process: str, *expected: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"{process}: bad configuration: "), lines[0]
    for text in expected:
        assert text in lines[0], lines[0]
    assert not done.stdout, done.stdout  # nothing started, nothing listens


@pytest.mark.parametrize(("module", "process"), [
    ("services.catalog", "catalog"), ("services.importer", "importer"), ("services.exporter", "exporter"),
])
def test_a_grpc_service_refuses_a_bad_port(module: str, process: str, tmp_path: Path) -> None:
    done = run(module, {**S3, "FERRY_GRPC_PORT": "70000"}, tmp_path)
    assert_refused(done, process, "FERRY_GRPC_PORT must be <= 65535", "70000")


@pytest.mark.parametrize(("module", "process"), [
    ("services.importer", "importer"), ("services.exporter", "exporter"),
])
def test_a_grpc_service_names_every_missing_variable(module: str, process: str, tmp_path: Path) -> None:
    done = run(module, {"FERRY_SHUTDOWN_GRACE_SECONDS": "-1"}, tmp_path)
    assert_refused(done, process, "FERRY_S3_ENDPOINT is required", "FERRY_S3_ACCESS_KEY is required",
                   "FERRY_SHUTDOWN_GRACE_SECONDS must be >= 0")


def test_the_gateway_refuses_a_bad_port(tmp_path: Path) -> None:
    assert_refused(run("gateway", {"FERRY_GATEWAY_PORT": "70000"}, tmp_path), "gateway", "FERRY_GATEWAY_PORT")


def test_the_gateway_refuses_a_bad_log_level(tmp_path: Path) -> None:
    assert_refused(run("gateway", {"FERRY_LOG_LEVEL": "LOUD"}, tmp_path), "gateway", "FERRY_LOG_LEVEL", "LOUD")


def test_make_run_refuses_a_bad_value_before_starting_anything(tmp_path: Path) -> None:
    done = run("ferry.stack", {"FERRY_GATEWAY_PORT": "70000"}, tmp_path)
    assert_refused(done, "make run", "FERRY_GATEWAY_PORT must be <= 65535")
    assert not (tmp_path / "data").exists()


def test_a_bad_secret_is_named_not_shown(tmp_path: Path) -> None:
    done = run("services.importer", {**S3, "FERRY_TOKEN_KEY": "not-a-key-but-secret"}, tmp_path)
    assert_refused(done, "importer", "FERRY_TOKEN_KEY must be 32 random bytes")
    assert "not-a-key-but-secret" not in done.stderr
