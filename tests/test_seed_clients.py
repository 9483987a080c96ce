"""The seeds' own clients against the real gateway, call for call, as a browser sends them (issue 9).

Each request below is the one the client's code builds: method, URL (encoding included), headers (the page's
`Origin`, `Content-Type`, `X-API-Key`) and body; each assertion reads a field that client reads.
- Thinker's import modal (`frontend/src/components/HuggingFaceImporter.tsx`, up to 2025-12) and its Dataset
  Manager (`views/DatasetManager.tsx`), served by Vite on :5173;
- Thinker's current client (`lib/api.ts`, `views/Data.tsx`, since 2026-07), same origin;
- the LLM Dataset Creator's dataset page (`components/DatasetDetail.js`), React on :3000.
Everything runs for real: the stand-in hub, SeaweedFS, catalog, importer, exporter and gateway.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest

from tests.fixtures.exporter import RunningExporter, download, wait_export
from tests.fixtures.gateway import RunningGateway, start_gateway
from tests.fixtures.importer import ImporterStack

THINKER = "http://localhost:5173"
CREATOR = "http://localhost:3000"
JSON = {"Content-Type": "application/json"}


@dataclass
class Stack:
    s: ImporterStack
    gw: RunningGateway

    def call(self, method: str, path: str, origin: str = THINKER, headers: dict[str, str] | None = None,
             body: Any = None) -> httpx.Response:
        """One browser request: Origin always, the client's own headers, JSON body as fetch sends it."""
        h = {"Origin": origin, **(headers or {})}
        content = json.dumps(body) if body is not None else None
        r = self.gw.client.request(method, path, headers=h, content=content)
        assert r.headers.get("access-control-allow-origin") == origin, (method, path, r.status_code, r.headers)
        return r


@pytest.fixture
def stack(importer_server: ImporterStack, exporter_server: RunningExporter) -> Iterator[Stack]:
    """The whole stack behind a gateway configured as `make run` configures it (dev origins, default wait)."""
    with start_gateway(catalog_addr=importer_server.catalog.addr, importer_addr=importer_server.addr,
                       exporter_addr=exporter_server.addr, cors_origins=[THINKER, CREATOR],
                       import_wait_seconds=30) as gw:
        yield Stack(importer_server, gw)


# --- browsers: preflights and CORS -----------------------------------------------------------------------------

CLIENT_CALLS = [
    ("GET", "/api/huggingface/search?query=alpaca&limit=10"),
    ("GET", "/api/huggingface/info/tatsu-lab%2Falpaca"),
    ("POST", "/api/huggingface/suggest-mapping"),
    ("POST", "/api/huggingface/preview"),
    ("POST", "/api/huggingface/import"),
    ("GET", "/api/huggingface/import-progress/abc"),
    ("GET", "/api/datasets/"),
    ("GET", "/api/datasets/1/preview?n=8"),
    ("DELETE", "/api/datasets/1"),
    ("GET", "/api/datasets/1/export?format=alpaca&output_filename=x"),
    ("POST", "/api/datasets/export"),
    ("GET", "/api/mapping-templates/"),
]


@pytest.mark.parametrize("origin", [THINKER, CREATOR])
def test_preflights_succeed_for_every_client_route(origin: str) -> None:
    with start_gateway(cors_origins=[THINKER, CREATOR], api_keys=["k1"]) as gw:
        for method, path in CLIENT_CALLS:
            r = gw.client.options(path, headers={
                "Origin": origin, "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "content-type, x-api-key, x-hf-token"})
            assert r.status_code == 200, (method, path, r.status_code, r.text)
            assert r.headers["access-control-allow-origin"] == origin
            assert method in r.headers["access-control-allow-methods"]
            allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
            assert {"content-type", "x-api-key", "x-hf-token"} <= allowed, (path, allowed)
            assert "location" not in r.headers
        # An origin not configured gets no CORS grant, so the browser blocks the page's call.
        r = gw.client.options("/api/datasets/", headers={"Origin": "http://evil.example",
                                                         "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in r.headers
        # Answers carry the grant too, errors included (a 401 without a key), so the page can read them.
        r = gw.client.get("/api/datasets/", headers={"Origin": origin})
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == origin
        assert "Content-Disposition" in r.headers["access-control-expose-headers"]


def test_wildcard_origin_never_with_credentials() -> None:
    with start_gateway(cors_origins=["*"]) as gw:
        r = gw.client.options("/api/datasets", headers={"Origin": "http://any.example",
                                                        "Access-Control-Request-Method": "GET"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in r.headers


def test_no_cors_configured_means_no_grant() -> None:
    with start_gateway() as gw:
        r = gw.client.get("/healthz", headers={"Origin": THINKER})
        assert "access-control-allow-origin" not in r.headers


# --- Thinker's import modal ------------------------------------------------------------------------------------


def _modal_flow(st: Stack, repo: str, training_type: str) -> dict[str, Any]:
    """search -> info -> suggest -> preview -> import -> poll -> listed, with the modal's own requests."""
    query = repo.split("/")[1].split("_")[0]
    found = st.call("GET", f"/api/huggingface/search?query={query}&limit=10").json()["datasets"]
    assert repo in [d["name"] for d in found]

    info = st.call("GET", f"/api/huggingface/info/{quote(repo, safe='')}").json()  # encodeURIComponent
    assert all(isinstance(s, str) for s in info["splits"]) and info["splits"]
    split = info["splits"][0]
    assert isinstance(info["features"], dict) and info["features"]
    assert isinstance(info["num_rows"][split], int) and info["num_rows"][split] > 0
    ", ".join(info["splits"])  # what the modal shows

    sugg = st.call("POST", "/api/huggingface/suggest-mapping", headers=JSON,
                   body={"dataset_name": repo, "training_type": training_type}).json()
    mappings = [{"source_field": s["source_field"], "target_field": s["target_field"]} for s in sugg["suggestions"]]
    assert mappings

    prev = st.call("POST", "/api/huggingface/preview", headers=JSON, body={
        "dataset_name": repo, "split": split, "num_samples": 3,
        "field_mappings": [{"source_field": m["source_field"], "target_field": m["target_field"]}
                           for m in mappings]})
    assert prev.status_code == 200, prev.text
    samples = prev.json()["samples"]
    assert samples and prev.json()["training_type"] == training_type

    imp = st.call("POST", "/api/huggingface/import", headers=JSON, body={
        "dataset_name": repo, "split": split, "field_mappings": mappings, "max_samples": 1000})
    assert imp.status_code == 200, imp.text
    data = imp.json()
    assert data["dataset_id"] and data["import_id"]
    progress = st.call("GET", f"/api/huggingface/import-progress/{data['import_id']}").json()
    assert progress["status"] == "complete" and progress["dataset_id"] == data["dataset_id"]

    listed = st.call("GET", "/api/datasets/", headers={"X-API-Key": ""})
    assert listed.status_code == 200 and not listed.history  # no redirect
    entry = next(d for d in listed.json()["datasets"] if d["id"] == data["dataset_id"])
    entry["type"].replace("_", " ")
    entry["format"].upper()
    assert entry["numSamples"] == entry["split"][split] > 0
    # Every source row is either in the dataset or skipped with a reason.
    assert entry["numSamples"] + progress["rows_skipped"] == min(info["num_rows"][split], 1000)
    assert entry["type"] == training_type.lower() and entry["format"] == "jsonl"
    return {"info": info, "split": split, "samples": samples, "entry": entry, "mappings": mappings}


def test_thinker_modal_imports_an_sl_dataset(stack: Stack) -> None:
    got = _modal_flow(stack, "tatsu-lab/alpaca", "SL")
    assert set(got["samples"][0]) >= {"prompt", "completion"}
    assert got["entry"]["split"]["train"] == 150  # the manager reads split.train
    # The rows imported are the ones the preview showed.
    ex = stack.gw.client.get(f"/api/datasets/{got['entry']['id']}/examples", params={"limit": 3}).json()
    assert ex["examples"] == got["samples"]


def test_thinker_modal_imports_a_dpo_dataset(stack: Stack) -> None:
    got = _modal_flow(stack, "HuggingFaceH4/ultrafeedback_binarized", "DPO")
    assert got["split"] == "train_prefs"
    assert {"prompt", "chosen", "rejected"} <= set(got["samples"][0])
    assert {m["target_field"] for m in got["mappings"]} >= {"prompt", "chosen", "rejected"}


def test_older_modal_suggests_with_get(stack: Stack) -> None:
    q = urlencode({"dataset_name": "tatsu-lab/alpaca", "training_type": "SL"})
    got = stack.call("GET", f"/api/huggingface/suggest-mapping?{q}")
    assert got.status_code == 200, got.text
    posted = stack.call("POST", "/api/huggingface/suggest-mapping", headers=JSON,
                        body={"dataset_name": "tatsu-lab/alpaca", "training_type": "SL"})
    assert got.json() == posted.json() and got.json()["suggestions"]
    bad = stack.call("GET", "/api/huggingface/suggest-mapping?dataset_name=tatsu-lab/alpaca&training_type=XL")
    assert bad.status_code == 422 and "training_type" in bad.json()["detail"]


# --- Thinker's current client ----------------------------------------------------------------------------------

NESTED = "acme/agent-traces"


def test_thinker_current_client_flow(stack: Stack) -> None:
    key = {"X-API-Key": "local"}  # Settings' key: sent on every call, ignored while the gateway has none
    found = stack.call("GET", "/api/huggingface/search?query=traces&limit=12", headers=key).json()["datasets"]
    assert NESTED in [d["name"] for d in found]

    info = stack.call("GET", f"/api/huggingface/info/{NESTED}", headers=key).json()  # the slash left as it is
    assert info["configs"] == ["default"] and set(info["splits"]) == {"train", "test"}
    assert info["num_rows"] == {"train": 40, "test": 10}
    assert info["features"]["id"] == "string" and "message" in info["features"]
    assert isinstance(info["description"], str)
    assert {"message.content", "response.text", "response.meta.model", "turns.content"} <= set(info["field_paths"])
    split = "train" if "train" in info["splits"] else info["splits"][0]
    subset = info["configs"][0]

    prev = stack.call("POST", "/api/huggingface/preview", headers={**key, **JSON},
                      body={"dataset_name": NESTED, "split": split, "subset": subset, "num_samples": 5}).json()
    assert prev["columns"][:3] == ["id", "message", "response"] and len(prev["rows"]) == 5
    assert prev.get("suggested_filters", []) == []  # read as `res.suggested_filters || []`

    imp = stack.call("POST", "/api/huggingface/import", headers={**key, **JSON}, body={
        "dataset_name": NESTED, "split": split, "subset": subset, "training_type": "sl",
        "field_mappings": [{"source_field": "message.content", "target_field": "prompt"},
                           {"source_field": "response.text", "target_field": "completion"}],
        "filters": [], "max_samples": 1000, "name": "Agent traces"})
    assert imp.status_code == 200, imp.text
    ds = imp.json()["dataset"]
    assert ds["num_samples"] == 40 and ds["name"] == "Agent traces"

    listed = stack.call("GET", "/api/datasets/", headers=key).json()["datasets"]
    entry = next(d for d in listed if d["id"] == ds["id"])
    assert entry["training_type"] == "sl" and entry["num_samples"] == 40
    assert entry["source"] == "huggingface" and isinstance(entry["source"], str)
    assert entry["format"] == "jsonl" and entry["size"].endswith("B") and entry["created_at"]
    assert entry["schema_ok"] is True and entry["schema_notes"] == []

    table = stack.call("GET", f"/api/datasets/{ds['id']}/preview?n=8", headers=key).json()
    assert table["columns"] == ["prompt", "completion"] and len(table["rows"]) == 8
    raw = stack.call("POST", "/api/huggingface/preview", headers=JSON, body={
        "dataset_name": NESTED, "split": split, "num_samples": 8}).json()["rows"]
    assert [r["prompt"] for r in table["rows"]] == [r["message"]["content"] for r in raw]
    assert [r["completion"] for r in table["rows"]] == [r["response"]["text"] for r in raw]

    gone = stack.call("DELETE", f"/api/datasets/{ds['id']}", headers=key)
    assert gone.status_code == 200
    listed = stack.call("GET", "/api/datasets/", headers=key).json()["datasets"]
    assert ds["id"] not in [d["id"] for d in listed]


def _message(r: httpx.Response) -> str:
    """Thinker's errorMessage(): message ?? detail ?? error as a string, else details[0].msg."""
    body = r.json()
    msg = body.get("message") or body.get("detail") or body.get("error")
    if isinstance(msg, str) and msg.strip():
        return msg
    first = body["details"][0]
    return f"{first['msg']} ({'.'.join(map(str, first['loc']))})"


def test_thinker_reads_every_error_as_text(stack: Stack) -> None:
    base = {"dataset_name": "tatsu-lab/alpaca", "split": "train", "max_samples": 10}
    cases = [
        ({**base, "training_type": "rl", "field_mappings": []}, 422, "training_type"),
        ({**base, "training_type": "sl", "filters": [{"column": "output", "op": "non_empty"}]}, 422, "filters"),
        ({**base, "field_mappings": [{"source_field": "output"}]}, 422, "field_mappings.0.target_field"),
        ({**base, "field_mappings": [{"source_field": "output", "target_field": "answer"}]}, 400, "answer"),
        ({**base, "field_mappings": [{"source_field": "output", "target_field": "system"}]}, 400, "training_type"),
        ({**base, "training_type": "sl", "field_mappings": [{"source_field": "nope.deeper",
                                                              "target_field": "prompt"}]}, 400, "nope.deeper"),
    ]
    for body, status, named in cases:
        r = stack.call("POST", "/api/huggingface/import", headers=JSON, body=body)
        assert r.status_code == status, (body, r.status_code, r.text)
        text = _message(r)
        assert isinstance(r.json()["detail"], str) and named in text, (body, text)
    # Features of the next issue answer with a status and a message the client shows, not a crash.
    for method, path, body in (("POST", "/api/huggingface/fit", {"datasets": ["tatsu-lab/alpaca"]}),
                               ("GET", "/api/huggingface/recommended", None)):
        r = stack.call(method, path, headers=JSON if body else {}, body=body)
        assert r.status_code in (404, 405) and _message(r)


def test_list_shape_first_target_wins_and_type_is_inferred(stack: Stack) -> None:
    body = {"dataset_name": "tatsu-lab/alpaca", "split": "train", "num_samples": 2, "field_mappings": [
        {"source_field": "instruction", "target_field": "prompt"},
        {"source_field": "output", "target_field": "completion"},
        {"source_field": "text", "target_field": "prompt"},  # a later candidate for the same target
        {"source_field": "", "target_field": "system"}]}  # a blank choice: unmapped
    r = stack.call("POST", "/api/huggingface/preview", headers=JSON, body=body).json()
    assert r["field_mappings"] == {"prompt": "instruction", "completion": "output"}
    assert r["training_type"] == "SL"
    assert [s["prompt"] for s in r["samples"]] == [row["instruction"] for row in r["raw_samples"]]
    obj = stack.call("POST", "/api/huggingface/preview", headers=JSON, body={
        **body, "field_mappings": {"prompt": "instruction", "completion": "output"}}).json()
    assert obj["samples"] == r["samples"]


def test_import_answers_at_once_when_asked(stack: Stack) -> None:
    r = stack.call("POST", "/api/huggingface/import", headers=JSON, body={
        "dataset_name": "tatsu-lab/alpaca", "split": "train", "training_type": "SL", "wait_seconds": 0})
    assert r.status_code == 202 and r.json()["dataset_id"] is None and r.json()["dataset"] is None
    done = stack.s.wait(r.json()["import_id"])
    assert done["status"] == "complete"


def test_collection_paths_with_and_without_slash(stack: Stack) -> None:
    for path in ("/api/datasets", "/api/mapping-templates", "/api/exports", "/api/export/formats"):
        a = stack.call("GET", path)
        b = stack.call("GET", path + "/")
        assert a.status_code == b.status_code == 200 and not b.history, path
        assert a.json().keys() == b.json().keys()
    enc = stack.call("GET", "/api/huggingface/info/tatsu-lab%2Falpaca/")
    assert enc.status_code == 200 and enc.json()["dataset_name"] == "tatsu-lab/alpaca"


# --- LLM Dataset Creator: the export download ------------------------------------------------------------------


def _import(stack: Stack, repo: str, tt: str) -> int:
    r = stack.gw.client.post("/api/huggingface/import", json={"dataset_name": repo, "training_type": tt,
                                                              "name": "alpaca-small", "max_samples": 40})
    assert r.status_code == 200, r.text
    return int(r.json()["dataset_id"])


def _posted_export(stack: Stack, body: dict[str, Any]) -> dict[str, Any]:
    r = stack.gw.client.post("/api/datasets/export", json=body)
    assert r.status_code == 202, r.text
    return wait_export(stack.gw.client, r.json()["export_id"])


def test_creator_downloads_each_export_as_a_file(stack: Stack) -> None:
    ds_id = _import(stack, "tatsu-lab/alpaca", "SL")
    name = stack.gw.client.get(f"/api/datasets/{ds_id}").json()["name"]
    for fmt, media in (("alpaca", "application/json"), ("csv", "text/csv"), ("sharegpt", "application/json")):
        params = urlencode({"format": fmt, "output_filename": f"{name}_{fmt}"})  # DatasetDetail.handleExport
        r = stack.call("GET", f"/api/datasets/{ds_id}/export?{params}", origin=CREATOR)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith(media)
        export = _posted_export(stack, {"dataset_id": ds_id, "format": fmt, "output_filename": f"{name}_{fmt}"})
        (only,) = export["files"]
        assert f'filename="{only["name"]}"' in r.headers["content-disposition"]
        assert r.content == download(stack.gw.client, export, only["name"])


def test_creator_downloads_the_huggingface_folder_as_a_zip(stack: Stack) -> None:
    ds_id = _import(stack, "tatsu-lab/alpaca", "SL")
    params = urlencode({"format": "huggingface", "output_filename": "alpaca-small_huggingface",
                        "dataset_name": "my-awesome-dataset"})  # an additional_params entry
    r = stack.call("GET", f"/api/datasets/{ds_id}/export?{params}", origin=CREATOR)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert 'filename="alpaca-small_huggingface.zip"' in r.headers["content-disposition"]
    export_id = r.headers["x-export-id"]
    export = stack.gw.client.get(f"/api/exports/{export_id}").json()
    folder = "alpaca-small_huggingface"
    names = {f["name"] for f in export["files"]}
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        inside = {n: z.read(n) for n in z.namelist()}
    assert all(n.startswith(folder + "/") for n in inside)  # unzips as the folder
    entry = {n: n if n.startswith(folder + "/") else f"{folder}/{n}" for n in names}
    assert set(inside) == set(entry.values())
    assert {"train.jsonl", "README.md", "dataset_info.json"} <= {n.rsplit("/", 1)[-1] for n in names}
    for f in export["files"]:  # the zip holds exactly the files the export made
        assert inside[entry[f["name"]]] == download(stack.gw.client, export, f["name"])
    # ...and the same files a POST /api/datasets/export makes: the rows byte for byte.
    posted = _posted_export(stack, {"dataset_id": ds_id, "format": "huggingface",
                                    "output_filename": folder,
                                    "additional_params": {"dataset_name": "my-awesome-dataset"}})
    assert {f["name"] for f in posted["files"]} == names
    train = next(n for n in names if n.endswith("train.jsonl"))
    assert inside[entry[train]] == download(stack.gw.client, posted, train)
    readme = next(n for n in names if n.endswith("README.md"))
    assert b"my-awesome-dataset" in inside[entry[readme]]


def test_export_download_bad_input_matches_post(stack: Stack) -> None:
    ds_id = _import(stack, "tatsu-lab/alpaca", "SL")
    cases = [
        ({"format": "nope", "output_filename": "x"}, 400, "format"),
        ({"format": "alpaca", "output_filename": "a/b"}, 400, "output_filename"),
        ({"format": "alpaca", "output_filename": "x", "train_split": "2"}, 422, "train_split"),
        ({"output_filename": "x"}, 422, "format"),
    ]
    for params, status, named in cases:
        r = stack.call("GET", f"/api/datasets/{ds_id}/export?{urlencode(params)}", origin=CREATOR)
        assert r.status_code == status, (params, r.text)
        assert named in r.json()["detail"], (params, r.json())
        if status == 400:
            body = {"dataset_id": ds_id, **params}
            posted = stack.gw.client.post("/api/datasets/export", json=body)
            assert posted.status_code == status and posted.json()["detail"] == r.json()["detail"]
    r = stack.call("GET", "/api/datasets/999999/export?format=alpaca&output_filename=x", origin=CREATOR)
    assert r.status_code == 404
