"""Import throughput and memory: a 1,000,000-row split in the Hub's Parquet layout, into real SeaweedFS.

The split (instruction ~100, input ~50, output ~400 characters; files of ~100 MB, row groups of 10,000) is served
by the stand-in hub. Three measurements, each in a fresh subprocess so its peak RSS is its own:
- ferry: the real import path (an importer service with its worker pool, a real catalog, StartImport ->
  COMPLETE: ranged Parquet reads, RowMapper, multipart upload with checkpoints, index, RegisterDataset);
- naive: what the replaced tool did: datasets.load_dataset, a Python loop of json.dumps per row into a file,
  then an upload of that file;
- bare upload: Ferry's output bytes uploaded to the same store (ObjectStore.upload_stream from a local file).
FERRY_BENCH_ROWS sets a smaller size (e.g. FERRY_BENCH_ROWS=100000 for a quick run).

Run: PYTHONPATH=. .venv/bin/python -m bench.import_bench
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REPO = "ferry-bench/alpaca-large"
MAPPING = {"prompt": "instruction+input", "completion": "output"}
TARGETS = {"speedup_vs_naive": 5.0, "vs_bare_upload": 1.3, "peak_rss_mb": 450.0}


def _peak_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the parent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _proc_cpu(pid: int) -> float:
    """CPU seconds used so far by process `pid` (the object store), from /proc; NaN where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def _store(env: dict[str, str]) -> Any:
    from ferry.config import S3Config
    from ferry.storage import ObjectStore

    return ObjectStore(S3Config.from_env(env))


# -- the measurements (each runs in its own process) -------------------------------------------------------------

def _child_ferry(a: dict[str, Any]) -> dict[str, Any]:
    import grpc

    from ferry import logs, wire
    from ferry.canonical import TrainingType
    from ferry.catalog.v1 import catalog_pb2 as cpb
    from ferry.catalog.v1 import catalog_pb2_grpc
    from ferry.jobs import Phase
    from services.importer.config import ImporterConfig
    from services.importer.server import start

    logs.setup("importer", os.environ.get("FERRY_BENCH_LOG_LEVEL", "WARNING"))
    env = {**a["env"], "FERRY_CATALOG_ADDR": a["catalog_addr"], "HF_ENDPOINT": a["hub_url"],
           "FERRY_IMPORT_WORKERS": "1", "FERRY_IMPORT_PART_BYTES": os.environ.get("FERRY_IMPORT_PART_BYTES", "")}
    importer = start(ImporterConfig.from_env(env), port=0)
    try:
        cpu0 = _cpu()
        t0 = time.perf_counter()
        job = importer.core.start_import(REPO, ["train"], "", TrainingType.SL, MAPPING, 0, "bench import")
        accepted = time.perf_counter() - t0
        # The catalog's watch stream says when the job ends (no polling to cost CPU on the shared cores).
        with grpc.insecure_channel(a["catalog_addr"]) as channel:
            for resp in catalog_pb2_grpc.CatalogServiceStub(channel).WatchJob(cpb.WatchJobRequest(job_id=job.id)):
                job = wire.job_from_pb(resp.job)
                if job.phase.terminal:
                    break
        seconds = time.perf_counter() - t0
        run_cpu = _cpu() - cpu0
    finally:
        importer.stop(0.5)
    if job.phase is not Phase.COMPLETE:
        raise RuntimeError(f"import ended {job.phase.value}: {job.error}")
    return {"seconds": seconds, "accepted_seconds": accepted, "rows": job.progress.rows_done,
            "source_bytes": job.progress.bytes_done, "dataset_id": job.dataset_id, "peak_rss_mb": _peak_mb(),
            "cpu_seconds": _cpu(), "run_cpu_seconds": run_cpu}


def _child_naive(a: dict[str, Any]) -> dict[str, Any]:
    hf_home = Path(a["tmp"]) / "naive-hf-home"
    from tests.hubstub.stub import point_clients_at

    point_clients_at(a["hub_url"], hf_home)
    import datasets

    store = _store(a["env"])
    out_path = Path(a["tmp"]) / "naive.jsonl"
    t0 = time.perf_counter()
    ds = datasets.load_dataset(REPO, split="train")
    t_load = time.perf_counter() - t0
    rows = 0
    with out_path.open("w", encoding="utf-8") as fh:
        for row in ds:
            prompt = row["instruction"] + ("\n\n" + row["input"] if row["input"].strip() else "")
            if not prompt.strip() or not row["output"].strip():
                continue
            fh.write(json.dumps({"prompt": prompt, "completion": row["output"]}, ensure_ascii=False) + "\n")
            rows += 1
    t_loop = time.perf_counter() - t0 - t_load
    with out_path.open("rb") as fh:
        store.upload_stream("bench/naive.jsonl", iter(lambda: fh.read(1 << 20), b""))
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows": rows, "peak_rss_mb": _peak_mb(), "cpu_seconds": _cpu(),
            "phases": {"load_dataset": t_load, "json loop": t_loop, "upload": seconds - t_load - t_loop}}


def _child_bare(a: dict[str, Any]) -> dict[str, Any]:
    store = _store(a["env"])
    path = Path(a["file"])
    t0 = time.perf_counter()
    with path.open("rb") as fh:
        store.upload_stream("bench/bare.jsonl", iter(lambda: fh.read(1 << 20), b""))
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_rss_mb": _peak_mb(), "cpu_seconds": _cpu()}


CHILDREN = {"ferry": _child_ferry, "naive": _child_naive, "bare": _child_bare}


def _run_child(kind: str, args: dict[str, Any], store_pid: int = 0) -> dict[str, Any]:
    store_cpu, own_cpu = _proc_cpu(store_pid), _cpu()
    out = subprocess.run([sys.executable, "-m", "bench.import_bench", "--child", kind],
                         input=json.dumps(args).encode(), capture_output=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                              "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "FERRY_LOG_LEVEL": "WARNING"},
                         check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} failed: {out.stderr.decode()[-3000:]}")
    if os.environ.get("FERRY_BENCH_LOG_LEVEL"):
        print(out.stderr.decode()[-3000:], file=sys.stderr)
    result = dict(json.loads(out.stdout.decode().strip().splitlines()[-1]))
    # What the object store and this process (stand-in hub and catalog) spent meanwhile.
    result["store_cpu_seconds"] = _proc_cpu(store_pid) - store_cpu
    result["parent_cpu_seconds"] = _cpu() - own_cpu
    return result


# -- orchestration -----------------------------------------------------------------------------------------------

def main() -> None:
    from ferry import seaweed
    from tests.fixtures.catalog import start_catalog
    from tests.hubstub.repos import build_large_parquet_repo
    from tests.hubstub.stub import start_stub_hub

    n = int(os.environ.get("FERRY_BENCH_ROWS", "1000000"))
    tmp = Path(tempfile.mkdtemp(prefix="ferry-import-bench-"))
    t0 = time.monotonic()
    repos = tmp / "repos"
    build_large_parquet_repo(repos, rows=n, file_rows=250_000, row_group_rows=10_000, repo_id=REPO)
    files = sorted((repos / REPO / "data").glob("*.parquet"))
    src_bytes = sum(f.stat().st_size for f in files)
    print(f"import bench: {n:,} rows in {len(files)} Parquet files ({src_bytes / 1e6:.0f} MB, row groups of "
          f"10,000), built in {time.monotonic() - t0:.0f}s", flush=True)
    access, secret = "bench", secrets.token_hex(16)
    server = seaweed.start(tmp / "seaweed", access, secret)
    env = {"FERRY_S3_ENDPOINT": f"http://{server.endpoint}", "FERRY_S3_ACCESS_KEY": access,
           "FERRY_S3_SECRET_KEY": secret, "FERRY_S3_BUCKET": "import-bench"}
    catalog = None
    try:
        store = _store(env)
        store.ensure_bucket(wait=30)  # the server is still starting
        # Warm the store up (SeaweedFS allocates volumes on the first writes) so no measurement pays for that.
        warm = os.urandom(1 << 20)
        store.upload_stream("warmup/blob", (warm for _ in range(64)))
        store.delete("warmup/blob")
        catalog = start_catalog(env, tmp / "catalog", heartbeat_timeout=30.0)
        with start_stub_hub(repos) as hub:
            args = {"env": env, "catalog_addr": catalog.addr, "hub_url": hub.url, "tmp": str(tmp)}
            ferry = _run_child("ferry", args, server.proc.pid)
            out_key = f"datasets/{ferry['dataset_id']}/train.jsonl"
            out_bytes = store.stat(out_key) or 0
            out_file = tmp / "ferry-output.jsonl"
            with out_file.open("wb") as fh:
                for chunk in store.iter_chunks(out_key, chunk_size=8 << 20):
                    fh.write(chunk)
            bare = _run_child("bare", {**args, "file": str(out_file)}, server.proc.pid)
            out_file.unlink()
            naive = _run_child("naive", args, server.proc.pid) if not os.environ.get("FERRY_BENCH_SKIP_NAIVE") else \
                {"seconds": float("nan"), "rows": 0, "peak_rss_mb": float("nan"), "cpu_seconds": float("nan"),
                 "store_cpu_seconds": float("nan"), "parent_cpu_seconds": float("nan")}
    finally:
        if catalog is not None:
            catalog.channel.close()
            catalog.server.stop(grace=1.0)
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)  # ~3 GB per 1M-row run (source files, store, naive's cache)

    def line(label: str, r: dict[str, Any], rows: int) -> str:
        return (f"{label:38} {r['seconds']:>8.1f} {rows / r['seconds']:>10,.0f} {out_bytes / r['seconds'] / 1e6:>8.1f} "
                f"{r['peak_rss_mb']:>12.0f} {r['cpu_seconds']:>8.1f} {r['store_cpu_seconds']:>11.1f} "
                f"{r['parent_cpu_seconds']:>15.1f}")

    print(f"output: {ferry['rows']:,} rows, {out_bytes / 1e6:.0f} MB of canonical JSONL; source read by Ferry "
          f"{ferry['source_bytes'] / 1e6:.0f} MB (request accepted in {ferry['accepted_seconds']:.2f}s; "
          f"importer CPU {ferry['run_cpu_seconds']:.1f}s from the request to COMPLETE, the rest is start-up)")
    print(f"{'measurement':38} {'seconds':>8} {'rows/s':>10} {'MB/s':>8} {'peak RSS MB':>12} {'CPU s':>8} {'store CPU s':>11} "
          f"{'hub+catalog CPU':>15}")
    print(line("ferry import (real service path)", ferry, ferry["rows"]))
    print(line("naive (load_dataset + json.dumps loop)", naive, naive["rows"]))
    print(line("bare upload of Ferry's output", bare, ferry["rows"]))
    if naive.get("phases"):
        print("naive phases: " + ", ".join(f"{k} {v:.1f}s" for k, v in naive["phases"].items()))
    speedup = naive["seconds"] / ferry["seconds"]
    vs_bare = ferry["seconds"] / bare["seconds"]
    ok = (speedup >= TARGETS["speedup_vs_naive"], vs_bare <= TARGETS["vs_bare_upload"],
          ferry["peak_rss_mb"] <= TARGETS["peak_rss_mb"])
    print(f"ferry vs naive: {speedup:.1f}x faster (target >= 5x: {'met' if ok[0] else 'MISSED'}); "
          f"ferry / bare upload: {vs_bare:.2f}x (target <= 1.3x: {'met' if ok[1] else 'MISSED'}); "
          f"ferry peak RSS {ferry['peak_rss_mb']:.0f} MB (target <= 450 MB: {'met' if ok[2] else 'MISSED'})",
          flush=True)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        result = CHILDREN[sys.argv[2]](json.loads(sys.stdin.read()))
        print(json.dumps(result), flush=True)
    else:
        main()
