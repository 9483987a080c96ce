"""The catalog's REST paths end to end: gateway -> real catalog gRPC server -> SeaweedFS."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ferry.catalog.v1 import catalog_pb2 as pb
from tests.fixtures.catalog import RunningCatalog, put_dataset
from tests.fixtures.gateway import RunningGateway, start_gateway

N_ROWS = 2500


@pytest.fixture
def gateway(catalog_server: RunningCatalog) -> Iterator[RunningGateway]:
    with start_gateway(catalog_addr=catalog_server.addr) as gw:
        yield gw


def _rows(n: int) -> list[dict[str, str]]:
    return [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(n)]


def test_dataset_json_and_examples(catalog_server: RunningCatalog, gateway: RunningGateway) -> None:
    rows = _rows(N_ROWS)
    ds = put_dataset(catalog_server, {"train": rows, "test": _rows(3)}, name="Math QA", repo_id="org/math")
    http = gateway.client
    body = http.get(f"/api/datasets/{ds.id}").json()
    assert body["id"] == ds.id and body["name"] == "Math QA" and body["training_type"] == "sl"
    assert body["source"] == "huggingface"
    assert body["source_detail"] == {"kind": "hub", "repo_id": "org/math", "revision": "0" * 40, "config": "",
                                     "splits": ["train", "test"]}
    assert [(s["name"], s["num_rows"]) for s in body["splits"]] == [("train", N_ROWS), ("test", 3)]
    assert all(s["num_bytes"] > 0 for s in body["splits"])
    assert body["field_mappings"] == {"prompt": "question", "completion": "answer"}
    assert body["features"] == [{"name": "question", "dtype": "string"}, {"name": "answer", "dtype": "string"}]
    assert body["created_at"].endswith("Z") and "T" in body["created_at"]

    for offset, limit in [(0, 100), (1200, 37), (N_ROWS - 10, 100), (N_ROWS + 1, 5)]:
        resp = http.get(f"/api/datasets/{ds.id}/examples", params={"split": "train", "offset": offset,
                                                                   "limit": limit})
        assert resp.status_code == 200
        page = resp.json()
        assert page == {"dataset_id": ds.id, "split": "train", "examples": rows[offset:offset + limit],
                        "total": N_ROWS, "offset": offset, "limit": limit}
    default = http.get(f"/api/datasets/{ds.id}/examples").json()
    assert default["split"] == "train" and default["limit"] == 100 and len(default["examples"]) == 100


def test_list_filters_and_pages(catalog_server: RunningCatalog, gateway: RunningGateway) -> None:
    ids = [put_dataset(catalog_server, {"train": _rows(2)}, name=f"Chat logs {i}", repo_id="org/chat",
                       training_type=pb.TRAINING_TYPE_CHAT).id for i in range(3)]
    ids.append(put_dataset(catalog_server, {"train": _rows(2)}, name="Other", repo_id="org/other").id)
    http = gateway.client
    body = http.get("/api/datasets").json()
    assert body["total"] == 4 and [d["id"] for d in body["datasets"]] == ids[::-1]
    assert body["next_page_token"] is None
    first = http.get("/api/datasets", params={"limit": 3}).json()
    assert len(first["datasets"]) == 3 and first["next_page_token"]
    second = http.get("/api/datasets", params={"limit": 3, "page_token": first["next_page_token"]}).json()
    assert [d["id"] for d in second["datasets"]] == [ids[0]] and second["next_page_token"] is None
    chat = http.get("/api/datasets", params={"training_type": "CHAT"}).json()
    assert chat["total"] == 3 and {d["training_type"] for d in chat["datasets"]} == {"chat"}
    assert http.get("/api/datasets", params={"training_type": "chat"}).json()["total"] == 3  # any case
    assert http.get("/api/datasets", params={"name": "LOGS 1"}).json()["total"] == 1
    assert http.get("/api/datasets", params={"source": "org/other"}).json()["datasets"][0]["name"] == "Other"


def test_bad_requests_name_the_field(catalog_server: RunningCatalog, gateway: RunningGateway) -> None:
    ds = put_dataset(catalog_server, {"train": _rows(3)})
    http = gateway.client
    for path, params, field in [
        (f"/api/datasets/{ds.id}/examples", {"offset": -1}, "offset"),
        (f"/api/datasets/{ds.id}/examples", {"limit": 1001}, "limit"),
        (f"/api/datasets/{ds.id}/examples", {"limit": 0}, "limit"),
        ("/api/datasets", {"limit": 5000}, "limit"),
        ("/api/datasets", {"training_type": "RLHF"}, "training_type"),
        ("/api/datasets/not-a-number", {}, "dataset_id"),
    ]:
        resp = http.get(path, params=params)
        assert resp.status_code == 422, (path, params)
        assert field in str(resp.json()["detail"])
    # Service-side INVALID_ARGUMENT -> 400 with the catalog's message.
    resp = http.get("/api/datasets", params={"page_token": "bogus"})
    assert resp.status_code == 400 and "page_token" in resp.json()["detail"]
    resp = http.get(f"/api/datasets/{ds.id}/examples", params={"split": "nope"})
    assert resp.status_code == 404 and "train" in resp.json()["detail"]
    resp = http.get("/api/datasets/987654")
    assert resp.status_code == 404 and resp.json()["detail"] == "dataset 987654 not found"


def test_delete_over_rest(catalog_server: RunningCatalog, gateway: RunningGateway) -> None:
    ds = put_dataset(catalog_server, {"train": _rows(5)})
    http = gateway.client
    resp = http.delete(f"/api/datasets/{ds.id}")
    assert resp.status_code == 200
    assert resp.json() == {"deleted": True, "id": ds.id, "objects_deleted": 2}
    assert catalog_server.store.list_keys(f"datasets/{ds.id}/") == []
    assert http.get(f"/api/datasets/{ds.id}").status_code == 404
    assert http.get(f"/api/datasets/{ds.id}/examples").status_code == 404
    assert http.delete(f"/api/datasets/{ds.id}").status_code == 404


def test_mapping_templates_over_rest(gateway: RunningGateway) -> None:
    http = gateway.client
    resp = http.post("/api/mapping-templates", json={"name": "gsm8k", "training_type": "SL",
                                                     "field_mappings": {"prompt": "question"},
                                                     "repo_id": "openai/gsm8k"})
    assert resp.status_code == 201
    tpl = resp.json()
    assert tpl["name"] == "gsm8k" and tpl["training_type"] == "SL" and tpl["id"]
    http.post("/api/mapping-templates", json={"name": "hh", "training_type": "DPO",
                                              "field_mappings": {"chosen": "chosen"}})
    assert len(http.get("/api/mapping-templates").json()["templates"]) == 2
    only = http.get("/api/mapping-templates", params={"repo_id": "openai/gsm8k"}).json()["templates"]
    assert [t["id"] for t in only] == [tpl["id"]]
    assert [t["name"] for t in http.get("/api/mapping-templates",
                                        params={"training_type": "DPO"}).json()["templates"]] == ["hh"]
    bad = http.post("/api/mapping-templates", json={"name": "x", "training_type": "NOPE", "field_mappings": {}})
    assert bad.status_code == 422 and "training_type" in str(bad.json()["detail"])
    blank = http.post("/api/mapping-templates", json={"name": "   ", "training_type": "SL",
                                                      "field_mappings": {"prompt": "q"}})
    assert blank.status_code == 400 and "name" in blank.json()["detail"]
    assert http.delete(f"/api/mapping-templates/{tpl['id']}").json() == {"deleted": True, "id": tpl["id"]}
    assert http.delete(f"/api/mapping-templates/{tpl['id']}").status_code == 404


def test_healthz_ok_with_catalog_up(gateway: RunningGateway) -> None:
    body = gateway.client.get("/healthz").json()
    assert body["services"]["catalog"] == "SERVING"
