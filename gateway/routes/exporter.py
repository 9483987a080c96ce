"""REST for the exporter: HTTP <-> ferry.exporter.v1.ExporterService, nothing more.

Shape checks (types, train_split range) are pydantic's (422 naming the field);
everything else the exporter decides (INVALID_ARGUMENT -> 400, NOT_FOUND -> 404).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import quote

import grpc
from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field, field_validator

from ferry import wire
from ferry.exporter.v1 import exporter_pb2 as pb
from ferry.jobs import Job, JobKind, Phase
from ferry.media import content_type
from gateway import limits as lim
from gateway import waits
from gateway.auth import IdempotencyKey, scoped_idempotency_key
from gateway.errors import error_docs
from gateway.limits import DatasetIdPath, JobIdPath, short
from gateway.routes.catalog import iso_seconds, training_type_out

router = APIRouter(tags=["exporter"])

TIMEOUT = 60.0
FileName = Annotated[str, Path(max_length=lim.MAX_FILENAME + 100, description="An exported file's name")]
def _stub(request: Request) -> Any:
    return request.app.state.clients.exporter


def file_url(export_id: str, name: str) -> str:
    return f"/api/exports/{quote(export_id, safe='')}/files/{quote(name, safe='/')}"


def export_json(e: pb.Export) -> dict[str, Any]:
    """An export as REST shows it, from the exporter's view (format, output name) and its catalog job."""
    return _export_json(e, wire.job_from_pb(e.job))


def _export_json(e: pb.Export, job: Job) -> dict[str, Any]:
    p = job.progress
    return {
        "export_id": job.id,
        "dataset_id": job.dataset_id,
        "format": e.format,
        "output_filename": e.output_filename,
        "status": job.phase.status,
        "progress": round(p.percent, 2),
        "progress_detail": {"rows_done": p.rows_done, "rows_total": p.rows_total, "bytes_done": p.bytes_done,
                            "bytes_total": p.bytes_total, "rows_per_second": round(p.rows_per_second, 1),
                            "bytes_per_second": round(p.bytes_per_second, 1), "percent": round(p.percent, 2)},
        "message": job.message,
        "error": job.error or None,
        # `url` streams the file through the gateway; `url + "/presigned"` answers an object-store URL.
        "files": [{"name": f.name, "size": f.size, "sha256": f.sha256, "url": file_url(job.id, f.name)}
                  for f in job.files],
        "cancel_requested": job.cancel_requested,
        "attempt": job.attempt,
        "retry_at": iso_seconds(job.retry_at) if job.stalled else None,
        "created_at": iso_seconds(job.created_at),
        "finished_at": iso_seconds(job.finished_at),
    }


def _params(raw: dict[str, Any] | None) -> dict[str, str]:
    """additional_params as the proto's map<string, string>: strings as they are, anything else as JSON."""
    out: dict[str, str] = {}
    for k, v in (raw or {}).items():
        if v is None:
            continue
        out[str(k)] = v if isinstance(v, str) else json.dumps(v)
    return out


def _check_params(params: dict[str, str]) -> str | None:
    """Why `params` (as _params made them) are out of bounds, or None."""
    if len(params) > lim.MAX_ENTRIES:
        return f"at most {lim.MAX_ENTRIES} parameters"
    for k, v in params.items():
        if len(k) > lim.MAX_KEY:
            return f"parameter name {short(k)} is longer than {lim.MAX_KEY} characters"
        if len(v) > lim.MAX_SPEC:
            return f"the value of {short(k)} is longer than {lim.MAX_SPEC} characters"
    return None


PARAMS_DOC = f"Format parameters (see /api/export/formats); at most {lim.MAX_ENTRIES}, each value {lim.MAX_SPEC} " \
             "characters at most"


class CsvExportIn(BaseModel):
    output_filename: str | None = Field(default=None, max_length=lim.MAX_FILENAME)
    system_message: str | None = Field(default=None, max_length=lim.MAX_TEXT)
    train_split: float | None = Field(default=None, gt=0, le=1)
    additional_params: dict[str, Any] | None = Field(default=None, description=PARAMS_DOC)

    @field_validator("additional_params")
    @classmethod
    def _bounded(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        problem = _check_params(_params(v))
        if problem:
            raise ValueError(problem)
        return v


class ExportIn(CsvExportIn):
    dataset_id: int = Field(gt=0, le=lim.INT64_MAX)
    format: str = Field(min_length=1, max_length=lim.MAX_WORD)
    output_filename: str = Field(max_length=lim.MAX_FILENAME)  # type: ignore[assignment]


def _export_request(dataset_id: int, format: str, output_filename: str, system_message: str | None,
                    train_split: float | None, params: dict[str, Any] | None) -> pb.StartExportRequest:
    """The one StartExportRequest of the three REST forms; unset optionals stay unset (the proto's presence)."""
    req = pb.StartExportRequest(dataset_id=dataset_id, format=format, output_filename=output_filename,
                                additional_params=_params(params))
    if system_message is not None:
        req.system_message = system_message
    if train_split is not None:
        req.train_split = train_split
    return req


def _start(request: Request, req: pb.StartExportRequest, key: str | None) -> dict[str, Any]:
    req.idempotency_key = scoped_idempotency_key(request, key)
    r = _stub(request).StartExport(req, timeout=TIMEOUT)
    body = export_json(r.export)
    return {"export_id": body["export_id"], "status": body["status"], "export": body}


@router.get("/api/export/formats")
def list_formats(request: Request) -> dict[str, Any]:
    r = _stub(request).ListFormats(pb.ListFormatsRequest(), timeout=TIMEOUT)
    return {"formats": [{
        "name": f.name, "description": f.description, "file_extension": f.file_extension,
        "features": list(f.features), "use_cases": list(f.use_cases),
        "training_types": [training_type_out(t) for t in f.training_types],
        "params": [{"name": p.name, "description": p.description, "default": p.default_value or None,
                    "choices": list(p.choices)} for p in f.params],
    } for f in r.formats]}


@router.post("/api/datasets/export", status_code=202, responses=error_docs(413, 415))
def start_export(request: Request, body: ExportIn, idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
    return _start(request, _export_request(body.dataset_id, body.format, body.output_filename, body.system_message,
                                           body.train_split, body.additional_params), idempotency_key)


@router.post("/api/datasets/{dataset_id}/export-csv", status_code=202, responses=error_docs(413, 415))
def start_csv_export(request: Request, dataset_id: DatasetIdPath, body: CsvExportIn | None = None,
                     idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
    body = body or CsvExportIn()
    return _start(request, _export_request(dataset_id, "csv", body.output_filename or f"dataset_{dataset_id}",
                                           body.system_message, body.train_split, body.additional_params),
                  idempotency_key)


@router.get("/api/exports")
def list_exports(request: Request, page_size: int = Query(50, ge=1, le=200),
                 page_token: str = Query("", max_length=lim.MAX_TOKEN)) -> dict[str, Any]:
    r = _stub(request).ListExports(pb.ListExportsRequest(page_size=page_size, page_token=page_token),
                                   timeout=TIMEOUT)
    return {"exports": [export_json(e) for e in r.exports], "next_page_token": r.next_page_token or None}


@router.get("/api/exports/{export_id}")
def get_export(request: Request, export_id: JobIdPath) -> dict[str, Any]:
    return export_json(_stub(request).GetExport(pb.GetExportRequest(export_id=export_id), timeout=TIMEOUT).export)


@router.post("/api/exports/{export_id}/cancel")
def cancel_export(request: Request, export_id: JobIdPath) -> dict[str, Any]:
    r = _stub(request).CancelExport(pb.CancelExportRequest(export_id=export_id), timeout=TIMEOUT)
    return export_json(r.export)


@router.get("/api/exports/{export_id}/events")
async def export_events(request: Request, export_id: JobIdPath) -> Response:
    """Server-Sent Events: one `data: {json}` per change, ending after a terminal status."""
    view = (await run_in_threadpool(_stub(request).GetExport, pb.GetExportRequest(export_id=export_id),
                                    timeout=TIMEOUT)).export
    return await waits.events(request, JobKind.EXPORT, export_id, lambda job: _export_json(view, job))


@router.get("/api/exports/{export_id}/files/{name:path}/presigned")
def presigned_url(request: Request, export_id: JobIdPath, name: FileName,
                  expires_seconds: int = Query(0, ge=0, le=604800)) -> dict[str, Any]:
    r = _stub(request).GetFileUrl(pb.GetFileUrlRequest(export_id=export_id, name=name,
                                                       expires_seconds=expires_seconds), timeout=TIMEOUT)
    return {"name": name, "url": r.url, "expires_seconds": r.expires_seconds}


@router.get("/api/exports/{export_id}/files/{name:path}")
def download_file(request: Request, export_id: JobIdPath, name: FileName) -> StreamingResponse:
    call = _stub(request).DownloadFile(pb.DownloadFileRequest(export_id=export_id, name=name))
    f = _first(call, "file").file
    return _attachment(_rest(call), f.name, {"Content-Length": str(f.size), "X-Checksum-SHA256": f.sha256})


KNOWN_QUERY = {"format", "output_filename", "system_message", "train_split"}


@router.get("/api/datasets/{dataset_id}/export")
async def export_download(
    request: Request,
    dataset_id: DatasetIdPath,
    format: Annotated[str, Query(min_length=1, max_length=lim.MAX_WORD)],
    output_filename: Annotated[str | None, Query(max_length=lim.MAX_FILENAME)] = None,
    system_message: Annotated[str | None, Query(max_length=lim.MAX_TEXT)] = None,
    train_split: Annotated[float | None, Query(gt=0, le=1)] = None,
) -> StreamingResponse:
    """Runs an export and answers with the file itself (a browser download, as the Dataset Creator's page
    opens it): the one output file as it is, or every file as `<output_filename>.zip` when there are several or
    they form a folder (the HuggingFace export). Any other query parameter is an `additional_params` entry. Bad
    input gets the same answers as POST /api/datasets/export; an export still running after FERRY_EXPORT_WAIT_SECONDS gets 504
    naming it, so it can be fetched from /api/exports/{export_id}."""
    extra = {k: v for k, v in request.query_params.items() if k not in KNOWN_QUERY}
    problem = _check_params(extra)
    if problem:
        raise RequestValidationError([{"loc": ("query", "additional_params"), "type": "value_error",
                                       "msg": problem}])
    req = _export_request(dataset_id, format, output_filename or f"dataset_{dataset_id}_{format}", system_message,
                          train_split, extra)
    stub = _stub(request)
    started = await run_in_threadpool(stub.StartExport, req, timeout=TIMEOUT)
    export_id = started.export.job.id
    wait = float(request.app.state.config.export_wait_seconds)
    job = await waits.last_state(request, JobKind.EXPORT, export_id, wait)
    if job is None or not job.phase.terminal:
        raise HTTPException(status_code=504, detail=f"export {export_id} is still running after {wait:.0f} s; "
                            f"follow GET /api/exports/{export_id} and download its files from there")
    if job.phase is Phase.ERROR:
        raise HTTPException(status_code=422, detail=f"export {export_id} failed: {job.error or job.message}")
    if job.phase is Phase.CANCELLED:
        raise HTTPException(status_code=409, detail=f"export {export_id} was cancelled")
    if len(job.files) == 1 and "/" not in job.files[0].name:  # a folder's files (huggingface) go zipped
        return await run_in_threadpool(download_file, request, export_id, job.files[0].name)
    archive = stub.DownloadArchive(pb.DownloadArchiveRequest(export_id=export_id))
    header = (await run_in_threadpool(_first, archive, "archive")).archive
    return _attachment(_rest(archive), header.name, {"X-Export-Id": export_id})




def _first(call: Any, what: str) -> Any:
    """The stream's header message; NOT_FOUND / FAILED_PRECONDITION become statuses before any byte is sent."""
    try:
        return next(call)
    except StopIteration:
        raise HTTPException(status_code=502, detail=f"the exporter sent no {what} header") from None
    except grpc.RpcError:
        call.cancel()
        raise


def _rest(call: Any) -> Iterator[bytes]:
    try:
        for msg in call:
            yield msg.data
    finally:
        call.cancel()


def _attachment(body: Iterator[bytes], name: str, headers: dict[str, str]) -> StreamingResponse:
    base = name.rsplit("/", 1)[-1]
    ascii_name = base.encode("ascii", "replace").decode().replace("?", "_")
    headers = {**headers,
               "Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(base)}"}
    return StreamingResponse(body, media_type=content_type(base), headers=headers)
