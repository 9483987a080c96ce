"""The protobuf <-> domain translation (ferry/wire.py) and the importer's stored request format."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from ferry import wire
from ferry.canonical import TrainingType
from ferry.catalog.v1 import catalog_pb2 as pb
from ferry.datasets import Dataset, DatasetRegistration, DatasetSource, DatasetState, Feature, SourceKind, Split
from ferry.errors import InvalidArgument
from ferry.jobs import TERMINAL, TERMINAL_STATUSES, Job, JobFile, JobKind, JobProgress, JobUpdate, Phase


def test_every_enum_value_translates_both_ways() -> None:
    for tt in TrainingType:
        assert wire.training_type_from_pb(wire.training_type_to_pb(tt)) is tt
    assert wire.training_type_to_pb(None) == pb.TRAINING_TYPE_UNSPECIFIED
    assert wire.training_type_from_pb(pb.TRAINING_TYPE_UNSPECIFIED) is None
    assert wire.training_type_to_pb(TrainingType.DPO) == pb.TRAINING_TYPE_DPO
    for kind in SourceKind:
        assert wire.source_kind_from_pb(wire.source_kind_to_pb(kind)) is kind
    for phase in Phase:
        assert wire.phase_from_pb(wire.phase_to_pb(phase)) is phase
    for job_kind in JobKind:
        assert wire.job_kind_from_pb(wire.job_kind_to_pb(job_kind)) is job_kind
    for state in DatasetState:
        assert wire.dataset_state_from_pb(wire.dataset_state_to_pb(state)) is state
    # Every proto value has a domain counterpart.
    assert {wire.phase_from_pb(v) for v in pb.JobPhase.values()} - {None} == set(Phase)
    assert {wire.training_type_from_pb(v) for v in pb.TrainingType.values()} - {None} == set(TrainingType)


def test_unknown_numbers_are_refused_naming_the_field() -> None:
    with pytest.raises(InvalidArgument) as exc:
        wire.training_type_from_pb(9)
    assert exc.value.field == "training_type" and "9" in exc.value.message
    with pytest.raises(InvalidArgument) as exc:
        wire.phase_from_pb(99, "phases")
    assert exc.value.field == "phases"


def test_terminal_phases() -> None:
    assert TERMINAL == (Phase.COMPLETE, Phase.ERROR, Phase.CANCELLED)
    assert [p for p in Phase if p.terminal] == list(TERMINAL)
    assert TERMINAL_STATUSES == {"complete", "error", "cancelled"}


def test_job_round_trip() -> None:
    job = Job(id="j", kind=JobKind.EXPORT, phase=Phase.SAVING,
              progress=JobProgress(1, 2, 3, 4, 5.5, 6.5, 7.5), message="m", error="e", created_at=100.25,
              updated_at=101.5, started_at=100.5, finished_at=None, heartbeat_at=101.0, worker_id="w", stalled=True,
              attempt=2, cancel_requested=True, request_json="{}", checkpoint_json='{"a": 1}', dataset_id=7,
              files=[JobFile("a.jsonl", "exports/j/a.jsonl", 10, "ab")], rows_skipped=3, skip_reasons=["x"])
    msg = wire.job_to_pb(job)
    assert not msg.HasField("finished_at") and msg.HasField("started_at")
    assert wire.job_from_pb(msg) == job


def test_job_update_keeps_an_unset_progress_unset() -> None:
    bare = wire.job_update_to_pb(JobUpdate("j", "w", phase=Phase.ERROR, error="boom"))
    assert not bare.HasField("progress") and bare.phase == pb.JOB_PHASE_ERROR
    assert wire.job_update_from_pb(bare) == JobUpdate("j", "w", phase=Phase.ERROR, error="boom")
    full = JobUpdate("j", "w", progress=JobProgress(rows_done=1), files=[JobFile("f", "k", 1, "s")],
                     rows_skipped=2, skip_reasons=["r"], checkpoint_json="{}", dataset_id=3, message="m")
    assert wire.job_update_from_pb(wire.job_update_to_pb(full)) == full


def test_dataset_and_registration_round_trip() -> None:
    source = DatasetSource(SourceKind.LOCAL_DIR, "/data/x", "abc", "main", ["train"])
    ds = Dataset(id=3, name="x", source=source, training_type=TrainingType.CHAT,
                 splits=[Split("train", 5, 50, "datasets/3/train.jsonl", "datasets/3/train.idx")],
                 field_mappings={"messages": "turns"}, features=[Feature("turns", "list")],
                 row_features=[Feature("messages", "list")], created_at=12.5, state=DatasetState.READY,
                 import_job_id="job")
    assert wire.dataset_from_pb(wire.dataset_to_pb(ds)) == ds
    reg = DatasetRegistration(3, "x", source, None, ds.splits, ds.field_mappings, ds.features, ds.row_features,
                              "job")
    assert wire.registration_from_pb(wire.registration_to_pb(reg)) == reg


def test_import_requests_keep_their_stored_format() -> None:
    """request_json holds the source kind as the proto's number, so importers of every version read each other's."""
    from services.importer.jobs import SOURCE_KIND_CODES, ImportRequest

    assert {kind: wire.source_kind_to_pb(kind) for kind in SourceKind} == SOURCE_KIND_CODES
    stored = {"dataset_name": "org/x", "source_kind": pb.SOURCE_KIND_HUB, "repo_id": "org/x", "revision": "r",
              "config": "default", "splits": ["train"], "training_type": "DPO", "field_mappings": {"prompt": "q"},
              "max_samples": 0, "name": "x", "features": [["q", "string"]], "bytes_total": 5, "rows_total": 2,
              "sealed_token": ""}
    req = ImportRequest.from_json(json.dumps(stored))
    assert req.source_kind is SourceKind.HUB and req.training_type is TrainingType.DPO
    assert json.loads(req.to_json()) == stored


def test_rest_shows_when_a_stalled_job_is_retried() -> None:
    """retry_at travels the contract and REST shows it (with the attempt) while the job is stalled."""
    from ferry.exporter.v1 import exporter_pb2
    from gateway.routes.exporter import export_json
    from gateway.routes.importer import progress_json

    stalled = Job(id="j1", kind=JobKind.IMPORT, phase=Phase.DOWNLOADING, created_at=1.0, stalled=True, attempt=2,
                  retry_at=1_800_000_000.5)
    back = wire.job_from_pb(wire.job_to_pb(stalled))
    assert back.retry_at == stalled.retry_at
    body = progress_json(back)
    assert body["attempt"] == 2 and body["retry_at"] == "2027-01-15T08:00:00.500000Z"
    running = replace(back, stalled=False, retry_at=None)
    assert progress_json(running)["retry_at"] is None
    export = exporter_pb2.Export(format="csv", output_filename="x",
                                 job=wire.job_to_pb(replace(stalled, kind=JobKind.EXPORT)))
    assert export_json(export)["retry_at"] == "2027-01-15T08:00:00.500000Z"
