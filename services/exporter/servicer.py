"""gRPC servicer: protobuf in, ExporterCore call, protobuf out. No logic of its own."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import grpc

from ferry import wire
from ferry.canonical import TrainingType
from ferry.exporter.v1 import exporter_pb2 as pb
from ferry.exporter.v1 import exporter_pb2_grpc
from ferry.jobs import JobFile, Phase
from services.exporter.core import ExporterCore, ExportView

SERVICE_NAME = "ferry.exporter.v1.ExporterService"
STATUS = {"queued": pb.EXPORT_STATUS_QUEUED, "exporting": pb.EXPORT_STATUS_EXPORTING,
          "saving": pb.EXPORT_STATUS_SAVING, "complete": pb.EXPORT_STATUS_COMPLETE, "error": pb.EXPORT_STATUS_ERROR,
          "cancelled": pb.EXPORT_STATUS_CANCELLED}


def _iso(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def file_pb(f: JobFile) -> pb.ExportFile:
    return pb.ExportFile(name=f.name, size=f.size, sha256=f.sha256, object_key=f.object_key)


def export_pb(view: ExportView) -> pb.Export:
    job, req = view.job, view.request
    p = job.progress
    return pb.Export(
        export_id=job.id, dataset_id=job.dataset_id or int(req.get("dataset_id", 0)),
        format=str(req.get("format", "")), output_filename=str(req.get("output_filename", "")),
        status=STATUS[view.status],
        progress=pb.ExportProgress(rows_done=p.rows_done, rows_total=p.rows_total, bytes_done=p.bytes_done,
                                   bytes_total=p.bytes_total, rows_per_second=p.rows_per_second,
                                   bytes_per_second=p.bytes_per_second, percent=p.percent),
        message=job.message, error=job.error,
        files=[file_pb(f) for f in job.files] if job.phase is Phase.COMPLETE else [],
        created_at=_iso(job.created_at), finished_at=_iso(job.finished_at),
        cancel_requested=job.cancel_requested,
    )


class ExporterServicer(exporter_pb2_grpc.ExporterServiceServicer):
    def __init__(self, core: ExporterCore) -> None:
        self.core = core

    def ListFormats(self, request: pb.ListFormatsRequest, context: Any) -> pb.ListFormatsResponse:
        return pb.ListFormatsResponse(formats=[
            pb.ExportFormat(
                name=f["name"], description=f["description"], file_extension=f["file_extension"],
                features=f["features"], use_cases=f["use_cases"],
                training_types=[wire.training_type_to_pb(TrainingType(t)) for t in f["training_types"]],
                params=[pb.FormatParam(name=p["name"], description=p["description"], default_value=p["default"],
                                       choices=p["choices"]) for p in f["params"]])
            for f in self.core.formats()])

    def StartExport(self, request: pb.StartExportRequest, context: Any) -> pb.StartExportResponse:
        view = self.core.start(
            request.dataset_id, request.format, request.output_filename,
            request.system_message if request.HasField("system_message") else None,
            request.train_split if request.HasField("train_split") else None,
            dict(request.additional_params))
        export = export_pb(view)
        return pb.StartExportResponse(export_id=export.export_id, status=export.status, export=export)

    def GetExport(self, request: pb.GetExportRequest, context: Any) -> pb.GetExportResponse:
        return pb.GetExportResponse(export=export_pb(self.core.get(request.export_id)))

    def ListExports(self, request: pb.ListExportsRequest, context: Any) -> pb.ListExportsResponse:
        views, token = self.core.list(request.page_size, request.page_token)
        return pb.ListExportsResponse(exports=[export_pb(v) for v in views], next_page_token=token)

    def WatchExport(self, request: pb.WatchExportRequest, context: grpc.ServicerContext
                    ) -> Iterator[pb.WatchExportResponse]:
        for view in self.core.watch(request.export_id, context.is_active):
            yield pb.WatchExportResponse(export=export_pb(view))

    def CancelExport(self, request: pb.CancelExportRequest, context: Any) -> pb.CancelExportResponse:
        return pb.CancelExportResponse(export=export_pb(self.core.cancel(request.export_id)))

    def DownloadFile(self, request: pb.DownloadFileRequest, context: grpc.ServicerContext
                     ) -> Iterator[pb.DownloadFileResponse]:
        f, chunks = self.core.download(request.export_id, request.name, request.chunk_size)
        yield pb.DownloadFileResponse(file=file_pb(f))
        for chunk in chunks:
            if not context.is_active():
                break
            yield pb.DownloadFileResponse(data=chunk)

    def DownloadArchive(self, request: pb.DownloadArchiveRequest, context: grpc.ServicerContext
                        ) -> Iterator[pb.DownloadArchiveResponse]:
        archive, chunks = self.core.archive(request.export_id, request.chunk_bytes, context.is_active)
        try:
            yield pb.DownloadArchiveResponse(archive=pb.ArchiveHeader(
                name=archive.name, file_count=len(archive.files), uncompressed_size=archive.uncompressed_size,
                files=[file_pb(f) for f in archive.files]))
            for chunk in chunks:
                yield pb.DownloadArchiveResponse(data=chunk)
        finally:
            chunks.close()  # a cancelled call stops between two reads of the store

    def GetFileUrl(self, request: pb.GetFileUrlRequest, context: Any) -> pb.GetFileUrlResponse:
        url, ttl = self.core.url(request.export_id, request.name, request.expires_seconds)
        return pb.GetFileUrlResponse(url=url, expires_seconds=ttl)
