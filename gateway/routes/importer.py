"""REST for the importer (/api/huggingface/*): HTTP <-> ferry.importer.v1.ImporterService, nothing more.

Every route forwards the caller's `X-HF-Token` header as gRPC metadata `x-hf-token` (never logged).
`subset` and `config` are synonyms everywhere. Request bodies take the seeds' clients' shapes beside
Ferry's own (docs/rest-api.md): `field_mappings` as an object or as a list of {source_field, target_field},
`training_type` in any case and optional when the mapping's targets imply it.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, TypeAdapter, ValidationError, field_validator

from ferry import wire
from ferry.canonical import TrainingType
from ferry.catalog.v1 import catalog_pb2 as cpb
from ferry.importer.v1 import importer_pb2 as pb
from ferry.jobs import Job, JobKind, Phase
from gateway import limits as lim
from gateway import waits
from gateway.auth import IdempotencyKey, scoped_idempotency_key
from gateway.errors import error_docs
from gateway.limits import JobIdPath, short
from gateway.routes.catalog import (
    dataset_json,
    iso_seconds,
    parse_training_type,
    source_kind_out,
    training_type_out,
    training_type_pb,
)

router = APIRouter(tags=["importer"], responses=error_docs(403))

TIMEOUT = 120.0
HfToken = Annotated[str | None, Header(
    alias="X-HF-Token", include_in_schema=True, max_length=lim.MAX_HF_TOKEN, pattern=lim.HF_TOKEN_PATTERN,
    description="HuggingFace token for gated or private datasets (visible ASCII), used for this request only")]
BODY_ERRORS = error_docs(413, 415)
DatasetName = Annotated[str, Field(min_length=1, max_length=lim.MAX_DATASET_NAME,
                                   description="Hub repo id (org/name), or a local directory or file")]
SplitName = Annotated[str, Field(max_length=lim.MAX_SPLIT)]


def _stub(request: Request) -> Any:
    return request.app.state.clients.importer


def _md(token: str | None) -> list[tuple[str, str]]:
    return [("x-hf-token", token.strip())] if token and token.strip() else []


def _features(fs: Any) -> list[dict[str, str]]:
    return [{"name": f.name, "dtype": f.dtype} for f in fs]


def progress_json(job: Job) -> dict[str, Any]:
    """An import's progress as REST shows it (the seeds' shape), from its catalog job."""
    p, complete = job.progress, job.phase is Phase.COMPLETE
    return {
        "import_id": job.id,
        "status": job.phase.status,
        "progress": 100.0 if complete else round(p.percent, 2),
        "message": job.message,
        "samples_processed": p.rows_done,
        "total_samples": p.rows_total,
        "bytes_downloaded": p.bytes_done,
        "bytes_total": p.bytes_total,
        "dataset_id": (job.dataset_id or None) if complete else None,
        "error": job.error or None,
        "rows_skipped": job.rows_skipped,
        "skip_reasons": list(job.skip_reasons),
        "dataset_name": _dataset_name(job),
        # A job whose worker stopped: which attempt it is on, and when another worker may take it up.
        "attempt": job.attempt,
        "retry_at": iso_seconds(job.retry_at) if job.stalled else None,
    }


def _dataset_name(job: Job) -> str:
    """The repo id or path the import reads, as its stored request names it."""
    try:
        return str(json.loads(job.request_json).get("dataset_name", "")) if job.request_json else ""
    except (ValueError, AttributeError):
        return ""


# -- request bodies ----------------------------------------------------------------------------------------------

class FieldMappingIn(BaseModel):
    """One entry of the list shape: the suggestion list passed back as it came."""

    source_field: str = Field(max_length=lim.MAX_SPEC, description="Source column, spec or dot-path; blank = "
                              "unmapped")
    target_field: str = Field(min_length=1, max_length=lim.MAX_KEY, description="Canonical field, e.g. prompt")


_MAPPING_LIST: TypeAdapter[list[FieldMappingIn]] = TypeAdapter(list[FieldMappingIn])


def mappings_dict(value: Any) -> dict[str, str] | None:
    """`field_mappings` in either shape as {target: source}.

    The object shape is Ferry's; the list shape is the seeds' (the suggestion list passed back). In a list the
    first entry for a target wins (older clients listed every candidate, best first) and blank sources are left
    out, as forms send them for unused fields.
    """
    if value is None:
        return None
    if not isinstance(value, dict | list):
        raise ValueError("field_mappings must be an object {target: source} or a list of "
                         "{source_field, target_field}")
    if len(value) > lim.MAX_ENTRIES:
        raise ValueError(f"field_mappings has more than {lim.MAX_ENTRIES} entries")
    if isinstance(value, list):
        return _from_list(value)
    for target, source in value.items():
        if not isinstance(target, str) or len(target) > lim.MAX_KEY:
            raise ValueError(f"field_mappings: target {short(target)} is longer than {lim.MAX_KEY} characters")
        if isinstance(source, str) and len(source) > lim.MAX_SPEC:
            raise ValueError(f"field_mappings.{short(target)}: the source is longer than {lim.MAX_SPEC} characters")
    return value


def _from_list(value: list[Any]) -> dict[str, str]:
    try:
        entries = _MAPPING_LIST.validate_python(value)
    except ValidationError as exc:
        e = exc.errors()[0]
        raise ValueError(f"field_mappings.{'.'.join(map(str, e['loc']))}: {e['msg']}") from None
    out: dict[str, str] = {}
    for m in entries:
        if m.source_field.strip() and m.target_field not in out:
            out[m.target_field] = m.source_field
    return out


def _as_dict(value: dict[str, str] | list[FieldMappingIn] | None) -> dict[str, str]:
    """The validators already turned lists into objects; this only narrows the type."""
    return value if isinstance(value, dict) else {}


MAPPINGS_DOC = ("{target: source} or [{source_field, target_field}, ...]; a source is a column, a spec "
                "(docs/importer-mapping.md) or a dot-path into nested columns")


class SuggestIn(BaseModel):
    dataset_name: DatasetName
    training_type: str = Field(max_length=lim.MAX_WORD)
    config: SplitName | None = None
    subset: SplitName | None = None
    split: SplitName | None = None

    @field_validator("training_type")
    @classmethod
    def _training_type(cls, v: str) -> TrainingType:
        return parse_training_type(v) or _missing_tt()


class _MappedIn(BaseModel):
    """What preview and import share: the source, and the mapping in either shape with its training type."""

    dataset_name: DatasetName
    split: SplitName | None = None
    subset: SplitName | None = None
    config: SplitName | None = None
    field_mappings: dict[str, str] | list[FieldMappingIn] | None = Field(None, description=MAPPINGS_DOC)
    training_type: str | None = Field(None, max_length=lim.MAX_WORD, description="SL, DPO or CHAT; inferred from "
                                      "the mapping's targets when absent")

    @field_validator("field_mappings", mode="before")
    @classmethod
    def _mappings(cls, v: Any) -> Any:
        return mappings_dict(v)

    @field_validator("training_type")
    @classmethod
    def _training_type(cls, v: str | None) -> TrainingType | None:
        return parse_training_type(v)


class PreviewIn(_MappedIn):
    num_samples: int = Field(10, ge=1, le=100)


class ImportIn(_MappedIn):
    splits: list[SplitName] | None = Field(None, max_length=lim.MAX_ENTRIES)
    filters: list[dict[str, Any]] | None = Field(None, description="Row filters: not supported yet; an empty "
                                                                   "list is accepted")
    max_samples: int | None = Field(None, gt=0, le=lim.INT64_MAX)
    name: str | None = Field(None, max_length=lim.MAX_NAME)
    revision: str | None = Field(None, max_length=lim.MAX_NAME)
    wait_seconds: int | None = Field(None, ge=0, le=600, description="Hold the answer until the import ends, "
                                     "at most this long (default FERRY_IMPORT_WAIT_SECONDS; 0 answers at once)")

    @field_validator("filters")
    @classmethod
    def _filters(cls, v: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if v:
            raise ValueError("row filters are not supported by this Ferry yet; send no filters (or an empty list)")
        return v


def _missing_tt() -> TrainingType:
    raise ValueError("training_type is required: one of SL, DPO, CHAT")


def _config(a: str | None, b: str | None) -> str:
    if a and b and a != b:
        raise HTTPException(status_code=400, detail=f"config {short(a)} and subset {short(b)} disagree (they are "
                            "synonyms)")
    return a or b or ""


# -- routes ------------------------------------------------------------------------------------------------------

@router.get("/api/huggingface/search")
def search(
    request: Request,
    x_hf_token: HfToken = None,
    query: Annotated[str, Query(max_length=lim.MAX_QUERY)] = "",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    sort: Annotated[str, Query(max_length=lim.MAX_WORD)] = "",
    task_category: Annotated[str, Query(max_length=lim.MAX_WORD)] = "",
    language: Annotated[str, Query(max_length=lim.MAX_WORD)] = "",
    size_category: Annotated[str, Query(max_length=lim.MAX_WORD)] = "",
    author: Annotated[str, Query(max_length=lim.MAX_REPO_ID)] = "",
) -> dict[str, Any]:
    resp = _stub(request).SearchDatasets(pb.SearchDatasetsRequest(
        query=query, limit=limit, sort=sort, task_category=task_category, language=language,
        size_category=size_category, author=author), metadata=_md(x_hf_token), timeout=TIMEOUT)
    return {"datasets": [{
        "name": d.name, "description": d.description, "downloads": d.downloads, "likes": d.likes,
        "tags": list(d.tags), "author": d.author, "last_modified": d.last_modified or None, "gated": d.gated,
        "private": d.private} for d in resp.datasets]}


@router.get("/api/huggingface/info/{dataset_name:path}")
def info(request: Request, dataset_name: Annotated[str, Path(max_length=lim.MAX_DATASET_NAME)],
         x_hf_token: HfToken = None, config: Annotated[str | None, Query(max_length=lim.MAX_SPLIT)] = None,
         subset: Annotated[str | None, Query(max_length=lim.MAX_SPLIT)] = None,
         revision: Annotated[str, Query(max_length=lim.MAX_NAME)] = "") -> dict[str, Any]:
    r = _stub(request).GetDatasetInfo(pb.GetDatasetInfoRequest(
        dataset_name=dataset_name, config=_config(config, subset), revision=revision),
        metadata=_md(x_hf_token), timeout=TIMEOUT)
    split_info = [{"name": s.name, "num_rows": s.num_rows if s.num_rows >= 0 else None,
                   "num_bytes": s.num_bytes if s.num_bytes >= 0 else None, "num_files": s.num_files,
                   "formats": list(s.formats)} for s in r.splits]
    return {
        "dataset_name": r.dataset_name,
        "revision": r.revision,
        "configs": list(r.configs),
        "config": r.config,
        "subset": r.config,
        "default_config": r.default_config or None,
        "config_required": r.config_required,
        "splits": [s.name for s in r.splits],
        "split_info": split_info,
        "num_rows": {s["name"]: s["num_rows"] for s in split_info},
        "size_in_bytes": (sum(s["num_bytes"] for s in split_info)
                          if split_info and all(s["num_bytes"] is not None for s in split_info) else None),
        "features": {f.name: f.dtype for f in r.features},
        "schema": _features(r.features),
        "field_paths": list(r.field_paths),
        "card": {"license": r.card.license or None, "task_categories": list(r.card.task_categories),
                 "size_categories": list(r.card.size_categories), "languages": list(r.card.languages),
                 "pretty_name": r.card.pretty_name or None},
        "description": r.description,
        "gated": r.gated,
        "source_kind": source_kind_out(r.source_kind).value.lower(),
        "notes": list(r.notes),
    }


@router.get("/api/huggingface/suggest-mapping")
def suggest_mapping_get(
    request: Request,
    dataset_name: Annotated[str, Query(min_length=1, max_length=lim.MAX_DATASET_NAME)],
    training_type: Annotated[str, Query(max_length=lim.MAX_WORD)],
    x_hf_token: HfToken = None,
    config: Annotated[str | None, Query(max_length=lim.MAX_SPLIT)] = None,
    subset: Annotated[str | None, Query(max_length=lim.MAX_SPLIT)] = None,
    split: Annotated[str | None, Query(max_length=lim.MAX_SPLIT)] = None,
) -> dict[str, Any]:
    """The same as the POST, with query parameters (older Thinker modals call it so)."""
    try:
        body = SuggestIn(dataset_name=dataset_name, training_type=training_type, config=config, subset=subset,
                         split=split)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("query", *e["loc"])} for e in exc.errors()]) from None
    return suggest_mapping(request, body, x_hf_token)


@router.post("/api/huggingface/suggest-mapping", responses=BODY_ERRORS)
def suggest_mapping(request: Request, body: SuggestIn, x_hf_token: HfToken = None) -> dict[str, Any]:
    r = _stub(request).SuggestMapping(pb.SuggestMappingRequest(
        dataset_name=body.dataset_name, training_type=training_type_pb(body.training_type),
        config=_config(body.config, body.subset), split=body.split or ""), metadata=_md(x_hf_token),
        timeout=TIMEOUT)
    return {
        "suggestions": [{"source_field": s.source_field, "target_field": s.target_field,
                         "confidence": round(s.confidence, 3), "reason": s.reason} for s in r.suggestions],
        "field_mappings": {s.target_field: s.source_field for s in r.suggestions},
        "features": _features(r.features),
        "config": r.config,
        "split": r.split,
    }


@router.post("/api/huggingface/preview", responses=BODY_ERRORS)
def preview(request: Request, body: PreviewIn, x_hf_token: HfToken = None) -> dict[str, Any]:
    r = _stub(request).PreviewDataset(pb.PreviewDatasetRequest(
        dataset_name=body.dataset_name, split=body.split or "", config=_config(body.config, body.subset),
        num_samples=body.num_samples, field_mappings=_as_dict(body.field_mappings),
        training_type=training_type_pb(body.training_type)), metadata=_md(x_hf_token), timeout=TIMEOUT)
    raw = [json.loads(s) for s in r.raw_samples_json]
    return {
        "dataset_name": r.dataset_name,
        "split": r.split,
        "config": r.config,
        "revision": r.revision,
        "training_type": training_type_out(r.training_type),
        "samples": [json.loads(s) for s in r.samples_json],
        "raw_samples": raw,
        # Thinker reads the source rows as a table.
        "columns": [f.name for f in r.features],
        "rows": raw,
        "problems": [{"index": p.index, "problems": list(p.problems)} for p in r.problems],
        "total_samples": r.total_samples if r.total_samples >= 0 else None,
        "field_mappings": dict(r.field_mappings),
        "features": _features(r.features),
    }


@router.post("/api/huggingface/import", status_code=202, responses=BODY_ERRORS)
async def start_import(request: Request, body: ImportIn, x_hf_token: HfToken = None,
                       idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Starts the import; then holds the answer until it ends, at most `wait_seconds`.

    200 with `dataset` when it completed in time, 202 with `dataset_id: null` when it is still running
    (follow `import-progress`), 422 when it failed and 409 when it was cancelled in the meantime.
    """
    splits = list(body.splits or [])
    if body.split and body.split not in splits:
        splits.insert(0, body.split)
    stub = _stub(request)
    req = pb.StartImportRequest(
        dataset_name=body.dataset_name, splits=splits, config=_config(body.config, body.subset),
        training_type=training_type_pb(body.training_type), field_mappings=_as_dict(body.field_mappings),
        max_samples=body.max_samples or 0, name=body.name or "", revision=body.revision or "",
        idempotency_key=scoped_idempotency_key(request, idempotency_key))
    r = await run_in_threadpool(stub.StartImport, req, metadata=_md(x_hf_token), timeout=TIMEOUT)
    wait = request.app.state.config.import_wait_seconds if body.wait_seconds is None else body.wait_seconds
    last = None
    if wait > 0 and waits.limiter(request, JobKind.IMPORT.value).available_tokens >= 1:
        last = await waits.last_state(request, JobKind.IMPORT, r.import_id, float(wait))
    if last is None or not last.phase.terminal:
        job = last or wire.job_from_pb(r.job)
        return JSONResponse(status_code=202, content={"import_id": r.import_id, "status": job.phase.status,
                                                      "dataset_id": None, "dataset": None})
    return await _ended_import(request, last)


async def _ended_import(request: Request, job: Job) -> JSONResponse:
    """The answer for an import that ended while the request waited: its dataset, or why it has none."""
    answer: dict[str, Any] = {**progress_json(job), "dataset": None}
    if job.phase is Phase.COMPLETE:
        ds = await run_in_threadpool(request.app.state.clients.catalog.GetDataset,
                                     cpb.GetDatasetRequest(dataset_id=job.dataset_id), timeout=TIMEOUT)
        return JSONResponse(status_code=200, content={**answer, "dataset": dataset_json(ds.dataset)})
    if job.phase is Phase.CANCELLED:
        return JSONResponse(status_code=409, content={**answer, "code": "ABORTED",
                                                      "detail": f"import {job.id} was cancelled"})
    return JSONResponse(status_code=422, content={**answer, "code": "FAILED_PRECONDITION",
                                                  "detail": f"import {job.id} failed: {job.error or job.message}"})


@router.get("/api/huggingface/import-progress/{import_id}")
def import_progress(request: Request, import_id: JobIdPath) -> dict[str, Any]:
    r = _stub(request).GetImportProgress(pb.GetImportProgressRequest(import_id=import_id), timeout=TIMEOUT)
    return progress_json(wire.job_from_pb(r.job))


@router.get("/api/huggingface/import-progress/{import_id}/events")
async def import_events(request: Request, import_id: JobIdPath) -> Response:
    """Server-Sent Events: one `data: {json}` per change, ending after a terminal status."""
    return await waits.events(request, JobKind.IMPORT, import_id, progress_json)


@router.post("/api/huggingface/import/{import_id}/cancel")
def cancel_import(request: Request, import_id: JobIdPath) -> dict[str, Any]:
    r = _stub(request).CancelImport(pb.CancelImportRequest(import_id=import_id), timeout=TIMEOUT)
    return progress_json(wire.job_from_pb(r.job))


@router.get("/api/huggingface/popular")
def popular(request: Request) -> dict[str, Any]:
    r = _stub(request).ListPopularDatasets(pb.ListPopularDatasetsRequest(), timeout=TIMEOUT)
    return {"categories": [{"name": c.name, "datasets": [{
        "name": d.name, "description": d.description, "samples": d.samples, "recommended": d.recommended,
        "subset": d.subset or None, "training_type": training_type_out(d.training_type),
        "splits": list(d.splits)} for d in c.datasets]} for c in r.categories]}
