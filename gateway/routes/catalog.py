"""REST for the catalog: datasets, their examples, mapping templates; plus the helpers every route shares.

`dataset_json` is the one JSON shape of a dataset, and `parse_training_type` / `training_type_out` the REST
side of a training type (the protobuf side is ferry/wire.py); the importer and exporter routes import them so
every path agrees.
"""

from __future__ import annotations

import enum
import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel, Field, field_validator

from ferry import wire
from ferry.canonical import TrainingType
from ferry.catalog.v1 import catalog_pb2 as pb
from ferry.catalog.v1 import catalog_pb2_grpc
from ferry.datasets import SourceKind
from ferry.errors import InvalidArgument
from gateway import limits as lim
from gateway.errors import error_docs
from gateway.limits import DatasetIdPath, short

router = APIRouter(tags=["catalog"])

TIMEOUT = 30.0


class TrainingTypeParam(str, enum.Enum):  # TrainingType as OpenAPI names it
    SL = "SL"
    DPO = "DPO"
    CHAT = "CHAT"


# -- training types and protobuf -> JSON (shared with the importer and exporter routes) ----------


def iso(ts: Timestamp, present: bool = True) -> str | None:
    """A protobuf timestamp as REST shows every time: ISO 8601 UTC, or None when unset."""
    if not present or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return iso_seconds(ts.seconds + ts.nanos / 1e9)


def iso_seconds(seconds: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 UTC ("2026-01-02T03:04:05.123456Z"), or None when unset."""
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat().replace("+00:00", "Z") if seconds else None


def parse_training_type(value: str | None) -> TrainingType | None:
    """The one parse of a REST training type: SL, DPO or CHAT in any case; None when empty.

    Raises ValueError naming the choices, which pydantic validators and `_tt_query` turn into a 422.
    """
    if isinstance(value, TrainingType):
        return value
    if value is None or not str(value).strip():
        return None
    name = str(value).strip().upper()
    if name not in TrainingType.__members__:
        raise ValueError(f"training_type must be one of SL, DPO, CHAT (any case), got {short(value)}")
    return TrainingType(name)


def training_type_pb(value: str | None) -> pb.TrainingType.ValueType:
    """The protobuf of a request body's training type, which its field validator parsed (parse_training_type)."""
    assert value is None or isinstance(value, TrainingType), "training_type was not parsed by its validator"
    return wire.training_type_to_pb(value)


def training_type_out(value: int) -> str | None:
    """A backend's training type as REST shows it: "SL" / "DPO" / "CHAT"; None when unset or unknown here."""
    try:
        tt = wire.training_type_from_pb(value)
    except InvalidArgument:
        return None
    return tt.value if tt is not None else None


def _tt_query(value: str | None) -> Any:
    """A training_type query parameter in any case ("sl" or "SL") for the catalog; 422 naming it otherwise."""
    try:
        return wire.training_type_to_pb(parse_training_type(value))
    except ValueError as exc:
        raise RequestValidationError([{"loc": ("query", "training_type"), "type": "enum",
                                       "msg": str(exc)}]) from None


def source_kind_out(value: int) -> SourceKind:
    """A backend's source kind; UNSPECIFIED when unset or unknown here."""
    try:
        return wire.source_kind_from_pb(value)
    except InvalidArgument:
        return SourceKind.UNSPECIFIED


SOURCE_NAMES = {SourceKind.HUB: "huggingface", SourceKind.LOCAL_DIR: "local", SourceKind.LOCAL_FILES: "local"}
STORAGE_FORMAT = "jsonl"  # how the catalog stores canonical rows (docs/catalog.md)


def human_size(num_bytes: int) -> str:
    """"1.2 MB" (decimal units, as the Hub shows sizes)."""
    size = float(num_bytes)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def dataset_json(ds: pb.Dataset) -> dict[str, Any]:
    """One dataset for every client: Ferry's fields plus the names the seeds' clients read.

    Where a seed client and Ferry disagreed, the seed's shape won (docs/rest-api.md, "Datasets"):
    `source` is a plain string and Ferry's source record is `source_detail`; `training_type` is lower case.
    """
    src = ds.source
    splits = [{"name": s.name, "num_rows": s.num_rows, "num_bytes": s.num_bytes} for s in ds.splits]
    rows = sum(s.num_rows for s in ds.splits)
    nbytes = sum(s.num_bytes for s in ds.splits)
    tt = (training_type_out(ds.training_type) or "").lower() or None
    created = iso(ds.created_at, ds.HasField("created_at"))
    origin = src.repo_id + (f" ({src.config})" if src.config and src.config != "default" else "")
    kind = source_kind_out(src.kind)
    return {
        "id": ds.id,
        "name": ds.name,
        "training_type": tt,
        "source": SOURCE_NAMES.get(kind, "unknown"),
        "source_detail": {
            "kind": kind.value.lower(),
            "repo_id": src.repo_id,
            "revision": src.revision,
            "config": src.config,
            "splits": list(src.splits),
        },
        "splits": splits,
        "num_rows": rows,
        "num_bytes": nbytes,
        "field_mappings": dict(ds.field_mappings),
        "features": [{"name": f.name, "dtype": f.dtype} for f in ds.features],
        "row_features": [{"name": f.name, "dtype": f.dtype} for f in ds.row_features],
        "created_at": created,
        "import_job_id": ds.import_job_id or None,
        **_seed_fields(ds, tt, rows, nbytes, created, origin),
    }


def _seed_fields(ds: pb.Dataset, tt: str | None, rows: int, nbytes: int, created: str | None, origin: str
                 ) -> dict[str, Any]:
    """The names the seeds' clients read, beside Ferry's own."""
    return {
        # Thinker (current client): num_samples, format, size, schema_ok, schema_notes.
        "num_samples": rows,
        "format": STORAGE_FORMAT,
        "size": human_size(nbytes),
        # Every stored row passed Ferry's validators at import; an empty dataset is the one thing to fix.
        "schema_ok": rows > 0,
        "schema_notes": [] if rows > 0 else ["the dataset has no rows"],
        # Thinker's older Dataset Manager: type, numSamples, split ({split: rows}), uploadedAt.
        "type": tt,
        "numSamples": rows,
        "split": {s.name: s.num_rows for s in ds.splits},
        "uploadedAt": created,
        # LLM Dataset Creator: example_count, description (it has no Ferry counterpart for `domain`).
        "example_count": rows,
        "description": f"Imported from {origin}" if origin else "",
        "domain": None,
    }


def template_json(t: pb.MappingTemplate) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "training_type": training_type_out(t.training_type),
        "field_mappings": dict(t.field_mappings),
        "repo_id": t.repo_id or None,
        "created_at": iso(t.created_at, t.HasField("created_at")),
    }


def _row(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # a line that is not JSON is shown as it is rather than hidden


def _catalog(request: Request) -> catalog_pb2_grpc.CatalogServiceStub:
    stub: catalog_pb2_grpc.CatalogServiceStub = request.app.state.clients.catalog
    return stub


# -- datasets ------------------------------------------------------------------------------


@router.get("/api/datasets")
def list_datasets(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000, description="Datasets per page")] = 50,
    page_token: Annotated[str, Query(max_length=lim.MAX_TOKEN, description="next_page_token of the previous page")
                          ] = "",
    name: Annotated[str, Query(max_length=lim.MAX_NAME, description="Case-insensitive substring of the name")] = "",
    training_type: Annotated[str | None, Query(max_length=lim.MAX_WORD, description="SL, DPO or CHAT (any case)")
                             ] = None,
    source: Annotated[str, Query(max_length=lim.MAX_REPO_ID, description="Exact source repo id")] = "",
) -> dict[str, Any]:
    """READY datasets, newest first."""
    resp = _catalog(request).ListDatasets(pb.ListDatasetsRequest(
        page_size=limit, page_token=page_token, name_contains=name,
        training_type=_tt_query(training_type), source_repo_id=source,
    ), timeout=TIMEOUT)
    return {
        "datasets": [dataset_json(d) for d in resp.datasets],
        "next_page_token": resp.next_page_token or None,
        "total": resp.total_size,
    }


@router.get("/api/datasets/{dataset_id}")
def get_dataset(request: Request, dataset_id: DatasetIdPath) -> dict[str, Any]:
    resp = _catalog(request).GetDataset(pb.GetDatasetRequest(dataset_id=dataset_id), timeout=TIMEOUT)
    return dataset_json(resp.dataset)


@router.delete("/api/datasets/{dataset_id}")
def delete_dataset(request: Request, dataset_id: DatasetIdPath) -> dict[str, Any]:
    """Deletes the record and every object of the dataset."""
    resp = _catalog(request).DeleteDataset(pb.DeleteDatasetRequest(dataset_id=dataset_id), timeout=120.0)
    return {"deleted": True, "id": dataset_id, "objects_deleted": resp.objects_deleted}


@router.get("/api/datasets/{dataset_id}/examples")
def list_examples(
    request: Request,
    dataset_id: DatasetIdPath,
    split: Annotated[str, Query(max_length=lim.MAX_SPLIT, description="Split name; the first split when empty")
                     ] = "",
    offset: Annotated[int, Query(ge=0, le=lim.INT64_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """A page of canonical rows; as fast at offset 1,000,000 as at 0."""
    resp = _catalog(request).ListExamples(
        pb.ListExamplesRequest(dataset_id=dataset_id, split=split, offset=offset, limit=limit), timeout=TIMEOUT
    )
    return {
        "dataset_id": resp.dataset_id,
        "split": resp.split,
        "examples": [_row(e.json) for e in resp.examples],
        "total": resp.total,
        "offset": resp.offset,
        "limit": resp.limit,
    }


@router.get("/api/datasets/{dataset_id}/preview")
def preview_dataset(
    request: Request,
    dataset_id: DatasetIdPath,
    n: Annotated[int, Query(ge=1, le=100, description="Rows to show")] = 5,
    split: Annotated[str, Query(max_length=lim.MAX_SPLIT, description="Split name; the first split when empty")
                     ] = "",
) -> dict[str, Any]:
    """The first `n` rows as a table (`columns`, `rows`), as Thinker's dataset preview reads them."""
    resp = _catalog(request).ListExamples(
        pb.ListExamplesRequest(dataset_id=dataset_id, split=split, offset=0, limit=n), timeout=TIMEOUT)
    rows = [_row(e.json) for e in resp.examples]
    columns: dict[str, None] = {}
    for row in rows:
        if isinstance(row, dict):
            columns.update(dict.fromkeys(row))
    return {"dataset_id": resp.dataset_id, "split": resp.split, "columns": list(columns), "rows": rows,
            "total": resp.total}


# -- mapping templates ---------------------------------------------------------------------


class MappingTemplateIn(BaseModel):
    name: str = Field(min_length=1, max_length=lim.MAX_NAME, description="Template name")
    training_type: TrainingTypeParam = Field(description="SL, DPO or CHAT (any case)")
    field_mappings: dict[Annotated[str, Field(max_length=lim.MAX_KEY)], Annotated[str, Field(max_length=lim.MAX_SPEC)]
                         ] = Field(max_length=lim.MAX_ENTRIES, description="Target field -> source column")
    repo_id: str = Field("", max_length=lim.MAX_REPO_ID, description="Hub repo the template is for")

    @field_validator("training_type", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return parse_training_type(v) if isinstance(v, str) else v


@router.get("/api/mapping-templates")
def list_mapping_templates(
    request: Request,
    training_type: Annotated[str | None, Query(max_length=lim.MAX_WORD, description="SL, DPO or CHAT (any case)")
                             ] = None,
    repo_id: Annotated[str, Query(max_length=lim.MAX_REPO_ID)] = "",
) -> dict[str, Any]:
    resp = _catalog(request).ListMappingTemplates(pb.ListMappingTemplatesRequest(
        training_type=_tt_query(training_type), repo_id=repo_id,
    ), timeout=TIMEOUT)
    return {"templates": [template_json(t) for t in resp.templates]}


@router.post("/api/mapping-templates", status_code=201, responses=error_docs(413, 415))
def save_mapping_template(request: Request, body: MappingTemplateIn) -> dict[str, Any]:
    """Creates a template, or replaces the mappings of the one with the same name, type and repo."""
    resp = _catalog(request).SaveMappingTemplate(pb.SaveMappingTemplateRequest(
        name=body.name, training_type=wire.training_type_to_pb(TrainingType(body.training_type.value)),
        field_mappings=body.field_mappings, repo_id=body.repo_id,
    ), timeout=TIMEOUT)
    return template_json(resp.template)


@router.delete("/api/mapping-templates/{template_id}")
def delete_mapping_template(request: Request, template_id: Annotated[str, Path(max_length=lim.MAX_JOB_ID)]) -> dict[str, Any]:
    _catalog(request).DeleteMappingTemplate(pb.DeleteMappingTemplateRequest(template_id=template_id),
                                            timeout=TIMEOUT)
    return {"deleted": True, "id": template_id}
