"""`make run` starts the whole stack, serves the API, keeps its data across a restart, and SIGTERM
stops every process it started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import grpc
import httpx
import psutil
import pytest

from ferry.catalog.v1 import catalog_pb2_grpc
from ferry.config import S3Config
from ferry.procs import own_session_tied_to_parent
from ferry.seaweed import free_port
from ferry.storage import ObjectStore
from tests.fixtures.catalog import put_dataset

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def make_run(env: dict[str, str], log_path: Path) -> Iterator[str]:
    """Run `make run` until the block ends, then SIGTERM it and check that nothing it started is left."""
    port = env["FERRY_GATEWAY_PORT"]
    log = open(log_path, "wb")
    make = subprocess.Popen(["make", "--no-print-directory", "run"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, preexec_fn=own_session_tied_to_parent())
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 150
        healthy = False
        while time.monotonic() < deadline and make.poll() is None:
            try:
                started |= {p.pid for p in psutil.Process(make.pid).children(recursive=True)}
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    healthy = True
                    break
            except (httpx.HTTPError, psutil.Error):
                pass
            time.sleep(0.5)
        assert healthy, f"stack never became healthy:\n{log_path.read_text()}"
        # The gateway can answer before the supervisor's own check passes and it prints where things are.
        while "Press Ctrl-C to stop." not in (output := log_path.read_text()):
            assert time.monotonic() < deadline and make.poll() is None, f"no summary printed:\n{output}"
            time.sleep(0.2)
        started |= {p.pid for p in psutil.Process(make.pid).children(recursive=True)}
        # Object store, catalog, importer, exporter and gateway (plus make's own python).
        assert len(started) >= 6, started
        for name in ("object store", "catalog", "importer", "exporter", "gateway"):
            assert name in output
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        hung = ""
        try:
            make.wait(150)
        except subprocess.TimeoutExpired:
            hung = _why_hung(make.pid)  # the supervisor prints its threads' stacks into the log on SIGUSR1
            os.killpg(make.pid, signal.SIGKILL)
        log.close()
        assert not hung, f"make run ignored SIGTERM for 150 s:\n{hung}\n{log_path.read_text()}"
    # Services stop in a second; the object store takes ~10 s and gets 15 before SIGKILL. Loaded
    # machines stretch both, so allow well over the sum of the supervisor's own timeouts.
    deadline = time.monotonic() + 150
    alive = started
    while time.monotonic() < deadline:
        alive = {pid for pid in started if psutil.pid_exists(pid)
                 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE}
        if not alive:
            break
        time.sleep(0.5)
    assert not alive, f"processes left running after SIGTERM: {alive}\n{log_path.read_text()}"
    assert "stopped." in log_path.read_text()


def _why_hung(make_pid: int) -> str:
    """Signal state of every process under `make`, after asking each Python one for its stacks (SIGUSR1)."""
    lines = []
    for proc in psutil.Process(make_pid).children(recursive=True):
        try:
            status = [ln for ln in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                      if ln.startswith(("State", "Sig", "ShdPnd"))]
            lines.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}: {'; '.join(status)}")
            if "ferry.stack" in " ".join(proc.cmdline()):
                proc.send_signal(signal.SIGUSR1)
        except (psutil.Error, OSError):
            pass
    time.sleep(1)
    return "\n".join(lines)


@pytest.mark.timeout(600)
def test_make_run_serves_keeps_data_and_stops_cleanly(tmp_path: Path) -> None:
    env = dict(os.environ)
    for var in ("FERRY_S3_ENDPOINT", "FERRY_S3_ACCESS_KEY", "FERRY_S3_SECRET_KEY", "FERRY_API_KEYS",
                "FERRY_S3_BUCKET"):
        env.pop(var, None)
    data = tmp_path / "data"
    s3_port = free_port()
    env.update({
        "FERRY_DATA_DIR": str(data),
        "FERRY_GATEWAY_PORT": str(free_port()),
        "FERRY_LOCAL_S3_PORT": str(s3_port),
        "FERRY_CATALOG_ADDR": f"127.0.0.1:{free_port()}",
        "FERRY_IMPORTER_ADDR": f"127.0.0.1:{free_port()}",
        "FERRY_EXPORTER_ADDR": f"127.0.0.1:{free_port()}",
        "FERRY_SHUTDOWN_GRACE_SECONDS": "5",
    })
    rows = [{"prompt": f"question {i} «é»", "completion": f"answer {i}"} for i in range(300)]

    with make_run(env, tmp_path / "run1.log") as url:
        resp = httpx.get(f"{url}/api/datasets", timeout=10)
        assert resp.status_code == 200, resp.text
        assert resp.json()["datasets"] == []
        # A dataset made the way the importer makes one: objects in the local store, record in the catalog.
        creds = json.loads((data / "s3" / "credentials.json").read_text())
        store = ObjectStore(S3Config.from_env({
            "FERRY_S3_ENDPOINT": f"http://127.0.0.1:{s3_port}", "FERRY_S3_ACCESS_KEY": creds["access_key"],
            "FERRY_S3_SECRET_KEY": creds["secret_key"]}))
        with grpc.insecure_channel(env["FERRY_CATALOG_ADDR"]) as channel:
            catalog = SimpleNamespace(stub=catalog_pb2_grpc.CatalogServiceStub(channel), store=store)
            dataset = put_dataset(catalog, {"train": rows}, name="kept across restarts")  # type: ignore[arg-type]

    assert (data / "catalog.db").exists()
    # The key that seals per-request HF tokens into import jobs is made once, readable by its owner only.
    key_file = data / "importer-token.key"
    assert key_file.stat().st_mode & 0o777 == 0o600 and len(key_file.read_text().strip()) == 44
    with make_run(env, tmp_path / "run2.log") as url:
        listed = httpx.get(f"{url}/api/datasets", timeout=10).json()
        assert [d["name"] for d in listed["datasets"]] == ["kept across restarts"]
        page = httpx.get(f"{url}/api/datasets/{dataset.id}/examples", params={"offset": 290, "limit": 50},
                         timeout=10).json()
        assert page["total"] == 300 and page["examples"] == rows[290:]
