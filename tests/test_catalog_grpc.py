"""The catalog over real gRPC against a real SeaweedFS: datasets, examples, jobs, health, reflection."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from ferry import jsonl
from ferry.catalog.v1 import catalog_pb2 as pb
from ferry.rpcerrors import read_status
from tests.fixtures.catalog import RunningCatalog, jsonl_bytes, put_dataset, start_catalog

N_ROWS = 2500


def _rows(n: int, tag: str = "") -> list[dict[str, object]]:
    return [{"prompt": f"{tag}question {i}", "completion": f"answer {i} ✓"} for i in range(n)]


def _code(exc: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    return exc.value.code()


def test_register_then_page_through_examples(catalog_server: RunningCatalog) -> None:
    rows = _rows(N_ROWS)
    ds = put_dataset(catalog_server, {"train": rows, "test": _rows(10, "t-")}, name="GSM Mini")
    assert ds.state == pb.DATASET_STATE_READY and ds.id > 0
    train = {s.name: s for s in ds.splits}["train"]
    assert train.num_rows == N_ROWS
    assert train.num_bytes == len(jsonl_bytes(rows))
    assert train.object_key == f"datasets/{ds.id}/train.jsonl"
    assert train.index_key == f"datasets/{ds.id}/train.idx"
    header = jsonl.parse_header(catalog_server.store.get_bytes(train.index_key))
    assert (header.lines, header.size) == (N_ROWS, train.num_bytes)

    stub = catalog_server.stub
    for offset, limit in [(0, 100), (1234, 50), (N_ROWS - 7, 100), (N_ROWS, 10), (N_ROWS + 500, 10)]:
        page = stub.ListExamples(pb.ListExamplesRequest(dataset_id=ds.id, split="train", offset=offset, limit=limit))
        assert page.total == N_ROWS and page.split == "train" and page.offset == offset and page.limit == limit
        assert [json.loads(e.json) for e in page.examples] == rows[offset:offset + limit]
        assert [e.index for e in page.examples] == list(range(offset, min(offset + limit, N_ROWS)))
    # Empty split means the first split; limit 0 means 100.
    page = stub.ListExamples(pb.ListExamplesRequest(dataset_id=ds.id))
    assert page.split == "train" and len(page.examples) == 100 and page.limit == 100


def test_examples_bad_input(catalog_server: RunningCatalog) -> None:
    ds = put_dataset(catalog_server, {"train": _rows(5)})
    stub = catalog_server.stub
    cases = [
        (pb.ListExamplesRequest(dataset_id=ds.id, offset=-1), grpc.StatusCode.INVALID_ARGUMENT, "offset"),
        (pb.ListExamplesRequest(dataset_id=ds.id, limit=1001), grpc.StatusCode.INVALID_ARGUMENT, "limit"),
        (pb.ListExamplesRequest(dataset_id=ds.id, limit=-5), grpc.StatusCode.INVALID_ARGUMENT, "limit"),
        (pb.ListExamplesRequest(dataset_id=ds.id, split="validation"), grpc.StatusCode.NOT_FOUND, "train"),
        (pb.ListExamplesRequest(dataset_id=424242), grpc.StatusCode.NOT_FOUND, "dataset 424242 not found"),
    ]
    for req, code, text in cases:
        with pytest.raises(grpc.RpcError) as exc:
            stub.ListExamples(req)
        assert _code(exc) == code, req
        assert text in exc.value.details()


def test_list_filters_and_pagination(catalog_server: RunningCatalog) -> None:
    stub = catalog_server.stub
    made = []
    for i in range(5):
        made.append(put_dataset(catalog_server, {"train": _rows(3)}, name=f"Alpha Set {i}", repo_id="org/alpha"))
    made.append(put_dataset(catalog_server, {"train": _rows(3)}, name="Beta prefs", repo_id="org/beta",
                            training_type=pb.TRAINING_TYPE_DPO))
    everything = stub.ListDatasets(pb.ListDatasetsRequest())
    assert everything.total_size == 6
    assert [d.id for d in everything.datasets] == [d.id for d in reversed(made)]  # newest first

    seen: list[int] = []
    token = ""
    while True:
        page = stub.ListDatasets(pb.ListDatasetsRequest(page_size=2, page_token=token))
        assert page.total_size == 6 and len(page.datasets) <= 2
        seen += [d.id for d in page.datasets]
        token = page.next_page_token
        if not token:
            break
    assert seen == [d.id for d in reversed(made)]

    by_name = stub.ListDatasets(pb.ListDatasetsRequest(name_contains="alpha SET"))
    assert by_name.total_size == 5 and all("Alpha" in d.name for d in by_name.datasets)
    by_type = stub.ListDatasets(pb.ListDatasetsRequest(training_type=pb.TRAINING_TYPE_DPO))
    assert [d.name for d in by_type.datasets] == ["Beta prefs"]
    by_repo = stub.ListDatasets(pb.ListDatasetsRequest(source_repo_id="org/alpha", page_size=3))
    assert by_repo.total_size == 5 and len(by_repo.datasets) == 3 and by_repo.next_page_token
    assert stub.ListDatasets(pb.ListDatasetsRequest(source_repo_id="org/none")).total_size == 0

    for req, field in [(pb.ListDatasetsRequest(page_size=1001), "page_size"),
                       (pb.ListDatasetsRequest(page_token="garbage!"), "page_token")]:
        with pytest.raises(grpc.RpcError) as exc:
            stub.ListDatasets(req)
        assert _code(exc) == grpc.StatusCode.INVALID_ARGUMENT and field in exc.value.details()


def test_pending_dataset_is_invisible(catalog_server: RunningCatalog) -> None:
    stub = catalog_server.stub
    reserved = stub.ReserveDataset(pb.ReserveDatasetRequest(import_job_id=str(uuid.uuid4())))
    assert reserved.object_prefix == f"datasets/{reserved.dataset_id}/"
    catalog_server.store.put_bytes(f"{reserved.object_prefix}train.jsonl", jsonl_bytes(_rows(3)))
    with pytest.raises(grpc.RpcError) as exc:
        stub.GetDataset(pb.GetDatasetRequest(dataset_id=reserved.dataset_id))
    assert _code(exc) == grpc.StatusCode.NOT_FOUND
    assert exc.value.details() == f"dataset {reserved.dataset_id} not found"
    assert stub.ListDatasets(pb.ListDatasetsRequest()).total_size == 0
    with pytest.raises(grpc.RpcError) as exc:
        stub.ListExamples(pb.ListExamplesRequest(dataset_id=reserved.dataset_id))
    assert _code(exc) == grpc.StatusCode.NOT_FOUND
    # A failed or cancelled import releases its reservation, objects included.
    assert stub.DeleteDataset(pb.DeleteDatasetRequest(dataset_id=reserved.dataset_id)).objects_deleted == 1
    assert catalog_server.store.list_keys(reserved.object_prefix) == []
    with pytest.raises(grpc.RpcError) as exc:
        stub.DeleteDataset(pb.DeleteDatasetRequest(dataset_id=reserved.dataset_id))
    assert _code(exc) == grpc.StatusCode.NOT_FOUND


def test_register_is_idempotent_on_import_job(catalog_server: RunningCatalog) -> None:
    job_id = str(uuid.uuid4())
    first = put_dataset(catalog_server, {"train": _rows(4)}, import_job_id=job_id)
    # The same import registering again (e.g. a resumed worker) gets the same dataset back.
    again = catalog_server.stub.RegisterDataset(pb.RegisterDatasetRequest(
        name="test dataset", training_type=pb.TRAINING_TYPE_SL, import_job_id=job_id,
        splits=[pb.Split(name="train", object_key=f"datasets/{first.id}/train.jsonl")],
    )).dataset
    assert again.id == first.id
    reserved_again = catalog_server.stub.ReserveDataset(pb.ReserveDatasetRequest(import_job_id=job_id))
    assert reserved_again.dataset_id == first.id
    assert catalog_server.stub.ListDatasets(pb.ListDatasetsRequest()).total_size == 1


def test_register_bad_input(catalog_server: RunningCatalog) -> None:
    stub = catalog_server.stub
    reserved = stub.ReserveDataset(pb.ReserveDatasetRequest())
    key = f"{reserved.object_prefix}train.jsonl"
    catalog_server.store.put_bytes(key, jsonl_bytes(_rows(2)))
    good = pb.RegisterDatasetRequest(dataset_id=reserved.dataset_id, name="ok", training_type=pb.TRAINING_TYPE_SL,
                                     splits=[pb.Split(name="train", object_key=key)])
    cases: list[tuple[pb.RegisterDatasetRequest, grpc.StatusCode, str]] = []
    bad = pb.RegisterDatasetRequest()
    bad.CopyFrom(good)
    bad.name = "  "
    cases.append((bad, grpc.StatusCode.INVALID_ARGUMENT, "name"))
    bad = pb.RegisterDatasetRequest()
    bad.CopyFrom(good)
    bad.training_type = pb.TRAINING_TYPE_UNSPECIFIED
    cases.append((bad, grpc.StatusCode.INVALID_ARGUMENT, "training_type"))
    bad = pb.RegisterDatasetRequest()
    bad.CopyFrom(good)
    bad.training_type = 9  # type: ignore[assignment]  # a value this server does not know
    cases.append((bad, grpc.StatusCode.INVALID_ARGUMENT, "training_type"))
    bad = pb.RegisterDatasetRequest()
    bad.CopyFrom(good)
    bad.splits[0].object_key = f"{reserved.object_prefix}missing.jsonl"
    cases.append((bad, grpc.StatusCode.FAILED_PRECONDITION, f"{reserved.object_prefix}missing.jsonl"))
    bad = pb.RegisterDatasetRequest()
    bad.CopyFrom(good)
    bad.dataset_id = 99999
    cases.append((bad, grpc.StatusCode.NOT_FOUND, "dataset 99999 not found"))
    for req, code, text in cases:
        with pytest.raises(grpc.RpcError) as exc:
            stub.RegisterDataset(req)
        assert _code(exc) == code
        assert text in exc.value.details()
    assert stub.RegisterDataset(good).dataset.splits[0].num_rows == 2


def test_delete_removes_objects_and_record(catalog_server: RunningCatalog) -> None:
    stub = catalog_server.stub
    ds = put_dataset(catalog_server, {"train": _rows(20), "test": _rows(5)})
    other = put_dataset(catalog_server, {"train": _rows(2)})
    prefix = f"datasets/{ds.id}/"
    assert len(catalog_server.store.list_keys(prefix)) == 4  # two JSONL + two indexes
    assert stub.DeleteDataset(pb.DeleteDatasetRequest(dataset_id=ds.id)).objects_deleted == 4
    assert catalog_server.store.list_keys(prefix) == []
    assert len(catalog_server.store.list_keys(f"datasets/{other.id}/")) == 2
    for call in (lambda: stub.GetDataset(pb.GetDatasetRequest(dataset_id=ds.id)),
                 lambda: stub.DeleteDataset(pb.DeleteDatasetRequest(dataset_id=ds.id)),
                 lambda: stub.ListExamples(pb.ListExamplesRequest(dataset_id=ds.id))):
        with pytest.raises(grpc.RpcError) as exc:
            call()
        assert _code(exc) == grpc.StatusCode.NOT_FOUND
        assert f"dataset {ds.id} not found" in exc.value.details()
    assert [d.id for d in stub.ListDatasets(pb.ListDatasetsRequest()).datasets] == [other.id]


def test_concurrent_deletes_of_one_dataset_succeed_once(catalog_server: RunningCatalog) -> None:
    stub = catalog_server.stub
    ds = put_dataset(catalog_server, {"train": _rows(50), "test": _rows(5)})
    prefix = f"datasets/{ds.id}/"
    assert len(catalog_server.store.list_keys(prefix)) == 4
    n = 50
    start = threading.Barrier(n)
    results: list[tuple[str, int | str]] = []
    lock = threading.Lock()

    def delete() -> None:
        start.wait(30)
        try:
            got: tuple[str, int | str] = ("OK", stub.DeleteDataset(pb.DeleteDatasetRequest(dataset_id=ds.id),
                                                                   timeout=60).objects_deleted)
        except grpc.RpcError as exc:
            got = (exc.code().name, exc.details())
        with lock:
            results.append(got)

    threads = [threading.Thread(target=delete) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
        assert not t.is_alive()
    assert len(results) == n
    assert [r for r in results if r[0] == "OK"] == [("OK", 4)]
    refused = [r for r in results if r[0] != "OK"]
    assert len(refused) == n - 1 and {code for code, _ in refused} == {"NOT_FOUND"}
    assert all(str(details).startswith(f"dataset {ds.id} not found") for _, details in refused)
    assert catalog_server.store.list_keys(prefix) == []
    with pytest.raises(grpc.RpcError) as exc:
        stub.GetDataset(pb.GetDatasetRequest(dataset_id=ds.id))
    assert _code(exc) == grpc.StatusCode.NOT_FOUND


def _create_and_claim(stub: object, worker: str = "w1") -> pb.Job:
    job = stub.CreateJob(pb.CreateJobRequest(kind=pb.JOB_KIND_IMPORT, request_json='{"repo_id": "a/b"}')).job  # type: ignore[attr-defined]
    claimed = stub.ClaimJob(pb.ClaimJobRequest(kind=pb.JOB_KIND_IMPORT, worker_id=worker, job_id=job.id)).job  # type: ignore[attr-defined]
    assert claimed.id == job.id and claimed.worker_id == worker and claimed.attempt == 1
    return claimed


def test_two_watchers_each_get_every_phase(catalog_server: RunningCatalog) -> None:
    stub = catalog_server.stub
    job = stub.CreateJob(pb.CreateJobRequest(kind=pb.JOB_KIND_EXPORT)).job
    seen: dict[int, list[int]] = {0: [], 1: []}
    started = threading.Barrier(3)

    def watch(i: int) -> None:
        stream = stub.WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=20)
        first = True
        for resp in stream:
            if first:
                started.wait(5)
                first = False
            if not seen[i] or seen[i][-1] != resp.job.phase:
                seen[i].append(resp.job.phase)

    threads = [threading.Thread(target=watch, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    started.wait(10)
    stub.ClaimJob(pb.ClaimJobRequest(kind=pb.JOB_KIND_EXPORT, worker_id="w"))
    phases = [pb.JOB_PHASE_DOWNLOADING, pb.JOB_PHASE_CONVERTING, pb.JOB_PHASE_EXPORTING, pb.JOB_PHASE_SAVING,
              pb.JOB_PHASE_COMPLETE]
    for phase in phases:  # back to back, no pauses: watchers must not miss any
        stub.UpdateJob(pb.UpdateJobRequest(job_id=job.id, worker_id="w", phase=phase))
    for t in threads:
        t.join(20)
        assert not t.is_alive()
    assert seen[0] == seen[1] == [pb.JOB_PHASE_QUEUED, *phases]
    # A watch on an ended job gives its final state and ends.
    assert [r.job.phase for r in stub.WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=5)] == [
        pb.JOB_PHASE_COMPLETE]


def test_job_without_heartbeat_stalls_and_is_claimed_again(catalog_server: RunningCatalog) -> None:
    stub = catalog_server.stub
    job = _create_and_claim(stub, "worker-a")
    stub.UpdateJob(pb.UpdateJobRequest(job_id=job.id, worker_id="worker-a", phase=pb.JOB_PHASE_DOWNLOADING,
                                       checkpoint_json='{"file": 3}'))
    events = []
    for resp in stub.WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=10):  # worker-a goes silent
        events.append(resp.job)
        if resp.job.stalled:
            break
    stalled = events[-1]
    assert stalled.stalled and stalled.worker_id == "" and stalled.phase == pb.JOB_PHASE_DOWNLOADING
    assert stalled.message == "worker stopped responding; waiting to be resumed"
    # The stale worker is refused; another one resumes from the checkpoint.
    with pytest.raises(grpc.RpcError) as exc:
        stub.UpdateJob(pb.UpdateJobRequest(job_id=job.id, worker_id="worker-a", phase=pb.JOB_PHASE_CONVERTING))
    assert _code(exc) == grpc.StatusCode.FAILED_PRECONDITION and "worker-a" in exc.value.details()
    again = stub.ClaimJob(pb.ClaimJobRequest(kind=pb.JOB_KIND_IMPORT, worker_id="worker-b")).job
    assert again.id == job.id and again.worker_id == "worker-b" and again.attempt == 2 and not again.stalled
    assert again.checkpoint_json == '{"file": 3}'
    with pytest.raises(grpc.RpcError) as exc:
        stub.UpdateJob(pb.UpdateJobRequest(job_id=job.id, worker_id="worker-a"))
    assert _code(exc) == grpc.StatusCode.FAILED_PRECONDITION
    # Nothing else is left to claim.
    assert not stub.ClaimJob(pb.ClaimJobRequest(kind=pb.JOB_KIND_IMPORT, worker_id="worker-c")).HasField("job")
    done = stub.UpdateJob(pb.UpdateJobRequest(job_id=job.id, worker_id="worker-b", phase=pb.JOB_PHASE_COMPLETE))
    assert done.job.phase == pb.JOB_PHASE_COMPLETE and done.job.HasField("finished_at")


def _watch_until(stub: object, job_id: str, done: object) -> pb.Job:
    """Watch the job until `done(job)` holds; returns that state."""
    for resp in stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=20):  # type: ignore[attr-defined]
        if done(resp.job):  # type: ignore[operator]
            return resp.job
    raise AssertionError(f"job {job_id}: the watch ended first")


def test_a_job_whose_worker_keeps_dying_ends_in_error(s3_env: dict[str, str], tmp_path: Path) -> None:
    """FERRY_JOB_MAX_ATTEMPTS=2: the worker dies (stops heartbeating) twice, then the job is ERROR, says why and
    is claimable no more; a watcher sees the end."""
    running = start_catalog(s3_env, tmp_path / "c", extra_env={"FERRY_JOB_MAX_ATTEMPTS": "2"})
    try:
        stub = running.stub
        job = _create_and_claim(stub, "worker-a")
        stub.UpdateJob(pb.UpdateJobRequest(job_id=job.id, worker_id="worker-a", phase=pb.JOB_PHASE_DOWNLOADING))
        assert _watch_until(stub, job.id, lambda j: j.stalled).phase == pb.JOB_PHASE_DOWNLOADING
        again = stub.ClaimJob(pb.ClaimJobRequest(kind=pb.JOB_KIND_IMPORT, worker_id="worker-b")).job
        assert again.id == job.id and again.attempt == 2
        stub.UpdateJob(pb.UpdateJobRequest(job_id=job.id, worker_id="worker-b", phase=pb.JOB_PHASE_CONVERTING))
        ended = _watch_until(stub, job.id, lambda j: j.phase != pb.JOB_PHASE_CONVERTING)
        assert ended.phase == pb.JOB_PHASE_ERROR and not ended.stalled and ended.worker_id == ""
        assert ended.HasField("finished_at") and ended.attempt == 2
        assert ended.error.startswith("the worker stopped while running this job 2 times (the last at ")
        assert "in phase converting); not retried" in ended.error and "FERRY_JOB_MAX_ATTEMPTS=2" in ended.error
        assert stub.GetJob(pb.GetJobRequest(job_id=job.id)).job.error == ended.error
        for req in (pb.ClaimJobRequest(kind=pb.JOB_KIND_IMPORT, worker_id="worker-c"),
                    pb.ClaimJobRequest(worker_id="worker-c", job_id=job.id)):
            assert not stub.ClaimJob(req).HasField("job")
        with pytest.raises(grpc.RpcError) as exc:
            stub.UpdateJob(pb.UpdateJobRequest(job_id=job.id, worker_id="worker-b"))
        assert _code(exc) == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        running.channel.close()
        running.server.stop(grace=1.0)


def test_a_stalled_job_is_not_claimed_during_its_back_off(s3_env: dict[str, str], tmp_path: Path) -> None:
    """A back-off far longer than the test: ClaimJob right after the stall gets no job (the wait itself is
    tested with a fake clock in test_catalog_core.py)."""
    running = start_catalog(s3_env, tmp_path / "c", extra_env={"FERRY_JOB_RETRY_BACKOFF_SECONDS": "300"})
    try:
        stub = running.stub
        job = _create_and_claim(stub, "worker-a")
        stalled = _watch_until(stub, job.id, lambda j: j.stalled)
        assert stalled.worker_id == "" and stalled.phase == pb.JOB_PHASE_QUEUED
        for req in (pb.ClaimJobRequest(kind=pb.JOB_KIND_IMPORT, worker_id="worker-b"),
                    pb.ClaimJobRequest(worker_id="worker-b", job_id=job.id)):
            assert not stub.ClaimJob(req).HasField("job")
        later = stub.CreateJob(pb.CreateJobRequest(kind=pb.JOB_KIND_IMPORT)).job  # the queue is not held up
        assert stub.ClaimJob(pb.ClaimJobRequest(kind=pb.JOB_KIND_IMPORT, worker_id="worker-b")).job.id == later.id
        current = stub.GetJob(pb.GetJobRequest(job_id=job.id)).job
        assert current.stalled and current.attempt == 1
        # The contract says when it may be taken up again: its stall plus the back-off.
        assert current.HasField("retry_at")
        assert current.retry_at.seconds >= current.heartbeat_at.seconds + 300 - 1
    finally:
        running.channel.close()
        running.server.stop(grace=1.0)


def test_heartbeating_worker_is_not_stalled(catalog_server: RunningCatalog) -> None:
    stub = catalog_server.stub
    job = _create_and_claim(stub)
    for i in range(8):  # 2 s of progress, twice the heartbeat timeout
        resp = stub.UpdateJob(pb.UpdateJobRequest(
            job_id=job.id, worker_id="w1", phase=pb.JOB_PHASE_CONVERTING,
            progress=pb.JobProgress(rows_done=i * 10, rows_total=100)))
        assert not resp.job.stalled and resp.job.worker_id == "w1"
        time.sleep(0.25)
    assert resp.job.progress.percent == pytest.approx(70.0)


def test_cancel_semantics(catalog_server: RunningCatalog) -> None:
    stub = catalog_server.stub
    queued = stub.CreateJob(pb.CreateJobRequest(kind=pb.JOB_KIND_IMPORT)).job
    cancelled = stub.CancelJob(pb.CancelJobRequest(job_id=queued.id)).job
    assert cancelled.phase == pb.JOB_PHASE_CANCELLED and cancelled.HasField("finished_at")
    with pytest.raises(grpc.RpcError) as exc:
        stub.CancelJob(pb.CancelJobRequest(job_id=queued.id))
    assert _code(exc) == grpc.StatusCode.FAILED_PRECONDITION and "cancelled" in exc.value.details()
    assert not stub.ClaimJob(pb.ClaimJobRequest(kind=pb.JOB_KIND_IMPORT, worker_id="w")).HasField("job")

    running = _create_and_claim(stub)
    stub.UpdateJob(pb.UpdateJobRequest(job_id=running.id, worker_id="w1", phase=pb.JOB_PHASE_DOWNLOADING))
    asked = stub.CancelJob(pb.CancelJobRequest(job_id=running.id)).job
    assert asked.cancel_requested and asked.phase == pb.JOB_PHASE_DOWNLOADING
    # The worker learns it from its next update, cleans up and ends the job.
    resp = stub.UpdateJob(pb.UpdateJobRequest(job_id=running.id, worker_id="w1",
                                              progress=pb.JobProgress(bytes_done=5, bytes_total=10)))
    assert resp.job.cancel_requested
    ended = stub.UpdateJob(pb.UpdateJobRequest(job_id=running.id, worker_id="w1", phase=pb.JOB_PHASE_CANCELLED))
    assert ended.job.phase == pb.JOB_PHASE_CANCELLED
    with pytest.raises(grpc.RpcError) as exc:
        stub.UpdateJob(pb.UpdateJobRequest(job_id=running.id, worker_id="w1", phase=pb.JOB_PHASE_SAVING))
    assert _code(exc) == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as exc:
        stub.CancelJob(pb.CancelJobRequest(job_id=str(uuid.uuid4())))
    assert _code(exc) == grpc.StatusCode.NOT_FOUND


def test_job_bad_input_and_listing(catalog_server: RunningCatalog) -> None:
    stub = catalog_server.stub
    for call, code, text in [
        (lambda: stub.CreateJob(pb.CreateJobRequest()), grpc.StatusCode.INVALID_ARGUMENT, "kind"),
        (lambda: stub.CreateJob(pb.CreateJobRequest(kind=pb.JOB_KIND_IMPORT, request_json='{"hf_token": "x"}')),
         grpc.StatusCode.INVALID_ARGUMENT, "request_json"),
        (lambda: stub.GetJob(pb.GetJobRequest(job_id="nope")), grpc.StatusCode.NOT_FOUND, "job nope not found"),
        (lambda: next(stub.WatchJob(pb.WatchJobRequest(job_id="nope"))), grpc.StatusCode.NOT_FOUND,
         "job nope not found"),
        (lambda: stub.UpdateJob(pb.UpdateJobRequest(job_id="nope", worker_id="w")), grpc.StatusCode.NOT_FOUND,
         "job nope not found"),
        (lambda: stub.ClaimJob(pb.ClaimJobRequest(kind=pb.JOB_KIND_IMPORT)), grpc.StatusCode.INVALID_ARGUMENT,
         "worker_id"),
    ]:
        with pytest.raises(grpc.RpcError) as exc:
            call()
        assert _code(exc) == code and text in exc.value.details()
    ids = [stub.CreateJob(pb.CreateJobRequest(kind=pb.JOB_KIND_EXPORT)).job.id for _ in range(3)]
    imp = stub.CreateJob(pb.CreateJobRequest(kind=pb.JOB_KIND_IMPORT)).job
    stub.CancelJob(pb.CancelJobRequest(job_id=ids[0]))
    exports = stub.ListJobs(pb.ListJobsRequest(kind=pb.JOB_KIND_EXPORT, page_size=2))
    assert [j.id for j in exports.jobs] == ids[::-1][:2] and exports.next_page_token
    rest = stub.ListJobs(pb.ListJobsRequest(kind=pb.JOB_KIND_EXPORT, page_size=2,
                                            page_token=exports.next_page_token))
    assert [j.id for j in rest.jobs] == [ids[0]] and not rest.next_page_token
    queued = stub.ListJobs(pb.ListJobsRequest(phases=[pb.JOB_PHASE_QUEUED]))
    assert {j.id for j in queued.jobs} == {ids[1], ids[2], imp.id}


def _registration(**changes: object) -> pb.RegisterDatasetRequest:
    req = pb.RegisterDatasetRequest(name="ok", training_type=pb.TRAINING_TYPE_SL,
                                    splits=[pb.Split(name="train", object_key="datasets/1/train.jsonl")],
                                    field_mappings={"prompt": "q"})
    for name, value in changes.items():
        if name == "field_mappings":
            req.ClearField("field_mappings")
            req.field_mappings.update(value)  # type: ignore[call-overload]
        elif name == "split_name":
            req.splits[0].name = value  # type: ignore[assignment]
        elif name == "object_key":
            req.splits[0].object_key = value  # type: ignore[assignment]
        else:
            setattr(req, name, value)
    return req


def _template(**changes: object) -> pb.SaveMappingTemplateRequest:
    fields: dict[str, object] = {"name": "t", "training_type": pb.TRAINING_TYPE_SL, "field_mappings": {"prompt": "q"},
                                 **changes}
    return pb.SaveMappingTemplateRequest(**fields)  # type: ignore[arg-type]


MANY = {f"t{i}": "c" for i in range(201)}
TOO_BIG_JSON = '{"text": "' + "j" * (1024 * 1024) + '"}'


@pytest.mark.parametrize("method,request_,field", [
    ("RegisterDataset", _registration(name="n" * 257), "name"),
    ("RegisterDataset", _registration(field_mappings=MANY), "field_mappings"),
    ("RegisterDataset", _registration(field_mappings={"k" * 101: "q"}), "field_mappings"),
    ("RegisterDataset", _registration(field_mappings={"prompt": "v" * 1001}), "field_mappings"),
    ("RegisterDataset", _registration(split_name="s" * 201), "splits[0].name"),
    ("RegisterDataset", _registration(object_key="o" * 1025), "splits[0].object_key"),
    ("SaveMappingTemplate", _template(name="n" * 257), "name"),
    ("SaveMappingTemplate", _template(field_mappings=MANY), "field_mappings"),
    ("SaveMappingTemplate", _template(field_mappings={"k" * 101: "q"}), "field_mappings"),
    ("SaveMappingTemplate", _template(field_mappings={"prompt": "v" * 1001}), "field_mappings"),
    ("SaveMappingTemplate", _template(repo_id="r" * 1025), "repo_id"),
    ("CreateJob", pb.CreateJobRequest(kind=pb.JOB_KIND_EXPORT, request_json=TOO_BIG_JSON), "request_json"),
    ("CreateJob", pb.CreateJobRequest(kind=pb.JOB_KIND_EXPORT, job_id="u" * 5000), "job_id"),
    ("ClaimJob", pb.ClaimJobRequest(kind=pb.JOB_KIND_EXPORT, worker_id="w" * 257), "worker_id"),
    ("UpdateJob", pb.UpdateJobRequest(job_id=str(uuid.uuid4()), worker_id="w" * 257), "worker_id"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bounds(catalog_server: RunningCatalog, method: str, request_: object, field: str) -> None:
    """Past a bound: INVALID_ARGUMENT naming the field, the message quoting at most ~40 characters of the value."""
    with pytest.raises(grpc.RpcError) as exc:
        getattr(catalog_server.stub, method)(request_)
    failure = read_status(exc.value)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, failure
    assert failure.field == field and field in failure.message
    assert len(failure.message) < 300, failure.message
    for ch in "nkvsoruwj":
        assert ch * 41 not in failure.message


def test_values_at_the_bounds_are_kept(catalog_server: RunningCatalog) -> None:
    stub = catalog_server.stub
    mappings = {f"{i:03d}" + "k" * 97: "v" * 1000 for i in range(200)}
    ds = put_dataset(catalog_server, {"s" * 200: _rows(2)}, name="n" * 256, field_mappings=mappings)
    assert ds.name == "n" * 256 and dict(ds.field_mappings) == mappings and ds.splits[0].name == "s" * 200
    t = stub.SaveMappingTemplate(_template(name="n" * 256, field_mappings=mappings, repo_id="r" * 1024)).template
    assert t.name == "n" * 256 and dict(t.field_mappings) == mappings
    at_limit = '{"text": "' + "j" * (1024 * 1024 - 12) + '"}'
    assert len(at_limit) == 1024 * 1024
    job = stub.CreateJob(pb.CreateJobRequest(kind=pb.JOB_KIND_EXPORT, request_json=at_limit)).job
    assert len(stub.GetJob(pb.GetJobRequest(job_id=job.id)).job.request_json) == 1024 * 1024
    # An unknown id far past any real one is NOT_FOUND, quoting only its start.
    with pytest.raises(grpc.RpcError) as exc:
        stub.GetJob(pb.GetJobRequest(job_id="x" * 5000))
    assert _code(exc) == grpc.StatusCode.NOT_FOUND and exc.value.details() == f"job {'x' * 40}... not found"


def test_worker_text_is_clipped_not_refused(catalog_server: RunningCatalog) -> None:
    """Messages, errors and skip reasons a worker writes are stored cut (2000 characters, 100 reasons)."""
    stub = catalog_server.stub
    job = stub.CreateJob(pb.CreateJobRequest(kind=pb.JOB_KIND_IMPORT, message="q" * 5000)).job
    assert len(job.message) == 2000 and job.message.endswith("q...")
    stub.ClaimJob(pb.ClaimJobRequest(worker_id="w", job_id=job.id))
    got = stub.UpdateJob(pb.UpdateJobRequest(job_id=job.id, worker_id="w", message="m" * 3000,
                                             skip_reasons=[f"{i} " + "r" * 3000 for i in range(150)],
                                             rows_skipped=150)).job
    assert len(got.message) == 2000 and got.message.startswith("m" * 1997)
    assert len(got.skip_reasons) == 100 and all(len(r) == 2000 for r in got.skip_reasons)
    assert [r.split()[0] for r in got.skip_reasons] == [str(i) for i in range(100)]
    ended = stub.UpdateJob(pb.UpdateJobRequest(job_id=job.id, worker_id="w", phase=pb.JOB_PHASE_ERROR,
                                               error="e" * 10_000)).job
    assert ended.phase == pb.JOB_PHASE_ERROR and len(ended.error) == 2000
    stored = stub.GetJob(pb.GetJobRequest(job_id=job.id)).job
    assert stored.error == ended.error and list(stored.skip_reasons) == list(got.skip_reasons)


def test_mapping_templates(catalog_server: RunningCatalog) -> None:
    stub = catalog_server.stub
    t = stub.SaveMappingTemplate(pb.SaveMappingTemplateRequest(
        name="gsm", training_type=pb.TRAINING_TYPE_SL, field_mappings={"prompt": "question"}, repo_id="o/gsm")).template
    stub.SaveMappingTemplate(pb.SaveMappingTemplateRequest(
        name="prefs", training_type=pb.TRAINING_TYPE_DPO, field_mappings={"chosen": "good"}))
    same = stub.SaveMappingTemplate(pb.SaveMappingTemplateRequest(
        name="gsm", training_type=pb.TRAINING_TYPE_SL, field_mappings={"prompt": "q2"}, repo_id="o/gsm")).template
    assert same.id == t.id and dict(same.field_mappings) == {"prompt": "q2"}
    assert len(stub.ListMappingTemplates(pb.ListMappingTemplatesRequest()).templates) == 2
    sl = stub.ListMappingTemplates(pb.ListMappingTemplatesRequest(training_type=pb.TRAINING_TYPE_SL)).templates
    assert [x.name for x in sl] == ["gsm"]
    assert [x.name for x in stub.ListMappingTemplates(pb.ListMappingTemplatesRequest(repo_id="o/gsm")).templates] \
        == ["gsm"]
    with pytest.raises(grpc.RpcError) as exc:
        stub.SaveMappingTemplate(pb.SaveMappingTemplateRequest(training_type=pb.TRAINING_TYPE_SL,
                                                               field_mappings={"a": "b"}))
    assert _code(exc) == grpc.StatusCode.INVALID_ARGUMENT and "name" in exc.value.details()
    stub.DeleteMappingTemplate(pb.DeleteMappingTemplateRequest(template_id=t.id))
    with pytest.raises(grpc.RpcError) as exc:
        stub.DeleteMappingTemplate(pb.DeleteMappingTemplateRequest(template_id=t.id))
    assert _code(exc) == grpc.StatusCode.NOT_FOUND


def test_health_and_reflection(catalog_server: RunningCatalog) -> None:
    health = health_pb2_grpc.HealthStub(catalog_server.channel)
    for service in ("", "ferry.catalog.v1.CatalogService"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == \
            health_pb2.HealthCheckResponse.SERVING
    services = ProtoReflectionDescriptorDatabase(catalog_server.channel).get_services()
    assert "ferry.catalog.v1.CatalogService" in services
    assert "grpc.health.v1.Health" in services


def test_unexpected_error_is_internal_without_traceback(catalog_server: RunningCatalog) -> None:
    ds = put_dataset(catalog_server, {"train": _rows(3)})
    # Storage corrupted behind the catalog's back: the index no longer parses.
    catalog_server.store.put_bytes(ds.splits[0].index_key, b"definitely not an index" * 4)
    with pytest.raises(grpc.RpcError) as exc:
        catalog_server.stub.ListExamples(pb.ListExamplesRequest(dataset_id=ds.id))
    assert _code(exc) == grpc.StatusCode.INTERNAL
    details = exc.value.details()
    assert details.startswith("internal error (ref ")
    assert "Traceback" not in details and "ValueError" not in details and ".py" not in details


def test_shutdown_ends_watch_streams(s3_env: dict[str, str], tmp_path: object) -> None:
    from pathlib import Path

    running = start_catalog(s3_env, Path(str(tmp_path)) / "c")
    job = running.stub.CreateJob(pb.CreateJobRequest(kind=pb.JOB_KIND_IMPORT)).job
    stream = running.stub.WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=30)
    assert next(stream).job.phase == pb.JOB_PHASE_QUEUED
    t0 = time.monotonic()
    running.server.stop(grace=15.0)
    took = time.monotonic() - t0
    with pytest.raises(grpc.RpcError) as exc:
        next(stream)
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    assert took < 10.0, f"stop waited {took:.1f}s for the watch stream"
    running.channel.close()


def test_watch_released_when_client_cancels(catalog_server: RunningCatalog) -> None:
    job = catalog_server.stub.CreateJob(pb.CreateJobRequest(kind=pb.JOB_KIND_IMPORT)).job
    stream = catalog_server.stub.WatchJob(pb.WatchJobRequest(job_id=job.id))
    assert next(stream).job.phase == pb.JOB_PHASE_QUEUED
    jobs = catalog_server.server.core.jobs
    assert jobs._watchers == 1
    stream.cancel()
    deadline = time.monotonic() + 3
    while jobs._watchers and time.monotonic() < deadline:
        time.sleep(0.02)
    assert jobs._watchers == 0
