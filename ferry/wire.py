"""Protobuf <-> domain translation of the catalog's messages: the one place each mapping is written.

Every servicer and gRPC client uses these (the catalog servicer, ferry/catalog_client.py, the importer and
exporter servicers, the gateway); core modules only see ferry.jobs, ferry.datasets and ferry.canonical.

The proto enums are the domain enums' names with a prefix (TRAINING_TYPE_SL <-> TrainingType.SL). The zero
value (UNSPECIFIED) is None in the domain; a number this build does not know is refused as InvalidArgument
naming the field. Timestamps are float seconds in the domain; an unset optional one is None.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any, TypeVar, cast

from google.protobuf.timestamp_pb2 import Timestamp

from ferry.canonical import TrainingType
from ferry.catalog.v1 import catalog_pb2 as pb
from ferry.datasets import (
    Dataset,
    DatasetRegistration,
    DatasetSource,
    DatasetState,
    Feature,
    MappingTemplate,
    SourceKind,
    Split,
)
from ferry.errors import Internal, InvalidArgument
from ferry.jobs import Job, JobFile, JobKind, JobProgress, JobUpdate, Phase

E = TypeVar("E", bound=enum.Enum)


# -- enums ----------------------------------------------------------------------------------------------------------

def _enum_in(wrapper: Any, domain: type[E], prefix: str, value: int, field: str) -> E | None:
    if value == 0:
        return None
    try:
        name = str(wrapper.Name(value))
    except ValueError:
        raise InvalidArgument(f"{field} has an unknown value {value}", field=field) from None
    return domain(name[len(prefix):])


def _enum_out(wrapper: Any, prefix: str, value: enum.Enum | None) -> Any:
    return wrapper.Value(prefix + str(value.value)) if value is not None else 0


def training_type_from_pb(value: int, field: str = "training_type") -> TrainingType | None:
    return _enum_in(pb.TrainingType, TrainingType, "TRAINING_TYPE_", value, field)


def training_type_to_pb(tt: TrainingType | None) -> pb.TrainingType.ValueType:
    return cast(pb.TrainingType.ValueType, _enum_out(pb.TrainingType, "TRAINING_TYPE_", tt))


def source_kind_from_pb(value: int, field: str = "source.kind") -> SourceKind:
    return _enum_in(pb.SourceKind, SourceKind, "SOURCE_KIND_", value, field) or SourceKind.UNSPECIFIED


def source_kind_to_pb(kind: SourceKind) -> pb.SourceKind.ValueType:
    return cast(pb.SourceKind.ValueType, _enum_out(pb.SourceKind, "SOURCE_KIND_", kind))


def dataset_state_from_pb(value: int, field: str = "state") -> DatasetState | None:
    return _enum_in(pb.DatasetState, DatasetState, "DATASET_STATE_", value, field)


def dataset_state_to_pb(state: DatasetState) -> pb.DatasetState.ValueType:
    return cast(pb.DatasetState.ValueType, _enum_out(pb.DatasetState, "DATASET_STATE_", state))


def job_kind_from_pb(value: int, field: str = "kind") -> JobKind | None:
    return _enum_in(pb.JobKind, JobKind, "JOB_KIND_", value, field)


def job_kind_to_pb(kind: JobKind | None) -> pb.JobKind.ValueType:
    return cast(pb.JobKind.ValueType, _enum_out(pb.JobKind, "JOB_KIND_", kind))


def phase_from_pb(value: int, field: str = "phase") -> Phase | None:
    return _enum_in(pb.JobPhase, Phase, "JOB_PHASE_", value, field)


def phase_to_pb(phase: Phase | None) -> pb.JobPhase.ValueType:
    return cast(pb.JobPhase.ValueType, _enum_out(pb.JobPhase, "JOB_PHASE_", phase))


def _required(value: E | None, what: str) -> E:
    if value is None:
        raise Internal(f"the catalog sent a record without {what}")
    return value


# -- timestamps -----------------------------------------------------------------------------------------------------

def timestamp_to_pb(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def timestamp_from_pb(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


# -- datasets -------------------------------------------------------------------------------------------------------

def source_to_pb(src: DatasetSource) -> pb.DatasetSource:
    return pb.DatasetSource(kind=source_kind_to_pb(src.kind), repo_id=src.repo_id, revision=src.revision,
                            config=src.config, splits=src.splits)


def source_from_pb(src: pb.DatasetSource) -> DatasetSource:
    return DatasetSource(source_kind_from_pb(src.kind), src.repo_id, src.revision, src.config, list(src.splits))


def split_to_pb(s: Split) -> pb.Split:
    return pb.Split(name=s.name, num_rows=s.num_rows, num_bytes=s.num_bytes, object_key=s.object_key,
                    index_key=s.index_key)


def split_from_pb(s: pb.Split) -> Split:
    return Split(s.name, s.num_rows, s.num_bytes, s.object_key, s.index_key)


def features_to_pb(features: Iterable[Feature]) -> list[pb.Feature]:
    return [pb.Feature(name=f.name, dtype=f.dtype) for f in features]


def features_from_pb(features: Iterable[pb.Feature]) -> list[Feature]:
    return [Feature(f.name, f.dtype) for f in features]


def dataset_to_pb(ds: Dataset) -> pb.Dataset:
    return pb.Dataset(
        id=ds.id,
        name=ds.name,
        source=source_to_pb(ds.source),
        training_type=training_type_to_pb(ds.training_type),
        splits=[split_to_pb(s) for s in ds.splits],
        field_mappings=ds.field_mappings,
        features=features_to_pb(ds.features),
        row_features=features_to_pb(ds.row_features),
        created_at=timestamp_to_pb(ds.created_at),
        state=dataset_state_to_pb(ds.state),
        import_job_id=ds.import_job_id,
    )


def dataset_from_pb(ds: pb.Dataset) -> Dataset:
    return Dataset(
        id=ds.id,
        name=ds.name,
        source=source_from_pb(ds.source),
        training_type=training_type_from_pb(ds.training_type),
        splits=[split_from_pb(s) for s in ds.splits],
        field_mappings=dict(ds.field_mappings),
        features=features_from_pb(ds.features),
        row_features=features_from_pb(ds.row_features),
        created_at=timestamp_from_pb(ds.created_at),
        state=_required(dataset_state_from_pb(ds.state), "a dataset state"),
        import_job_id=ds.import_job_id,
    )


def registration_to_pb(reg: DatasetRegistration) -> pb.RegisterDatasetRequest:
    return pb.RegisterDatasetRequest(
        dataset_id=reg.dataset_id,
        name=reg.name,
        source=source_to_pb(reg.source),
        training_type=training_type_to_pb(reg.training_type),
        splits=[split_to_pb(s) for s in reg.splits],
        field_mappings=reg.field_mappings,
        features=features_to_pb(reg.features),
        row_features=features_to_pb(reg.row_features),
        import_job_id=reg.import_job_id,
    )


def registration_from_pb(req: pb.RegisterDatasetRequest) -> DatasetRegistration:
    return DatasetRegistration(
        dataset_id=req.dataset_id,
        name=req.name,
        source=source_from_pb(req.source),
        training_type=training_type_from_pb(req.training_type),
        splits=[split_from_pb(s) for s in req.splits],
        field_mappings=dict(req.field_mappings),
        features=features_from_pb(req.features),
        row_features=features_from_pb(req.row_features),
        import_job_id=req.import_job_id,
    )


def template_to_pb(t: MappingTemplate) -> pb.MappingTemplate:
    return pb.MappingTemplate(id=t.id, name=t.name, training_type=training_type_to_pb(t.training_type),
                              field_mappings=t.field_mappings, repo_id=t.repo_id,
                              created_at=timestamp_to_pb(t.created_at))


# -- jobs -----------------------------------------------------------------------------------------------------------

def progress_to_pb(p: JobProgress) -> pb.JobProgress:
    return pb.JobProgress(rows_done=p.rows_done, rows_total=p.rows_total, bytes_done=p.bytes_done,
                          bytes_total=p.bytes_total, rows_per_second=p.rows_per_second,
                          bytes_per_second=p.bytes_per_second, percent=p.percent)


def progress_from_pb(p: pb.JobProgress) -> JobProgress:
    return JobProgress(p.rows_done, p.rows_total, p.bytes_done, p.bytes_total, p.rows_per_second,
                       p.bytes_per_second, p.percent)


def job_file_to_pb(f: JobFile) -> pb.JobFile:
    return pb.JobFile(name=f.name, object_key=f.object_key, size=f.size, sha256=f.sha256)


def job_file_from_pb(f: pb.JobFile) -> JobFile:
    return JobFile(f.name, f.object_key, f.size, f.sha256)


def job_to_pb(job: Job) -> pb.Job:
    return pb.Job(
        id=job.id,
        kind=job_kind_to_pb(job.kind),
        phase=phase_to_pb(job.phase),
        progress=progress_to_pb(job.progress),
        message=job.message,
        error=job.error,
        created_at=timestamp_to_pb(job.created_at),
        updated_at=timestamp_to_pb(job.updated_at),
        started_at=timestamp_to_pb(job.started_at),
        finished_at=timestamp_to_pb(job.finished_at),
        heartbeat_at=timestamp_to_pb(job.heartbeat_at),
        worker_id=job.worker_id,
        stalled=job.stalled,
        attempt=job.attempt,
        cancel_requested=job.cancel_requested,
        request_json=job.request_json,
        checkpoint_json=job.checkpoint_json,
        dataset_id=job.dataset_id,
        files=[job_file_to_pb(f) for f in job.files],
        rows_skipped=job.rows_skipped,
        skip_reasons=job.skip_reasons,
        retry_at=timestamp_to_pb(job.retry_at),
    )


def job_from_pb(job: pb.Job) -> Job:
    def optional(name: str) -> float | None:
        return timestamp_from_pb(getattr(job, name)) if job.HasField(name) else None  # type: ignore[arg-type]

    return Job(
        id=job.id,
        kind=_required(job_kind_from_pb(job.kind), "a job kind"),
        phase=_required(phase_from_pb(job.phase), "a job phase"),
        progress=progress_from_pb(job.progress),
        message=job.message,
        error=job.error,
        created_at=timestamp_from_pb(job.created_at),
        updated_at=timestamp_from_pb(job.updated_at),
        started_at=optional("started_at"),
        finished_at=optional("finished_at"),
        heartbeat_at=optional("heartbeat_at"),
        worker_id=job.worker_id,
        stalled=job.stalled,
        attempt=job.attempt,
        cancel_requested=job.cancel_requested,
        request_json=job.request_json,
        checkpoint_json=job.checkpoint_json,
        dataset_id=job.dataset_id,
        files=[job_file_from_pb(f) for f in job.files],
        rows_skipped=job.rows_skipped,
        skip_reasons=list(job.skip_reasons),
        retry_at=optional("retry_at"),
    )


def job_update_to_pb(u: JobUpdate) -> pb.UpdateJobRequest:
    """An unset `progress` stays unset (the catalog keeps the job's); so do the other defaults."""
    return pb.UpdateJobRequest(
        job_id=u.job_id, worker_id=u.worker_id, phase=phase_to_pb(u.phase),
        progress=progress_to_pb(u.progress) if u.progress is not None else None, message=u.message,
        error=u.error, checkpoint_json=u.checkpoint_json, dataset_id=u.dataset_id,
        files=[job_file_to_pb(f) for f in u.files], rows_skipped=u.rows_skipped, skip_reasons=u.skip_reasons,
    )


def job_update_from_pb(req: pb.UpdateJobRequest) -> JobUpdate:
    return JobUpdate(
        job_id=req.job_id,
        worker_id=req.worker_id,
        phase=phase_from_pb(req.phase),
        progress=progress_from_pb(req.progress) if req.HasField("progress") else None,
        message=req.message,
        error=req.error,
        checkpoint_json=req.checkpoint_json,
        dataset_id=req.dataset_id,
        files=[job_file_from_pb(f) for f in req.files],
        rows_skipped=req.rows_skipped,
        skip_reasons=list(req.skip_reasons),
    )
