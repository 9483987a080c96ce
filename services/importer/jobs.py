"""Running import jobs: a worker pool that streams source files into canonical JSONL in object storage.

Pipeline per split: data files -> record batches (reader.py, row groups prefetched) -> RowMapper -> JSONL parts
of one S3 multipart upload under the reserved `datasets/{id}/` prefix, with the line index built as the bytes
pass. After each part is stored the job's checkpoint (upload id, parts, source position, index state, counters)
goes to the catalog, so an importer that dies is resumed by another one from its last part, not from zero.
The multipart object is invisible until completed; a failed or cancelled job aborts it and deletes the prefix.
The job record never holds a token in clear: a request's own HF token stays in this process's memory and goes
into the request only sealed with FERRY_TOKEN_KEY (tokens.py), so another replica can resume the job with it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import threading
import time
import uuid
from array import array
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import pyarrow as pa
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from ferry.canonical import TrainingType
from ferry.catalog_client import CatalogClient
from ferry.datasets import DatasetRegistration, DatasetSource, Feature, SourceKind, Split
from ferry.errors import Cancelled, FailedPrecondition, FerryError, NotFound, Unavailable
from ferry.jobs import Job, JobKind, JobProgress, JobUpdate, Phase
from ferry.jsonl import LineIndexBuilder
from ferry.media import content_type
from ferry.storage import ObjectStore
from services.importer import reader
from services.importer.convert import RowMapper
from services.importer.hub import DownloadGaveUp, DownloadRetry, HubClient, Meter
from services.importer.mapping import describe_schema
from services.importer.sources import Source, data_format, resolve
from services.importer.tokens import TokenSealer

log = logging.getLogger("ferry.importer.jobs")

PART_SIZE = 16 * 1024 * 1024
MAX_PARTS_IN_FLIGHT = 3
REPORT_INTERVAL = 0.25
HEARTBEAT_INTERVAL = 0.4
MAX_SKIP_REASONS = 20
# An UNAVAILABLE store, catalog or Hub (after the store's and the Hub client's own quick retries; catalog calls are
# not retried) pauses the job and resumes it from its last checkpoint, waiting 2, 4, 8 then 16 s, before the job
# fails: a store or Hub restart is not an error. A download that gave up after its own deadline (DownloadGaveUp:
# the Hub kept dropping the connection) is not resumed: that would only start the same deadline again.
TRANSIENT_RETRIES = 4
RETRY_BASE_SECONDS = 2.0
# request_json stores the source kind as the number importers have always written there (the catalog proto's
# numbering), so a job queued by one importer version is resumed by another.
SOURCE_KIND_CODES = {SourceKind.UNSPECIFIED: 0, SourceKind.HUB: 1, SourceKind.LOCAL_DIR: 2, SourceKind.LOCAL_FILES: 3}
_SOURCE_KINDS = {code: kind for kind, code in SOURCE_KIND_CODES.items()}


class _Stop(Exception):
    """The importer is shutting down or lost the job: leave everything for the next owner."""


@dataclass
class ImportRequest:
    """A validated import, as stored in the job's request_json (never a token in clear)."""

    dataset_name: str
    source_kind: SourceKind
    repo_id: str
    revision: str
    config: str
    splits: list[str]
    training_type: TrainingType
    field_mappings: dict[str, str]
    max_samples: int
    name: str
    features: list[tuple[str, str]]
    bytes_total: int = 0
    rows_total: int = 0
    # The request's own HF token, sealed for this job with FERRY_TOKEN_KEY (tokens.py); never the token itself.
    sealed_token: str = ""

    def to_json(self) -> str:
        return json.dumps({**self.__dict__, "source_kind": SOURCE_KIND_CODES[self.source_kind],
                           "training_type": self.training_type.value}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ImportRequest:
        d = json.loads(text)
        d["features"] = [tuple(x) for x in d.get("features", [])]
        d["source_kind"] = _SOURCE_KINDS.get(int(d.get("source_kind", 0)), SourceKind.UNSPECIFIED)
        d["training_type"] = TrainingType(d["training_type"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# -- progress ----------------------------------------------------------------------------------------------------

class Reporter:
    """Sends the job's progress to the catalog from its own thread: every REPORT_INTERVAL when it changed, and at
    least every HEARTBEAT_INTERVAL (the heartbeat) when it did not.

    It is also how the worker learns of a cancel request or of losing the job to another worker. While a download
    reconnects after dropped connections (download_retry, the job meter's on_retry) the message says so.
    """

    def __init__(self, catalog: CatalogClient, job_id: str, worker_id: str, meter: Meter, req: ImportRequest,
                 start_rows: int = 0, start_skipped: int = 0, start_bytes: int = 0) -> None:
        self.catalog = catalog
        self.job_id = job_id
        self.worker_id = worker_id
        self.meter = meter
        self.req = req
        self.rows_base = start_rows
        self.rows = 0  # rows output in this run, on top of rows_base
        self.skipped = start_skipped
        self.bytes_base = start_bytes
        self.skip_reasons: list[str] = []
        self.message = ""
        self.cancel_requested = False
        self.lost = False
        self._lock = threading.Lock()
        # Reads reconnecting now -> what the message says about them (the latest one is shown).
        self._retrying: dict[int, str] = {}
        self._retrying_lock = threading.Lock()
        self._sent_at = 0.0
        self._last: tuple[Any, ...] = ()
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name=f"report:{job_id[:8]}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    @property
    def rows_done(self) -> int:
        return self.rows_base + self.rows

    @property
    def bytes_done(self) -> int:
        return self.bytes_base + self.meter.bytes

    def progress(self, final: bool = False) -> JobProgress:
        elapsed = max(time.monotonic() - self._t0, 1e-6)
        rows_total = self.req.rows_total
        bytes_total = self.req.bytes_total
        if final:
            pct = 100.0
        elif rows_total > 0:
            pct = min(99.0, 100.0 * self.rows_done / rows_total)
        elif bytes_total > 0:
            pct = min(99.0, 100.0 * self.bytes_done / bytes_total)
        else:
            pct = 0.0
        return JobProgress(rows_done=self.rows_done, rows_total=rows_total, bytes_done=self.bytes_done,
                           bytes_total=bytes_total, rows_per_second=self.rows / elapsed,
                           bytes_per_second=self.meter.bytes / elapsed, percent=pct)

    def download_retry(self, event: DownloadRetry) -> None:
        """A download reconnecting after a dropped connection, or a read that reconnected ending (Meter.on_retry;
        on the downloading thread, so it only notes it: the next report carries it)."""
        with self._retrying_lock:
            self._retrying.pop(event.read, None)
            if not event.ended:
                self._retrying[event.read] = (f"downloading {event.path}: connection dropped, retry {event.retry} "
                                              f"(resumed at byte {event.position:,})")

    def clear_retries(self) -> None:
        with self._retrying_lock:
            self._retrying.clear()

    def _retry_note(self) -> str:
        with self._retrying_lock:
            return next(reversed(self._retrying.values()), "")

    def _message(self, phase: Phase | None) -> str:
        """The message with what a reconnecting download is doing, if one is (never on a terminal phase)."""
        note = "" if phase is not None and phase.terminal else self._retry_note()
        if not note:
            return self.message
        return f"{self.message}; {note}" if self.message else note

    def send(self, phase: Phase | None = None, *, checkpoint: str = "", error: str = "", dataset_id: int = 0,
             message: str | None = None, final: bool = False) -> Job | None:
        with self._lock:
            if message is not None:
                self.message = message
            update = JobUpdate(
                job_id=self.job_id, worker_id=self.worker_id, phase=phase, progress=self.progress(final),
                message=self._message(phase), error=error, checkpoint_json=checkpoint, dataset_id=dataset_id,
                rows_skipped=self.skipped, skip_reasons=self.skip_reasons[:MAX_SKIP_REASONS],
            )
            try:
                job = self.catalog.update_job(update)
            except FailedPrecondition as exc:
                # Another worker owns the job now (we were presumed dead): stop touching it.
                log.warning("job %s: lost ownership (%s)", self.job_id, exc)
                self.lost = True
                self.meter.abort.set()
                return None
            except NotFound:
                self.lost = True
                return None
            self._sent_at = time.monotonic()
            if job.cancel_requested:
                self.cancel_requested = True
                self.meter.abort.set()
            return job

    def _loop(self) -> None:
        while not self._stop.wait(REPORT_INTERVAL):
            state = (self.rows, self.meter.bytes, self.skipped, self._retry_note())
            due = time.monotonic() - self._sent_at >= HEARTBEAT_INTERVAL
            if state != self._last or due:
                self._last = state
                try:
                    self.send()
                except FerryError as exc:
                    log.warning("job %s: progress update failed: %s", self.job_id, exc)
                if self.lost:
                    return

    def add_skips(self, n: int, reasons: list[str]) -> None:
        self.skipped += n
        for r in reasons:
            if len(self.skip_reasons) >= MAX_SKIP_REASONS:
                break
            if r not in self.skip_reasons:
                self.skip_reasons.append(r)


# -- writing one split -------------------------------------------------------------------------------------------

@dataclass
class SplitState:
    """Resume state of the split being written (part of the checkpoint)."""

    split: str
    key: str
    upload_id: str = ""
    parts: list[list[Any]] = field(default_factory=list)  # [part_number, etag, size]
    position: dict[str, int] = field(default_factory=dict)
    index_offsets: str = ""  # base64 of the index builder's uint64 offsets
    index_lines: int = 0
    index_size: int = 0
    rows: int = 0
    skipped: int = 0
    src_bytes: int = 0  # source bytes consumed up to this checkpoint (progress continues from here)

    def builder(self) -> LineIndexBuilder:
        b = LineIndexBuilder()
        if self.index_offsets:
            b.offsets = array("Q")
            b.offsets.frombytes(base64.b64decode(self.index_offsets))
        b.lines = self.index_lines
        b.size = self.index_size
        return b


def _snapshot(b: LineIndexBuilder) -> tuple[str, int, int]:
    return base64.b64encode(b.offsets.tobytes()).decode(), b.lines, b.size


@dataclass
class _Pending:
    """A part being uploaded, and where the split stood when it was cut (its state once the part is stored)."""

    number: int
    size: int
    future: Future[str]
    position: dict[str, int]
    index: tuple[str, int, int]
    rows: int
    skipped: int
    src_bytes: int


class Runner:
    """Runs one claimed import job to a terminal phase (or stops it cleanly for a later resume)."""

    def __init__(self, owner: JobPool, job: Job, token: str | None) -> None:
        self.pool = owner
        self.job = job
        self.req = ImportRequest.from_json(job.request_json)
        self.token = token or owner.unseal(self.req.sealed_token, job.id)
        self.store = owner.store
        self.cp: dict[str, Any] = json.loads(job.checkpoint_json) if job.checkpoint_json else {}
        self.meter = Meter()
        done = self.cp.get("done", [])
        cur = self.cp.get("current") or {}
        self.reporter = Reporter(
            owner.catalog, job.id, owner.worker_id, self.meter, self.req,
            start_rows=sum(int(d["rows"]) for d in done) + int(cur.get("rows", 0)),
            start_skipped=int(self.cp.get("skipped", 0)),
            start_bytes=int(self.cp.get("src_bytes", 0)),
        )
        self.reporter.skip_reasons = list(self.cp.get("skip_reasons", []))
        self.meter.on_retry = self.reporter.download_retry

    # -- checkpointing ---------------------------------------------------------------------------------------

    def checkpoint(self) -> None:
        self.cp["skipped"] = self.reporter.skipped
        self.cp["skip_reasons"] = self.reporter.skip_reasons[:MAX_SKIP_REASONS]
        self.reporter.send(checkpoint=json.dumps(self.cp), dataset_id=int(self.cp.get("dataset_id", 0)))
        self.check()

    def check(self) -> None:
        if self.reporter.lost or self.pool.stopping.is_set():
            raise _Stop()
        if self.reporter.cancel_requested:
            raise Cancelled("import cancelled")

    # -- the job ---------------------------------------------------------------------------------------------

    def run(self) -> None:
        self.reporter.start()
        try:
            self._run_retrying()
        except _Stop:
            log.info("job %s: stopped at its last checkpoint (will resume)", self.job.id)
        except Cancelled:
            if self.pool.stopping.is_set() or self.reporter.lost:
                log.info("job %s: stopped at its last checkpoint (will resume)", self.job.id)
                return
            self._cleanup()
            self.reporter.send(Phase.CANCELLED, message="import cancelled; nothing was kept")
        except FerryError as exc:
            if self.reporter.lost:
                return
            log.warning("job %s failed: %s", self.job.id, exc)
            self._cleanup()
            self.reporter.send(Phase.ERROR, error=exc.message, message="import failed")
        except Exception as exc:  # noqa: BLE001 - the job must end in a terminal phase
            if self.reporter.lost:
                return
            ref = uuid.uuid4().hex[:12]
            log.exception("job %s crashed (ref %s)", self.job.id, ref)
            self._cleanup()
            self.reporter.send(Phase.ERROR, error=f"internal error (ref {ref}): {type(exc).__name__}",
                               message="import failed")
        finally:
            self.reporter.close()

    def _run_retrying(self) -> None:
        """_run(), resumed from the last checkpoint after each Unavailable (TRANSIENT_RETRIES times, waiting
        RETRY_BASE_SECONDS doubling); then the last Unavailable is the job's error."""
        Retrying(
            stop=stop_after_attempt(TRANSIENT_RETRIES + 1),
            wait=wait_exponential(multiplier=RETRY_BASE_SECONDS, exp_base=2),
            # A job another worker took over is not resumed here.
            retry=retry_if_exception(lambda exc: isinstance(exc, Unavailable) and not isinstance(exc, DownloadGaveUp)
                                     and not self.reporter.lost),
            before_sleep=self._before_resume,
            sleep=self._wait_to_resume,
            reraise=True,
        )(self._attempt)

    def _attempt(self) -> None:
        try:
            self._run()
        except Unavailable as exc:
            if self.pool.stopping.is_set():
                raise _Stop() from exc  # shutting down anyway: the next owner resumes from the checkpoint
            raise

    def _before_resume(self, state: RetryCallState) -> None:
        """Say why the job pauses and for how long, with progress back at the last checkpoint."""
        exc = cast(Unavailable, state.outcome.exception() if state.outcome else None)
        delay, retry = state.upcoming_sleep, state.attempt_number
        log.warning("job %s: %s; resuming from the last checkpoint in %.0fs (retry %d of %d)",
                    self.job.id, exc.message, delay, retry, TRANSIENT_RETRIES)
        self._rewind()
        try:
            self.reporter.send(message=f"{exc.message}; resuming from the last checkpoint in {delay:.0f}s "
                                       f"(retry {retry} of {TRANSIENT_RETRIES})")
        except FerryError:
            pass  # the catalog may be what is down; the heartbeat thread keeps trying

    def _wait_to_resume(self, delay: float) -> None:
        if self.pool.stopping.wait(delay):
            raise _Stop() from None
        self.check()

    def _rewind(self) -> None:
        """Progress back to the last checkpoint: rows converted after it will be converted again."""
        cur = self.cp.get("current") or {}
        rep = self.reporter
        rep.rows_base = sum(int(d["rows"]) for d in self.cp.get("done", [])) + int(cur.get("rows", 0))
        rep.rows = 0
        rep.skipped = int(cur["skipped"]) if cur else int(self.cp.get("skipped", 0))
        rep.clear_retries()

    def _run(self) -> None:
        req = self.req
        if self.job.cancel_requested:
            raise Cancelled("import cancelled")
        self.reporter.send(Phase.DOWNLOADING, message=f"reading {req.dataset_name} at {req.revision[:12]}")
        self.check()
        source = resolve(self.pool.hub, req.dataset_name, req.revision, self.token, self.pool.local_dirs)
        if source.revision != req.revision:
            raise FailedPrecondition(f"{req.dataset_name} changed since the import was requested (revision "
                                     f"{req.revision[:12]} is no longer what the source holds)")
        if "dataset_id" not in self.cp:
            dataset_id, prefix = self.pool.catalog.reserve_dataset(self.job.id)
            self.cp["dataset_id"] = dataset_id
            self.cp["prefix"] = prefix or f"datasets/{dataset_id}/"
            self.cp.setdefault("done", [])
            self.checkpoint()
        prefix = str(self.cp["prefix"])
        done_names = {d["split"] for d in self.cp["done"]}
        for split in req.splits:
            if split in done_names:
                continue
            cur = self.cp.get("current")
            state = SplitState(**cur) if cur and cur.get("split") == split else SplitState(
                split, f"{prefix}{_safe(split)}.jsonl", skipped=self.reporter.skipped)
            self._import_split(source, state)
        self._finish(source)

    def _finish(self, source: Source) -> None:
        req = self.req
        self.reporter.send(Phase.SAVING, message="registering the dataset")
        self.check()
        splits = [Split(d["split"], int(d["rows"]), int(d["bytes"]), d["key"], d["index_key"])
                  for d in self.cp["done"]]
        dataset = self.pool.catalog.register_dataset(DatasetRegistration(
            dataset_id=int(self.cp["dataset_id"]), name=req.name,
            source=DatasetSource(req.source_kind, req.repo_id, req.revision, req.config, list(req.splits)),
            training_type=req.training_type, splits=splits, field_mappings=req.field_mappings,
            features=[Feature(n, t) for n, t in req.features], row_features=row_features(req.training_type),
            import_job_id=self.job.id,
        ))
        total = sum(int(d["rows"]) for d in self.cp["done"])
        msg = f"imported {total} rows into dataset {dataset.id}"
        if self.reporter.skipped:
            msg += f" ({self.reporter.skipped} rows skipped)"
        self.reporter.send(Phase.COMPLETE, dataset_id=dataset.id, message=msg, final=True)

    def _cleanup(self) -> None:
        """Abort the open multipart upload and remove everything under the reserved prefix."""
        cur = self.cp.get("current") or {}
        try:
            if cur.get("upload_id"):
                try:
                    self.store.abort_multipart(cur["key"], cur["upload_id"])
                except Exception as exc:  # noqa: BLE001
                    log.info("job %s: abort upload: %s", self.job.id, type(exc).__name__)
            prefix = self.cp.get("prefix")
            if prefix:
                self.store.delete_prefix(prefix)
            if self.cp.get("dataset_id"):
                try:
                    self.pool.catalog.delete_dataset(int(self.cp["dataset_id"]))
                except FerryError as exc:
                    log.info("job %s: releasing reserved dataset: %s", self.job.id, exc)
        except FerryError as exc:
            log.warning("job %s: cleanup failed: %s", self.job.id, exc)

    # -- one split -------------------------------------------------------------------------------------------

    def _import_split(self, source: Source, st: SplitState) -> None:
        """Write one split (from its checkpoint when resumed), complete its upload and index, mark it done."""
        self.cp["current"] = st.__dict__  # the live state: each stored part moves it forward
        resuming = bool(st.upload_id)
        if not resuming:
            st.upload_id = self.store.start_multipart(st.key, content_type(st.key))
            self.checkpoint()
        self.meter.bytes = 0
        self.reporter.bytes_base = int(self.cp.get("src_bytes", 0))
        self.reporter.send(Phase.CONVERTING, message=f"converting split {st.split}")
        writer = _SplitWriter(self, source, st, resuming)
        t0 = time.perf_counter()
        writer.write()
        self.check()
        self.store.complete_multipart(st.key, st.upload_id, [(int(n), str(e)) for n, e, _ in st.parts])
        log.info("job %s split %s: %d rows, %d bytes in %.1fs (%s)", self.job.id, st.split, writer.rows,
                 writer.builder.size, time.perf_counter() - t0,
                 ", ".join(f"{k} {v:.1f}s" for k, v in writer.timing.items()))
        index_key = st.key[: -len(".jsonl")] + ".idx"
        self.store.put_bytes(index_key, writer.builder.finish())
        self.cp["done"].append({"split": st.split, "key": st.key, "index_key": index_key, "rows": writer.rows,
                                "bytes": writer.builder.size})
        self.cp["current"] = None
        self.checkpoint()


class _SplitWriter:
    """Converts one split into the parts of its multipart upload, moving the checkpoint as each part is stored.

    Reads record batches from the split's position, maps them to JSONL (fed to the line index as it goes) and
    uploads a part whenever part_size bytes are buffered, with up to MAX_PARTS_IN_FLIGHT parts in flight.
    Parts are recorded in order: once a part is stored, the split's state takes the source position, index state
    and counters as they were when that part was cut, and the job is checkpointed.
    """

    def __init__(self, runner: Runner, source: Source, st: SplitState, resuming: bool) -> None:
        self.runner = runner
        self.source = source
        self.st = st
        self.req = runner.req
        self.start = reader.Position.from_json(st.position) if st.position else reader.Position()
        self.builder = st.builder()
        self.rows = st.rows  # rows written to the split, its checkpointed ones included
        self.max_rows = self.req.max_samples or 0
        self.mapper: RowMapper | None = None
        self.buf: list[bytes] = []
        self.buf_size = 0
        self.pending: deque[_Pending] = deque()
        # A resumed upload skips the part numbers the previous owner may still have had in flight, so a late
        # upload from it can never overwrite one of ours (S3 allows gaps; only listed parts are kept).
        self.next_part = (st.parts[-1][0] if st.parts else 0) + (MAX_PARTS_IN_FLIGHT + 1 if resuming else 1)
        self.timing = {"read": 0.0, "convert": 0.0, "upload_wait": 0.0, "checkpoint": 0.0}

    @contextmanager
    def _timed(self, what: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.timing[what] += time.perf_counter() - t0

    def write(self) -> None:
        """Every part of the split stored and recorded; on any failure the parts still in flight are dropped."""
        batches, schema = self._batches()
        try:
            pos = self._convert_all(batches, schema)
            if self.rows == 0:
                reporter = self.runner.reporter
                reasons = "; ".join(reporter.skip_reasons[:3])
                raise FailedPrecondition(
                    f"no row of split {self.st.split!r} passed validation for {self.req.training_type.value}"
                    + (f" ({reporter.skipped} skipped, e.g. {reasons})" if reporter.skipped
                       else " (the split is empty)"))
            if self.buf_size or not self.st.parts and not self.pending:
                self._flush(pos)
            with self._timed("upload_wait"):
                self._settle(block=True)
        except BaseException:
            self._drop_pending()
            raise
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    def _convert_all(self, batches: Iterator[reader.Batch], schema: pa.Schema | None) -> reader.Position:
        """Convert batches until the split (or max_samples) ends; the position after the last one."""
        pos = self.start
        while True:
            with self._timed("read"):
                item = next(batches, None)
            if item is None:
                return pos
            table, pos = item
            self.runner.check()
            with self._timed("convert"):
                if self.mapper is None:
                    self.mapper = RowMapper(self.req.training_type, self.req.field_mappings, schema or table.schema)
                self._convert(self.mapper, table, pos)
            self._settle(block=False)
            if self.max_rows and self.rows >= self.max_rows:
                return pos
            if self.buf_size >= self.runner.pool.part_size:
                self._flush(pos)

    def _convert(self, mapper: RowMapper, table: pa.Table, pos: reader.Position) -> None:
        reporter = self.runner.reporter
        for rb in _record_batches(table):
            if self.max_rows:
                remaining = self.max_rows - self.rows
                if remaining <= 0:
                    break
                rb = rb.slice(0, remaining) if rb.num_rows > remaining else rb
            try:
                mapped = mapper.map_batch(rb)
            except (KeyError, pa.ArrowException) as exc:
                raise FailedPrecondition(
                    f"rows of {self.source.split_files(self.req.config, self.st.split)[pos.file_index]} do not fit "
                    f"the mapping: {type(exc).__name__}: {str(exc)[:200]}") from None
            if mapped.jsonl:
                self.builder.feed(mapped.jsonl)
                self.buf.append(mapped.jsonl)
                self.buf_size += len(mapped.jsonl)
            self.rows += mapped.rows_ok
            reporter.rows += mapped.rows_ok
            if mapped.rows_skipped:
                reporter.add_skips(mapped.rows_skipped, mapped.skip_reasons)

    def _flush(self, pos: reader.Position) -> None:
        """Upload the buffered JSONL as the next part; waits while MAX_PARTS_IN_FLIGHT are in flight."""
        data = b"".join(self.buf)
        self.buf, self.buf_size = [], 0
        reporter = self.runner.reporter
        st = self.st
        future = self.runner.pool.upload_pool.submit(self.runner.store.upload_part, st.key, st.upload_id,
                                                     self.next_part, data)
        self.pending.append(_Pending(self.next_part, len(data), future, pos.to_json(), _snapshot(self.builder),
                                     self.rows, reporter.skipped, reporter.bytes_done))
        self.next_part += 1
        with self._timed("upload_wait"):
            while len(self.pending) >= MAX_PARTS_IN_FLIGHT:
                self._settle(block=True)

    def _settle(self, block: bool) -> None:
        """Record finished parts in order; each one moves the checkpoint forward."""
        st = self.st
        while self.pending and (block or self.pending[0].future.done()):
            p = self.pending.popleft()
            etag = p.future.result()  # ObjectStore.upload_part raises a domain error naming the part
            st.parts.append([p.number, etag, p.size])
            st.position = p.position
            st.index_offsets, st.index_lines, st.index_size = p.index
            st.rows, st.skipped, st.src_bytes = p.rows, p.skipped, p.src_bytes
            self.runner.cp["src_bytes"] = p.src_bytes
            with self._timed("checkpoint"):
                self.runner.checkpoint()

    def _drop_pending(self) -> None:
        """The split failed or stopped: cancel the parts not started, wait for the ones uploading."""
        for p in self.pending:
            p.future.cancel()
        for p in self.pending:
            if not p.future.cancelled():
                try:
                    p.future.result(timeout=60)
                except Exception:  # noqa: BLE001,S110 - the job is failing anyway
                    pass

    def _batches(self) -> tuple[Iterator[reader.Batch], pa.Schema | None]:
        """The split's record batches from `start`, and its schema when known before reading (Parquet)."""
        paths = self.source.split_files(self.req.config, self.st.split)
        files = [self.source.open(p, self.runner.meter) for p in paths]
        pool = self.runner.pool.io_pool
        start = self.start
        if all(data_format(p)[0] == "parquet" for p in paths):
            metas: dict[int, Future[reader.ParquetMeta]] = {}

            def meta(i: int) -> reader.ParquetMeta:
                # Footers of the next files are fetched ahead too.
                for j in range(i, min(i + 2, len(files))):
                    if j not in metas:
                        metas[j] = pool.submit(reader.read_parquet_meta, files[j])
                return metas[i].result()

            schema = meta(start.file_index).schema
            # Only the mapped columns' chunks are downloaded and decoded.
            columns = RowMapper(self.req.training_type, self.req.field_mappings, schema).columns
            return reader.iter_parquet_files(meta, len(files), start, pool, columns=columns), schema

        def prefetch(i: int) -> reader.Prefetch:
            f = files[i]
            return reader.Prefetch(f.iter_range(reader.text_start_byte(f, i, start)), pool)

        def chain() -> Iterator[reader.Batch]:
            """Text files in order; the next file downloads while the current one converts."""
            schema = None
            ahead: dict[int, reader.Prefetch] = {}
            try:
                for i in range(start.file_index, len(files)):
                    raw = ahead.pop(i, None) or prefetch(i)
                    if i + 1 < len(files):
                        ahead[i + 1] = prefetch(i + 1)
                    try:
                        for table, pos in reader.iter_text_file(files[i], i, start, schema=schema, raw=raw):
                            schema = schema or table.schema
                            yield table, pos
                    finally:
                        raw.close()
            finally:
                for p in ahead.values():
                    p.close()

        return chain(), None


def _record_batches(table: pa.Table) -> list[pa.RecordBatch]:
    if isinstance(table, pa.RecordBatch):
        return [table]
    return table.combine_chunks().to_batches() or []


def _safe(split: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in split)


def row_features(tt: TrainingType) -> list[Feature]:
    msgs = "list<struct<role: string, content: string>>"
    if tt is TrainingType.CHAT:
        return [Feature("messages", msgs)]
    names = ["prompt", "completion"] if tt is TrainingType.SL else ["prompt", "chosen", "rejected"]
    return [Feature(n, "string") for n in names] + [Feature("system", "string"), Feature("history", msgs)]


def features_of(schema: pa.Schema) -> list[tuple[str, str]]:
    return [(n, t) for n, t in describe_schema(schema)]


# -- the pool ----------------------------------------------------------------------------------------------------

class JobPool:
    """FERRY_IMPORT_WORKERS job threads, plus a scanner that claims queued and stalled imports (resume)."""

    def __init__(self, catalog: CatalogClient, store: ObjectStore, hub: HubClient, workers: int,
                 local_dirs: tuple[str, ...], scan_seconds: float = 10.0, part_size: int = PART_SIZE,
                 sealer: TokenSealer | None = None) -> None:
        self.catalog = catalog
        self.sealer = sealer
        self.part_size = part_size
        self.store = store
        self.hub = hub
        self.local_dirs = local_dirs
        self.workers = workers
        self.worker_id = f"importer-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.stopping = threading.Event()
        self.io_pool = ThreadPoolExecutor(max_workers=4 * workers, thread_name_prefix="import-io")
        self.upload_pool = ThreadPoolExecutor(max_workers=MAX_PARTS_IN_FLIGHT * workers,
                                              thread_name_prefix="import-upload")
        self._slots = threading.Semaphore(workers)
        self._threads: set[threading.Thread] = set()
        self._tokens: dict[str, str] = {}
        self._running: set[str] = set()
        self._meters: list[Meter] = []
        self._lock = threading.Lock()
        self._scan_seconds = scan_seconds
        self._scanner = threading.Thread(target=self._scan_loop, name="import-scan", daemon=True)
        self._wake = threading.Event()

    def start(self) -> None:
        self._scanner.start()

    def unseal(self, sealed: str, job_id: str) -> str | None:
        """A resumed job's own HF token, if the request sealed one and this importer holds the same key."""
        if not sealed:
            return None
        token = self.sealer.open(sealed, job_id) if self.sealer is not None else None
        if token is None:
            log.warning("job %s: its request's HF token cannot be opened here (%s); using HF_TOKEN if set", job_id,
                        "FERRY_TOKEN_KEY is unset" if self.sealer is None else "FERRY_TOKEN_KEY differs")
        return token

    def submit(self, job_id: str, token: str | None) -> None:
        """Run a just-created job here; if all workers are busy the scanner picks it up when one frees."""
        if token:
            with self._lock:
                self._tokens[job_id] = token
        if self._slots.acquire(blocking=False):
            self._spawn(job_id)
        else:
            self._wake.set()

    def _spawn(self, job_id: str) -> None:
        t = threading.Thread(target=self._work, args=(job_id,), name=f"import:{job_id[:8]}", daemon=True)
        with self._lock:
            self._threads.add(t)
        t.start()

    def _work(self, job_id: str) -> None:
        try:
            try:
                job = self.catalog.claim_job(JobKind.IMPORT, self.worker_id, job_id)
            except FerryError as exc:
                log.info("claim %s: %s", job_id or "(any)", exc)
                job = None
            if job is None or self.stopping.is_set():
                return
            self._run_job(job)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())
            self._slots.release()
            self._wake.set()

    def _scan_loop(self) -> None:
        while not self.stopping.is_set():
            self._claim_waiting()
            self._wake.wait(self._scan_seconds)
            self._wake.clear()

    def _claim_waiting(self) -> None:
        while not self.stopping.is_set() and self._slots.acquire(blocking=False):
            try:
                job = self.catalog.claim_job(JobKind.IMPORT, self.worker_id)
            except FerryError as exc:
                log.debug("scan for waiting imports: %s", exc)
                job = None
            if job is None or self.stopping.is_set():
                self._slots.release()
                return
            t = threading.Thread(target=self._run_claimed, args=(job,), name=f"import:{job.id[:8]}", daemon=True)
            with self._lock:
                self._threads.add(t)
            t.start()

    def _run_job(self, job: Job) -> None:
        if job.phase.terminal:
            return
        with self._lock:
            if job.id in self._running:
                return  # claimed twice by this process (scanner and submit raced)
            self._running.add(job.id)
            token = self._tokens.get(job.id)
        if job.checkpoint_json:
            log.info("job %s: resuming from its checkpoint (attempt %d)", job.id, job.attempt)
        runner = Runner(self, job, token)
        with self._lock:
            self._meters.append(runner.meter)
            if self.stopping.is_set():
                runner.meter.abort.set()
        try:
            runner.run()
        finally:
            with self._lock:
                self._meters.remove(runner.meter)
                self._running.discard(job.id)
                self._tokens.pop(job.id, None)

    def _run_claimed(self, job: Job) -> None:
        try:
            self._run_job(job)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())
            self._slots.release()
            self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking jobs; running ones stop at their next batch and keep their checkpoint for a resume."""
        self.stopping.set()
        self._wake.set()
        with self._lock:
            for meter in self._meters:
                meter.abort.set()
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.io_pool.shutdown(wait=False, cancel_futures=True)
        self.upload_pool.shutdown(wait=True, cancel_futures=True)
