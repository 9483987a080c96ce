"""The export pipeline: object storage -> conversion -> object storage, with bounded memory.

Input splits are read in batches of whole lines (a prefetch thread overlaps the
GET with conversion), converted by `convert.convert_batch` and fed to
`ObjectStore.upload_stream` (multipart, producer thread) under a staging prefix.
Only when every file is complete are they copied to `exports/{export_id}/` and
the staging objects removed; any failure or cancellation deletes both prefixes,
so no partial export is ever visible. Pure: no grpc.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import yaml  # type: ignore[import-untyped]

from ferry.canonical import TrainingType
from ferry.errors import Internal, Unavailable
from ferry.media import content_type
from ferry.storage import ObjectStore
from services.exporter import convert, hf_card
from services.exporter.formats import FORMATS, ExportRequest
from services.exporter.report_worker import ReportPool
from services.exporter.shuffle import ShuffleSpool

log = logging.getLogger("ferry.exporter.engine")

BATCH_BYTES = 4 * 1024 * 1024
# Output chunks queued ahead of the upload, and the multipart part size: together they bound memory.
UPLOAD_QUEUE = 2
# From this much input on, the OpenAI report runs in a child process (report_worker.py).
REPORT_PROCESS_BYTES = 32 * 1024 * 1024
REPORT_PROCESSES = 2
PART_SIZE = 8 * 1024 * 1024
CSV_BOM = b"\xef\xbb\xbf"
MAX_SINGLE_COPY = 5 * 1024**3


@dataclass(frozen=True)
class SourceSplit:
    name: str
    key: str
    num_rows: int
    num_bytes: int


@dataclass(frozen=True)
class SourceDataset:
    id: int
    name: str
    training_type: TrainingType
    splits: tuple[SourceSplit, ...]
    source_repo: str = ""


@dataclass(frozen=True)
class OutputFile:
    name: str
    key: str
    size: int
    sha256: str


# on_progress(rows_done, bytes_done, rows_total, bytes_total); may raise (e.g. Cancelled) to stop.
ProgressFn = Callable[[int, int, int, int], None]


@dataclass
class _Counter:
    rows: int = 0
    bytes: int = 0
    rows_total: int = 0
    bytes_total: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def iter_line_batches(store: ObjectStore, key: str, batch_bytes: int = BATCH_BYTES) -> Iterator[bytes]:
    """Whole-line batches of about `batch_bytes` from a JSONL object, read one batch ahead."""
    q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def read() -> None:
        try:
            rest = b""
            for chunk in store.iter_chunks(key, chunk_size=batch_bytes):
                if stop.is_set():
                    return
                data = rest + chunk if rest else chunk
                cut = data.rfind(b"\n") + 1
                if cut:
                    q.put(data[:cut])
                    rest = data[cut:]
                else:
                    rest = data
            if rest.strip():
                q.put(rest + b"\n")
            q.put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(exc)

    reader = threading.Thread(target=read, name=f"read:{key}", daemon=True)
    reader.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while reader.is_alive():
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass


def tune_malloc() -> None:
    """Keep glibc from hoarding freed batch buffers (dynamic mmap threshold, per-thread arenas).

    Batches are a few MB each; without this glibc raises its mmap threshold after the
    first free and serves later batches from fragmenting arenas, so RSS creeps up.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 256 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


class _ReportFeeder:
    """Feeds the OpenAI report every exported line in its own thread.

    The report is per-line Python (JSON parse, token counts) while conversion is
    polars and releases the GIL, so running them side by side nearly halves the
    time of an openai export. The queue is bounded: memory stays a few batches.
    """

    def __init__(self, report: Any) -> None:
        self.report = report
        self.q: queue.Queue[tuple[bytes, str] | None] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self._stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="openai-report", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        add = self.report.add_line
        while True:
            item = self.q.get()
            if item is None or self._stopped.is_set():
                return
            if self.error is not None:
                continue
            blob, split = item
            try:
                for line in blob.decode("utf-8", "surrogateescape").split("\n"):
                    add(line, split)
            except BaseException as exc:  # noqa: BLE001 - re-raised by close()
                self.error = exc

    def put(self, blob: bytes, split: str) -> None:
        if self.error is not None:
            raise self.error
        self.q.put((blob, split))

    def result(self) -> dict[str, Any]:
        """Wait until every queued line is counted; the finished report."""
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.report.finish()  # type: ignore[no-any-return]

    def stop(self) -> None:
        self._stopped.set()
        while self.thread.is_alive():
            try:
                self.q.put_nowait(None)
            except queue.Full:
                try:
                    self.q.get_nowait()
                except queue.Empty:
                    pass
            self.thread.join(0.05)


def _count_lines(data: bytes) -> int:
    return data.count(b"\n")


def bound_batches(batches: Iterable[tuple[bytes, Any]], per_row: int, limit: int) -> Iterator[tuple[bytes, Any]]:
    """Batches of whole lines cut again so that each one's input plus `per_row` bytes a row stays within `limit`.

    A request's system_message is written into every row of the output, so a batch of N rows converts to
    about N x per_row bytes more than its input: with a large message and short rows, a batch sized by its
    input alone would build gigabytes (polars holds several copies of a batch's text while building it).
    Cutting by rows x (line + per_row) keeps every conversion, and so the exporter's memory, bounded by
    `limit` whatever the message's size; a single row longer than `limit` is a batch of its own. `index` is a
    batch's first row number (an int) or one row number per line (an array, from the shuffle) and is cut
    along. Without a system_message (`per_row` 0) batches pass through untouched.
    """
    for data, index in batches:
        n = _count_lines(data)
        if per_row <= 0 or len(data) + n * per_row <= limit:
            yield data, index
            continue
        ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 0x0A) + 1
        if len(ends) == 0 or ends[-1] != len(data):  # a last line without its newline
            ends = np.append(ends, len(data))
        # cost[j]: bytes of lines 0..j plus per_row for each of them
        cost = ends + per_row * np.arange(1, len(ends) + 1, dtype=np.int64)
        first, start, spent = 0, 0, 0
        while first < len(ends):
            last = max(first, int(np.searchsorted(cost, spent + limit, side="right")) - 1)
            end = int(ends[last])
            sub_index = index + first if isinstance(index, int) else index[first:last + 1]
            yield data[start:end], sub_index
            first, start, spent = last + 1, end, int(cost[last])


class Exporter:
    """Runs one export: `run()` returns the final files or raises, leaving nothing behind."""

    def __init__(self, store: ObjectStore, dataset: SourceDataset, req: ExportRequest, export_id: str,
                 on_progress: ProgressFn | None = None, *, run_id: str = "0", tmp_dir: str | None = None,
                 batch_bytes: int = BATCH_BYTES, on_phase: Callable[[str], None] | None = None,
                 report_process_bytes: int = REPORT_PROCESS_BYTES, with_report: bool = True,
                 report_processes: int = REPORT_PROCESSES) -> None:
        self.store = store
        self.ds = dataset
        self.req = req
        self.fmt = FORMATS[req.format]
        self.export_id = export_id
        self.staging = f"staging/exports/{export_id}/{run_id}/"
        self.final = f"exports/{export_id}/"
        self.on_progress = on_progress
        self.on_phase = on_phase
        self.tmp_dir = tmp_dir
        self.batch_bytes = batch_bytes
        wanted = req.additional_params.get("split")
        self.splits = [s for s in dataset.splits if wanted is None or s.name == wanted]
        self.ctx = convert.Context(dataset.training_type, req.system_message,
                                   req.additional_params.get("export_type", "documents"), dataset.id)
        self.counter = _Counter()
        self.staged: list[OutputFile] = []
        self.feeder: _ReportFeeder | ReportPool | None = None
        if self.fmt.name == "openai" and with_report:  # with_report=False only for the benchmark
            n_epochs = req.additional_params.get("n_epochs")
            model = req.additional_params.get("model", "gpt-4o-mini")
            epochs = int(n_epochs) if n_epochs else None
            size = sum(s.num_bytes for s in self.splits)
            if size >= report_process_bytes:
                self.feeder = ReportPool(model, epochs, report_processes)
            else:
                from services.exporter.openai_report import OpenAIReport

                self.feeder = _ReportFeeder(OpenAIReport(model=model, n_epochs=epochs))

    # -- progress ---------------------------------------------------------------

    def _advance(self, rows: int, nbytes: int) -> None:
        c = self.counter
        with c.lock:
            c.rows += rows
            c.bytes += nbytes
            args = (c.rows, c.bytes, c.rows_total, c.bytes_total)
        if self.on_progress is not None:
            self.on_progress(*args)

    # -- output framing -----------------------------------------------------------

    def _frame(self, batches: Iterable[bytes]) -> Iterator[bytes]:
        """Records -> file bytes: JSONL lines, a streamed JSON array, or CSV with BOM and header."""
        framing = self.fmt.framing
        if framing == "csv":
            yield CSV_BOM + convert.csv_header(self.ctx)
            yield from batches
            return
        if framing == "jsonl":
            for blob in batches:
                if blob:
                    yield blob + b"\n"
            return
        first = True
        yield b"["
        for blob in batches:
            if not blob:
                continue
            yield (b"\n" if first else b",\n") + blob
            first = False
        yield b"]\n" if first else b"\n]\n"

    def _records(self, batches: Iterable[tuple[bytes, int | Any]], report_split: str | None) -> Iterator[bytes]:
        sep = b",\n" if self.fmt.framing == "json_array" else b"\n"
        fmt = self.fmt.name if self.fmt.name != "csv" else "csv"
        for data, index in bound_batches(batches, convert.row_overhead(self.ctx), self.batch_bytes):
            out, n = convert.convert_batch(fmt, data, self.ctx, index, sep)
            if self.feeder is not None and report_split is not None and out:
                self.feeder.put(out, report_split)
            self._advance(n, len(data))
            yield out

    def _source_batches(self, split: SourceSplit) -> Iterator[tuple[bytes, int]]:
        # Row indices count through the selected splits in order, as the shuffle numbers them.
        index = sum(s.num_rows for s in self.splits[: self.splits.index(split)])
        for data in iter_line_batches(self.store, split.key, self.batch_bytes):
            yield data, index
            index += _count_lines(data)

    def _upload(self, name: str, chunks: Iterable[bytes]) -> OutputFile:
        res = self.store.upload_stream(self.staging + name, chunks, content_type=content_type(name),
                                       part_size=PART_SIZE, queue_chunks=UPLOAD_QUEUE)
        out = OutputFile(name, self.staging + name, res.size, res.sha256)
        self.staged.append(out)
        return out

    def _put(self, name: str, data: bytes) -> OutputFile:
        res = self.store.put_bytes(self.staging + name, data, content_type=content_type(name))
        out = OutputFile(name, self.staging + name, res.size, res.sha256)
        self.staged.append(out)
        return out

    # -- the run ------------------------------------------------------------------

    def _phase(self, phase: str) -> None:
        if self.on_phase is not None:
            self.on_phase(phase)

    def run(self) -> list[OutputFile]:
        try:
            try:
                self._produce()
            finally:
                if self.feeder is not None:
                    self.feeder.stop()
            self._phase("saving")
            finals = []
            for f in self.staged:
                self._copy(f.key, self.final + f.name, f.size)
                finals.append(OutputFile(f.name, self.final + f.name, f.size, f.sha256))
            self._cleanup(self.staging)
            return finals
        except BaseException:
            self.discard()
            raise

    def _copy(self, src: str, dst: str, size: int) -> None:
        """Server-side copy; objects over S3's 5 GiB CopyObject limit go by multipart UploadPartCopy."""
        if size < MAX_SINGLE_COPY:
            self.store.copy(src, dst)
            return
        from minio.commonconfig import ComposeSource

        try:
            self.store.client.compose_object(self.store.bucket, dst, [ComposeSource(self.store.bucket, src)])
        except Exception as exc:
            raise Unavailable(f"object storage failed to copy {src}: {type(exc).__name__}") from exc

    def discard(self) -> None:
        """Remove everything this run wrote (staging and any final copies)."""
        for prefix in (self.staging, self.final):
            self._cleanup(prefix)

    def _cleanup(self, prefix: str) -> None:
        try:
            self.store.delete_prefix(prefix)
        except Exception:  # noqa: BLE001 - best effort; the original error matters more
            log.warning("could not remove %s", prefix, exc_info=True)

    def _produce(self) -> None:
        rows_total = sum(s.num_rows for s in self.splits)
        bytes_total = sum(s.num_bytes for s in self.splits)
        shuffle = self.req.train_split < 1.0
        # A split export reads the source twice (into the shuffle spool, then out of it in split order): bytes
        # count both passes, so they track the work; rows count converted rows only, once each.
        self.counter.rows_total = rows_total
        self.counter.bytes_total = bytes_total * (2 if shuffle else 1)
        hf = self.fmt.name == "huggingface"
        split_files: list[tuple[str, OutputFile, int]] = []  # (split, file, rows) for the HF card
        if shuffle:
            split_files = self._produce_shuffled(rows_total, bytes_total, hf)
        elif hf:
            split_files = self._produce_hf_splits()
        else:
            self._produce_one_file()
        if hf:
            self._hf_metadata(split_files)
        if self.feeder is not None:
            self._put_report(self.feeder.result())

    def _produce_one_file(self) -> None:
        """Every source split, in order, into one file."""
        def all_splits() -> Iterator[tuple[bytes, int]]:
            for s in self.splits:
                yield from self._source_batches(s)

        name = self.req.output_filename
        self._upload(f"{name}{self.fmt.file_extension}", self._frame(self._records(all_splits(), "train")))

    def _produce_hf_splits(self) -> list[tuple[str, OutputFile, int]]:
        """One huggingface file per source split: (split, file, rows)."""
        split_files = []
        for s in self.splits:
            rows_before = self.counter.rows
            f = self._upload(f"{self.req.output_filename}/{s.name}.jsonl",
                             self._frame(self._records(self._source_batches(s), None)))
            split_files.append((s.name, f, self.counter.rows - rows_before))
        return split_files

    def _produce_shuffled(self, rows_total: int, bytes_total: int, hf: bool) -> list[tuple[str, OutputFile, int]]:
        """Shuffle every source row into train and validation files: (split, file, rows)."""
        spool = ShuffleSpool(rows_total, bytes_total, self.req.train_split, self.req.seed, self.tmp_dir)
        try:
            for s in self.splits:
                for data in iter_line_batches(self.store, s.key, self.batch_bytes):
                    lines = data.split(b"\n")[:-1]
                    spool.add(lines)
                    self._advance(0, len(data))
            spool.finish_pass1()
            return [self._upload_shuffled(spool, split, hf) for split in ("train", "validation")]
        finally:
            spool.close()

    def _upload_shuffled(self, spool: ShuffleSpool, split: str, hf: bool) -> tuple[str, OutputFile, int]:
        name = self.req.output_filename
        rows_before = self.counter.rows
        batches = spool.iter_split(split, self.batch_bytes)
        fname = f"{name}/{split}.jsonl" if hf else f"{name}_{split}{self.fmt.file_extension}"
        f = self._upload(fname, self._frame(self._records(batches, split)))
        rows = self.counter.rows - rows_before
        if hf and rows == 0:
            # An empty split (tiny dataset) would break datasets.load_dataset: leave it out.
            self.store.delete(f.key)
            self.staged.remove(f)
        return split, f, rows

    def _put_report(self, report: dict[str, Any]) -> None:
        from services.exporter.openai_report import render_text

        name = self.req.output_filename
        self._put(f"{name}.validation.json", json.dumps(report, indent=2, ensure_ascii=False).encode())
        self._put(f"{name}.validation.txt", render_text(report).encode())

    def _hf_metadata(self, split_files: list[tuple[str, OutputFile, int]]) -> None:
        name = self.req.output_filename
        params = self.req.additional_params
        pretty = params.get("dataset_name") or name
        license_id = params.get("license") or "other"
        description = params.get("description") or (
            f"{self.ds.training_type.value} fine-tuning data exported by Ferry from dataset "
            f"{self.ds.name!r}" + (f" ({self.ds.source_repo})" if self.ds.source_repo else "") + ".")
        splits = [(split, f.size, rows, f.name.split("/", 1)[1]) for split, f, rows in split_files if rows > 0]
        if not splits:
            raise Internal("the export has no rows to write")
        info = hf_card.dataset_info(self.ds.training_type, pretty, license_id, description, splits)
        self._put(f"{name}/dataset_info.json", json.dumps(info, indent=2, ensure_ascii=False).encode())
        front = hf_card.card_yaml(self.ds.training_type, pretty, license_id, splits)
        card = "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n\n" + \
            hf_card.card_body(self.ds.training_type, pretty, description, splits, self.ds)
        self._put(f"{name}/README.md", card.encode())
        self._put(f"{name}/push_to_hub.py", hf_card.PUSH_SCRIPT.encode())

