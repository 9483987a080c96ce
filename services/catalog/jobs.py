"""Job records shared by stateless workers: claim, heartbeat, progress, cancel, watch, stall.

Workers (importer/exporter replicas) own a job by claiming it and prove they are
alive with every UpdateJob. A job whose owner stops heartbeating is marked
stalled by the sweeper and can be claimed again after a back-off; a stale worker
that comes back is refused, so two workers never write the same job. A job whose
worker stopped `max_attempts` times ends in ERROR instead: a job that kills its
worker (out of memory, a crash) must not crash-loop the service.

Every change goes through `_commit`, which bumps a per-job version and wakes
watchers through one condition variable; watchers never poll the database.
Progress-only updates are written to SQLite at most every THROTTLE seconds per
job (watchers still see each one); anything else is written at once.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ferry.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from ferry.jobs import TERMINAL, Job, JobFile, JobKind, JobPage, JobProgress, JobUpdate, Phase
from services.catalog import paging
from services.catalog.db import Database
from services.catalog.limits import (
    MAX_SKIP_REASONS,
    MAX_WORKER_ID,
    check_length,
    check_request_json,
    clip,
    prefix,
    short,
)

log = logging.getLogger("ferry.catalog.jobs")

THROTTLE = 0.5
STALL_MESSAGE = "worker stopped responding; waiting to be resumed"
# The longest back-off between two attempts, whatever the attempt (seconds).
RETRY_BACKOFF_CAP = 300.0
# Keys that would mean a secret was put into request_json (which every worker and log may see).
SECRET_KEYS = {"token", "hf_token", "api_key", "apikey", "secret", "secret_key", "access_key", "password"}
# Events a slow watcher can fall behind by before it only gets the latest state.
MAX_EVENTS = 256


@dataclass(eq=False)
class _Waiter:
    """One open watch: the loop it waits on and the event that wakes it."""

    loop: asyncio.AbstractEventLoop
    event: asyncio.Event


@dataclass
class _Live:
    """In-memory state of a job that is running or watched."""

    job: Job
    version: int = 0
    events: list[tuple[int, Job]] = field(default_factory=list)
    dirty: bool = False
    persisted_at: float = 0.0
    watchers: int = 0


def _row_to_job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        kind=JobKind(row["kind"]),
        phase=Phase(row["phase"]),
        progress=JobProgress(**json.loads(row["progress"])),
        message=row["message"],
        error=row["error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        heartbeat_at=row["heartbeat_at"],
        worker_id=row["worker_id"],
        stalled=bool(row["stalled"]),
        attempt=int(row["attempt"]),
        retry_at=row["retry_at"],
        cancel_requested=bool(row["cancel_requested"]),
        request_json=row["request_json"],
        checkpoint_json=row["checkpoint_json"],
        dataset_id=int(row["dataset_id"]),
        files=[JobFile(**f) for f in json.loads(row["files"])],
        rows_skipped=int(row["rows_skipped"]),
        skip_reasons=list(json.loads(row["skip_reasons"])),
    )


def _job_values(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind.value,
        "phase": job.phase.value,
        "progress": json.dumps(job.progress.__dict__),
        "message": job.message,
        "error": job.error,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "heartbeat_at": job.heartbeat_at,
        "worker_id": job.worker_id,
        "stalled": int(job.stalled),
        "attempt": job.attempt,
        "retry_at": job.retry_at,
        "cancel_requested": int(job.cancel_requested),
        "request_json": job.request_json,
        "checkpoint_json": job.checkpoint_json,
        "dataset_id": job.dataset_id,
        "files": json.dumps([f.__dict__ for f in job.files]),
        "rows_skipped": job.rows_skipped,
        "skip_reasons": json.dumps(job.skip_reasons),
    }


def _event_key(job: Job) -> tuple[Any, ...]:
    # Consecutive events with the same key are coalesced: a watcher may skip
    # progress ticks but never a phase change, a stall, a claim or a cancel request.
    return job.phase, job.stalled, job.worker_id, job.cancel_requested


def _visible(job: Job) -> Job:
    """What a watcher sees of a state: everything but the timestamps a bare heartbeat moves."""
    return dataclasses.replace(job, updated_at=0.0, heartbeat_at=None)


def _find_secret_key(value: Any) -> str | None:
    if isinstance(value, dict):
        for k, v in value.items():
            if str(k).lower() in SECRET_KEYS and v not in (None, "", False):
                return str(k)
            found = _find_secret_key(v)
            if found:
                return found
    elif isinstance(value, list):
        for item in value:
            found = _find_secret_key(item)
            if found:
                return found
    return None


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def derive_percent(p: JobProgress) -> float:
    """Percent of a running job; 100 is kept for COMPLETE.

    The worker's own figure wins (it knows which measure tracks its work). Else rows,
    the unit of work, beat bytes: byte counts include re-read footers and headers and
    can pass their total before the work is done.
    """
    if p.percent > 0:
        pct = p.percent
    elif p.rows_total > 0:
        pct = 100.0 * p.rows_done / p.rows_total
    elif p.bytes_total > 0:
        pct = 100.0 * p.bytes_done / p.bytes_total
    else:
        pct = 0.0
    return max(0.0, min(99.9, pct))


class Jobs:
    """`max_attempts`: claims a job gets before a stall ends it (FERRY_JOB_MAX_ATTEMPTS); `retry_backoff`: seconds
    a job stalled after its first attempt waits before it can be claimed again, doubled per attempt up to
    RETRY_BACKOFF_CAP (FERRY_JOB_RETRY_BACKOFF_SECONDS; 0 = none)."""

    def __init__(self, db: Database, heartbeat_timeout: float, max_watchers: int = 1000,
                 clock: Callable[[], float] = time.time, *, max_attempts: int = 3,
                 retry_backoff: float = 0.0) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.db = db
        self.heartbeat_timeout = heartbeat_timeout
        self.max_watchers = max_watchers
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self._clock = clock
        self._lock = threading.RLock()
        self._waiters: set[_Waiter] = set()
        self._lives: dict[str, _Live] = {}
        self._watchers = 0
        self._closing = False
        self._sweeper: threading.Thread | None = None
        self._sweeper_stop = threading.Event()

    # -- storage --------------------------------------------------------------------

    def _load(self, job_id: str) -> Job | None:
        row = self.db.query_one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _row_to_job(row) if row else None

    def _persist(self, job: Job) -> None:
        values = _job_values(job)
        cols = ", ".join(f"{k} = ?" for k in values if k != "id")
        self.db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", [v for k, v in values.items() if k != "id"] + [job.id])

    def _view(self, job_id: str) -> Job:
        """The newest state: in memory while a job is live (maybe not yet persisted), else the row."""
        if not job_id:
            raise InvalidArgument("job_id is required", field="job_id")
        live = self._lives.get(job_id)
        if live is not None:
            return live.job
        job = self._load(job_id)
        if job is None:
            raise NotFound(f"job {prefix(job_id)} not found")
        return job

    def _live(self, job_id: str) -> _Live:
        live = self._lives.get(job_id)
        if live is None:
            job = self._view(job_id)
            live = _Live(job=job, events=[(0, job)], persisted_at=time.monotonic())
            self._lives[job_id] = live
        return live

    def _commit(self, live: _Live, job: Job, *, significant: bool) -> Job:
        """Make `job` the current state: persist (or defer a progress tick), publish, wake watchers."""
        now = time.monotonic()
        if significant or job.phase.terminal or now - live.persisted_at >= THROTTLE:
            self._persist(job)
            live.persisted_at = now
            live.dirty = False
        else:
            live.dirty = True
        live.job = job
        live.version += 1
        if live.events and _event_key(live.events[-1][1]) == _event_key(job):
            live.events[-1] = (live.version, job)
        else:
            live.events.append((live.version, job))
            if len(live.events) > MAX_EVENTS:
                del live.events[0]
        self._wake_watchers()
        self._maybe_forget(live)
        return job

    def _maybe_forget(self, live: _Live) -> None:
        if live.watchers == 0 and not live.dirty and live.job.phase.terminal:
            self._lives.pop(live.job.id, None)

    # -- create / read ----------------------------------------------------------------

    def create(self, kind: JobKind | None, request_json: str = "", dataset_id: int = 0, job_id: str = "",
               message: str = "") -> Job:
        if kind is None:
            raise InvalidArgument("kind is required: IMPORT or EXPORT", field="kind")
        if job_id:
            try:
                job_id = str(uuid.UUID(job_id))
            except ValueError:
                raise InvalidArgument(f"job_id must be a UUID, got {short(job_id)}", field="job_id") from None
        else:
            job_id = str(uuid.uuid4())
        if request_json:
            check_request_json(request_json)
            try:
                parsed = json.loads(request_json)
            except ValueError:
                raise InvalidArgument("request_json is not valid JSON", field="request_json") from None
            secret = _find_secret_key(parsed)
            if secret:
                raise InvalidArgument(f"request_json must not hold secrets (found key {short(secret)})",
                                      field="request_json")
        if dataset_id < 0:
            raise InvalidArgument(f"dataset_id must be >= 0, got {dataset_id}", field="dataset_id")
        now = self._clock()
        job = Job(id=job_id, kind=kind, phase=Phase.QUEUED, message=clip(message) or "queued", created_at=now,
                  updated_at=now, request_json=request_json, dataset_id=dataset_id)
        values = _job_values(job)
        try:
            self.db.execute(f"INSERT INTO jobs ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                            list(values.values()))
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"job {job_id} already exists", field="job_id") from None
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            return copy.deepcopy(self._view(job_id))

    def list_jobs(self, kind: JobKind | None = None, phases: list[Phase] | None = None, page_size: int = 0,
             page_token: str = "") -> JobPage:
        size = paging.page_size(page_size)
        where: list[str] = []
        params: list[Any] = []
        if kind is not None:
            where.append("kind = ?")
            params.append(kind.value)
        if phases:
            where.append(f"phase IN ({', '.join('?' * len(phases))})")
            params += [p.value for p in phases]
        cursor = paging.decode(page_token)
        if cursor is not None:
            where.append("(created_at < ? OR (created_at = ? AND id < ?))")
            params += [cursor[0], cursor[0], str(cursor[1])]
        sql = "SELECT * FROM jobs" + (f" WHERE {' AND '.join(where)}" if where else "")
        with self._lock:
            rows = self.db.query(sql + " ORDER BY created_at DESC, id DESC LIMIT ?", [*params, size + 1])
            jobs = [copy.deepcopy(self._lives[r["id"]].job) if r["id"] in self._lives else _row_to_job(r)
                    for r in rows[:size]]
        token = paging.encode(jobs[-1].created_at, jobs[-1].id) if len(rows) > size else ""
        return JobPage(jobs, token)

    # -- worker side ---------------------------------------------------------------------

    def claim(self, kind: JobKind | None, worker_id: str, job_id: str = "") -> Job | None:
        """Own a queued or stalled job: the given one, or the oldest of `kind`. None when there is none.

        A stalled job can be claimed once its back-off has passed (`retry_at`); a stalled job that has used its
        attempts is ended (ERROR) instead of claimed.
        """
        if not worker_id:
            raise InvalidArgument("worker_id is required", field="worker_id")
        check_length(worker_id, MAX_WORKER_ID, "worker_id")
        if kind is None and not job_id:
            raise InvalidArgument("kind is required when no job_id is given", field="kind")
        with self._lock:
            now = self._clock()
            if job_id:
                current = self._view(job_id)
                if kind is not None and current.kind is not kind:
                    raise FailedPrecondition(
                        f"job {job_id} is an {current.kind.value.lower()} job, not {kind.value.lower()}",
                        field="kind")
                if current.worker_id == worker_id and not current.phase.terminal:
                    return copy.deepcopy(current)  # a retried claim by the owner
                if current.phase.terminal or current.worker_id or current.cancel_requested:
                    return None
                if current.stalled and current.attempt >= self.max_attempts:
                    self._give_up(self._live(job_id))
                    return None
                if current.stalled and (current.retry_at or 0.0) > now:
                    return None  # backing off
                candidate = job_id
            else:
                assert kind is not None
                row = self.db.query_one(
                    "SELECT id FROM jobs WHERE kind = ? AND worker_id = '' AND cancel_requested = 0 "
                    f"AND phase NOT IN ({', '.join('?' * len(TERMINAL))}) "
                    "AND (stalled = 0 OR (attempt < ? AND (retry_at IS NULL OR retry_at <= ?))) "
                    "ORDER BY created_at, id LIMIT 1",
                    [kind.value, *(p.value for p in TERMINAL), self.max_attempts, now],
                )
                if row is None:
                    return None
                candidate = row["id"]
            live = self._live(candidate)
            job = copy.deepcopy(live.job)
            resumed = job.stalled or job.attempt > 0
            job.worker_id = worker_id
            job.attempt += 1
            job.stalled = False
            job.retry_at = None
            job.heartbeat_at = now
            job.updated_at = now
            if resumed:
                job.message = f"resumed by a worker (attempt {job.attempt})"
            self._commit(live, job, significant=True)
            log.info("job %s claimed by %s (attempt %d)", job.id, worker_id, job.attempt)
            return copy.deepcopy(job)

    def update(self, req: JobUpdate) -> Job:
        """The owning worker's report (also its heartbeat)."""
        _check_update(req)
        with self._lock:
            _check_owner(self._view(req.job_id), req)
            live = self._live(req.job_id)
            job = copy.deepcopy(live.job)
            now = self._clock()
            significant = _apply(job, req, now)
            _settle(job, now)
            self._commit(live, job, significant=significant)
            return copy.deepcopy(job)

    # -- user side ------------------------------------------------------------------------

    def cancel(self, job_id: str) -> Job:
        """Cancel now when nobody runs the job; else ask its worker, which stops and cleans up."""
        with self._lock:
            current = self._view(job_id)
            if current.phase.terminal:
                raise FailedPrecondition(
                    f"job {job_id} already ended ({current.phase.value.lower()}) and cannot be cancelled")
            live = self._live(job_id)
            job = copy.deepcopy(live.job)
            now = self._clock()
            job.cancel_requested = True
            job.updated_at = now
            if not job.worker_id:
                job.phase = Phase.CANCELLED
                job.finished_at = now
                job.stalled = False
                job.message = "cancelled"
            else:
                job.message = "cancelling"
            self._commit(live, job, significant=True)
            return copy.deepcopy(job)

    async def watch(self, job_id: str) -> AsyncIterator[Job]:
        """The current state, then every change until a terminal phase.

        Waits on the caller's event loop (woken by `_commit` from any thread), so an open watch holds no
        thread; a client that leaves cancels it. Raises Unavailable when the catalog shuts down, so the
        client knows to watch again.
        """
        waiter = _Waiter(asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            if self._closing:
                raise Unavailable("the catalog is shutting down; watch again")
            if self._watchers >= self.max_watchers:
                raise ResourceExhausted(f"too many job watchers ({self._watchers}); the limit is "
                                        f"{self.max_watchers} (FERRY_CATALOG_MAX_WATCHERS)")
            live = self._live(job_id)
            live.watchers += 1
            self._watchers += 1
            self._waiters.add(waiter)
        seen = live.events[-1][0] - 1  # start from the current state, not the history before it
        last_shown: Job | None = None
        try:
            while True:
                with self._lock:
                    waiter.event.clear()  # before looking: a commit from now on sets it again
                    if self._closing:
                        raise Unavailable("the catalog is shutting down; watch again")
                    pending = [(v, copy.deepcopy(j)) for v, j in live.events if v > seen]
                for version, job in pending:
                    seen = version
                    shown = _visible(job)
                    if shown == last_shown and not job.phase.terminal:
                        continue  # a heartbeat: nothing a watcher could see changed
                    last_shown = shown
                    yield job
                    if job.phase.terminal:
                        return
                if not pending:
                    await waiter.event.wait()
        finally:
            with self._lock:
                self._waiters.discard(waiter)
                live.watchers -= 1
                self._watchers -= 1
                self._maybe_forget(live)

    def _wake_watchers(self) -> None:
        """Called with the lock held: every watch looks again (on its own loop)."""
        for w in self._waiters:
            try:
                w.loop.call_soon_threadsafe(w.event.set)
            except RuntimeError:
                pass  # that loop is closed: its watch is gone with it

    # -- heartbeat sweeper ------------------------------------------------------------------

    def backoff(self, attempt: int) -> float:
        """Seconds a job whose worker stopped on its `attempt`-th claim waits before it can be claimed again."""
        if self.retry_backoff <= 0 or attempt < 1:
            return 0.0
        return min(RETRY_BACKOFF_CAP, self.retry_backoff * 2.0 ** min(attempt - 1, 32))

    def _give_up(self, live: _Live) -> Job:
        """End a job whose worker stopped on every one of its attempts: ERROR, saying why (called with the lock)."""
        job = copy.deepcopy(live.job)
        now = self._clock()
        last = job.heartbeat_at if job.heartbeat_at is not None else job.updated_at
        times = "once" if job.attempt == 1 else f"{job.attempt} times"
        job.error = (f"the worker stopped while running this job {times} (the last at {_utc(last)}, in phase "
                     f"{job.phase.status}); not retried: a job that keeps stopping its worker (e.g. running it out "
                     f"of memory) would crash-loop the service (FERRY_JOB_MAX_ATTEMPTS={self.max_attempts})")
        job.message = f"gave up after {job.attempt} attempts: the worker stopped each time"
        job.phase = Phase.ERROR
        job.worker_id = ""
        job.stalled = False
        job.retry_at = None
        job.finished_at = now
        job.updated_at = now
        log.error("job %s: %s", job.id, job.error)
        return self._commit(live, job, significant=True)

    def sweep(self) -> list[str]:
        """Write deferred progress; mark owned jobs without a recent heartbeat stalled, or end them (ERROR) when
        they used their attempts. Returns the ids of the jobs whose worker was found gone."""
        stalled: list[str] = []
        with self._lock:
            now_m = time.monotonic()
            for live in list(self._lives.values()):
                if live.dirty and now_m - live.persisted_at >= THROTTLE:
                    self._persist(live.job)
                    live.dirty = False
                    live.persisted_at = now_m
                if live.watchers == 0 and not live.dirty:
                    # Running jobs are re-read from SQLite when next touched; keeps memory flat.
                    self._lives.pop(live.job.id, None)
            cutoff = self._clock() - self.heartbeat_timeout
            rows = self.db.query(
                "SELECT id FROM jobs WHERE worker_id != '' AND heartbeat_at < ? "
                f"AND phase NOT IN ({', '.join('?' * len(TERMINAL))})",
                [cutoff, *(p.value for p in TERMINAL)],
            )
            for row in rows:
                live = self._live(row["id"])
                job = copy.deepcopy(live.job)
                if not job.worker_id or job.phase.terminal or (job.heartbeat_at or 0) >= cutoff:
                    continue
                now = self._clock()
                log.warning("job %s: worker %s sent no heartbeat for %.0fs (attempt %d of %d)", job.id,
                            job.worker_id, now - (job.heartbeat_at or now), job.attempt, self.max_attempts)
                stalled.append(job.id)
                if not job.cancel_requested and job.attempt >= self.max_attempts:
                    self._give_up(live)
                    continue
                job.worker_id = ""
                job.updated_at = now
                if job.cancel_requested:
                    job.phase = Phase.CANCELLED
                    job.finished_at = now
                    job.message = "cancelled (the worker stopped responding)"
                else:
                    job.stalled = True
                    job.message = STALL_MESSAGE
                    job.retry_at = now + self.backoff(job.attempt)
                self._commit(live, job, significant=True)
            # Stalled jobs left with no attempts (FERRY_JOB_MAX_ATTEMPTS lowered since they stalled) end too.
            rows = self.db.query(
                "SELECT id FROM jobs WHERE worker_id = '' AND stalled = 1 AND attempt >= ? "
                f"AND phase NOT IN ({', '.join('?' * len(TERMINAL))})",
                [self.max_attempts, *(p.value for p in TERMINAL)],
            )
            for row in rows:
                live = self._live(row["id"])
                if live.job.stalled and not live.job.worker_id and not live.job.phase.terminal:
                    self._give_up(live)
        return stalled

    def start_sweeper(self, interval: float | None = None) -> None:
        every = interval if interval is not None else max(0.05, min(1.0, self.heartbeat_timeout / 4))

        def run() -> None:
            while not self._sweeper_stop.wait(every):
                try:
                    self.sweep()
                except Exception:  # noqa: BLE001 - the sweeper must survive a bad moment
                    log.exception("job sweep failed")

        self._sweeper = threading.Thread(target=run, name="catalog-job-sweeper", daemon=True)
        self._sweeper.start()

    def close(self) -> None:
        """End every watch stream, stop the sweeper and write deferred progress."""
        with self._lock:
            self._closing = True
            self._wake_watchers()
        self._sweeper_stop.set()
        if self._sweeper is not None:
            self._sweeper.join(5)
        with self._lock:
            for live in self._lives.values():
                if live.dirty:
                    self._persist(live.job)
                    live.dirty = False


def _check_update(req: JobUpdate) -> None:
    if not req.worker_id:
        raise InvalidArgument("worker_id is required", field="worker_id")
    check_length(req.worker_id, MAX_WORKER_ID, "worker_id")
    if req.phase is Phase.QUEUED:
        raise InvalidArgument("phase cannot be set back to QUEUED", field="phase")
    if req.rows_skipped < 0:
        raise InvalidArgument("rows_skipped must be >= 0", field="rows_skipped")


def _check_owner(current: Job, req: JobUpdate) -> None:
    if current.phase.terminal:
        raise FailedPrecondition(f"job {req.job_id} already ended ({current.phase.value.lower()}) and cannot change")
    if current.worker_id != req.worker_id:
        why = ("it was marked stalled; claim it again to resume" if not current.worker_id
               else "another worker owns it now")
        raise FailedPrecondition(f"job {req.job_id} is not owned by worker {req.worker_id}: {why}",
                                 field="worker_id")


def _apply(job: Job, req: JobUpdate, now: float) -> bool:
    """Copy what the report sets into `job`; whether anything beyond progress changed (written at once)."""
    significant = False
    if req.phase is not None and req.phase is not job.phase:
        job.phase, significant = req.phase, True
        if job.started_at is None:
            job.started_at = now
    if req.progress is not None:
        job.progress = copy.copy(req.progress)
    if req.message:
        job.message = clip(req.message)
    if req.error:
        error = clip(req.error)
        significant = significant or error != job.error
        job.error = error
    if req.checkpoint_json:
        job.checkpoint_json, significant = req.checkpoint_json, True
    if req.dataset_id and req.dataset_id != job.dataset_id:
        job.dataset_id, significant = req.dataset_id, True
    if req.files:
        job.files, significant = list(req.files), True
    if req.rows_skipped and req.rows_skipped != job.rows_skipped:
        job.rows_skipped, significant = req.rows_skipped, True
    if req.skip_reasons:
        job.skip_reasons, significant = [clip(r) for r in req.skip_reasons[:MAX_SKIP_REASONS]], True
    return significant


def _settle(job: Job, now: float) -> None:
    """What follows from the report: an error's text, the percent, the end time, the heartbeat."""
    if job.phase is Phase.ERROR and not job.error:
        job.error = job.message if job.message and job.message != "queued" else "the job failed"
    job.progress.percent = 100.0 if job.phase is Phase.COMPLETE else derive_percent(job.progress)
    if job.phase.terminal:
        job.finished_at = now
    job.heartbeat_at = now
    job.updated_at = now
