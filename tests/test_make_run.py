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
from typing import Any

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
from tests.test_grpcserver import listen_addresses

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
        try:  # services the stack restarted meanwhile must be gone afterwards too
            started |= {p.pid for p in psutil.Process(make.pid).children(recursive=True)}
        except psutil.Error:
            pass
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


def _stack_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("FERRY_S3_ENDPOINT", "FERRY_S3_ACCESS_KEY", "FERRY_S3_SECRET_KEY", "FERRY_API_KEYS",
                "FERRY_S3_BUCKET", "FERRY_GRPC_HOST", "FERRY_GRPC_REFLECTION"):
        env.pop(var, None)
    env.update({
        "FERRY_DATA_DIR": str(tmp_path / "data"),
        "FERRY_GATEWAY_PORT": str(free_port()),
        "FERRY_LOCAL_S3_PORT": str(free_port()),
        "FERRY_CATALOG_ADDR": f"127.0.0.1:{free_port()}",
        "FERRY_IMPORTER_ADDR": f"127.0.0.1:{free_port()}",
        "FERRY_EXPORTER_ADDR": f"127.0.0.1:{free_port()}",
        "FERRY_SHUTDOWN_GRACE_SECONDS": "5",
    })
    return env


@pytest.mark.timeout(600)
def test_make_run_serves_keeps_data_and_stops_cleanly(tmp_path: Path) -> None:
    env = _stack_env(tmp_path)
    data = tmp_path / "data"
    s3_port = int(env["FERRY_LOCAL_S3_PORT"])
    rows = [{"prompt": f"question {i} «é»", "completion": f"answer {i}"} for i in range(300)]

    with make_run(env, tmp_path / "run1.log") as url:
        resp = httpx.get(f"{url}/api/datasets", timeout=10)
        assert resp.status_code == 200, resp.text
        assert resp.json()["datasets"] == []
        # The seeds' web clients on their dev servers may call it (FERRY_CORS_ORIGINS defaults under make run).
        for origin in ("http://localhost:5173", "http://localhost:3000"):
            pre = httpx.options(f"{url}/api/datasets/", timeout=10, headers={
                "Origin": origin, "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "x-api-key"})
            assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == origin, pre.headers
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


def _import_file(url: str, path: Path) -> str:
    r = httpx.post(f"{url}/api/huggingface/import", timeout=30, json={
        "dataset_name": str(path), "training_type": "SL", "field_mappings": {"prompt": "q", "completion": "a"}})
    assert r.status_code in (200, 202), r.text
    return str(r.json()["import_id"])


@pytest.mark.timeout(600)
def test_make_run_restarts_a_killed_service_and_imports_complete(tmp_path: Path) -> None:
    """kill -9 of the importer: the stack restarts it (gRPC ports stay loopback-only), the gateway answers
    again, the import running at the kill resumes from its checkpoint and a new one completes."""
    env = _stack_env(tmp_path)
    sources = tmp_path / "sources"
    sources.mkdir()
    env.update({
        "FERRY_LOCAL_SOURCE_DIRS": str(sources),
        # A job whose worker died is marked stalled after 3 s and picked up by the new importer once its retry
        # back-off (FERRY_JOB_RETRY_BACKOFF_SECONDS, 5 s for a first retry) has passed.
        "FERRY_JOB_HEARTBEAT_TIMEOUT_SECONDS": "3",
        "FERRY_IMPORT_RESUME_SCAN_SECONDS": "1",
        "FERRY_IMPORT_PART_BYTES": str(5 * 1024 * 1024),
        "FERRY_IMPORT_WAIT_SECONDS": "0",
    })
    big, small = sources / "big.jsonl", sources / "small.jsonl"
    big.write_text("".join(json.dumps({"q": f"question {n} " + "x" * 200, "a": f"answer {n}"}) + "\n"
                           for n in range(150_000)))
    small.write_text("".join(json.dumps({"q": f"q{n}", "a": f"a{n}"}) + "\n" for n in range(50)))
    pids_file = tmp_path / "data" / "run" / "pids.json"
    log_path = tmp_path / "run.log"
    with make_run(env, log_path) as url:
        # make run keeps the gRPC ports on loopback (FERRY_GRPC_HOST=127.0.0.1 for its children).
        for var in ("FERRY_CATALOG_ADDR", "FERRY_IMPORTER_ADDR", "FERRY_EXPORTER_ADDR"):
            port = int(env[var].rsplit(":", 1)[1])
            assert listen_addresses(port) == {"127.0.0.1"}, (var, listen_addresses(port))
        pids = json.loads(pids_file.read_text())
        assert set(pids) == {"stack", "object store", "catalog", "importer", "exporter", "gateway"}
        before = _import_file(url, big)
        # Kill it while the import runs (or right after it queued).
        deadline, status = time.monotonic() + 30, "queued"
        while time.monotonic() < deadline:
            status = httpx.get(f"{url}/api/huggingface/import-progress/{before}", timeout=10).json()["status"]
            if status != "queued":
                break
            time.sleep(0.1)
        killed = time.monotonic()
        os.kill(pids["importer"], signal.SIGKILL)
        print(f"import {before} was {status} at the kill")

        # The stack restarts the importer (new pid) and the gateway is healthy again.
        deadline = killed + 60
        back = None
        while time.monotonic() < deadline:
            now_pids = json.loads(pids_file.read_text())
            if now_pids["importer"] != pids["importer"]:
                try:
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        back = time.monotonic() - killed
                        break
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        assert back is not None, f"gateway not healthy again within 60 s of the kill:\n{log_path.read_text()}"
        print(f"healthz 200 again {back:.1f}s after kill -9 of the importer")
        assert now_pids["catalog"] == pids["catalog"] and now_pids["gateway"] == pids["gateway"]
        assert psutil.pid_exists(now_pids["importer"])
        output = log_path.read_text()
        assert f"importer (pid {pids['importer']}) killed by SIGKILL" in output
        assert f"restarted importer (pid {now_pids['importer']})" in output
        for var in ("FERRY_IMPORTER_ADDR",):
            assert listen_addresses(int(env[var].rsplit(":", 1)[1])) == {"127.0.0.1"}

        after = _import_file(url, small)
        results: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len(results) < 2:
            for import_id in (before, after):
                body = httpx.get(f"{url}/api/huggingface/import-progress/{import_id}", timeout=10).json()
                if body["status"] in ("complete", "error", "cancelled"):
                    results[import_id] = body
            time.sleep(0.5)
        assert len(results) == 2, f"imports did not finish: {results}\n{log_path.read_text()}"
        print(f"both imports finished {time.monotonic() - killed:.1f}s after the kill")
        assert results[before]["status"] == "complete", results[before]
        assert results[after]["status"] == "complete", results[after]
        for import_id, rows in ((before, 150_000), (after, 50)):
            ds = httpx.get(f"{url}/api/datasets/{results[import_id]['dataset_id']}", timeout=10).json()
            page = httpx.get(f"{url}/api/datasets/{ds['id']}/examples", params={"offset": rows - 1, "limit": 5},
                             timeout=10).json()
            assert page["total"] == rows, page
        if status in ("downloading", "converting"):  # killed mid-import: the restarted importer took it over from its checkpoint
            importer_log = (tmp_path / "data" / "logs" / "importer.log").read_text()
            assert f"job {before}: resuming from its checkpoint" in importer_log
    assert not pids_file.exists()
