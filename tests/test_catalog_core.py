"""Catalog core without gRPC: config, schema, job state machine, throttling, watching, stalls, datasets."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ferry.canonical import TrainingType
from ferry.config import ConfigError, S3Config, Secret
from ferry.datasets import DatasetRegistration, DatasetState, Split
from ferry.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from ferry.jobs import JobKind, JobProgress, JobUpdate, Phase
from ferry.storage import ObjectStore
from services.catalog import jobs as jobs_mod
from services.catalog.config import CatalogConfig
from services.catalog.datasets import Datasets
from services.catalog.db import MIGRATIONS, Database
from services.catalog.jobs import Jobs
from services.catalog.server import StorageUnavailable, ensure_bucket
from tests.fixtures.catalog import jsonl_bytes

T = TypeVar("T")

S3 = {"FERRY_S3_ENDPOINT": "http://127.0.0.1:9", "FERRY_S3_ACCESS_KEY": "a", "FERRY_S3_SECRET_KEY": "s3cr3t-value"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "c.db")
    yield database
    database.close()


@pytest.fixture
def store(object_store: ObjectStore) -> ObjectStore:
    return object_store  # its bucket is dropped by the s3_env fixture


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def jobs(db: Database, clock: Clock) -> Iterator[Jobs]:
    j = Jobs(db, heartbeat_timeout=30, clock=clock)
    yield j
    j.close()


# -- config ---------------------------------------------------------------------------------


def test_config_defaults_and_overrides() -> None:
    cfg = CatalogConfig.from_env(S3)
    assert cfg.grpc_port == 50051 and cfg.heartbeat_timeout == 30 and cfg.grpc_workers == 64
    assert cfg.data_dir == Path(".ferry-data") and cfg.db_path == Path(".ferry-data/catalog.db")
    assert cfg.shutdown_grace == 20 and cfg.s3.endpoint == "127.0.0.1:9"
    cfg = CatalogConfig.from_env({**S3, "FERRY_DATA_DIR": "/srv/f", "FERRY_GRPC_PORT": "6000"})
    assert cfg.db_path == Path("/srv/f/catalog.db") and cfg.grpc_port == 6000
    assert CatalogConfig.from_env({**S3, "FERRY_CATALOG_DB": "/x/y.db"}).db_path == Path("/x/y.db")
    assert "s3cr3t-value" not in repr(cfg)


@pytest.mark.parametrize("name,value", [
    ("FERRY_GRPC_PORT", "http"), ("FERRY_GRPC_PORT", "70000"), ("FERRY_GRPC_PORT", "-1"),
    ("FERRY_JOB_HEARTBEAT_TIMEOUT_SECONDS", "0"), ("FERRY_JOB_HEARTBEAT_TIMEOUT_SECONDS", "soon"),
    ("FERRY_GRPC_WORKERS", "1"), ("FERRY_SHUTDOWN_GRACE_SECONDS", "-3"),
    ("FERRY_JOB_MAX_ATTEMPTS", "0"), ("FERRY_JOB_MAX_ATTEMPTS", "many"), ("FERRY_JOB_MAX_ATTEMPTS", "101"),
    ("FERRY_JOB_RETRY_BACKOFF_SECONDS", "-1"), ("FERRY_JOB_RETRY_BACKOFF_SECONDS", "301"),
    ("FERRY_JOB_RETRY_BACKOFF_SECONDS", "nan"),
])
def test_config_fails_fast(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        CatalogConfig.from_env({**S3, name: value})


def test_config_attempts_and_back_off() -> None:
    cfg = CatalogConfig.from_env(S3)
    assert cfg.max_attempts == 5 and cfg.retry_backoff == 5.0
    cfg = CatalogConfig.from_env({**S3, "FERRY_JOB_MAX_ATTEMPTS": "1", "FERRY_JOB_RETRY_BACKOFF_SECONDS": "0"})
    assert cfg.max_attempts == 1 and cfg.retry_backoff == 0.0


def test_config_needs_storage() -> None:
    with pytest.raises(ConfigError, match="FERRY_S3_ENDPOINT"):
        CatalogConfig.from_env({})


def test_unreachable_storage_fails_with_a_clear_message() -> None:
    store = ObjectStore(CatalogConfig.from_env(S3).s3)
    with pytest.raises(StorageUnavailable, match="object storage is not usable after 1s .bucket ferry."):
        ensure_bucket(store, timeout=1.0)


def test_schema_is_migrated_once(tmp_path: Path) -> None:
    first = Database(tmp_path / "m.db")
    assert first.schema_version == len(MIGRATIONS)
    first.execute("INSERT INTO mapping_templates VALUES ('t', 'n', 'SL', '{}', '', 1)")
    first.close()
    again = Database(tmp_path / "m.db")  # reopening keeps the data and does not re-run migrations
    assert again.schema_version == len(MIGRATIONS)
    assert again.query_one("SELECT name FROM mapping_templates")[0] == "n"  # type: ignore[index]
    assert again.query_one("PRAGMA journal_mode")[0] == "wal"  # type: ignore[index]
    again.close()


# -- jobs ---------------------------------------------------------------------------------


def test_job_lifecycle_timestamps_and_percent(jobs: Jobs, clock: Clock) -> None:
    job = jobs.create(JobKind.IMPORT, '{"repo_id": "a/b"}')
    assert job.phase is Phase.QUEUED and job.attempt == 0 and job.started_at is None
    assert jobs.claim(JobKind.EXPORT, "w") is None  # wrong kind
    claimed = jobs.claim(JobKind.IMPORT, "w")
    assert claimed is not None and claimed.id == job.id and claimed.attempt == 1
    assert claimed.heartbeat_at == clock.now and claimed.phase is Phase.QUEUED
    clock.now += 1
    up = jobs.update(JobUpdate(job.id, "w", phase=Phase.DOWNLOADING,
                                   progress=JobProgress(rows_done=5, rows_total=10, bytes_done=1, bytes_total=4)))
    assert up.started_at == clock.now and up.progress.percent == 50.0  # rows win over bytes
    up = jobs.update(JobUpdate(job.id, "w", progress=JobProgress(bytes_done=9, bytes_total=4)))
    assert up.progress.percent == 99.9  # over-counted bytes never show a finished job
    up = jobs.update(JobUpdate(job.id, "w", progress=JobProgress(rows_done=1, rows_total=10, percent=42.0)))
    assert up.progress.percent == 42.0  # the worker's own figure wins
    up = jobs.update(JobUpdate(job.id, "w", progress=JobProgress(rows_done=3, rows_total=4)))
    assert up.progress.percent == 75.0 and up.phase is Phase.DOWNLOADING
    clock.now += 1
    done = jobs.update(JobUpdate(job.id, "w", phase=Phase.COMPLETE, dataset_id=7))
    assert done.finished_at == clock.now and done.progress.percent == 100.0 and done.dataset_id == 7
    assert done.started_at == clock.now - 1
    with pytest.raises(FailedPrecondition, match="already ended"):
        jobs.update(JobUpdate(job.id, "w", message="late"))
    failed = jobs.create(JobKind.IMPORT)
    jobs.claim(None, "w", failed.id)
    err = jobs.update(JobUpdate(failed.id, "w", phase=Phase.ERROR))
    assert err.error  # an ERROR job always says something


def test_progress_is_throttled_but_phase_changes_are_not(jobs: Jobs, db: Database,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def stored(job_id: str) -> tuple[str, str]:
        row = db.query_one("SELECT phase, progress FROM jobs WHERE id = ?", (job_id,))
        assert row is not None
        return row["phase"], row["progress"]

    job = jobs.create(JobKind.EXPORT)
    jobs.claim(JobKind.EXPORT, "w")
    monkeypatch.setattr(jobs_mod, "THROTTLE", 3600.0)  # nothing progress-only gets written in this test
    jobs.update(JobUpdate(job.id, "w", phase=Phase.EXPORTING))
    assert stored(job.id)[0] == "EXPORTING"
    for i in range(1, 50):
        got = jobs.update(JobUpdate(job.id, "w", progress=JobProgress(rows_done=i)))
        assert got.progress.rows_done == i  # the caller and readers see every tick ...
    assert jobs.get(job.id).progress.rows_done == 49
    assert '"rows_done": 0' in stored(job.id)[1]  # ... but SQLite was not written 49 times
    jobs.update(JobUpdate(job.id, "w", checkpoint_json='{"n": 49}'))
    assert '"rows_done": 49' in stored(job.id)[1]  # a checkpoint is written at once, with the progress
    jobs.update(JobUpdate(job.id, "w", progress=JobProgress(rows_done=60)))
    monkeypatch.setattr(jobs_mod, "THROTTLE", 0.0)
    jobs.sweep()  # the sweeper writes deferred progress once the throttle window passed
    assert '"rows_done": 60' in stored(job.id)[1]


def test_stall_reclaim_and_stale_worker(jobs: Jobs, clock: Clock) -> None:
    job = jobs.create(JobKind.IMPORT)
    jobs.claim(JobKind.IMPORT, "a")
    jobs.update(JobUpdate(job.id, "a", phase=Phase.CONVERTING))
    clock.now += 29
    assert jobs.sweep() == []
    jobs.update(JobUpdate(job.id, "a"))  # a heartbeat resets the clock
    clock.now += 29
    assert jobs.sweep() == []
    clock.now += 2
    assert jobs.sweep() == [job.id]
    stalled = jobs.get(job.id)
    assert stalled.stalled and stalled.worker_id == "" and stalled.phase is Phase.CONVERTING
    assert stalled.message == jobs_mod.STALL_MESSAGE
    with pytest.raises(FailedPrecondition, match="not owned by worker a"):
        jobs.update(JobUpdate(job.id, "a", phase=Phase.SAVING))
    again = jobs.claim(JobKind.IMPORT, "b")
    assert again is not None and again.attempt == 2 and not again.stalled and again.worker_id == "b"
    with pytest.raises(FailedPrecondition, match="another worker owns it"):
        jobs.update(JobUpdate(job.id, "a"))
    assert jobs.claim(None, "c", job.id) is None  # owned and alive: nothing to claim
    assert jobs.claim(None, "b", job.id) is not None  # the owner retrying its claim gets it back


def _stall(jobs: Jobs, clock: Clock, job_id: str, worker: str) -> float:
    """Claim the job as `worker`, report a phase, then let the worker die; returns when it was last heard."""
    claimed = jobs.claim(None, worker, job_id)
    assert claimed is not None and claimed.worker_id == worker
    heard = jobs.update(JobUpdate(job_id, worker, phase=Phase.EXPORTING)).heartbeat_at
    assert heard is not None
    clock.now += 31
    assert jobs.sweep() == [job_id]
    return heard


def test_back_off_between_attempts(db: Database, clock: Clock) -> None:
    jobs = Jobs(db, heartbeat_timeout=30, clock=clock, max_attempts=5, retry_backoff=5)
    try:
        assert [jobs.backoff(a) for a in (1, 2, 3, 4)] == [5, 10, 20, 40]
        assert jobs.backoff(8) == jobs.backoff(1000) == jobs_mod.RETRY_BACKOFF_CAP
        job = jobs.create(JobKind.EXPORT)
        for attempt in (1, 2, 3):
            _stall(jobs, clock, job.id, f"w{attempt}")
            stalled = jobs.get(job.id)
            assert stalled.stalled and stalled.phase is Phase.EXPORTING and stalled.attempt == attempt
            assert stalled.retry_at == clock.now + 5 * 2 ** (attempt - 1)
            clock.now = stalled.retry_at - 0.5
            assert jobs.claim(JobKind.EXPORT, "early") is None  # backing off: refused by kind ...
            assert jobs.claim(None, "early", job.id) is None  # ... and by id
            assert jobs.get(job.id).stalled and jobs.get(job.id).attempt == attempt
            clock.now += 0.5
        again = jobs.claim(JobKind.EXPORT, "w4")
        assert again is not None and again.id == job.id and again.attempt == 4 and again.retry_at is None
        jobs.update(JobUpdate(job.id, "w4", phase=Phase.COMPLETE))

        # A job in its back-off does not hold up the queue behind it.
        first = jobs.create(JobKind.IMPORT)
        clock.now += 1
        second = jobs.create(JobKind.IMPORT)
        _stall(jobs, clock, first.id, "a")
        took = jobs.claim(JobKind.IMPORT, "b")
        assert took is not None and took.id == second.id
    finally:
        jobs.close()

    # The back-off is stored: a restarted catalog keeps it.
    restarted = Jobs(db, heartbeat_timeout=30, clock=clock, max_attempts=5, retry_backoff=5)
    try:
        assert restarted.claim(JobKind.IMPORT, "c") is None
        clock.now += 5
        resumed = restarted.claim(JobKind.IMPORT, "c")
        assert resumed is not None and resumed.id == first.id and resumed.attempt == 2
    finally:
        restarted.close()


def test_a_job_whose_worker_keeps_stopping_ends_in_error(db: Database, clock: Clock) -> None:
    jobs = Jobs(db, heartbeat_timeout=30, clock=clock, max_attempts=3, retry_backoff=5)
    try:
        job = jobs.create(JobKind.EXPORT)
        for attempt in (1, 2):
            _stall(jobs, clock, job.id, f"w{attempt}")
            clock.now += jobs.backoff(attempt)
        last = _stall(jobs, clock, job.id, "w3")  # the third worker dies too: no fourth attempt
        ended = jobs.get(job.id)
        assert ended.phase is Phase.ERROR and ended.attempt == 3 and ended.finished_at == clock.now
        assert not ended.stalled and ended.worker_id == "" and ended.retry_at is None
        assert ended.error == (
            f"the worker stopped while running this job 3 times (the last at {jobs_mod._utc(last)}, in phase "
            "exporting); not retried: a job that keeps stopping its worker (e.g. running it out of memory) "
            "would crash-loop the service (FERRY_JOB_MAX_ATTEMPTS=3)")
        assert last == 1_700_000_077 and jobs_mod._utc(last) == "2023-11-14T22:14:37Z"  # 31 + 5 + 31 + 10 s in
        clock.now += 3600
        assert jobs.claim(JobKind.EXPORT, "w4") is None and jobs.claim(None, "w4", job.id) is None
        with pytest.raises(FailedPrecondition, match="already ended"):
            jobs.update(JobUpdate(job.id, "w3", phase=Phase.EXPORTING))
        row = db.query_one("SELECT phase, error FROM jobs WHERE id = ?", (job.id,))
        assert row is not None and row["phase"] == "ERROR" and row["error"] == ended.error

        # The last attempt of a job whose worker stays alive runs to its end; the worker's own error is its own.
        done, failed = jobs.create(JobKind.IMPORT), jobs.create(JobKind.IMPORT)
        for attempt in (1, 2):
            for j in (done, failed):
                _stall(jobs, clock, j.id, f"w{attempt}")
            clock.now += jobs.backoff(attempt)
        for j in (done, failed):
            assert jobs.claim(None, "last", j.id) is not None
        clock.now += 29
        assert jobs.sweep() == []
        assert jobs.update(JobUpdate(done.id, "last", phase=Phase.COMPLETE)).phase is Phase.COMPLETE
        own = jobs.update(JobUpdate(failed.id, "last", phase=Phase.ERROR, error="bad row 7"))
        assert own.phase is Phase.ERROR and own.error == "bad row 7"
        clock.now += 31
        assert jobs.sweep() == []
        assert jobs.get(done.id).phase is Phase.COMPLETE and jobs.get(failed.id).error == "bad row 7"
    finally:
        jobs.close()


def test_a_stalled_job_past_a_lowered_cap_ends_in_error(db: Database, clock: Clock) -> None:
    before = Jobs(db, heartbeat_timeout=30, clock=clock, max_attempts=3)
    swept, claimed = before.create(JobKind.IMPORT), before.create(JobKind.IMPORT)
    for j in (swept, claimed):
        for attempt in (1, 2):
            _stall(before, clock, j.id, f"w{attempt}")
    before.close()
    after = Jobs(db, heartbeat_timeout=30, clock=clock, max_attempts=2)  # restarted with FERRY_JOB_MAX_ATTEMPTS=2
    try:
        assert after.claim(None, "w3", claimed.id) is None  # a claim ends it ...
        assert after.get(claimed.id).phase is Phase.ERROR
        assert after.get(swept.id).stalled
        after.sweep()  # ... and so does the sweeper
        ended = after.get(swept.id)
        assert ended.phase is Phase.ERROR and "stopped while running this job 2 times" in ended.error
        assert after.claim(JobKind.IMPORT, "w3") is None
    finally:
        after.close()


def test_stalled_job_with_cancel_request_ends_cancelled(jobs: Jobs, clock: Clock) -> None:
    job = jobs.create(JobKind.IMPORT)
    jobs.claim(JobKind.IMPORT, "a")
    assert jobs.cancel(job.id).cancel_requested
    clock.now += 31
    jobs.sweep()
    assert jobs.get(job.id).phase is Phase.CANCELLED


def test_cancel(jobs: Jobs) -> None:
    queued = jobs.create(JobKind.IMPORT)
    assert jobs.cancel(queued.id).phase is Phase.CANCELLED
    with pytest.raises(FailedPrecondition):
        jobs.cancel(queued.id)
    with pytest.raises(NotFound):
        jobs.cancel("missing")
    running = jobs.create(JobKind.IMPORT)
    jobs.claim(JobKind.IMPORT, "w")
    assert jobs.cancel(running.id).phase is Phase.QUEUED
    resp = jobs.update(JobUpdate(running.id, "w", phase=Phase.DOWNLOADING))
    assert resp.cancel_requested
    assert jobs.update(JobUpdate(running.id, "w", phase=Phase.CANCELLED)).phase is Phase.CANCELLED


def test_create_validation(jobs: Jobs) -> None:
    with pytest.raises(InvalidArgument) as exc:
        jobs.create(None)
    assert exc.value.field == "kind"
    for bad, field in [('{"x": ', "request_json"), ('{"auth": {"hf_token": "hf_abc"}}', "request_json")]:
        with pytest.raises(InvalidArgument) as exc:
            jobs.create(JobKind.IMPORT, bad)
        assert exc.value.field == field
    with pytest.raises(InvalidArgument, match="UUID"):
        jobs.create(JobKind.IMPORT, job_id="not-a-uuid")
    given = "0b6f5d38-7d4e-4a55-9f55-8d8f3e0c9c11"
    assert jobs.create(JobKind.IMPORT, job_id=given).id == given


class LoopThread:
    """An event loop in a thread of its own, as the catalog's gRPC server runs one: watches wait on it while
    the test's thread plays the workers."""

    def __enter__(self) -> LoopThread:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        return self

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


async def _first(jobs: Jobs, job_id: str) -> Phase:
    async with contextlib.aclosing(jobs.watch(job_id)) as stream:
        async for state in stream:
            return state.phase
    raise AssertionError("no state")


def test_watchers_get_every_phase_and_stop_on_close(jobs: Jobs) -> None:
    job = jobs.create(JobKind.IMPORT)
    ready = threading.Barrier(3)

    async def watch() -> list[Phase]:
        got: list[Phase] = []
        async for state in jobs.watch(job.id):
            if not got:
                await asyncio.to_thread(ready.wait, 5)
            if not got or got[-1] is not state.phase:
                got.append(state.phase)
        return got

    with LoopThread() as lt:
        watchers = [lt.submit(watch()) for _ in range(2)]
        ready.wait(5)
        jobs.claim(JobKind.IMPORT, "w")
        phases = [Phase.DOWNLOADING, Phase.CONVERTING, Phase.SAVING, Phase.COMPLETE]
        for p in phases:
            for i in range(20):  # progress ticks in between may be coalesced, phases never
                jobs.update(JobUpdate(job.id, "w", progress=JobProgress(rows_done=i)))
            jobs.update(JobUpdate(job.id, "w", phase=p))
        got = [w.result(5) for w in watchers]
        assert got[0] == got[1] == [Phase.QUEUED, *phases]

        # A watcher that joins late starts from the current state, not from the job's history.
        late = jobs.create(JobKind.IMPORT)
        jobs.claim(None, "w2", late.id)
        for p in phases[:3]:
            jobs.update(JobUpdate(late.id, "w2", phase=p))
        with jobs._lock:
            assert len(jobs._lives[late.id].events) > 1
        assert lt.submit(_first(jobs, late.id)).result(5) is Phase.SAVING

        other = jobs.create(JobKind.IMPORT)
        first = threading.Event()

        async def drain() -> list[Phase]:
            seen: list[Phase] = []
            with pytest.raises(Unavailable) as exc:
                async for state in jobs.watch(other.id):
                    seen.append(state.phase)
                    first.set()
            assert "shutting down" in str(exc.value)
            return seen

        drained = lt.submit(drain())
        assert first.wait(3)
        jobs.close()
        assert drained.result(3) == [Phase.QUEUED]


def test_watch_ends_when_client_leaves(jobs: Jobs) -> None:
    job = jobs.create(JobKind.IMPORT)
    first = threading.Event()
    out: list[Phase] = []

    async def watch() -> None:
        async for state in jobs.watch(job.id):
            out.append(state.phase)
            first.set()

    with LoopThread() as lt:
        call = lt.submit(watch())
        assert first.wait(3) and jobs._watchers == 1
        call.cancel()  # what grpc.aio does when the client goes away: the watch is released at once
        deadline = time.monotonic() + 3
        while jobs._watchers and time.monotonic() < deadline:
            time.sleep(0.01)
    assert jobs._watchers == 0 and out == [Phase.QUEUED]


# -- datasets (real storage) ---------------------------------------------------------------


def test_dataset_register_browse_delete(db: Database, store: ObjectStore) -> None:
    object_store = store
    datasets = Datasets(db, object_store)
    dataset_id, prefix = datasets.reserve("job-1")
    assert datasets.reserve("job-1") == (dataset_id, prefix)
    rows = [{"messages": [{"role": "user", "content": f"hi {i}"}]} for i in range(600)]
    object_store.put_bytes(f"{prefix}train.jsonl", jsonl_bytes(rows))
    with pytest.raises(NotFound):
        datasets.get(dataset_id)
    req = DatasetRegistration(dataset_id=dataset_id, name="chat", training_type=TrainingType.CHAT,
                              import_job_id="job-1", splits=[Split("train", object_key=f"{prefix}train.jsonl")])
    ds = datasets.register(req)
    assert ds.state is DatasetState.READY and ds.splits[0].num_rows == 600
    assert ds.splits[0].index_key == f"{prefix}train.idx"
    assert datasets.register(req).id == ds.id
    page = datasets.list_examples(ds.id, "train", 590, 100)
    assert page.total == 600 and [e.index for e in page.examples] == list(range(590, 600))

    # Registering with a caller-built index trusts its counts after checking it matches the object.
    other_id, other_prefix = datasets.reserve()
    object_store.put_bytes(f"{other_prefix}a.jsonl", jsonl_bytes(rows[:5]))
    object_store.copy(ds.splits[0].index_key, f"{other_prefix}a.idx")
    with pytest.raises(FailedPrecondition, match="describes"):
        datasets.register(DatasetRegistration(dataset_id=other_id, name="x", training_type=TrainingType.SL,
                                              splits=[Split("a", object_key=f"{other_prefix}a.jsonl",
                                                            index_key=f"{other_prefix}a.idx")]))

    # An empty split is a valid (if dull) dataset.
    empty_id, empty_prefix = datasets.reserve()
    object_store.put_bytes(f"{empty_prefix}e.jsonl", b"")
    empty = datasets.register(DatasetRegistration(dataset_id=empty_id, name="empty", training_type=TrainingType.SL,
                                                  splits=[Split("e", object_key=f"{empty_prefix}e.jsonl")]))
    assert empty.splits[0].num_rows == 0
    assert datasets.list_examples(empty_id).examples == [] and datasets.list_examples(empty_id).total == 0

    # A delete interrupted after hiding the dataset is finished at the next start.
    db.execute("UPDATE datasets SET state = 'DELETING' WHERE id = ?", (ds.id,))
    with pytest.raises(NotFound):
        datasets.get(ds.id)
    assert datasets.finish_interrupted_deletes() == 1
    assert object_store.list_keys(prefix) == []
    assert db.query_one("SELECT id FROM datasets WHERE id = ?", (ds.id,)) is None


def test_delete_interrupted_by_storage_is_finished_by_deleting_again(db: Database, store: ObjectStore,
                                                                     s3_config: S3Config) -> None:
    datasets = Datasets(db, store)
    dataset_id, prefix = datasets.reserve()
    store.put_bytes(f"{prefix}train.jsonl", jsonl_bytes([{"prompt": "p", "completion": "c"}]))
    datasets.register(DatasetRegistration(dataset_id=dataset_id, name="x", training_type=TrainingType.SL,
                                          splits=[Split("train", object_key=f"{prefix}train.jsonl")]))
    # Storage refuses the delete (a real server, wrong credentials): the row stays hidden, DELETING.
    datasets.store = ObjectStore(s3_config.model_copy(update={"secret_key": Secret("not-the-key")}))
    with pytest.raises(Unavailable):
        datasets.delete(dataset_id)
    row = db.query_one("SELECT state FROM datasets WHERE id = ?", (dataset_id,))
    assert row is not None and row["state"] == "DELETING"
    with pytest.raises(NotFound):
        datasets.get(dataset_id)
    assert len(store.list_keys(prefix)) == 2
    # No delete is in progress any more: deleting again takes the row over and finishes.
    datasets.store = store
    assert datasets.delete(dataset_id) == 2
    assert store.list_keys(prefix) == [] and db.query_one("SELECT id FROM datasets WHERE id = ?", (dataset_id,)) is None
    with pytest.raises(NotFound):
        datasets.delete(dataset_id)


def test_concurrent_registers_of_one_import_make_one_dataset(db: Database, store: ObjectStore) -> None:
    object_store = store
    datasets = Datasets(db, object_store)
    key = "datasets/shared/train.jsonl"
    object_store.put_bytes(key, jsonl_bytes({"prompt": str(i), "completion": "x"} for i in range(300)))
    req = DatasetRegistration(name="race", training_type=TrainingType.SL, import_job_id="job-race",
                              splits=[Split("train", object_key=key)])
    results: list[int] = []
    errors: list[BaseException] = []

    def register() -> None:
        try:
            results.append(datasets.register(req).id)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=register) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(results) == 4 and len(set(results)) == 1
    assert datasets.list_datasets().total_size == 1


def test_heartbeats_do_not_repeat_watch_events(jobs: Jobs) -> None:
    job = jobs.create(JobKind.IMPORT)
    jobs.claim(None, "w", job.id)
    first = threading.Event()
    got: list[tuple[Phase, int]] = []

    async def drain() -> None:
        async for state in jobs.watch(job.id):
            if not first.is_set():
                assert state.phase is Phase.QUEUED
                first.set()
                continue
            got.append((state.phase, state.progress.rows_done))

    with LoopThread() as lt:
        drained = lt.submit(drain())
        assert first.wait(3)
        jobs.update(JobUpdate(job.id, "w", phase=Phase.CONVERTING, progress=JobProgress(rows_done=5)))
        time.sleep(0.1)
        for _ in range(5):  # bare heartbeats: the same phase and progress
            jobs.update(JobUpdate(job.id, "w", progress=JobProgress(rows_done=5)))
            time.sleep(0.05)
        jobs.update(JobUpdate(job.id, "w", progress=JobProgress(rows_done=9)))
        time.sleep(0.1)
        jobs.update(JobUpdate(job.id, "w", phase=Phase.COMPLETE))
        drained.result(5)
    assert got == [(Phase.CONVERTING, 5), (Phase.CONVERTING, 9), (Phase.COMPLETE, 9)]
