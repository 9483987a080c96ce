"""Bounds on the importer's inputs for gRPC callers (services/importer/bounds.py), through the real importer gRPC
server: every value out of bounds is INVALID_ARGUMENT naming the field, quoting at most a short prefix of the
value; an invalid Hub repo id is INVALID_ARGUMENT too, never UNAVAILABLE; values at the bounds get through."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from ferry.catalog.v1 import catalog_pb2 as cpb
from ferry.importer.v1 import importer_pb2 as pb
from ferry.rpcerrors import read_status
from tests.fixtures.importer import ImporterStack

SL = cpb.TRAINING_TYPE_SL
REPO = "openai/gsm8k"
BAD_REPO_IDS = [
    "acme/a--b",
    "acme/a..b",
    "a" * 97 + "/data",
    "acme/" + "b" * 100,
    "acme/data/extra",
    "acme/-data",
    "acme/data.",
    "acme/data.git",
    "acme/dätä",
    "acme/da ta",
    "https://huggingface.co/datasets/acme/a--b",
    "acme/",
]
LONG_PATH = "/" + "p" * 5000


def _refused(call: Any, request: Any, field: str, value: object = "") -> None:
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=30)
    failure = read_status(err.value)
    assert (failure.code, failure.field) == (grpc.StatusCode.INVALID_ARGUMENT, field), failure
    assert len(failure.message) < 400, failure.message
    if isinstance(value, str) and len(value) > 60:  # quoted by a short prefix only
        assert value not in failure.message and value[:40] in failure.message, failure.message


START_CASES: list[tuple[dict[str, Any], str]] = [
    *[({"dataset_name": name}, "dataset_name") for name in BAD_REPO_IDS],
    ({"dataset_name": LONG_PATH}, "dataset_name"),
    ({"splits": [f"s{i}" for i in range(65)]}, "splits"),
    ({"splits": ["train", "s" * 129]}, "splits"),
    ({"config": "c" * 129}, "config"),
    ({"field_mappings": {f"t{i}": "question" for i in range(65)}}, "field_mappings"),
    ({"field_mappings": {"k" * 101: "question"}}, "field_mappings"),
    ({"field_mappings": {"prompt": "v" * 1001}}, "field_mappings"),
    ({"max_samples": -1}, "max_samples"),
    ({"name": "n" * 257}, "name"),
    ({"revision": "r" * 257}, "revision"),
]


@pytest.mark.parametrize("fields,field", START_CASES, ids=[f"{f}-{i}" for i, (_, f) in enumerate(START_CASES)])
def test_start_import_out_of_bounds(importer_server: ImporterStack, fields: dict[str, Any], field: str) -> None:
    request = pb.StartImportRequest(**{"dataset_name": REPO, "config": "main", "training_type": SL, **fields})
    value = next(iter(fields.values()))
    _refused(importer_server.stub.StartImport, request, field, value)


PREVIEW_CASES: list[tuple[dict[str, Any], str]] = [
    *[({"dataset_name": name}, "dataset_name") for name in BAD_REPO_IDS],
    ({"dataset_name": LONG_PATH}, "dataset_name"),
    ({"split": "s" * 129}, "split"),
    ({"config": "c" * 129}, "config"),
    ({"field_mappings": {f"t{i}": "question" for i in range(65)}}, "field_mappings"),
    ({"field_mappings": {"k" * 101: "question"}}, "field_mappings"),
    ({"field_mappings": {"prompt": "v" * 1001}}, "field_mappings"),
]


@pytest.mark.parametrize("fields,field", PREVIEW_CASES, ids=[f"{f}-{i}" for i, (_, f) in enumerate(PREVIEW_CASES)])
def test_preview_out_of_bounds(importer_server: ImporterStack, fields: dict[str, Any], field: str) -> None:
    request = pb.PreviewDatasetRequest(**{"dataset_name": REPO, "config": "main", **fields})
    value = next(iter(fields.values()))
    _refused(importer_server.stub.PreviewDataset, request, field, value)


SUGGEST_CASES: list[tuple[dict[str, Any], str]] = [
    *[({"dataset_name": name}, "dataset_name") for name in BAD_REPO_IDS],
    ({"dataset_name": LONG_PATH}, "dataset_name"),
    ({"split": "s" * 129}, "split"),
    ({"config": "c" * 129}, "config"),
]


@pytest.mark.parametrize("fields,field", SUGGEST_CASES, ids=[f"{f}-{i}" for i, (_, f) in enumerate(SUGGEST_CASES)])
def test_suggest_out_of_bounds(importer_server: ImporterStack, fields: dict[str, Any], field: str) -> None:
    request = pb.SuggestMappingRequest(**{"dataset_name": REPO, "config": "main", "training_type": SL, **fields})
    value = next(iter(fields.values()))
    _refused(importer_server.stub.SuggestMapping, request, field, value)


def test_an_invalid_repo_id_in_dataset_info_is_invalid_argument(importer_server: ImporterStack) -> None:
    for name in BAD_REPO_IDS:
        _refused(importer_server.stub.GetDatasetInfo, pb.GetDatasetInfoRequest(dataset_name=name), "dataset_name")
    _refused(importer_server.stub.GetDatasetInfo, pb.GetDatasetInfoRequest(dataset_name=REPO, revision="r" * 257),
             "revision")


def test_values_at_the_bounds_get_through(importer_server: ImporterStack) -> None:
    stub = importer_server.stub
    # The longest repo id is looked up on the Hub: not found there, not refused as malformed.
    for name in ("a" * 96 + "/" + "b" * 96, "a_b.c-d/E_f.g-h", "gsm8k"):
        with pytest.raises(grpc.RpcError) as err:
            stub.GetDatasetInfo(pb.GetDatasetInfoRequest(dataset_name=name), timeout=30)
        assert (err.value.code(), read_status(err.value).field) == (grpc.StatusCode.NOT_FOUND, "dataset_name")
    # 64 splits of 128 characters: the first one is looked up (and is not in the repo).
    with pytest.raises(grpc.RpcError) as err:
        stub.StartImport(pb.StartImportRequest(dataset_name=REPO, config="main", training_type=SL,
                                               splits=[f"{i:03d}" + "s" * 125 for i in range(64)]), timeout=30)
    assert (err.value.code(), read_status(err.value).field) == (grpc.StatusCode.NOT_FOUND, "split")
    # 64 mappings with 100-character targets and 1000-character sources: the mapping's own checks answer.
    mappings = {f"{i:02d}" + "t" * 98: "q" * 1000 for i in range(64)}
    with pytest.raises(grpc.RpcError) as err:
        stub.PreviewDataset(pb.PreviewDatasetRequest(dataset_name=REPO, config="main", field_mappings=mappings,
                                                     training_type=SL), timeout=30)
    assert (err.value.code(), read_status(err.value).field) == (grpc.StatusCode.INVALID_ARGUMENT, "field_mappings")
    assert "longer than" not in err.value.details()
    # A full request at the bounds is accepted.
    started = stub.StartImport(pb.StartImportRequest(
        dataset_name="https://huggingface.co/datasets/openai/gsm8k", config="main", splits=["test"],
        training_type=SL, field_mappings={"prompt": "question", "completion": "answer"}, max_samples=0,
        name="n" * 256, revision=""), timeout=30)
    assert started.import_id
    body = importer_server.wait(started.import_id)
    assert body["status"] == "complete", body
