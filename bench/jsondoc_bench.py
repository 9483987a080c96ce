"""Streaming a large `.json` document (not JSON lines): rows/s and memory of services/importer/jsondoc.py.

Two synthetic documents of FERRY_BENCH_JSON_MB megabytes each (default 200), rows of an instruction (~100
characters), an output (~400), an int, a float, a bool, a list and a nested object, some non-ASCII text:
- array: `[{...}, {...}, ...]`, the common shape;
- wrapper: `{"version": "1.0", "data": [{...}, ...], "count": N}`, which streams only past the probe size.
Each is read four ways, each in a fresh subprocess so its peak RSS is its own:
- parse: JsonDocument fed the file in 4 MiB chunks, rows counted and dropped (the parser alone);
- ijson: the same with ijson.items_coro (yajl2_c, use_float=True, prefix "item" or "data.item"), the library
  jsondoc was judged against: a lower bound on what a replacement would cost, since it knows the prefix up front
  and does none of jsondoc's shape rules (probe, JSON lines hand-over, one list of records, columnar objects);
- reader: reader.iter_text_file, the importer's real path (rows into Arrow tables of 4,000 rows);
- ijson reader: ijson's rows into the same Arrow tables (reader._table_from_rows), what `reader` would become.
Peak RSS is VmHWM; "+RSS" is its growth over the process's RSS after imports (what the reading itself held).
tracemalloc: the peak of the Python heap over the parse of a quarter-size document (tracemalloc slows it down).
Each speed is the best of FERRY_BENCH_REPEAT runs (default 3): the cores are shared, the best run is the one
least disturbed. rows/CPU s counts this process's CPU time only, steadier than rows/s under load.

Run: PYTHONPATH=. .venv/bin/python -m bench.jsondoc_bench   (or `python -m bench jsondoc`)
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 4 * 1024 * 1024
WORDS = ("the", "model", "answer", "data", "token", "prompt", "réponse", "東京", "naïve", "ferry", "import", "row")


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _text(i: int, n: int) -> str:
    words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(n // 6)]
    return " ".join(words)[:n]


def _row(i: int) -> dict[str, Any]:
    return {"instruction": f"#{i} " + _text(i, 100), "input": _text(i + 1, 50) if i % 4 else "",
            "output": _text(i + 2, 400) + "\n\"quoted\"", "id": i, "score": (i % 1000) / 8.0 + 0.1,
            "ok": i % 2 == 0, "tags": ["a", f"t{i % 50}"], "meta": {"source": "bench", "n": i % 7, "x": None}}


def write_document(path: Path, mb: int, wrapper: bool) -> int:
    """A JSON document of about `mb` MB; its row count."""
    target = mb * 1_000_000
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        fh.write('{"version": "1.0", "data": [\n' if wrapper else "[\n")
        size = 0
        while size < target:
            line = ("" if n == 0 else ",\n") + json.dumps(_row(n), ensure_ascii=False)
            fh.write(line)
            size += len(line)
            n += 1
        fh.write(f'\n], "count": {n}}}\n' if wrapper else "\n]\n")
    return n


def child(kind: str, path: str, prefix: str, trace: bool) -> dict[str, Any]:
    """One measurement in this (fresh) process."""
    import tracemalloc

    from services.importer import reader
    from services.importer.jsondoc import JsonDocument
    from services.importer.sources import LocalFile

    p = Path(path)
    f = LocalFile(p, p.name, p.stat().st_size, None)
    base = _rss_mb("VmRSS")
    if trace:
        tracemalloc.start()
    t0, cpu0 = time.perf_counter(), time.process_time()
    rows = 0
    first: Any = None
    if kind == "parse":
        doc = JsonDocument(f.path)
        for chunk in f.iter_range(0, chunk=CHUNK):
            got = doc.feed(chunk)
            if first is None and got:
                first = got[0]
            rows += len(got)
        rows += len(doc.feed(b"", final=True))
    elif kind in ("ijson", "ijson reader"):
        import ijson

        out = ijson.sendable_list()
        coro = ijson.items_coro(out, prefix, use_float=True)
        schema = None
        pending: list[Any] = []
        for chunk in itertools.chain(f.iter_range(0, chunk=CHUNK), [b""]):
            if chunk:
                coro.send(chunk)
            else:
                coro.close()
            if first is None and out:
                first = out[0]
            rows += len(out)
            if kind == "ijson reader":
                pending += out
                while len(pending) >= reader.BATCH_ROWS or (pending and not chunk):
                    table = reader._table_from_rows(pending[:reader.BATCH_ROWS], schema)
                    schema = schema or table.schema
                    del pending[:reader.BATCH_ROWS]
            del out[:]
    else:
        for table, _ in reader.iter_text_file(f, 0, reader.Position()):
            if first is None:
                first = table.slice(0, 1).to_pylist()[0]
            rows += table.num_rows
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    traced = tracemalloc.get_traced_memory()[1] / 1e6 if trace else 0.0
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "mb_per_s": f.size / seconds / 1e6,
            "rows_per_cpu_s": rows / cpu,
            "peak_rss_mb": _rss_mb("VmHWM"), "grew_mb": _rss_mb("VmHWM") - base, "traced_mb": traced,
            "score_type": type(first["score"]).__name__}


def _run_child(kind: str, path: Path, prefix: str, trace: bool = False) -> dict[str, Any]:
    arg = json.dumps({"kind": kind, "path": str(path), "prefix": prefix, "trace": trace})
    out = subprocess.run([sys.executable, "-m", "bench.jsondoc_bench", "--child"], input=arg.encode(),
                         capture_output=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} {path.name} failed: {out.stderr.decode()[-2000:]}")
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


def main() -> None:
    mb = int(os.environ.get("FERRY_BENCH_JSON_MB", "200"))
    repeat = max(1, int(os.environ.get("FERRY_BENCH_REPEAT", "3")))
    tmp = Path(tempfile.mkdtemp(prefix="ferry-jsondoc-bench-"))
    try:
        import ijson

        print(f"jsondoc bench: {mb} MB documents, best of {repeat} runs, ijson backend {ijson.backend}", flush=True)
        print(f"{'measurement':22} {'rows':>9} {'rows/s':>10} {'rows/CPU s':>10} {'MB/s':>7} {'peak RSS MB':>12} "
              f"{'+RSS MB':>8} {'traced MB':>10} {'score':>8}", flush=True)
        for shape in ("array", "wrapper"):
            prefix = "data.item" if shape == "wrapper" else "item"
            path = tmp / f"{shape}.json"
            write_document(path, mb, shape == "wrapper")
            small = tmp / f"{shape}-small.json"
            write_document(small, max(1, mb // 4), shape == "wrapper")
            for kind in ("parse", "ijson", "reader", "ijson reader"):
                runs = [_run_child(kind, path, prefix) for _ in range(repeat)]
                r = max(runs, key=lambda x: x["rows_per_s"])
                r["rows_per_cpu_s"] = max(x["rows_per_cpu_s"] for x in runs)
                traced = _run_child(kind, small, prefix, trace=True)["traced_mb"] if "reader" not in kind else None
                print(f"{shape + ' ' + kind:22} {r['rows']:>9,} {r['rows_per_s']:>10,.0f} {r['rows_per_cpu_s']:>10,.0f} "
                      f"{r['mb_per_s']:>7.1f} {r['peak_rss_mb']:>12.0f} {r['grew_mb']:>8.0f} "
                      f"{'-' if traced is None else f'{traced:.1f}':>10} {r['score_type']:>8}", flush=True)
            path.unlink()
            small.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if "--child" in sys.argv:
        a = json.loads(sys.stdin.read())
        print(json.dumps(child(a["kind"], a["path"], a["prefix"], a["trace"])))
    else:
        main()
