"""Importer endpoints through the gateway against the stand-in hub: search, info, suggest, preview, popular."""

from __future__ import annotations

from tests.fixtures.importer import ImporterStack


def test_search_returns_hub_datasets(importer_server: ImporterStack) -> None:
    r = importer_server.gw.client.get("/api/huggingface/search", params={"query": "alpaca", "limit": 5})
    assert r.status_code == 200, r.text
    names = [d["name"] for d in r.json()["datasets"]]
    assert "tatsu-lab/alpaca" in names
    d = next(d for d in r.json()["datasets"] if d["name"] == "tatsu-lab/alpaca")
    assert d["downloads"] > 0 and isinstance(d["tags"], list)
    c = importer_server.gw.client
    r = c.get("/api/huggingface/search", params={"author": "openai", "sort": "downloads", "limit": 10})
    assert [d["name"] for d in r.json()["datasets"]] == ["openai/openai_humaneval", "openai/gsm8k"]
    r = c.get("/api/huggingface/search", params={"query": "", "language": "en", "task_category": "text-generation",
                                                 "limit": 50})
    names = {d["name"] for d in r.json()["datasets"]}
    assert "HuggingFaceH4/no_robots" in names and "openai/gsm8k" not in names
    assert c.get("/api/huggingface/search", params={"sort": "stars"}).status_code == 400
    assert c.get("/api/huggingface/search", params={"limit": 0}).status_code == 422


def test_popular_lists_real_repos_and_configs(importer_server: ImporterStack) -> None:
    r = importer_server.gw.client.get("/api/huggingface/popular")
    assert r.status_code == 200
    cats = {c["name"]: {d["name"]: d for d in c["datasets"]} for c in r.json()["categories"]}
    assert {"SL", "DPO", "CHAT", "Code", "Math"} <= set(cats)
    gsm = cats["Math"]["openai/gsm8k"]
    assert gsm["subset"] == "main" and gsm["training_type"] == "SL"
    assert cats["DPO"]["HuggingFaceH4/ultrafeedback_binarized"]["splits"] == ["train_prefs", "test_prefs"]
    assert cats["Code"]["openai/openai_humaneval"]["splits"] == ["test"]
    # Every entry the stand-in hub has resolves as listed (repo id, config, splits).
    hub_repos = set(importer_server.hub.repo_ids())
    for cat in cats.values():
        for name, d in cat.items():
            if name not in hub_repos:
                continue
            info = importer_server.gw.client.get(f"/api/huggingface/info/{name}",
                                                 params={"config": d["subset"] or ""}).json()
            assert set(d["splits"]) <= {s["name"] for s in info["split_info"]}, (name, info)


def test_preview_raw_and_mapped(importer_server: ImporterStack) -> None:
    c = importer_server.gw.client
    r = c.post("/api/huggingface/preview", json={"dataset_name": "openai/gsm8k", "subset": "main", "num_samples": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["samples"] == body["raw_samples"] and set(body["samples"][0]) == {"question", "answer"}
    assert body["total_samples"] == 80 and body["split"] == "train" and body["problems"] == []
    r = c.post("/api/huggingface/preview", json={
        "dataset_name": "openai/gsm8k", "config": "main", "split": "test", "num_samples": 2, "training_type": "SL",
        "field_mappings": {"prompt": "answer", "completion": "question"}})
    body = r.json()
    assert body["samples"][0] == {"prompt": body["raw_samples"][0]["answer"],
                                  "completion": body["raw_samples"][0]["question"]}
    # A mapping that leaves rows invalid shows the problems per row.
    r = c.post("/api/huggingface/preview", json={"dataset_name": "HuggingFaceH4/ultrafeedback_binarized",
                                                  "split": "train_prefs", "num_samples": 100,
                                                  "training_type": "DPO"})
    body = r.json()
    assert len(body["raw_samples"]) == 100
    assert len(body["samples"]) + len(body["problems"]) == 100
    for p in body["problems"]:
        assert p["problems"] and 0 <= p["index"] < 100


def test_info_gsm8k_lists_configs_and_picks_one(importer_server: ImporterStack) -> None:
    r = importer_server.gw.client.get("/api/huggingface/info/openai/gsm8k")
    assert r.status_code == 200, r.text
    body = r.json()
    print(body)
    assert set(body["configs"]) == {"main", "socratic"}
    assert body["config_required"] is True
    assert body["config"] in ("main", "socratic") and body["notes"]
    assert body["revision"] == importer_server.hub.repo_sha("openai/gsm8k")
    r = importer_server.gw.client.get("/api/huggingface/info/openai/gsm8k", params={"config": "socratic"})
    body = r.json()
    assert body["config"] == "socratic"
    assert {s["name"] for s in body["split_info"]} == {"train", "test"}
    assert all(s["num_rows"] > 0 and s["num_bytes"] > 0 for s in body["split_info"])
    assert [f["name"] for f in body["schema"]] == ["question", "answer"]
