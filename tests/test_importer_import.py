"""Imports end to end (gateway -> importer -> stand-in hub -> SeaweedFS -> catalog) and every refusal.

Each dataset's imported rows are checked against the source files read independently with pyarrow.
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from ferry.jsonl import parse_header
from tests.fixtures.hub import GATED_REPO, SCRIPT_REPO
from tests.fixtures.importer import ImporterStack


def _source_rows(stack: ImporterStack, repo: str, pattern: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted(stack.hub.repo_dir(repo).glob(pattern)):
        if path.suffix == ".parquet":
            rows += pq.read_table(path).to_pylist()
        else:
            rows += [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines() if line.strip()]
    return rows


def _rows(stack: ImporterStack, dataset: dict[str, Any], split: str) -> list[dict[str, Any]]:
    key = f"datasets/{dataset['id']}/{split}.jsonl"
    data = stack.catalog.store.get_bytes(key)
    return [json.loads(line) for line in data.splitlines()]


def _import(stack: ImporterStack, body: dict[str, Any], headers: dict[str, str] | None = None) -> str:
    r = stack.gw.client.post("/api/huggingface/import", json=body, headers=headers or {})
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "queued"
    return str(r.json()["import_id"])


def _final_turn(transcript: str, role: str) -> str:
    marker = "\n\nHuman:" if role == "user" else "\n\nAssistant:"
    return transcript.rsplit(marker, 1)[1].split("\n\nHuman:")[0].split("\n\nAssistant:")[0].strip()


def test_six_datasets_import_with_correct_mapping_and_rows(importer_server: ImporterStack) -> None:
    s = importer_server
    c = s.gw.client
    requests = {
        "alpaca": {"dataset_name": "tatsu-lab/alpaca", "training_type": "SL", "split": "train"},
        "gsm8k": {"dataset_name": "openai/gsm8k", "subset": "main", "training_type": "sl", "split": "train"},
        "hh": {"dataset_name": "Anthropic/hh-rlhf", "training_type": "DPO", "split": "train",
               "config": "harmless-base"},
        "hh_all": {"dataset_name": "Anthropic/hh-rlhf", "training_type": "DPO", "split": "train"},
        "uf": {"dataset_name": "HuggingFaceH4/ultrafeedback_binarized", "training_type": "DPO",
               "splits": ["train_prefs", "test_prefs"]},
        "nr": {"dataset_name": "HuggingFaceH4/no_robots", "training_type": "CHAT", "split": "train"},
        "he": {"dataset_name": "openai/openai_humaneval", "training_type": "SL", "split": "test"},
    }
    # The suggested mappings are what the import uses when none is given; check them first.
    expected_mapping = {
        "alpaca": {"prompt": "instruction+input", "completion": "output"},
        "gsm8k": {"prompt": "question", "completion": "answer"},
        "hh": {"prompt": "transcript:chosen", "chosen": "transcript:chosen", "rejected": "transcript:rejected"},
        "hh_all": {"chosen": "transcript:chosen", "rejected": "transcript:rejected"},
        "uf": {"prompt": "prompt", "chosen": "turns:chosen", "rejected": "turns:rejected"},
        "nr": {"messages": "messages"},
        "he": {"prompt": "prompt", "completion": "canonical_solution"},
    }
    for key, body in requests.items():
        r = c.post("/api/huggingface/suggest-mapping", json={
            "dataset_name": body["dataset_name"], "training_type": body["training_type"],
            "subset": body.get("subset"), "config": body.get("config")})
        assert r.status_code == 200, r.text
        got = r.json()["field_mappings"]
        for target, source in expected_mapping[key].items():
            assert got.get(target) == source, (key, got)
    ids = {key: _import(s, body) for key, body in requests.items()}
    done = {key: s.wait(i, timeout=60) for key, i in ids.items()}
    for key, body in done.items():
        assert body["status"] == "complete", (key, body)
        assert body["progress"] == 100 and body["dataset_id"]

    def dataset(key: str) -> dict[str, Any]:
        r = c.get(f"/api/datasets/{done[key]['dataset_id']}")
        assert r.status_code == 200
        return dict(r.json())

    # alpaca: prompt = instruction (+ input), completion = output
    ds = dataset("alpaca")
    assert ds["source_detail"]["repo_id"] == "tatsu-lab/alpaca"
    assert ds["source_detail"]["revision"] == s.hub.repo_sha("tatsu-lab/alpaca")
    assert ds["training_type"] == "sl" and ds["field_mappings"]["completion"] == "output"
    assert [f["name"] for f in ds["features"]] == ["instruction", "input", "output", "text"]
    src = _source_rows(s, "tatsu-lab/alpaca", "data/*.parquet")
    rows = _rows(s, ds, "train")
    assert len(rows) + done["alpaca"]["rows_skipped"] == len(src)
    kept = [r for r in src if r["instruction"].strip() and r["output"].strip()]
    assert len(rows) == len(kept)
    for got, want in zip(rows, kept, strict=True):
        prompt = want["instruction"] + ("\n\n" + want["input"] if want["input"].strip() else "")
        assert got["prompt"] == prompt and got["completion"] == want["output"]

    # gsm8k main: question/answer, the config recorded
    ds = dataset("gsm8k")
    assert ds["source_detail"]["config"] == "main" and ds["source_detail"]["splits"] == ["train"]
    src = _source_rows(s, "openai/gsm8k", "main/train-*.parquet")
    assert _rows(s, ds, "train") == [{"prompt": r["question"], "completion": r["answer"]} for r in src]

    # hh-rlhf harmless-base: the final human turn is the prompt, the final assistant turns are chosen/rejected
    ds = dataset("hh")
    src = _source_rows(s, "Anthropic/hh-rlhf", "harmless-base/train.jsonl.gz")
    rows = _rows(s, ds, "train")
    assert len(rows) + done["hh"]["rows_skipped"] == len(src)
    by_chosen = {r["chosen"]: r for r in rows}
    for want in src[:20]:
        chosen = _final_turn(want["chosen"], "assistant")
        if chosen in by_chosen:
            got = by_chosen[chosen]
            assert got["prompt"] == _final_turn(want["chosen"], "user")
            assert got["rejected"] == _final_turn(want["rejected"], "assistant")

    # hh-rlhf default config: the train files of every subset folder, read one after the other (prefetched)
    ds = dataset("hh_all")
    src = _source_rows(s, "Anthropic/hh-rlhf", "*/train.jsonl.gz")
    rows = _rows(s, ds, "train")
    assert len(rows) + done["hh_all"]["rows_skipped"] == len(src) and len(rows) > len(_rows(s, dataset("hh"), "train"))

    # ultrafeedback: two splits into one dataset, one JSONL (and index) per split
    ds = dataset("uf")
    assert [sp["name"] for sp in ds["splits"]] == ["train_prefs", "test_prefs"]
    for split in ("train_prefs", "test_prefs"):
        src = _source_rows(s, "HuggingFaceH4/ultrafeedback_binarized", f"data/{split}-*.parquet")
        rows = _rows(s, ds, split)
        assert len(rows) > 0.8 * len(src)
        by_prompt = {r["prompt"]: r for r in src}
        for got in rows:
            want = by_prompt[got["prompt"]]
            assert got["chosen"] == want["chosen"][-1]["content"]
            assert got["rejected"] == want["rejected"][-1]["content"]
        idx = parse_header(s.catalog.store.get_bytes(f"datasets/{ds['id']}/{split}.idx"))
        assert idx.lines == len(rows)
        assert next(sp for sp in ds["splits"] if sp["name"] == split)["num_rows"] == len(rows)

    # no_robots: messages as they are
    ds = dataset("nr")
    src = _source_rows(s, "HuggingFaceH4/no_robots", "data/train-*.parquet")
    rows = _rows(s, ds, "train")
    assert len(rows) + done["nr"]["rows_skipped"] == len(src)
    good = {json.dumps(r["messages"], sort_keys=True) for r in src}
    assert all(json.dumps(r["messages"], sort_keys=True) in good for r in rows)
    if done["nr"]["rows_skipped"]:
        assert done["nr"]["skip_reasons"]

    # HumanEval (openai/openai_humaneval, split test): prompt/canonical_solution
    ds = dataset("he")
    src = _source_rows(s, "openai/openai_humaneval", "openai_humaneval/test-*.parquet")
    assert _rows(s, ds, "test") == [{"prompt": r["prompt"], "completion": r["canonical_solution"]} for r in src]
    assert len(src) == 164

    # Listed by the catalog.
    listed = c.get("/api/datasets", params={"page_size": 50}).json()
    assert {d["id"] for d in listed["datasets"]} >= {b["dataset_id"] for b in done.values()}


def test_max_samples_reads_only_what_it_needs(importer_server: ImporterStack) -> None:
    s = importer_server
    s.hub.reset_counters()
    i = _import(s, {"dataset_name": "openai/gsm8k", "config": "main", "training_type": "SL",
                    "splits": ["train", "test"], "max_samples": 7, "name": "gsm8k sample"})
    body = s.wait(i)
    assert body["status"] == "complete", body
    ds = s.gw.client.get(f"/api/datasets/{body['dataset_id']}").json()
    assert ds["name"] == "gsm8k sample"
    assert [(sp["name"], sp["num_rows"]) for sp in ds["splits"]] == [("train", 7), ("test", 7)]


def test_bad_requests_are_refused_before_queueing(importer_server: ImporterStack) -> None:
    c = importer_server.gw.client

    def post(body: dict[str, Any]) -> tuple[int, str]:
        r = c.post("/api/huggingface/import", json=body)
        return r.status_code, r.text

    base = {"dataset_name": "openai/gsm8k", "config": "main", "training_type": "SL", "split": "train"}
    code, text = post({**base, "dataset_name": "nobody/does-not-exist"})
    assert code == 404 and "nobody/does-not-exist" in text
    code, text = post({**base, "split": "validation"})
    assert code == 404 and "validation" in text and "train" in text and "test" in text
    code, text = post({**base, "config": "nope"})
    assert code == 404 and "nope" in text and "main" in text and "socratic" in text
    code, text = post({k: v for k, v in base.items() if k != "config"})
    assert code == 400 and "main" in text and "socratic" in text and "config" in text
    code, text = post({**base, "field_mappings": {"prompt": "question", "completion": "solution"}})
    assert code == 400 and "solution" in text
    code, text = post({**base, "training_type": "RLHF"})
    assert code == 422 and "training_type" in text
    code, text = post({**base, "max_samples": 0})
    assert code == 422 and "max_samples" in text
    code, text = post({**base, "max_samples": -5})
    assert code == 422 and "max_samples" in text
    code, text = post({**base, "dataset_name": SCRIPT_REPO})
    assert code == 400 and "loading script" in text
    # Nothing was queued by any of them.
    jobs = importer_server.catalog.stub.ListJobs(
        __import__("ferry.catalog.v1.catalog_pb2", fromlist=["x"]).ListJobsRequest(kind=1)).jobs
    assert list(jobs) == []
    # info and preview refuse the same way
    assert c.get("/api/huggingface/info/nobody/does-not-exist").status_code == 404
    r = c.get(f"/api/huggingface/info/{SCRIPT_REPO}")
    assert r.status_code == 400 and "loading script" in r.json()["detail"]
    r = c.post("/api/huggingface/preview", json={"dataset_name": "openai/gsm8k", "split": "nope", "subset": "main"})
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    r = c.post("/api/huggingface/preview", json={"dataset_name": "openai/gsm8k", "num_samples": 101})
    assert r.status_code == 422


def test_gated_dataset_needs_a_token_and_it_is_never_kept(importer_server: ImporterStack,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    s = importer_server
    c = s.gw.client
    caplog.set_level(logging.DEBUG)
    r = c.get(f"/api/huggingface/info/{GATED_REPO}")
    assert r.status_code == 403 and "token" in r.json()["detail"]
    r = c.post("/api/huggingface/preview", json={"dataset_name": GATED_REPO})
    assert r.status_code == 403
    r = c.post("/api/huggingface/import", json={"dataset_name": GATED_REPO, "training_type": "SL"})
    assert r.status_code == 403 and "token" in r.json()["detail"]
    # As on the public Hub: metadata readable, files gated.
    s.hub.gate_metadata(False)
    r = c.get(f"/api/huggingface/info/{GATED_REPO}")
    assert r.status_code == 403 and "token" in r.json()["detail"]
    s.hub.gate_metadata(True)
    token = {"X-HF-Token": s.hub.token}
    r = c.get(f"/api/huggingface/info/{GATED_REPO}", headers=token)
    assert r.status_code == 200, r.text
    assert r.json()["gated"] is True
    r = c.post("/api/huggingface/preview", json={"dataset_name": GATED_REPO, "num_samples": 3}, headers=token)
    assert r.status_code == 200 and len(r.json()["samples"]) == 3
    r = c.get(f"/api/huggingface/info/{GATED_REPO}", headers={"X-HF-Token": s.hub.token_without_access})
    assert r.status_code == 403
    # Like the Hub, LFS files answer with a redirect to a signed CDN URL (the token must not follow it).
    s.hub.redirect_lfs(True)
    i = _import(s, {"dataset_name": GATED_REPO, "training_type": "SL"}, headers=token)
    body = s.wait(i)
    s.hub.redirect_lfs(False)
    assert body["status"] == "complete", body
    job = s.catalog.stub.GetJob(__import__("ferry.catalog.v1.catalog_pb2", fromlist=["x"]).GetJobRequest(job_id=i))
    assert s.hub.token not in str(job)
    assert s.hub.token not in caplog.text
    assert s.hub.token not in json.dumps(body)


def test_hub_outage_is_an_error_not_mock_data(importer_server: ImporterStack) -> None:
    s = importer_server
    s.hub.fail_api(503, retry_after=0)
    try:
        r = s.gw.client.get("/api/huggingface/search", params={"query": "alpaca"})
        assert r.status_code == 503 and "Hub" in r.json()["detail"]
        assert "datasets" not in r.json()
        r = s.gw.client.get("/api/huggingface/info/tatsu-lab/alpaca")
        assert r.status_code == 503 and "Hub" in r.json()["detail"]
    finally:
        s.hub.fail_api(None)
    assert s.gw.client.get("/api/huggingface/search", params={"query": "alpaca"}).status_code == 200


def test_local_sources(importer_server: ImporterStack, tmp_path: Path) -> None:
    s = importer_server
    c = s.gw.client
    clone = s.local_dir / "gsm8k"
    shutil.copytree(s.hub.repo_dir("openai/gsm8k"), clone)
    r = c.get(f"/api/huggingface/info/{clone}", params={"config": "main"})
    assert r.status_code == 200, r.text
    assert r.json()["source_kind"] == "local_dir" and set(r.json()["configs"]) == {"main", "socratic"}
    assert len(r.json()["revision"]) == 64  # content hash: the copy is not a git repo
    i = _import(s, {"dataset_name": str(clone), "config": "main", "training_type": "SL", "split": "test"})
    body = s.wait(i)
    assert body["status"] == "complete", body
    ds = c.get(f"/api/datasets/{body['dataset_id']}").json()
    src = pq.read_table(clone / "main" / "test-00000-of-00001.parquet").to_pylist()
    assert _rows(s, ds, "test") == [{"prompt": r["question"], "completion": r["answer"]} for r in src]
    assert ds["source_detail"]["kind"] == "local_dir"

    # A single JSONL file, mapped the same way.
    f = s.local_dir / "pairs.jsonl"
    f.write_text("".join(json.dumps({"q": f"question {n} é", "a": f"answer\n{n}"}) + "\n" for n in range(30)))
    r = c.post("/api/huggingface/preview", json={"dataset_name": str(f), "training_type": "SL", "num_samples": 2,
                                                  "field_mappings": {"prompt": "q", "completion": "a"}})
    assert r.status_code == 200, r.text
    assert r.json()["samples"][0] == {"prompt": "question 0 é", "completion": "answer\n0"}
    qa = {"prompt": "q", "completion": "a"}
    i = _import(s, {"dataset_name": str(f), "training_type": "SL", "field_mappings": qa})
    body = s.wait(i)
    assert body["status"] == "complete", body
    assert body["samples_processed"] == 30

    # An import in which no row passes validation fails, saying why, and leaves nothing behind.
    bad = s.local_dir / "empty-answers.jsonl"
    bad.write_text("".join(json.dumps({"q": f"q{n}", "a": " "}) + "\n" for n in range(5)))
    i = _import(s, {"dataset_name": str(bad), "training_type": "SL", "field_mappings": qa})
    body = s.wait(i)
    assert body["status"] == "error" and "no row" in body["error"] and "completion is empty" in body["error"]
    assert body["rows_skipped"] == 5 and body["dataset_id"] is None

    # Outside FERRY_LOCAL_SOURCE_DIRS: refused.
    outside = tmp_path / "secret.jsonl"
    outside.write_text('{"q": "x", "a": "y"}\n')
    r = c.get(f"/api/huggingface/info/{outside}")
    assert r.status_code == 403
    r = c.get(f"/api/huggingface/info/{s.local_dir}/../secret.jsonl")
    assert r.status_code == 403
