"""Idempotency-Key on POST import and export: a client retrying after a timeout gets the job it started.

Real stack: the stand-in hub, SeaweedFS, catalog, importer, exporter and gateway; the retries are concurrent
requests with one key, which is the race a client with a short timeout makes.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from ferry.catalog.v1 import catalog_pb2 as cpb
from tests.fixtures.exporter import RunningExporter, wait_export
from tests.fixtures.gateway import RunningGateway, start_gateway
from tests.fixtures.importer import ImporterStack

BODY = {"dataset_name": "tatsu-lab/alpaca", "training_type": "SL", "name": "alpaca-idem", "max_samples": 40}


@pytest.fixture
def gw(importer_server: ImporterStack, exporter_server: RunningExporter) -> Iterator[RunningGateway]:
    with start_gateway(catalog_addr=importer_server.catalog.addr, importer_addr=importer_server.addr,
                       exporter_addr=exporter_server.addr, api_keys=["k-one", "k-two"]) as running:
        running.client.headers["X-API-Key"] = "k-one"
        yield running


def _post(gw: RunningGateway, path: str, body: dict[str, Any], key: str | None, api_key: str = "k-one") -> Any:
    headers = {"X-API-Key": api_key, **({"Idempotency-Key": key} if key else {})}
    return gw.client.post(path, json=body, headers=headers)


def _imports(stack: ImporterStack) -> list[cpb.Job]:
    return list(stack.catalog.stub.ListJobs(cpb.ListJobsRequest(kind=cpb.JOB_KIND_IMPORT, page_size=200)).jobs)


def test_concurrent_retries_with_one_key_start_one_import(importer_server: ImporterStack, gw: RunningGateway) -> None:
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: _post(gw, "/api/huggingface/import", BODY, "retry-7f3a"), range(12)))
    assert all(r.status_code == 202 for r in answers), [r.text for r in answers if r.status_code != 202]
    ids = {r.json()["import_id"] for r in answers}
    assert len(ids) == 1 and [j.id for j in _imports(importer_server)] == list(ids)
    import_id = ids.pop()
    done = importer_server.wait(import_id)
    assert done["status"] == "complete"
    # A retry after the end answers the same import, and no second dataset appears.
    again = _post(gw, "/api/huggingface/import", BODY, "retry-7f3a")
    assert again.status_code == 202 and again.json()["import_id"] == import_id
    names = [d["name"] for d in gw.client.get("/api/datasets").json()["datasets"]]
    assert names.count("alpaca-idem") == 1


def test_a_key_is_one_request_and_one_caller(importer_server: ImporterStack, gw: RunningGateway) -> None:
    first = _post(gw, "/api/huggingface/import", BODY, "key-1")
    assert first.status_code == 202
    # The same key with another request: refused, naming the key.
    other = _post(gw, "/api/huggingface/import", {**BODY, "max_samples": 41}, "key-1")
    assert other.status_code == 409 and other.json()["field"] == "idempotency_key", other.text
    # Another API key's identical key is another caller's: its own import.
    theirs = _post(gw, "/api/huggingface/import", BODY, "key-1", api_key="k-two")
    assert theirs.status_code == 202 and theirs.json()["import_id"] != first.json()["import_id"]
    # Without a key every POST is a new import, as before.
    a, b = (_post(gw, "/api/huggingface/import", BODY, None) for _ in range(2))
    assert a.json()["import_id"] != b.json()["import_id"]
    bad = _post(gw, "/api/huggingface/import", BODY, "has space")
    assert bad.status_code == 422 and "Idempotency-Key" in bad.json()["detail"]
    for job_id in {first.json()["import_id"], theirs.json()["import_id"], a.json()["import_id"],
                   b.json()["import_id"]}:
        importer_server.wait(job_id)


def test_export_retries_with_one_key_start_one_export(importer_server: ImporterStack, gw: RunningGateway) -> None:
    started = _post(gw, "/api/huggingface/import", BODY, None).json()["import_id"]
    dataset_id = importer_server.wait(started)["dataset_id"]
    body = {"dataset_id": dataset_id, "format": "openai", "output_filename": "idem"}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _post(gw, "/api/datasets/export", body, "export-1"), range(8)))
    assert all(r.status_code == 202 for r in answers), [r.text for r in answers]
    ids = {r.json()["export_id"] for r in answers}
    assert len(ids) == 1
    export_id = ids.pop()
    assert wait_export(gw.client, export_id)["status"] == "complete"
    csv = _post(gw, f"/api/datasets/{dataset_id}/export-csv", {"output_filename": "idem"}, "export-1")
    assert csv.status_code == 409 and csv.json()["field"] == "idempotency_key"  # the same key, another request
    listed = gw.client.get("/api/exports").json()["exports"]
    assert [e["export_id"] for e in listed].count(export_id) == 1 and len(listed) == 1
