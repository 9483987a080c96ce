"""Running export jobs: a worker pool that claims EXPORT jobs and runs each one to its end.

A pool thread claims the job (the one this exporter just queued, or a queued or stalled one the poller finds),
runs `engine.Exporter` and reports progress with UpdateJob (throttled, plus a heartbeat thread); a cancel seen
in an UpdateJob answer stops the pipeline, which removes what it wrote. Speaks to the catalog through
ferry.catalog_client, so it sees only ferry.jobs and ferry.datasets types.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ferry.catalog_client import CatalogClient
from ferry.datasets import Dataset
from ferry.errors import Cancelled, FailedPrecondition, FerryError, NotFound
from ferry.jobs import Job, JobFile, JobKind, JobProgress, JobUpdate, Phase
from ferry.storage import ObjectStore
from services.exporter import engine
from services.exporter.config import ExporterConfig
from services.exporter.formats import ExportRequest, check_dataset, get_format

log = logging.getLogger("ferry.exporter")

UPDATE_INTERVAL = 0.25


class _Lost(Exception):
    """This worker no longer owns the job (another replica took it over)."""


def source_dataset(ds: Dataset) -> engine.SourceDataset:
    """The dataset as the export engine reads it; FailedPrecondition when it has no training type."""
    tt = ds.training_type
    if tt is None:
        raise FailedPrecondition(f"dataset {ds.id} has no training type", field="dataset_id")
    return engine.SourceDataset(
        ds.id, ds.name, tt,
        tuple(engine.SourceSplit(s.name, s.object_key, s.num_rows, s.num_bytes) for s in ds.splits),
        ds.source.repo_id)


class JobPool:
    """FERRY_EXPORT_WORKERS job threads, plus a poller that claims queued and stalled exports (resume)."""

    def __init__(self, cfg: ExporterConfig, catalog: CatalogClient, store: ObjectStore) -> None:
        self.cfg = cfg
        self.catalog = catalog
        self.store = store
        self.worker_id = f"exporter-{uuid.uuid4().hex[:12]}"
        self.executor = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="export")
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._pending = 0
        self._poller: threading.Thread | None = None

    def start(self) -> None:
        if self.cfg.poll_seconds > 0:
            self._poller = threading.Thread(target=self._poll, name="export-poll", daemon=True)
            self._poller.start()

    def stop(self) -> None:
        """Stop taking jobs; a running one stops at its next progress report and, no longer heartbeating, is
        marked stalled and claimed again (from the start) by another replica."""
        self.stopping.set()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def submit(self, job_id: str) -> None:
        with self._lock:
            self._pending += 1
        self.executor.submit(self._guarded, job_id, None)

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
        while not self.stopping.wait(self.cfg.poll_seconds):
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
                self.executor.submit(self._guarded, job.id, job)

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
            Runner(self, job).run()
        finally:
            with self._lock:
                self._running.discard(job_id)


class Runner:
    """One claimed export: progress, heartbeat, cancellation and the final record."""

    def __init__(self, pool: JobPool, job: Job) -> None:
        self.pool = pool
        self.job = job
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self.progress = JobProgress()
        self._last_update = 0.0
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self.phase = Phase.EXPORTING

    def _update(self, **fields: Any) -> Job:
        update = JobUpdate(job_id=self.job.id, worker_id=self.pool.worker_id, **fields)
        try:
            job = self.pool.catalog.update_job(update)
        except FailedPrecondition:
            # Marked stalled (e.g. a long GC pause): take it back if nobody else has.
            again = self.pool.catalog.claim_job(JobKind.EXPORT, self.pool.worker_id, self.job.id)
            if again is None:
                self.lost.set()
                raise _Lost() from None
            job = self.pool.catalog.update_job(update)
        if job.cancel_requested:
            self.cancel.set()
        return job

    def _heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(self.pool.cfg.heartbeat_seconds):
            with self._lock:
                due = time.monotonic() - self._last_update >= self.pool.cfg.heartbeat_seconds * 0.8
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
        if self.lost.is_set() or self.pool.stopping.is_set():
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
        try:
            self._export(stop, hb)
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

    def _export(self, stop: threading.Event, hb: threading.Thread) -> None:
        """Run the export to COMPLETE; raises what ends it otherwise (run() records that)."""
        req = ExportRequest.from_json(json.loads(self.job.request_json))
        self._update(phase=Phase.EXPORTING, message=f"exporting {req.format}")
        hb.start()
        exporter = self._exporter(req)
        files = exporter.run()
        self._stop_heartbeat(stop, hb)
        if self.cancel.is_set():
            exporter.discard()
            raise Cancelled("export cancelled")
        self._complete(exporter, files)
        log.info("export %s complete: %d files", self.job.id, len(files))

    def _exporter(self, req: ExportRequest) -> engine.Exporter:
        """The pipeline for the request, once its dataset is found and fits the format."""
        try:
            ds = self.pool.catalog.get_dataset(req.dataset_id)
        except NotFound:
            raise NotFound(f"dataset {req.dataset_id} no longer exists (deleted before the export ran)") from None
        src = source_dataset(ds)
        check_dataset(get_format(req.format), src.training_type, [s.name for s in src.splits],
                      req.additional_params)
        cfg = self.pool.cfg
        return engine.Exporter(
            self.pool.store, src, req, self.job.id, self.on_progress,
            run_id=f"{self.job.attempt}-{uuid.uuid4().hex[:8]}", tmp_dir=cfg.tmp_dir or None,
            batch_bytes=cfg.batch_bytes, on_phase=self.on_phase, report_processes=cfg.report_processes)

    def _complete(self, exporter: engine.Exporter, files: list[engine.OutputFile]) -> None:
        """Record COMPLETE with the files; if that fails the files are removed."""
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

    def _explain(self, exc: FerryError) -> str:
        """A missing object usually means the dataset was deleted mid-export: say so."""
        if isinstance(exc, NotFound) and "dataset" not in exc.message:
            try:
                self.pool.catalog.get_dataset(int(self.job.dataset_id))
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
