"""REST for the importer (/api/huggingface/*): HTTP <-> ferry.importer.v1.ImporterService, nothing more.

Every route forwards the caller's `X-HF-Token` header as gRPC metadata `x-hf-token` (never logged).
`subset` and `config` are synonyms everywhere.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, field_validator

from ferry.catalog.v1 import catalog_pb2 as cpb
from ferry.importer.v1 import importer_pb2 as pb
from gateway.routes.catalog import training_type_str
from gateway.sse import watch_as_sse

router = APIRouter(tags=["importer"])

TIMEOUT = 120.0
HfToken = Annotated[str | None, Header(alias="X-HF-Token", include_in_schema=True)]


def _stub(request: Request) -> Any:
    return request.app.state.clients.importer


def _md(token: str | None) -> list[tuple[str, str]]:
    return [("x-hf-token", token.strip())] if token and token.strip() else []


def _tt(value: str | None) -> Any:
    if not value:
        return cpb.TRAINING_TYPE_UNSPECIFIED
    return int(cpb.TrainingType.Value(f"TRAINING_TYPE_{value}"))


def _check_tt(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    v = str(value).strip().upper()
    if v not in ("SL", "DPO", "CHAT"):
        raise ValueError("training_type must be one of SL, DPO, CHAT")
    return v


def _features(fs: Any) -> list[dict[str, str]]:
    return [{"name": f.name, "dtype": f.dtype} for f in fs]


def progress_json(p: pb.ImportProgress) -> dict[str, Any]:
    return {
        "import_id": p.import_id,
        "status": p.status,
        "progress": round(p.progress, 2),
        "message": p.message,
        "samples_processed": p.samples_processed,
        "total_samples": p.total_samples,
        "bytes_downloaded": p.bytes_downloaded,
        "bytes_total": p.bytes_total,
        "dataset_id": p.dataset_id or None,
        "error": p.error or None,
        "rows_skipped": p.rows_skipped,
        "skip_reasons": list(p.skip_reasons),
        "dataset_name": p.dataset_name,
    }


# -- request bodies ----------------------------------------------------------------------------------------------

class SuggestIn(BaseModel):
    dataset_name: str = Field(min_length=1)
    training_type: str
    config: str | None = None
    subset: str | None = None
    split: str | None = None

    @field_validator("training_type")
    @classmethod
    def _training_type(cls, v: str) -> str:
        return _check_tt(v) or _missing_tt()


class PreviewIn(BaseModel):
    dataset_name: str = Field(min_length=1)
    split: str | None = None
    subset: str | None = None
    config: str | None = None
    num_samples: int = Field(10, ge=1, le=100)
    field_mappings: dict[str, str] | None = None
    training_type: str | None = None

    @field_validator("training_type")
    @classmethod
    def _training_type(cls, v: str | None) -> str | None:
        return _check_tt(v)


class ImportIn(BaseModel):
    dataset_name: str = Field(min_length=1)
    split: str | None = None
    splits: list[str] | None = None
    subset: str | None = None
    config: str | None = None
    training_type: str
    field_mappings: dict[str, str] | None = None
    max_samples: int | None = Field(None, gt=0)
    name: str | None = None
    revision: str | None = None

    @field_validator("training_type")
    @classmethod
    def _training_type(cls, v: str) -> str:
        return _check_tt(v) or _missing_tt()


def _missing_tt() -> str:
    raise ValueError("training_type is required: one of SL, DPO, CHAT")


def _config(a: str | None, b: str | None) -> str:
    if a and b and a != b:
        raise HTTPException(status_code=400, detail=f"config {a!r} and subset {b!r} disagree (they are synonyms)")
    return a or b or ""


# -- routes ------------------------------------------------------------------------------------------------------

@router.get("/api/huggingface/search")
def search(
    request: Request,
    x_hf_token: HfToken = None,
    query: str = "",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    sort: str = "",
    task_category: str = "",
    language: str = "",
    size_category: str = "",
    author: str = "",
) -> dict[str, Any]:
    resp = _stub(request).SearchDatasets(pb.SearchDatasetsRequest(
        query=query, limit=limit, sort=sort, task_category=task_category, language=language,
        size_category=size_category, author=author), metadata=_md(x_hf_token), timeout=TIMEOUT)
    return {"datasets": [{
        "name": d.name, "description": d.description, "downloads": d.downloads, "likes": d.likes,
        "tags": list(d.tags), "author": d.author, "last_modified": d.last_modified or None, "gated": d.gated,
        "private": d.private} for d in resp.datasets]}


@router.get("/api/huggingface/info/{dataset_name:path}")
def info(request: Request, dataset_name: str, x_hf_token: HfToken = None, config: str | None = None,
         subset: str | None = None, revision: str = "") -> dict[str, Any]:
    r = _stub(request).GetDatasetInfo(pb.GetDatasetInfoRequest(
        dataset_name=dataset_name, config=_config(config, subset), revision=revision),
        metadata=_md(x_hf_token), timeout=TIMEOUT)
    return {
        "dataset_name": r.dataset_name,
        "revision": r.revision,
        "configs": list(r.configs),
        "config": r.config,
        "subset": r.config,
        "default_config": r.default_config or None,
        "config_required": r.config_required,
        "splits": [{"name": s.name, "num_rows": s.num_rows if s.num_rows >= 0 else None,
                    "num_bytes": s.num_bytes if s.num_bytes >= 0 else None, "num_files": s.num_files,
                    "formats": list(s.formats)} for s in r.splits],
        "features": _features(r.features),
        "card": {"license": r.card.license or None, "task_categories": list(r.card.task_categories),
                 "size_categories": list(r.card.size_categories), "languages": list(r.card.languages),
                 "pretty_name": r.card.pretty_name or None},
        "description": r.description,
        "gated": r.gated,
        "source_kind": cpb.SourceKind.Name(r.source_kind).removeprefix("SOURCE_KIND_").lower(),
        "notes": list(r.notes),
    }


@router.post("/api/huggingface/suggest-mapping")
def suggest_mapping(request: Request, body: SuggestIn, x_hf_token: HfToken = None) -> dict[str, Any]:
    r = _stub(request).SuggestMapping(pb.SuggestMappingRequest(
        dataset_name=body.dataset_name, training_type=_tt(body.training_type),
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


@router.post("/api/huggingface/preview")
def preview(request: Request, body: PreviewIn, x_hf_token: HfToken = None) -> dict[str, Any]:
    r = _stub(request).PreviewDataset(pb.PreviewDatasetRequest(
        dataset_name=body.dataset_name, split=body.split or "", config=_config(body.config, body.subset),
        num_samples=body.num_samples, field_mappings=body.field_mappings or {},
        training_type=_tt(body.training_type)), metadata=_md(x_hf_token), timeout=TIMEOUT)
    return {
        "dataset_name": r.dataset_name,
        "split": r.split,
        "config": r.config,
        "revision": r.revision,
        "samples": [json.loads(s) for s in r.samples_json],
        "raw_samples": [json.loads(s) for s in r.raw_samples_json],
        "problems": [{"index": p.index, "problems": list(p.problems)} for p in r.problems],
        "total_samples": r.total_samples if r.total_samples >= 0 else None,
        "field_mappings": dict(r.field_mappings),
        "features": _features(r.features),
    }


@router.post("/api/huggingface/import", status_code=202)
def start_import(request: Request, body: ImportIn, x_hf_token: HfToken = None) -> dict[str, Any]:
    splits = list(body.splits or [])
    if body.split and body.split not in splits:
        splits.insert(0, body.split)
    r = _stub(request).StartImport(pb.StartImportRequest(
        dataset_name=body.dataset_name, splits=splits, config=_config(body.config, body.subset),
        training_type=_tt(body.training_type), field_mappings=body.field_mappings or {},
        max_samples=body.max_samples or 0, name=body.name or "", revision=body.revision or ""),
        metadata=_md(x_hf_token), timeout=TIMEOUT)
    return {"import_id": r.import_id, "status": r.status}


@router.get("/api/huggingface/import-progress/{import_id}")
def import_progress(request: Request, import_id: str) -> dict[str, Any]:
    r = _stub(request).GetImportProgress(pb.GetImportProgressRequest(import_id=import_id), timeout=TIMEOUT)
    return progress_json(r.progress)


@router.get("/api/huggingface/import-progress/{import_id}/events")
def import_events(request: Request, import_id: str) -> StreamingResponse:
    """Server-Sent Events: one `data: {json}` per change, ending after a terminal status."""
    call = _stub(request).WatchImport(pb.WatchImportRequest(import_id=import_id))
    return watch_as_sse(call, lambda msg: progress_json(msg.progress), f"import {import_id}", request)


@router.post("/api/huggingface/import/{import_id}/cancel")
def cancel_import(request: Request, import_id: str) -> dict[str, Any]:
    r = _stub(request).CancelImport(pb.CancelImportRequest(import_id=import_id), timeout=TIMEOUT)
    return progress_json(r.progress)


@router.get("/api/huggingface/popular")
def popular(request: Request) -> dict[str, Any]:
    r = _stub(request).ListPopularDatasets(pb.ListPopularDatasetsRequest(), timeout=TIMEOUT)
    return {"categories": [{"name": c.name, "datasets": [{
        "name": d.name, "description": d.description, "samples": d.samples, "recommended": d.recommended,
        "subset": d.subset or None, "training_type": training_type_str(d.training_type),
        "splits": list(d.splits)} for d in c.datasets]} for c in r.categories]}
