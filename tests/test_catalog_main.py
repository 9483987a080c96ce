"""`python -m services.catalog` as a real process: starts, serves, and drains promptly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ferry.catalog.v1 import catalog_pb2 as pb
from ferry.catalog.v1 import catalog_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(proc.stdout.readline() if proc.stdout else ""), daemon=True)
    t.start()
    t.join(timeout)
    return out[0] if out else ""


def test_main_serves_and_drains_on_sigterm(s3_env: dict[str, str], tmp_path: Path) -> None:
    env = {**os.environ, **s3_env, "PYTHONPATH": str(ROOT), "FERRY_GRPC_PORT": "0",
           "FERRY_DATA_DIR": str(tmp_path / "data"), "FERRY_SHUTDOWN_GRACE_SECONDS": "15"}
    proc = subprocess.Popen([sys.executable, "-m", "services.catalog"], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = _read_line(proc, 30)
        assert line.startswith("catalog listening on ") and " port " in line, line
        port = int(line.rsplit(" ", 1)[1])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest(service="")).status == \
                health_pb2.HealthCheckResponse.SERVING
            stub = catalog_pb2_grpc.CatalogServiceStub(channel)
            job = stub.CreateJob(pb.CreateJobRequest(kind=pb.JOB_KIND_IMPORT)).job
            stream = stub.WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=30)
            assert next(stream).job.id == job.id
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(12) == 0  # an open watch stream must not hold shutdown for the 15 s grace
            assert time.monotonic() - t0 < 12
            with pytest.raises(grpc.RpcError) as exc:
                next(stream)
            assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
        assert (tmp_path / "data" / "catalog.db").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_main_rejects_bad_config(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FERRY_S3_ENDPOINT": "http://127.0.0.1:9",
           "FERRY_S3_ACCESS_KEY": "a", "FERRY_S3_SECRET_KEY": "b", "FERRY_GRPC_PORT": "not-a-port"}
    done = subprocess.run([sys.executable, "-m", "services.catalog"], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=60)
    assert done.returncode == 2
    assert "FERRY_GRPC_PORT must be an integer" in done.stderr
