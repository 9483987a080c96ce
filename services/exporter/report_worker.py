"""The OpenAI report in a child process, for large exports.

The report is per-line Python plus a tokenizer whose vocabulary takes ~120 MB;
in a separate process it runs on another core instead of contending for the
exporter's GIL, and its memory stays out of the exporter. The child is a plain
`python -m services.exporter.report_worker` (no fork of a process that runs gRPC
threads, no re-import of the parent's main module). Protocol on its stdin:
frames of a 4-byte big-endian length and `split NUL first-line-number NUL lines`;
a zero length ends the input, and the child answers one JSON object on stdout
carrying its report's state. Tokenising holds the GIL, so ReportPool spreads the
batches over several such children and merges their states into one report:
line numbers travel with each batch, so the merged report equals one that read
every line in order.

Why not concurrent.futures.ProcessPoolExecutor (a "spawn" pool of FERRY_EXPORT_REPORT_PROCESSES workers, each
batch a task returning its state): it would do the tokenising and the merge as well, but not a cancel. Its
shutdown(wait=False, cancel_futures=True) cancels only the tasks still in its own queue: every running task and the
one already handed to the call queue run to their end, and Python 3.11 has no public way to stop a worker
(terminate_workers() arrives in 3.14). A batch usually takes ~0.3 s, but one long line, a stuck tokeniser or a
swapping child would keep ~220 MB and a core busy after the export was cancelled. Here a cancel closes every
child's input and kills any child still running STOP_GRACE_S later (ReportPool.stop). Its memory is bounded the
same way as here only with a hand-kept cap on tasks in flight (a pipe write blocks; submit() never does).
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
_LEN = struct.Struct(">I")
# How long a stop gives the children, all together, to finish their batch and exit before they are killed.
STOP_GRACE_S = 5.0


def peak_rss_mb() -> float:
    """Peak RSS of this process (VmHWM), in MB; 0 where /proc is missing."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            raise EOFError("the exporter closed the report input early")
        buf += chunk
    return bytes(buf)


def serve(model: str, n_epochs: int | None) -> int:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    try:
        from services.exporter.openai_report import OpenAIReport

        report = OpenAIReport(model=model, n_epochs=n_epochs)
        add = report.add_line
        while True:
            (size,) = _LEN.unpack(_read_exact(stdin, _LEN.size))
            if size == 0:
                break
            split, first, blob = _read_exact(stdin, size).split(b"\0", 2)
            name = split.decode()
            report.start_at(name, int(first))
            # One decode per batch: add_line on str skips json's per-line encoding detection.
            for line in blob.decode("utf-8", "surrogateescape").split("\n"):
                add(line, name)
        out: dict[str, Any] = {"state": base64.b64encode(pickle.dumps(report.state())).decode(),
                               "peak_rss_mb": peak_rss_mb()}
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        out = {"error": f"{type(exc).__name__}: {exc}"}
    stdout.write(json.dumps(out).encode())
    stdout.flush()
    return 0


class ReportProcess:
    """One report child: put() numbered batches, then state() for its report's state."""

    def __init__(self, model: str, n_epochs: int | None) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        args = [sys.executable, "-m", "services.exporter.report_worker", model, str(n_epochs or 0)]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, env=env)
        self._out: list[bytes] = []
        self.peak_rss_mb = 0.0
        self._reader = threading.Thread(target=self._read, name="openai-report-out", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        self._out.append(self.proc.stdout.read())

    def _answer(self) -> dict[str, Any]:
        self._reader.join(600)
        raw = b"".join(self._out)
        try:
            return json.loads(raw) if raw else {"error": f"exited with code {self.proc.poll()}"}
        except ValueError:
            return {"error": "it sent an unreadable answer"}

    def put(self, blob: bytes, split: str, first_line: int) -> None:
        payload = split.encode() + b"\0" + str(first_line).encode() + b"\0" + blob
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(_LEN.pack(len(payload)) + payload)
        except (BrokenPipeError, ValueError, OSError):
            raise RuntimeError(f"the OpenAI report failed: {self._answer().get('error', 'it stopped')}") from None

    def end(self) -> None:
        """No more lines: the child finishes and answers (read by state())."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(_LEN.pack(0))
            self.proc.stdin.close()
        except (BrokenPipeError, ValueError, OSError):
            pass

    def state(self) -> Any:
        self.end()
        answer = self._answer()
        self.peak_rss_mb = float(answer.get("peak_rss_mb") or 0.0)
        self.stop()
        if "state" not in answer:
            raise RuntimeError(f"the OpenAI report failed: {answer.get('error')}")
        return pickle.loads(base64.b64decode(answer["state"]))  # noqa: S301 - our own child's answer

    def close_input(self) -> None:
        """No more batches (not even the end frame): the child stops at its next read."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def stop(self, grace: float | None = None) -> None:
        """Close the input, wait up to `grace` seconds (STOP_GRACE_S) for the child to exit, then kill it."""
        self.close_input()
        try:
            self.proc.wait(STOP_GRACE_S if grace is None else grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class ReportPool:
    """The OpenAI report over `processes` children: same use as the in-thread feeder (put(), then result())."""

    def __init__(self, model: str, n_epochs: int | None, processes: int = 2) -> None:
        self.model = model
        self.n_epochs = n_epochs
        self.workers: list[ReportProcess] = []
        try:
            for _ in range(max(1, processes)):
                self.workers.append(ReportProcess(model, n_epochs))
        except BaseException:
            self.stop()
            raise
        self._turn = 0
        self._lines: dict[str, int] = {}
        self.peak_rss_mb = 0.0  # the largest child's

    def put(self, blob: bytes, split: str) -> None:
        first = self._lines.get(split, 0) + 1
        self._lines[split] = first + blob.count(b"\n")  # the last line number of this batch
        worker = self.workers[self._turn]
        self._turn = (self._turn + 1) % len(self.workers)
        worker.put(blob, split, first)

    def result(self) -> dict[str, Any]:
        from services.exporter.openai_report import OpenAIReport

        for w in self.workers:
            w.end()  # all children finish side by side
        states = [w.state() for w in self.workers]
        self.peak_rss_mb = max(w.peak_rss_mb for w in self.workers)
        report = OpenAIReport(model=self.model, n_epochs=self.n_epochs)
        for state in states:
            report.merge(state)
        return report.finish()

    def stop(self) -> None:
        """Every child stops at once: inputs closed first, then one STOP_GRACE_S for all before kills."""
        for w in self.workers:
            w.close_input()
        deadline = time.monotonic() + STOP_GRACE_S
        for w in self.workers:
            w.stop(max(0.0, deadline - time.monotonic()))


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1], int(sys.argv[2]) or None))
