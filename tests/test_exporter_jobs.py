"""Export jobs end to end: bad input, seeded splits, cancel, status streams and downloads.

Real SeaweedFS, catalog, exporter gRPC and gateway; small datasets except the cancel test.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import grpc
import httpx
import pytest

from ferry.catalog.v1 import catalog_pb2 as cpb
from ferry.exporter.v1 import exporter_pb2 as pb
from services.exporter.formats import FORMATS
from tests.fixtures.catalog import put_dataset
from tests.fixtures.exporter import SAMPLE_ROWS, download, openai_format_errors, wait_export
from tests.fixtures.gateway import start_gateway


@pytest.fixture
def stack(catalog_server: Any, exporter_server: Any) -> Any:
    with start_gateway(catalog_addr=catalog_server.addr, exporter_addr=exporter_server.addr) as gw:
        yield catalog_server, exporter_server, gw


def _numbered(n: int) -> list[dict[str, Any]]:
    return [{"prompt": f"question {i}", "completion": f"answer {i} ✓"} for i in range(n)]


def test_formats_come_from_the_registry(stack: Any) -> None:
    _, exporter, gw = stack
    body = gw.client.get("/api/export/formats").json()
    assert [f["name"] for f in body["formats"]] == list(FORMATS)
    for f in body["formats"]:
        assert f["description"] and f["file_extension"] and f["features"] and f["use_cases"]
    grpc_names = [f.name for f in exporter.stub.ListFormats(pb.ListFormatsRequest()).formats]
    assert grpc_names == list(FORMATS)


def test_bad_requests_are_refused_before_queuing(stack: Any) -> None:
    catalog, exporter, gw = stack
    sl = put_dataset(catalog, {"train": SAMPLE_ROWS["SL"]}, training_type=cpb.TRAINING_TYPE_SL)
    post = gw.client.post

    def expect(body: dict[str, Any], status: int, *words: str) -> None:
        resp = post("/api/datasets/export", json={"dataset_id": sl.id, "format": "openai",
                                                  "output_filename": "out", **body})
        assert resp.status_code == status, (body, resp.text)
        text = json.dumps(resp.json())
        for w in words:
            assert w in text, (w, text)

    expect({"format": "parquet"}, 400, "format", "parquet", "supported formats")
    expect({"dataset_id": 999999}, 404, "999999")
    expect({"train_split": 0}, 422, "train_split")
    expect({"train_split": 1.5}, 422, "train_split")
    expect({"format": "langchain", "additional_params": {"export_type": "graph"}}, 400, "export_type", "documents")
    expect({"output_filename": "a/b"}, 400, "output_filename", "path separators")
    expect({"output_filename": "..\\x"}, 400, "output_filename")
    expect({"output_filename": "x..y"}, 400, "output_filename", "..")
    expect({"output_filename": "bad\x07name"}, 400, "output_filename", "control")
    expect({"output_filename": "n" * 300}, 400, "output_filename", "longer")
    expect({"format": "openai_dpo"}, 400, "openai_dpo", "SL", "chosen")
    expect({"additional_params": {"model": "gpt-2"}}, 400, "additional_params.model")
    expect({"additional_params": {"colour": "red"}}, 400, "additional_params.colour")
    expect({"additional_params": {"split": "nope"}}, 400, "additional_params.split", "train")
    # gRPC callers get the same checks with INVALID_ARGUMENT, including the range pydantic guards for REST.
    for split in (0.0, 1.5):
        with pytest.raises(grpc.RpcError) as err:
            exporter.stub.StartExport(pb.StartExportRequest(dataset_id=sl.id, format="csv", output_filename="o",
                                                            train_split=split))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "train_split" in err.value.details()
    # Nothing was queued by any of them.
    jobs = catalog.stub.ListJobs(cpb.ListJobsRequest(kind=cpb.JOB_KIND_EXPORT)).jobs
    assert list(jobs) == []


def test_grpc_callers_get_the_bounds_the_gateway_applies(catalog_server: Any, exporter_server: Any) -> None:
    sl = put_dataset(catalog_server, {"train": SAMPLE_ROWS["SL"]}, training_type=cpb.TRAINING_TYPE_SL)
    start = exporter_server.stub.StartExport

    def refused(field: str, **kwargs: Any) -> None:
        with pytest.raises(grpc.RpcError) as err:
            start(pb.StartExportRequest(**{"dataset_id": sl.id, "format": "csv", "output_filename": "o", **kwargs}))
        details = err.value.details() or ""
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in details, details
        assert "z" * 41 not in details and len(details) < 400, details  # a bad value is quoted briefly

    refused("system_message", system_message="z" * (64 * 1024 + 1))
    refused("system_message", system_message="z" * (1 << 20))
    refused("additional_params", additional_params={f"k{i}": "v" for i in range(65)})
    refused("additional_params", additional_params={"k" * 101: "v"})
    refused("additional_params.split", additional_params={"split": "z" * 1001})
    refused("format", format="z" * 10_000)
    assert list(catalog_server.stub.ListJobs(cpb.ListJobsRequest(kind=cpb.JOB_KIND_EXPORT)).jobs) == []
    # The largest system_message is taken, and every row without a system of its own carries it.
    resp = start(pb.StartExportRequest(dataset_id=sl.id, format="csv", output_filename="o",
                                       system_message="z" * (64 * 1024)))
    deadline = time.monotonic() + 60
    while True:
        job = exporter_server.stub.GetExport(pb.GetExportRequest(export_id=resp.export.job.id)).export.job
        if job.phase in (cpb.JOB_PHASE_COMPLETE, cpb.JOB_PHASE_ERROR, cpb.JOB_PHASE_CANCELLED):
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job.phase == cpb.JOB_PHASE_COMPLETE, job
    rows_without_system = sum(1 for r in SAMPLE_ROWS["SL"] if not r.get("system"))
    assert [f.name for f in job.files] == ["o.csv"] and job.files[0].size > rows_without_system * 64 * 1024


def test_deleted_dataset_is_not_found(stack: Any) -> None:
    catalog, _, gw = stack
    ds = put_dataset(catalog, {"train": SAMPLE_ROWS["SL"]}, training_type=cpb.TRAINING_TYPE_SL)
    catalog.stub.DeleteDataset(cpb.DeleteDatasetRequest(dataset_id=ds.id))
    resp = gw.client.post("/api/datasets/export", json={"dataset_id": ds.id, "format": "csv", "output_filename": "x"})
    assert resp.status_code == 404 and str(ds.id) in resp.json()["detail"]


def test_seeded_split_is_exact_deterministic_and_converted(stack: Any) -> None:
    catalog, _, gw = stack
    rows = _numbered(50)
    ds = put_dataset(catalog, {"train": rows}, training_type=cpb.TRAINING_TYPE_SL)

    def run(seed: int | None, name: str) -> tuple[list[str], list[str], dict[str, Any]]:
        body: dict[str, Any] = {"dataset_id": ds.id, "format": "openai", "output_filename": name, "train_split": 0.8}
        if seed is not None:
            body["additional_params"] = {"seed": seed}
        export = wait_export(gw.client, gw.client.post("/api/datasets/export", json=body).json()["export_id"])
        assert export["status"] == "complete", export
        assert {f["name"] for f in export["files"]} == {f"{name}_train.jsonl", f"{name}_validation.jsonl",
                                                        f"{name}.validation.json", f"{name}.validation.txt"}
        train = download(gw.client, export, f"{name}_train.jsonl").decode().splitlines()
        val = download(gw.client, export, f"{name}_validation.jsonl").decode().splitlines()
        report = json.loads(download(gw.client, export, f"{name}.validation.json"))
        return train, val, report

    train_a, val_a, report = run(1, "a")
    train_b, val_b, _ = run(1, "b")
    train_c, val_c, _ = run(2, "c")
    train_d, _, _ = run(None, "d")
    train_e, _, _ = run(None, "e")
    assert (len(train_a), len(val_a)) == (40, 10)
    assert (train_a, val_a) == (train_b, val_b)  # same seed, same files
    assert train_d == train_e  # the default seed is fixed
    assert train_a != train_c  # a different seed, a different order
    prompts = [json.loads(x)["messages"][0]["content"] for x in train_a + val_a]
    assert sorted(prompts) == sorted(r["prompt"] for r in rows)  # every row exactly once
    assert prompts[:40] != [r["prompt"] for r in rows[:40]]  # shuffled, not the head of the dataset
    for line in val_a:  # the validation file is converted too
        assert openai_format_errors(json.loads(line)) == []
    # The report covers both files, with token totals the tokenizer itself gives (cookbook formula).
    from services.exporter.openai_report import tokenizer_count

    count = tokenizer_count("o200k_base")
    assert report["is_valid"] is True
    for split, lines in (("train", train_a), ("validation", val_a)):
        st = report["splits"][split]
        assert st["examples"] == len(lines)
        expected = sum(3 + sum(3 + count(m["role"]) + count(m["content"]) for m in json.loads(x)["messages"])
                       for x in lines)
        assert st["total_tokens"] == expected


def test_system_message_fills_only_rows_without_one(stack: Any) -> None:
    catalog, _, gw = stack
    rows = SAMPLE_ROWS["SL"]
    ds = put_dataset(catalog, {"train": rows}, training_type=cpb.TRAINING_TYPE_SL)
    resp = gw.client.post("/api/datasets/export", json={"dataset_id": ds.id, "format": "openai",
                                                        "output_filename": "sys", "system_message": "Default sys"})
    export = wait_export(gw.client, resp.json()["export_id"])
    lines = [json.loads(x) for x in download(gw.client, export, "sys.jsonl").decode().splitlines()]
    for obj, row in zip(lines, rows, strict=True):
        assert obj["messages"][0] == {"role": "system", "content": row.get("system") or "Default sys"}


def test_download_presigned_events_and_watch(stack: Any) -> None:
    catalog, exporter, gw = stack
    ds = put_dataset(catalog, {"train": SAMPLE_ROWS["DPO"]}, training_type=cpb.TRAINING_TYPE_DPO)
    resp = gw.client.post(f"/api/datasets/{ds.id}/export-csv", json={"output_filename": "prefs"})
    assert resp.status_code == 202
    export_id = resp.json()["export_id"]
    events = []
    with gw.client.stream("GET", f"/api/exports/{export_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert events[-1]["status"] == "complete"
    assert all(e["status"] in ("queued", "exporting", "saving", "complete") for e in events)
    export = gw.client.get(f"/api/exports/{export_id}").json()
    assert export["progress"] == 100 and export["error"] is None
    (f,) = export["files"]
    assert f["name"] == "prefs.csv" and f["url"] == f"/api/exports/{export_id}/files/prefs.csv"
    got = gw.client.get(f["url"])
    assert 'filename="prefs.csv"' in got.headers["content-disposition"]
    stored = catalog.store.get_bytes(f"exports/{export_id}/prefs.csv")
    assert got.content == stored and hashlib.sha256(stored).hexdigest() == f["sha256"] and len(stored) == f["size"]
    presigned = gw.client.get(f"/api/exports/{export_id}/files/prefs.csv/presigned").json()
    assert httpx.get(presigned["url"]).content == stored
    # gRPC: the download stream's header, then the bytes; the watch of a finished export ends at once.
    msgs = list(exporter.stub.DownloadFile(pb.DownloadFileRequest(export_id=export_id, name="prefs.csv",
                                                                  chunk_size=100)))
    assert msgs[0].file.sha256 == f["sha256"] and b"".join(m.data for m in msgs[1:]) == stored
    events = [line for line in gw.client.get(f"/api/exports/{export_id}/events").text.splitlines() if line]
    assert len(events) == 1 and json.loads(events[0].removeprefix("data: "))["status"] == "complete"
    # Missing files and exports.
    assert gw.client.get(f"/api/exports/{export_id}/files/nope.csv").status_code == 404
    assert gw.client.get("/api/exports/not-an-export").status_code == 404
    listed = gw.client.get("/api/exports").json()["exports"]
    assert export_id in [e["export_id"] for e in listed]


def test_cancel_midway_leaves_no_files(stack: Any) -> None:
    catalog, _, gw = stack
    filler = "lorem ipsum " * 20
    rows = [{"prompt": f"q{i} {filler}", "completion": f"a{i} {filler}"} for i in range(150_000)]
    ds = put_dataset(catalog, {"train": rows}, training_type=cpb.TRAINING_TYPE_SL)
    resp = gw.client.post("/api/datasets/export", json={"dataset_id": ds.id, "format": "openai",
                                                        "output_filename": "big", "train_split": 0.9})
    export_id = resp.json()["export_id"]
    deadline = time.monotonic() + 60
    while True:
        body = gw.client.get(f"/api/exports/{export_id}").json()
        if body["status"] == "exporting" and body["progress_detail"]["rows_done"] > 0:
            break
        assert body["status"] in ("queued", "exporting"), body
        assert time.monotonic() < deadline
        time.sleep(0.02)
    cancelled = gw.client.post(f"/api/exports/{export_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["cancel_requested"]
    final = wait_export(gw.client, export_id)
    assert final["status"] == "cancelled" and final["files"] == []
    assert catalog.store.list_keys(f"exports/{export_id}/") == []
    assert catalog.store.list_keys(f"staging/exports/{export_id}/") == []
    assert gw.client.get(f"/api/exports/{export_id}/files/big_train.jsonl").status_code == 400


def test_queued_job_left_by_another_replica_is_picked_up(catalog_server: Any, s3_env: dict[str, str]) -> None:
    """A job created in the catalog but never run (its exporter died) is claimed by a polling replica."""
    from services.exporter.config import ExporterConfig
    from services.exporter.formats import check_request
    from services.exporter.server import start

    ds = put_dataset(catalog_server, {"train": SAMPLE_ROWS["CHAT"]}, training_type=cpb.TRAINING_TYPE_CHAT)
    req = check_request(ds.id, "sharegpt", "orphan", None, None, {})
    job = catalog_server.stub.CreateJob(cpb.CreateJobRequest(
        kind=cpb.JOB_KIND_EXPORT, request_json=json.dumps(req.to_json()), dataset_id=ds.id)).job
    cfg = ExporterConfig.from_env({**s3_env, "FERRY_CATALOG_ADDR": catalog_server.addr, "FERRY_GRPC_PORT": "0",
                                   "FERRY_EXPORT_POLL_SECONDS": "0.2", "FERRY_EXPORT_HEARTBEAT_SECONDS": "0.25"})
    service = start(cfg, host="127.0.0.1")
    try:
        deadline = time.monotonic() + 30
        while True:
            got = catalog_server.stub.GetJob(cpb.GetJobRequest(job_id=job.id)).job
            if got.phase == cpb.JOB_PHASE_COMPLETE:
                break
            assert got.phase not in (cpb.JOB_PHASE_ERROR, cpb.JOB_PHASE_CANCELLED), got
            assert time.monotonic() < deadline, got
            time.sleep(0.1)
        (f,) = got.files
        items = json.loads(catalog_server.store.get_bytes(f.object_key))
        assert len(items) == len(SAMPLE_ROWS["CHAT"])
    finally:
        service.stop(grace=1.0)
