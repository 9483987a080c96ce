"""Export throughput and memory: every format on a 1,000,000-row dataset in real SeaweedFS.

Prints rows/s, MB/s (of canonical input) and peak RSS for each format, beside a naive
json.loads/json.dumps loop (read from the store, convert row by row, write to the store) and a
bare copy of the same bytes through the store. Each measurement runs in a fresh subprocess so
its peak RSS is its own; CPU seconds are the measuring process and its children (not SeaweedFS).
FERRY_BENCH_ROWS sets a smaller size, FERRY_BENCH_ONLY="alpaca,csv" runs only those format lines.
Last, peak RSS with the largest system_message (64 KiB, copied into every row) on FERRY_BENCH_SYSTEM_ROWS
rows (default 5,000; 0 skips it): the output is rows x 64 KiB, memory must stay that of a batch.

Run: PYTHONPATH=. .venv/bin/python -m bench.export_bench
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Realistic fine-tuning rows, the same shape as the import benchmark (bench/import_bench.py): an instruction of
# ~100 characters and an input of ~50 (on 3 rows in 4) joined as the prompt, an output of ~400 characters as the
# completion; mostly English words with ~8% quotes, backslashes, tabs, braces, non-ASCII (accents, CJK, symbols,
# emoji) and newlines; a third of the rows carry a system prompt, a tenth a multi-turn history (2 or 4 turns,
# user ~100 / assistant ~300 characters); DPO rows have chosen (~400) and rejected (~350) responses.
# SL rows average ~680 bytes of canonical JSONL, DPO rows ~1,050.
WORDS = ("the of and to in is that for it as with was on be by this are from at or an have not which but "
         "model data training example answer question because however result value function first should each "
         "would could about into more other some these than then them when where while use used using output "
         "input step list number string return code error file line write read small large").split()
SPECIAL = ("naïve café déjà-vu façade résumé Zürich São-Paulo 東京 数据集 训练 — “smart quotes” €42 ±3% → ✓ 🙂 "
           "\"quoted\" it's C:\\path\\file x=1; y<2 & z>3 {json: [1, 2]} tab\there").split(" ")
SYSTEMS = ("You are a helpful assistant.", "You are a careful, concise assistant. Answer in plain English.",
           "Tu es un assistant serviable qui répond en français.", "You are an expert Python programmer.")
PLANS: list[tuple[str, str, dict[str, str], float | None]] = [
    # (label, format, additional_params, train_split)
    ("openai", "openai", {}, None),
    ("openai conversion alone (no report)", "openai", {"_no_report": "1"}, None),
    ("openai split 0.9", "openai", {}, 0.9),
    ("openai_dpo (DPO data)", "openai_dpo", {}, None),
    ("alpaca", "alpaca", {}, None),
    ("sharegpt", "sharegpt", {}, None),
    ("langchain documents", "langchain", {"export_type": "documents"}, None),
    ("langchain chat", "langchain", {"export_type": "chat"}, None),
    ("langchain qa_pairs", "langchain", {"export_type": "qa_pairs"}, None),
    ("csv", "csv", {}, None),
    ("huggingface", "huggingface", {}, None),
]
# The largest system_message a request may carry, on a few thousand rows (the output grows by rows x 64 KiB).
SYSTEM_MESSAGE_CHARS = 64 * 1024
SYSTEM_PLANS: list[tuple[str, str, float | None]] = [
    ("openai, 64 KiB system_message", "openai", None),
    ("alpaca, 64 KiB system_message", "alpaca", None),
    ("csv, 64 KiB system_message, split 0.9", "csv", 0.9),
]


def _text_pool(rng: Any) -> str:
    """~4 MB of word soup with sentences and paragraph breaks; rows take random slices of it."""
    out: list[str] = []
    for _ in range(600_000):
        r = rng.random()
        w = rng.choice(SPECIAL) if r > 0.92 else rng.choice(WORDS)
        out.append(w + (". " if r < 0.08 else "\n" if r < 0.10 else "\n\n" if r < 0.11 else " "))
    return "".join(out)


def _rows(n: int, dpo: bool) -> Iterator[bytes]:
    import random

    import orjson

    rng = random.Random(1234)
    pool = _text_pool(rng)
    top = len(pool) - 1000

    def text(mean: int) -> str:
        start = rng.randrange(top)
        return pool[start:start + rng.randint(mean * 3 // 5, mean * 7 // 5)].strip() or "x"

    batch = []
    for i in range(n):
        instruction = f"#{i} " + text(100)
        prompt = instruction + ("\n\n" + text(50) if i % 4 else "")
        row: dict[str, Any] = {"prompt": prompt}
        if dpo:
            row["chosen"] = text(400)
            row["rejected"] = text(350)
        else:
            row["completion"] = text(400)
        if i % 3 == 0:
            row["system"] = SYSTEMS[i % len(SYSTEMS)]
        if i % 10 == 0:
            turns = 2 if i % 20 else 4
            row["history"] = [{"role": "user" if t % 2 == 0 else "assistant", "content": text(100 if t % 2 == 0 else 300)}
                              for t in range(turns)]
        batch.append(orjson.dumps(row) + b"\n")
        if len(batch) == 20000:
            yield b"".join(batch)
            batch = []
    if batch:
        yield b"".join(batch)


def _peak_mb() -> float:
    """This process's own peak RSS (VmHWM; ru_maxrss would include the pre-exec parent after fork)."""
    from services.exporter.report_worker import peak_rss_mb

    return peak_rss_mb()


def _cpu() -> float:
    """CPU seconds of this process and its waited-for children (the report process)."""
    import resource

    return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ("ru_utime", "ru_stime"))


def _store(env: dict[str, str]) -> Any:
    from ferry.config import S3Config
    from ferry.storage import ObjectStore

    return ObjectStore(S3Config.from_env(env))


def child(kind: str, env: dict[str, str], key: str, n: int, size: int, spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this (fresh) process."""
    from services.exporter.engine import tune_malloc

    tune_malloc()
    store = _store(env)
    helper = 0.0
    out_bytes = 0
    cpu0 = _cpu()
    t0 = time.perf_counter()
    if kind == "copy":
        store.upload_stream("bench/copy.jsonl", store.iter_chunks(key, chunk_size=8 << 20))
    elif kind == "naive":
        # The loop Ferry replaces: read lines, json.loads, convert, json.dumps, write a file, upload it.
        import io

        resp = store.open(key)
        with tempfile.TemporaryFile() as out:
            try:
                for line in io.BufferedReader(resp, buffer_size=1 << 20):
                    row = json.loads(line)
                    msgs = []
                    if row.get("system"):
                        msgs.append({"role": "system", "content": row["system"]})
                    msgs.extend(row.get("history") or [])
                    msgs.append({"role": "user", "content": row["prompt"]})
                    msgs.append({"role": "assistant", "content": row["completion"]})
                    out.write(json.dumps({"messages": msgs}).encode() + b"\n")
            finally:
                resp.close()
                resp.release_conn()
            out.seek(0)
            store.upload_stream("bench/naive.jsonl", iter(lambda: out.read(8 << 20), b""))
    else:
        from ferry.canonical import TrainingType
        from services.exporter.engine import Exporter, SourceDataset, SourceSplit
        from services.exporter.formats import check_request

        tt = TrainingType.DPO if spec["format"] == "openai_dpo" else TrainingType.SL
        ds = SourceDataset(1, "bench", tt, (SourceSplit("train", key, n, size),))
        params = dict(spec["params"])
        no_report = bool(params.pop("_no_report", None))
        system = "S" * spec["system_message_chars"] if spec.get("system_message_chars") else None
        req = check_request(1, spec["format"], "bench_out", system, spec["train_split"], params)
        batch = int(os.environ.get("FERRY_EXPORT_BATCH_BYTES", "0")) or None
        kwargs: dict[str, Any] = {"batch_bytes": batch} if batch else {}
        if no_report:
            kwargs["with_report"] = False
        exporter = Exporter(store, ds, req, f"bench-{secrets.token_hex(4)}", **kwargs)
        files = exporter.run()
        helper = getattr(exporter.feeder, "peak_rss_mb", 0.0)
        out_bytes = sum(f.size for f in files)
    seconds = time.perf_counter() - t0
    return {"out_bytes": out_bytes, "seconds": seconds, "cpu_seconds": _cpu() - cpu0, "rows_per_s": n / seconds, "mb_per_s": size / seconds / 1e6, "peak_rss_mb": _peak_mb(),
            "helper_rss_mb": helper}


def _run_child(kind: str, env: dict[str, str], key: str, n: int, size: int, spec: dict[str, Any]) -> dict[str, Any]:
    arg = json.dumps({"kind": kind, "env": env, "key": key, "n": n, "size": size, "spec": spec})
    out = subprocess.run([sys.executable, "-m", "bench.export_bench", "--child"], input=arg.encode(),
                         capture_output=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} {spec} failed: {out.stderr.decode()[-2000:]}")
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


def _line(label: str, r: dict[str, Any], naive: dict[str, Any], copy: dict[str, Any]) -> None:
    helper = f"{r['helper_rss_mb']:.0f}" if r.get("helper_rss_mb") else "-"
    print(f"{label:36} {r['rows_per_s']:>10,.0f} {r['mb_per_s']:>7.1f} {r['peak_rss_mb']:>12.0f} "
          f"{r['rows_per_s'] / naive['rows_per_s']:>8.2f} {r['rows_per_s'] / copy['rows_per_s']:>7.2f} "
          f"{r['cpu_seconds']:>7.1f} {naive['cpu_seconds'] / r['cpu_seconds']:>11.2f} {helper:>19}", flush=True)


def _system_message_lines(env: dict[str, str], store: Any) -> None:
    """Peak RSS with a 64 KiB system_message: every output row carries it, memory stays that of a batch."""
    n = int(os.environ.get("FERRY_BENCH_SYSTEM_ROWS", "5000"))
    if n <= 0:
        return
    src = store.upload_stream("datasets/3/train.jsonl", _rows(n, dpo=False))
    print(f"\n64 KiB system_message on {n:,} SL rows ({src.size / 1e6:.1f} MB of canonical JSONL; a third of "
          "the rows have a system of their own and keep it)", flush=True)
    print(f"{'measurement':40} {'rows/s':>8} {'output MB':>10} {'peak RSS MB':>12} {'report proc RSS MB':>19}")
    for label, fmt, split in SYSTEM_PLANS:
        r = _run_child("export", env, src.key, n, src.size, {"format": fmt, "params": {}, "train_split": split,
                                                              "system_message_chars": SYSTEM_MESSAGE_CHARS})
        helper = f"{r['helper_rss_mb']:.0f}" if r.get("helper_rss_mb") else "-"
        print(f"{label:40} {r['rows_per_s']:>8,.0f} {r['out_bytes'] / 1e6:>10,.0f} {r['peak_rss_mb']:>12.0f} "
              f"{helper:>19}", flush=True)


def main() -> None:
    import signal

    from ferry import seaweed

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop SeaweedFS on the way out
    n = int(os.environ.get("FERRY_BENCH_ROWS", "1000000"))
    tmp = Path(tempfile.mkdtemp(prefix="ferry-export-bench-"))
    access, secret = "bench", secrets.token_hex(16)
    server = seaweed.start(tmp / "seaweed", access, secret)
    try:
        env = {"FERRY_S3_ENDPOINT": f"http://{server.endpoint}", "FERRY_S3_ACCESS_KEY": access,
               "FERRY_S3_SECRET_KEY": secret, "FERRY_S3_BUCKET": "export-bench"}
        store = _store(env)
        store.ensure_bucket(wait=30)  # the server is still starting
        sl = store.upload_stream("datasets/1/train.jsonl", _rows(n, dpo=False))
        dpo = store.upload_stream("datasets/2/train.jsonl", _rows(n, dpo=True))
        print(f"export bench: {n:,} rows; SL {sl.size / 1e6:.0f} MB ({sl.size / n:.0f} B/row), DPO "
              f"{dpo.size / 1e6:.0f} MB ({dpo.size / n:.0f} B/row) of canonical JSONL in SeaweedFS", flush=True)
        results: list[tuple[str, dict[str, Any]]] = []
        results.append(("bare copy through the store", _run_child("copy", env, sl.key, n, sl.size, {})))
        results.append(("naive json loop (openai)", _run_child("naive", env, sl.key, n, sl.size, {})))
        naive = results[-1][1]
        print("x naive: against the naive loop converting to openai (json.loads per line, build the messages, "
              "json.dumps per row, write, upload), the base for every format; MB/s of canonical input; CPU s: "
              "this process and its children (the report process), not SeaweedFS; CPU x naive: naive CPU s / CPU s "
              "(steadier than rows/s when other work shares the cores; both baselines run again at the end)",
              flush=True)
        print(f"{'measurement':36} {'rows/s':>10} {'MB/s':>7} {'peak RSS MB':>12} {'x naive':>8} {'x copy':>7}"
              f" {'CPU s':>7} {'CPU x naive':>11} {'report proc RSS MB':>19}")
        copy = results[0][1]
        for label, r in results:
            _line(label, r, naive, copy)
        only = [x.strip() for x in os.environ.get("FERRY_BENCH_ONLY", "").split(",") if x.strip()]
        for label, fmt, params, split in PLANS:
            if only and label not in only:
                continue
            src = dpo if fmt == "openai_dpo" else sl
            r = _run_child("export", env, src.key, n, src.size, {"format": fmt, "params": params,
                                                                   "train_split": split})
            _line(label, r, naive, copy)
        # Again at the end: how far the baselines drifted while the formats ran (shared cores).
        _line("bare copy, again", _run_child("copy", env, sl.key, n, sl.size, {}), naive, copy)
        _line("naive json loop, again", _run_child("naive", env, sl.key, n, sl.size, {}), naive, copy)
        _system_message_lines(env, store)
    finally:
        server.stop()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if "--child" in sys.argv:
        a = json.loads(sys.stdin.read())
        print(json.dumps(child(a["kind"], a["env"], a["key"], a["n"], a["size"], a["spec"])))
    else:
        main()
