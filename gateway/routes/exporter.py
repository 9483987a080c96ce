"""REST for the exporter: HTTP <-> ferry.exporter.v1.ExporterService, nothing more.

Shape checks (types, train_split range) are pydantic's (422 naming the field);
everything else the exporter decides (INVALID_ARGUMENT -> 400, NOT_FOUND -> 404).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import grpc
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from ferry.exporter.v1 import exporter_pb2 as pb
from gateway.routes.catalog import training_type_str
from gateway.sse import watch_as_sse

router = APIRouter(tags=["exporter"])

TIMEOUT = 60.0
STATUS = {pb.EXPORT_STATUS_QUEUED: "queued", pb.EXPORT_STATUS_EXPORTING: "exporting",
          pb.EXPORT_STATUS_SAVING: "saving", pb.EXPORT_STATUS_COMPLETE: "complete",
          pb.EXPORT_STATUS_ERROR: "error", pb.EXPORT_STATUS_CANCELLED: "cancelled"}


def _stub(request: Request) -> Any:
    return request.app.state.clients.exporter


def file_url(export_id: str, name: str) -> str:
    return f"/api/exports/{quote(export_id, safe='')}/files/{quote(name, safe='/')}"


def export_json(e: pb.Export) -> dict[str, Any]:
    p = e.progress
    return {
        "export_id": e.export_id,
        "dataset_id": e.dataset_id,
        "format": e.format,
        "output_filename": e.output_filename,
        "status": STATUS.get(e.status, "queued"),
        "progress": round(p.percent, 2),
        "progress_detail": {"rows_done": p.rows_done, "rows_total": p.rows_total, "bytes_done": p.bytes_done,
                            "bytes_total": p.bytes_total, "rows_per_second": round(p.rows_per_second, 1),
                            "bytes_per_second": round(p.bytes_per_second, 1), "percent": round(p.percent, 2)},
        "message": e.message,
        "error": e.error or None,
        # `url` streams the file through the gateway; `url + "/presigned"` answers an object-store URL.
        "files": [{"name": f.name, "size": f.size, "sha256": f.sha256, "url": file_url(e.export_id, f.name)}
                  for f in e.files],
        "cancel_requested": e.cancel_requested,
        "created_at": e.created_at or None,
        "finished_at": e.finished_at or None,
    }


def _params(raw: dict[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in (raw or {}).items():
        if v is None:
            continue
        out[str(k)] = v if isinstance(v, str) else json.dumps(v)
    return out


class ExportIn(BaseModel):
    dataset_id: int = Field(gt=0)
    format: str = Field(min_length=1)
    output_filename: str
    system_message: str | None = None
    train_split: float | None = Field(default=None, gt=0, le=1)
    additional_params: dict[str, Any] | None = None


class CsvExportIn(BaseModel):
    output_filename: str | None = None
    system_message: str | None = None
    train_split: float | None = Field(default=None, gt=0, le=1)
    additional_params: dict[str, Any] | None = None


def _start(request: Request, req: pb.StartExportRequest) -> dict[str, Any]:
    r = _stub(request).StartExport(req, timeout=TIMEOUT)
    body = export_json(r.export)
    return {"export_id": r.export_id, "status": STATUS.get(r.status, "queued"), "export": body}


@router.get("/api/export/formats")
def list_formats(request: Request) -> dict[str, Any]:
    r = _stub(request).ListFormats(pb.ListFormatsRequest(), timeout=TIMEOUT)
    return {"formats": [{
        "name": f.name, "description": f.description, "file_extension": f.file_extension,
        "features": list(f.features), "use_cases": list(f.use_cases),
        "training_types": [training_type_str(t) for t in f.training_types],
        "params": [{"name": p.name, "description": p.description, "default": p.default_value or None,
                    "choices": list(p.choices)} for p in f.params],
    } for f in r.formats]}


@router.post("/api/datasets/export", status_code=202)
def start_export(request: Request, body: ExportIn) -> dict[str, Any]:
    req = pb.StartExportRequest(dataset_id=body.dataset_id, format=body.format,
                                output_filename=body.output_filename, additional_params=_params(body.additional_params))
    if body.system_message is not None:
        req.system_message = body.system_message
    if body.train_split is not None:
        req.train_split = body.train_split
    return _start(request, req)


@router.post("/api/datasets/{dataset_id}/export-csv", status_code=202)
def start_csv_export(request: Request, dataset_id: int, body: CsvExportIn | None = None) -> dict[str, Any]:
    body = body or CsvExportIn()
    req = pb.StartExportRequest(dataset_id=dataset_id, format="csv",
                                output_filename=body.output_filename or f"dataset_{dataset_id}",
                                additional_params=_params(body.additional_params))
    if body.system_message is not None:
        req.system_message = body.system_message
    if body.train_split is not None:
        req.train_split = body.train_split
    return _start(request, req)


@router.get("/api/exports")
def list_exports(request: Request, page_size: int = Query(50, ge=1, le=200), page_token: str = "") -> dict[str, Any]:
    r = _stub(request).ListExports(pb.ListExportsRequest(page_size=page_size, page_token=page_token),
                                   timeout=TIMEOUT)
    return {"exports": [export_json(e) for e in r.exports], "next_page_token": r.next_page_token or None}


@router.get("/api/exports/{export_id}")
def get_export(request: Request, export_id: str) -> dict[str, Any]:
    return export_json(_stub(request).GetExport(pb.GetExportRequest(export_id=export_id), timeout=TIMEOUT).export)


@router.post("/api/exports/{export_id}/cancel")
def cancel_export(request: Request, export_id: str) -> dict[str, Any]:
    r = _stub(request).CancelExport(pb.CancelExportRequest(export_id=export_id), timeout=TIMEOUT)
    return export_json(r.export)


@router.get("/api/exports/{export_id}/events")
def export_events(request: Request, export_id: str) -> StreamingResponse:
    """Server-Sent Events: one `data: {json}` per change, ending after a terminal status."""
    call = _stub(request).WatchExport(pb.WatchExportRequest(export_id=export_id))
    return watch_as_sse(call, lambda msg: export_json(msg.export), f"export {export_id}", request)


@router.get("/api/exports/{export_id}/files/{name:path}/presigned")
def presigned_url(request: Request, export_id: str, name: str,
                  expires_seconds: int = Query(0, ge=0, le=604800)) -> dict[str, Any]:
    r = _stub(request).GetFileUrl(pb.GetFileUrlRequest(export_id=export_id, name=name,
                                                       expires_seconds=expires_seconds), timeout=TIMEOUT)
    return {"name": name, "url": r.url, "expires_seconds": r.expires_seconds}


@router.get("/api/exports/{export_id}/files/{name:path}")
def download_file(request: Request, export_id: str, name: str) -> StreamingResponse:
    call = _stub(request).DownloadFile(pb.DownloadFileRequest(export_id=export_id, name=name))
    try:
        first = next(call)  # NOT_FOUND / FAILED_PRECONDITION become statuses before any byte is sent
    except StopIteration:
        raise HTTPException(status_code=502, detail="the exporter sent no file header") from None
    except grpc.RpcError:
        call.cancel()
        raise
    f = first.file

    def body() -> Iterator[bytes]:
        try:
            for msg in call:
                yield msg.data
        finally:
            call.cancel()

    base = f.name.rsplit("/", 1)[-1]
    ascii_name = base.encode("ascii", "replace").decode().replace("?", "_")
    headers = {
        "Content-Length": str(f.size),
        "Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(base)}",
        "X-Checksum-SHA256": f.sha256,
    }
    media = "application/octet-stream"
    for ext, ctype in ((".jsonl", "application/jsonl"), (".json", "application/json"),
                       (".csv", "text/csv; charset=utf-8"), (".txt", "text/plain; charset=utf-8"),
                       (".md", "text/markdown; charset=utf-8"), (".py", "text/x-python; charset=utf-8")):
        if base.endswith(ext):
            media = ctype
            break
    return StreamingResponse(body(), media_type=media, headers=headers)
