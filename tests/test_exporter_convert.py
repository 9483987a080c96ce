"""Unit tests of the exporter core: vectorised and per-row conversions agree, the permutation, names."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ferry.canonical import TrainingType
from ferry.errors import InvalidArgument
from services.exporter import convert
from services.exporter.formats import (
    MAX_PARAM_KEY,
    MAX_PARAM_VALUE,
    MAX_PARAMS,
    MAX_SYSTEM_MESSAGE,
    check_output_filename,
    check_request,
)
from services.exporter.shuffle import Permutation, ShuffleSpool, split_sizes
from tests.fixtures.exporter import SAMPLE_ROWS, jsonl

PLANS = ["openai", "openai_dpo", "alpaca", "sharegpt", "langchain:documents", "langchain:chat",
         "langchain:qa_pairs", "huggingface", "csv"]
ODD = {"prompt": "ctl \b\f\x01 \u2028 end", "completion": "x", "history": []}


@pytest.mark.parametrize("tt", ["SL", "DPO", "CHAT"])
@pytest.mark.parametrize("system_message", [None, "Default system"])
def test_vectorised_batches_equal_the_per_row_builders(tt: str, system_message: str | None) -> None:
    rows = list(SAMPLE_ROWS[tt])
    if tt == "SL":
        rows.append(ODD)
    data = jsonl(rows)
    lines = data.split(b"\n")[:-1]
    for plan in PLANS:
        fmt, _, export_type = plan.partition(":")
        if fmt == "openai_dpo" and tt != "DPO":
            continue
        ctx = convert.Context(TrainingType(tt), system_message, export_type or "documents", 3)
        out, n = convert.convert_batch(fmt, data, ctx, 100)
        assert n == len(rows)
        if fmt == "csv":
            vec = list(csv.reader(io.StringIO(out.decode(), newline="")))
            ref = list(csv.reader(io.StringIO(convert.python_csv(lines, ctx).decode(), newline="")))
            assert vec == ref, plan
            continue
        ref_lines = convert.python_records(fmt, lines, ctx, 100)
        assert [json.loads(x) for x in out.split(b"\n")] == [json.loads(x) for x in ref_lines], plan


def test_alternation_for_llamafactory() -> None:
    turns = [{"role": "assistant", "content": "a0"}, {"role": "user", "content": "u1"},
             {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a1"}]
    assert convert.alternate(turns) == [
        {"role": "user", "content": ""}, {"role": "assistant", "content": "a0"},
        {"role": "user", "content": "u1\n\nu2"}, {"role": "assistant", "content": "a1"}]


def test_chat_to_alpaca_uses_last_turns_and_history_pairs() -> None:
    ctx = convert.Context(TrainingType.CHAT)
    row = SAMPLE_ROWS["CHAT"][3]
    out = json.loads(convert.row_alpaca(row, ctx, 0))
    assert out == {"instruction": "q3", "input": "", "output": 'a3, "quoted"', "history": [["q1", "a1"], ["q2", "a2"]]}


def test_permutation_is_a_seeded_bijection() -> None:
    for n in (1, 2, 7, 1000, 4097):
        p = Permutation(n, 42)(np.arange(n))
        assert sorted(p.tolist()) == list(range(n))
    a = Permutation(1000, 1)(np.arange(1000))
    assert (a == Permutation(1000, 1)(np.arange(1000))).all()
    assert not (a == Permutation(1000, 2)(np.arange(1000))).all()


def test_split_sizes() -> None:
    assert split_sizes(10, 0.8) == (8, 2)
    assert split_sizes(100, 0.29) == (29, 71)
    assert split_sizes(3, 0.5) == (1, 2)
    assert split_sizes(5, 1.0) == (5, 0)


def test_spool_orders_by_permutation_with_small_buckets(tmp_path: object) -> None:
    lines = [f'{{"i":{i}}}'.encode() for i in range(500)]
    spool = ShuffleSpool(500, 500 * 8, 0.7, 5, bucket_bytes=256)
    try:
        assert len(spool.buckets["train"]) > 4
        for start in range(0, 500, 64):
            spool.add(lines[start:start + 64])
        spool.finish_pass1()
        perm = Permutation(500, 5)(np.arange(500))
        for split, lo, hi in (("train", 0, 350), ("validation", 350, 500)):
            got = [json.loads(line)["i"] for data, _ in spool.iter_split(split) for line in data.splitlines()]
            want = [int(i) for i in np.argsort(perm)[lo:hi]]
            assert got == want
    finally:
        spool.close()


@pytest.mark.parametrize("name", ["a/b", "a\\b", "..", "x..y", "", "  ", "bad\nname", "n" * 129, ".hidden", 'q"'])
def test_bad_output_filenames(name: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        check_output_filename(name)
    assert err.value.field == "output_filename" and "output_filename" in err.value.message


def test_good_output_filename_and_request() -> None:
    assert check_output_filename("my-data_v2.final") == "my-data_v2.final"
    req = check_request(1, "OpenAI", "x", "  ", None, {"seed": "7"})
    assert (req.format, req.train_split, req.system_message, req.seed) == ("openai", 1.0, None, 7)


def test_request_bounds_name_the_field_and_quote_little_of_the_value() -> None:
    req = check_request(1, "huggingface", "x", "s" * MAX_SYSTEM_MESSAGE, None,
                        {"description": "d" * MAX_PARAM_VALUE})  # the largest values pass
    assert len(req.system_message or "") == MAX_SYSTEM_MESSAGE
    huge = "x" * 100_000
    cases: list[tuple[str, str | None, dict[str, str], str]] = [
        ("csv", "s" * (MAX_SYSTEM_MESSAGE + 1), {}, "system_message"),
        ("csv", huge, {}, "system_message"),
        ("csv", None, {f"k{i}": "v" for i in range(MAX_PARAMS + 1)}, "additional_params"),
        ("csv", None, {"k" * (MAX_PARAM_KEY + 1): "v"}, "additional_params"),
        ("huggingface", None, {"description": "d" * (MAX_PARAM_VALUE + 1)}, "additional_params.description"),
        ("csv", None, {"split": huge}, "additional_params.split"),
        (huge, None, {}, "format"),
        ("langchain", None, {"export_type": "x" * MAX_PARAM_VALUE}, "additional_params.export_type"),
        ("csv", None, {"seed": "x" * MAX_PARAM_VALUE}, "additional_params.seed"),
        ("openai", None, {"n_epochs": "x" * MAX_PARAM_VALUE}, "additional_params.n_epochs"),
        ("openai", None, {"model": "x" * MAX_PARAM_VALUE}, "additional_params.model"),
    ]
    for fmt, system, params, field in cases:
        with pytest.raises(InvalidArgument) as err:
            check_request(1, fmt, "x", system, None, params)
        assert err.value.field == field and field in err.value.message, (field, err.value.message)
        assert "x" * 41 not in err.value.message and "s" * 41 not in err.value.message, err.value.message
        assert len(err.value.message) < 400, err.value.message


def test_push_to_hub_script(tmp_path: Path) -> None:
    """The generated script: token only from HF_TOKEN, creates the dataset repo, uploads its own folder.

    huggingface_hub is replaced by a recorder module on PYTHONPATH: this checks the script's calls,
    not the Hub (the stand-in hub is read-only).
    """
    import os
    import subprocess
    import sys

    from services.exporter.hf_card import PUSH_SCRIPT

    folder = tmp_path / "my_data"
    folder.mkdir()
    (folder / "push_to_hub.py").write_text(PUSH_SCRIPT)
    (folder / "train.jsonl").write_text("{}\n")
    fake = tmp_path / "fake"
    (fake / "huggingface_hub").mkdir(parents=True)
    (fake / "huggingface_hub" / "__init__.py").write_text(
        "import json, os\n"
        "class HfApi:\n"
        "    def __init__(self, token=None):\n"
        "        self.log = open(os.environ['CALLS'], 'a'); self.log.write(json.dumps(['init', token]) + '\\n')\n"
        "    def create_repo(self, repo_id, **kw):\n"
        "        self.log.write(json.dumps(['create', repo_id, kw]) + '\\n'); return 'https://hub/' + repo_id\n"
        "    def upload_folder(self, **kw):\n"
        "        self.log.write(json.dumps(['upload', kw]) + '\\n')\n")
    calls = tmp_path / "calls.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    env.update(PYTHONPATH=str(fake), CALLS=str(calls))
    script = str(folder / "push_to_hub.py")
    no_token = subprocess.run([sys.executable, script, "me/data"], env=env, capture_output=True, text=True)
    assert no_token.returncode == 2 and "HF_TOKEN" in no_token.stderr and not calls.exists()
    ok = subprocess.run([sys.executable, script, "me/data", "--private"], env={**env, "HF_TOKEN": "hf_x"},
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    log = [json.loads(line) for line in calls.read_text().splitlines()]
    assert log[0] == ["init", "hf_x"]
    assert log[1][:2] == ["create", "me/data"] and log[1][2]["repo_type"] == "dataset" and log[1][2]["private"]
    assert log[2][1]["folder_path"] == str(folder) and log[2][1]["repo_id"] == "me/data"
    assert log[2][1]["repo_type"] == "dataset"


def _stored_sl_dataset(store: Any, dataset_id: int, data: bytes, n_rows: int) -> Any:
    """An SL dataset of one `train` split whose canonical JSONL `data` is in the store, as the catalog sees it."""
    from services.exporter import engine

    key = f"datasets/{dataset_id}/train.jsonl"
    store.put_bytes(key, data)
    return engine.SourceDataset(dataset_id, "d", TrainingType.SL, (engine.SourceSplit("train", key, n_rows,
                                                                                      len(data)),))


def test_engine_names_a_bad_row_and_copies_by_multipart(object_store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from ferry.errors import FailedPrecondition
    from services.exporter import engine

    rows = SAMPLE_ROWS["SL"]
    good = jsonl(rows)
    ds = _stored_sl_dataset(object_store, 1, good, len(rows))
    monkeypatch.setattr(engine, "MAX_SINGLE_COPY", 0)  # take the >5 GiB (UploadPartCopy) path
    files = engine.Exporter(object_store, ds, check_request(1, "alpaca", "a", None, None, {}), "e1").run()
    assert len(json.loads(object_store.get_bytes(files[0].key))) == len(rows)

    bad = good + b'{"prompt": "p", "completion": 5, "history": "not a list"}\n'
    ds2 = _stored_sl_dataset(object_store, 2, bad, len(rows) + 1)
    with pytest.raises(FailedPrecondition) as err:
        engine.Exporter(object_store, ds2, check_request(2, "alpaca", "b", None, None, {}), "e2").run()
    assert f"row {len(rows)}" in err.value.message
    assert object_store.list_keys("exports/e2/") == [] and object_store.list_keys("staging/exports/e2/") == []


def test_split_export_progress_counts_each_row_once(object_store: Any) -> None:
    from services.exporter import engine

    rows = SAMPLE_ROWS["SL"] * 40
    data = jsonl(rows)
    ds = _stored_sl_dataset(object_store, 3, data, len(rows))
    seen: list[tuple[int, int, int, int]] = []
    req = check_request(3, "openai", "o", None, 0.75, {"seed": 7})
    engine.Exporter(object_store, ds, req, "e3", lambda *p: seen.append(p), batch_bytes=4096).run()
    rows_done = [s[0] for s in seen]
    bytes_done = [s[1] for s in seen]
    assert rows_done == sorted(rows_done) and bytes_done == sorted(bytes_done)
    # Rows: each converted once, whatever the two passes; bytes: both passes, ending at their total.
    assert rows_done[-1] == len(rows) == seen[-1][2]
    assert bytes_done[-1] == seen[-1][3] == 2 * len(data)
    # The first pass (spooling) moves bytes, not rows: the percent keeps moving while rows wait.
    assert rows_done[0] == 0 and bytes_done[0] > 0


def test_the_report_from_child_processes_equals_the_in_thread_one(object_store: Any) -> None:
    from services.exporter import engine

    rows = SAMPLE_ROWS["SL"] * 300
    data = jsonl(rows)
    ds = _stored_sl_dataset(object_store, 4, data, len(rows))
    reports = []
    for export_id, kwargs in (("e4", {"report_process_bytes": 1 << 40}),  # in a thread
                              ("e5", {"report_process_bytes": 0, "report_processes": 2})):  # two children
        req = check_request(4, "openai", "o", None, 0.8, {"seed": 3})
        files = engine.Exporter(object_store, ds, req, export_id, batch_bytes=4096, **kwargs).run()
        by_name = {f.name: f for f in files}
        reports.append(json.loads(object_store.get_bytes(by_name["o.validation.json"].key)))
    assert reports[0] == reports[1]
    assert reports[0]["splits"]["train"]["examples"] + reports[0]["splits"]["validation"]["examples"] == len(rows)
