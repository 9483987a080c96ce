"""Export jobs: validate, queue in the catalog, run in a worker pool, serve status and files.

The exporter keeps no state of its own: each export is a catalog job (kind
EXPORT) whose request_json holds the validated request. A pool thread claims
the job, runs `engine.Exporter` and reports progress with UpdateJob (throttled,
plus a heartbeat thread); a cancel seen in an UpdateJob answer stops the
pipeline, which removes what it wrote. Speaks to the catalog through
ferry.catalog_client; protobuf <-> caller translation stays in servicer.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ferry.catalog_client import CatalogClient
from ferry.datasets import Dataset
from ferry.errors import Cancelled, FailedPrecondition, FerryError, InvalidArgument, NotFound
from ferry.jobs import Job, JobFile, JobKind, JobProgress, JobUpdate, Phase
from ferry.storage import ObjectStore
from services.exporter import engine
from services.exporter.archive import CHUNK_BYTES, EPOCH, Member, entry_path, zip_stream
from services.exporter.config import ExporterConfig
from services.exporter.formats import FORMATS, ExportRequest, check_dataset, check_request, get_format

log = logging.getLogger("ferry.exporter")

# An export's status: its job's phase, with the work phases as one "exporting".
STATUS = {
    Phase.QUEUED: "queued", Phase.DOWNLOADING: "exporting", Phase.CONVERTING: "exporting",
    Phase.EXPORTING: "exporting", Phase.SAVING: "saving", Phase.COMPLETE: "complete", Phase.ERROR: "error",
    Phase.CANCELLED: "cancelled",
}
UPDATE_INTERVAL = 0.25
# DownloadArchive's chunk_bytes: below 4 MiB so a data message fits a gRPC client's default receive limit.
MIN_CHUNK_BYTES = 1024
MAX_CHUNK_BYTES = 4 * 1024 * 1024 - 1024


class _Lost(Exception):
    """This worker no longer owns the job (another replica took it over)."""


@dataclass
class ExportView:
    """An export as callers see it: the catalog job plus its parsed request."""

    job: Job
    request: dict[str, Any]

    @property
    def status(self) -> str:
        return STATUS.get(self.job.phase, "queued")


@dataclass(frozen=True)
class Archive:
    """What DownloadArchive announces before the zip bytes: `NAME.zip` and the files in it."""

    name: str
    files: list[JobFile]
    uncompressed_size: int


def source_dataset(ds: Dataset) -> engine.SourceDataset:
    tt = ds.training_type
    if tt is None:
        raise FailedPrecondition(f"dataset {ds.id} has no training type", field="dataset_id")
    return engine.SourceDataset(
        ds.id, ds.name, tt,
        tuple(engine.SourceSplit(s.name, s.object_key, s.num_rows, s.num_bytes) for s in ds.splits),
        ds.source.repo_id)


class ExporterCore:
    def __init__(self, cfg: ExporterConfig, store: ObjectStore | None = None) -> None:
        self.cfg = cfg
        self.store = store or ObjectStore(cfg.s3)
        self.catalog = CatalogClient(cfg.catalog_addr)
        self.worker_id = f"exporter-{uuid.uuid4().hex[:12]}"
        self.pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="export")
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._pending = 0
        self._stop = threading.Event()
        self.stopping = self._stop
        self._poller: threading.Thread | None = None
        if cfg.poll_seconds > 0:
            self._poller = threading.Thread(target=self._poll, name="export-poll", daemon=True)
            self._poller.start()

    def close(self) -> None:
        self._stop.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.catalog.close()

    # -- requests -------------------------------------------------------------------

    def formats(self) -> list[dict[str, Any]]:
        return [f.as_dict() for f in FORMATS.values()]

    def _dataset(self, dataset_id: int) -> Dataset:
        return self.catalog.get_dataset(dataset_id)

    def start(self, dataset_id: int, format_name: str, output_filename: str, system_message: str | None,
              train_split: float | None, params: dict[str, str]) -> ExportView:
        req = check_request(dataset_id, format_name, output_filename, system_message, train_split, params)
        ds = self._dataset(dataset_id)
        src = source_dataset(ds)
        check_dataset(get_format(req.format), src.training_type, [s.name for s in src.splits], params)
        if not src.splits:
            raise FailedPrecondition(f"dataset {dataset_id} has no splits to export", field="dataset_id")
        job = self.catalog.create_job(JobKind.EXPORT, json.dumps(req.to_json()), dataset_id=dataset_id,
                                      message=f"queued: {req.format} export of dataset {dataset_id}")
        self.submit(job.id)
        return ExportView(job, req.to_json())

    def _view(self, job: Job) -> ExportView:
        try:
            request = json.loads(job.request_json) if job.request_json else {}
        except ValueError:
            request = {}
        return ExportView(job, request)

    def get(self, export_id: str) -> ExportView:
        if not export_id:
            raise InvalidArgument("export_id is required", field="export_id")
        try:
            job = self.catalog.get_job(export_id)
        except NotFound:
            raise NotFound(f"export {export_id} not found") from None
        if job.kind is not JobKind.EXPORT:
            raise NotFound(f"export {export_id} not found")
        return self._view(job)

    def list(self, page_size: int, page_token: str) -> tuple[list[ExportView], str]:
        page = self.catalog.list_jobs(JobKind.EXPORT, page_size=page_size or 50, page_token=page_token)
        return [self._view(j) for j in page.jobs], page.next_page_token

    def watch(self, export_id: str, is_active: Callable[[], bool]) -> Iterator[ExportView]:
        self.get(export_id)
        stream = self.catalog.watch_job(export_id)
        try:
            for job in stream:
                if not is_active():
                    break
                yield self._view(job)
        except Cancelled:
            pass  # the watch was cancelled (the catalog or this exporter stopping): the stream just ends
        finally:
            stream.close()

    def cancel(self, export_id: str) -> ExportView:
        self.get(export_id)
        return self._view(self.catalog.cancel_job(export_id))

    def _complete(self, export_id: str) -> ExportView:
        view = self.get(export_id)
        if view.job.phase is not Phase.COMPLETE:
            raise FailedPrecondition(f"export {export_id} is not complete (status {view.status})",
                                     field="export_id")
        return view

    def file(self, export_id: str, name: str) -> JobFile:
        view = self._complete(export_id)
        for f in view.job.files:
            if f.name == name:
                return f
        raise NotFound(f"export {export_id} has no file {name!r}; files: {', '.join(f.name for f in view.job.files)}")

    def download(self, export_id: str, name: str, chunk_size: int) -> tuple[JobFile, Iterator[bytes]]:
        f = self.file(export_id, name)
        return f, self.store.iter_chunks(f.object_key, chunk_size=chunk_size or 1024 * 1024)

    def archive(self, export_id: str, chunk_bytes: int, is_active: Callable[[], bool]
                ) -> tuple[Archive, Generator[bytes, None, None]]:
        """Every file of a complete export as one zip under the folder `output_filename` (archive.py).

        Checks happen here, at once; the bytes are produced lazily by the returned generator,
        which raises DataLoss for a stored file that does not match its record.
        """
        if chunk_bytes and not MIN_CHUNK_BYTES <= chunk_bytes <= MAX_CHUNK_BYTES:
            raise InvalidArgument(f"chunk_bytes must be 0 (1 MiB) or between {MIN_CHUNK_BYTES} and "
                                  f"{MAX_CHUNK_BYTES}", field="chunk_bytes")
        view = self._complete(export_id)
        folder = str(view.request.get("output_filename") or export_id)
        files = list(view.job.files)
        members = [Member(f.name, entry_path(folder, f.name), f.object_key, f.size, f.sha256) for f in files]
        stamp = EPOCH
        if view.job.finished_at is not None:
            t = datetime.fromtimestamp(int(view.job.finished_at), UTC)
            stamp = max(EPOCH, (t.year, t.month, t.day, t.hour, t.minute, t.second))
        chunks = zip_stream(self.store, members, chunk_bytes=chunk_bytes or CHUNK_BYTES, date_time=stamp,
                            is_active=is_active)
        return Archive(f"{folder}.zip", files, sum(f.size for f in files)), chunks

    def url(self, export_id: str, name: str, expires: int) -> tuple[str, int]:
        if expires < 0 or expires > 604800:
            raise InvalidArgument("expires_seconds must be between 1 and 604800", field="expires_seconds")
        f = self.file(export_id, name)
        ttl = expires or self.cfg.url_ttl_seconds
        return self.store.presigned_get(f.object_key, ttl, filename=name.rsplit("/", 1)[-1]), ttl

    # -- the worker pool --------------------------------------------------------------

    def submit(self, job_id: str) -> None:
        with self._lock:
            self._pending += 1
        self.pool.submit(self._guarded, job_id, None)

    def _guarded(self, job_id: str, claimed: Job | None) -> None:
        try:
            self._run(job_id, claimed)
        except Exception:  # noqa: BLE001 - a pool thread must never die silently
            log.exception("export %s: worker failed", job_id)
        finally:
            with self._lock:
                self._pending -= 1

    def _poll(self) -> None:
        """Pick up queued or stalled exports (e.g. left by a replica that stopped)."""
        while not self._stop.wait(self.cfg.poll_seconds):
            with self._lock:
                busy = self._pending >= self.cfg.workers
            if busy:
                continue
            try:
                job = self.catalog.claim_job(JobKind.EXPORT, self.worker_id)
            except FerryError as exc:
                log.debug("poll for export jobs failed: %s", exc)
                continue
            if job is not None:
                with self._lock:
                    self._pending += 1
                self.pool.submit(self._guarded, job.id, job)

    def _run(self, job_id: str, claimed: Job | None) -> None:
        with self._lock:
            if job_id in self._running:
                return
            self._running.add(job_id)
        try:
            job = claimed
            if job is None:
                job = self.catalog.claim_job(JobKind.EXPORT, self.worker_id, job_id)
                if job is None:
                    return  # cancelled while queued, or another replica has it
            _JobRun(self, job).run()
        finally:
            with self._lock:
                self._running.discard(job_id)


class _JobRun:
    """One claimed export: progress, heartbeat, cancellation and the final record."""

    def __init__(self, core: ExporterCore, job: Job) -> None:
        self.core = core
        self.job = job
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self.progress = JobProgress()
        self._last_update = 0.0
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self.phase = Phase.EXPORTING

    def _update(self, **fields: Any) -> Job:
        update = JobUpdate(job_id=self.job.id, worker_id=self.core.worker_id, **fields)
        try:
            job = self.core.catalog.update_job(update)
        except FailedPrecondition:
            # Marked stalled (e.g. a long GC pause): take it back if nobody else has.
            again = self.core.catalog.claim_job(JobKind.EXPORT, self.core.worker_id, self.job.id)
            if again is None:
                self.lost.set()
                raise _Lost() from None
            job = self.core.catalog.update_job(update)
        if job.cancel_requested:
            self.cancel.set()
        return job

    def _heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(self.core.cfg.heartbeat_seconds):
            with self._lock:
                due = time.monotonic() - self._last_update >= self.core.cfg.heartbeat_seconds * 0.8
                progress = dataclasses.replace(self.progress)
            if not due:
                continue
            try:
                self._update(phase=self.phase, progress=progress)
                with self._lock:
                    self._last_update = time.monotonic()
            except _Lost:
                return
            except FerryError as exc:
                log.warning("export %s: heartbeat failed: %s", self.job.id, exc)

    def on_progress(self, rows: int, nbytes: int, rows_total: int, bytes_total: int) -> None:
        if self.cancel.is_set():
            raise Cancelled("export cancelled")
        if self.lost.is_set() or self.core.stopping.is_set():
            # Shutting down: drop what was written and stop heartbeating, so the job
            # is marked stalled and another replica picks it up from the start.
            raise _Lost()
        now = time.monotonic()
        elapsed = max(now - self._started, 1e-6)
        with self._lock:
            # Bytes track the work (a split export reads its source twice, and its rows only count once).
            self.progress = JobProgress(
                rows_done=rows, rows_total=rows_total, bytes_done=nbytes, bytes_total=bytes_total,
                rows_per_second=rows / elapsed, bytes_per_second=nbytes / elapsed,
                percent=100.0 * nbytes / bytes_total if bytes_total else 0.0)
            if now - self._last_update < UPDATE_INTERVAL:
                return
            self._last_update = now
            progress = self.progress
        try:
            self._update(phase=self.phase, progress=progress,
                         message=f"exporting: {rows:,} of {rows_total:,} rows")
        except FerryError as exc:  # the heartbeat retries; a progress blip must not fail the export
            log.warning("export %s: progress update failed: %s", self.job.id, exc)
        if self.cancel.is_set():
            raise Cancelled("export cancelled")

    def on_phase(self, phase: str) -> None:
        if self.cancel.is_set():
            raise Cancelled("export cancelled")
        if phase == "saving":
            self.phase = Phase.SAVING
            with self._lock:
                self._last_update = time.monotonic()
            self._update(phase=Phase.SAVING, message="saving files")
            if self.cancel.is_set():
                raise Cancelled("export cancelled")

    def run(self) -> None:
        job = self.job
        stop = threading.Event()
        hb = threading.Thread(target=self._heartbeat, args=(stop,), name=f"hb:{job.id[:8]}", daemon=True)
        exporter: engine.Exporter | None = None
        try:
            req = ExportRequest.from_json(json.loads(job.request_json))
            self._update(phase=Phase.EXPORTING, message=f"exporting {req.format}")
            hb.start()
            try:
                ds = self.core._dataset(req.dataset_id)
            except NotFound:
                raise NotFound(f"dataset {req.dataset_id} no longer exists (deleted before the export ran)") from None
            src = source_dataset(ds)
            check_dataset(get_format(req.format), src.training_type, [s.name for s in src.splits],
                          req.additional_params)
            exporter = engine.Exporter(
                self.core.store, src, req, job.id, self.on_progress, run_id=f"{job.attempt}-{uuid.uuid4().hex[:8]}",
                tmp_dir=self.core.cfg.tmp_dir or None, batch_bytes=self.core.cfg.batch_bytes, on_phase=self.on_phase,
                report_processes=self.core.cfg.report_processes)
            files = exporter.run()
            self._stop_heartbeat(stop, hb)
            if self.cancel.is_set():
                exporter.discard()
                raise Cancelled("export cancelled")
            with self._lock:
                progress = self.progress
                progress.rows_done = progress.rows_total
                progress.bytes_done = progress.bytes_total
            try:
                self._update(phase=Phase.COMPLETE, progress=progress, message=f"complete: {len(files)} files",
                             files=[JobFile(f.name, f.key, f.size, f.sha256) for f in files])
            except BaseException:
                exporter.discard()
                raise
            log.info("export %s complete: %d files", job.id, len(files))
        except Cancelled:
            self._stop_heartbeat(stop, hb)
            self._end(Phase.CANCELLED, message="cancelled; no files were kept")
        except _Lost:
            log.warning("export %s: stopped without finishing (shutdown, or another worker took it over)", job.id)
        except FerryError as exc:
            log.info("export %s failed: %s", job.id, exc)
            self._stop_heartbeat(stop, hb)
            self._end(Phase.ERROR, error=self._explain(exc))
        except Exception as exc:  # noqa: BLE001 - reported on the job, traceback in the log
            ref = uuid.uuid4().hex[:12]
            log.exception("export %s failed (ref %s)", job.id, ref)
            self._stop_heartbeat(stop, hb)
            self._end(Phase.ERROR, error=f"internal error ({type(exc).__name__}, ref {ref})")
        finally:
            stop.set()

    def _explain(self, exc: FerryError) -> str:
        """A missing object usually means the dataset was deleted mid-export: say so."""
        if isinstance(exc, NotFound) and "dataset" not in exc.message:
            try:
                self.core._dataset(int(self.job.dataset_id))
            except NotFound:
                return f"dataset {self.job.dataset_id} was deleted during the export ({exc.message})"
            except FerryError:
                pass
        return exc.message

    @staticmethod
    def _stop_heartbeat(stop: threading.Event, hb: threading.Thread) -> None:
        """No heartbeat may land after the final phase (it would be refused and look like a takeover)."""
        stop.set()
        if hb.is_alive():
            hb.join(30)

    def _end(self, phase: Phase, **fields: Any) -> None:
        try:
            self._update(phase=phase, **fields)
        except (_Lost, FerryError) as exc:
            log.warning("export %s: could not record the end (%s)", self.job.id, exc)
