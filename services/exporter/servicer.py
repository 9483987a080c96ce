"""gRPC servicer: protobuf in, ExporterCore call, protobuf out. No logic of its own."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import grpc

from ferry import wire
from ferry.canonical import TrainingType
from ferry.exporter.v1 import exporter_pb2 as pb
from ferry.exporter.v1 import exporter_pb2_grpc
from ferry.jobs import Phase
from services.exporter.core import ExporterCore, ExportView

SERVICE_NAME = "ferry.exporter.v1.ExporterService"


def export_pb(view: ExportView) -> pb.Export:
    job = view.job
    if job.phase is not Phase.COMPLETE:
        job = replace(job, files=[])  # files are listed once they are all there
    return pb.Export(format=str(view.request.get("format", "")),
                     output_filename=str(view.request.get("output_filename", "")), job=wire.job_to_pb(job))


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
            dict(request.additional_params), request.idempotency_key)
        return pb.StartExportResponse(export=export_pb(view))

    def GetExport(self, request: pb.GetExportRequest, context: Any) -> pb.GetExportResponse:
        return pb.GetExportResponse(export=export_pb(self.core.get(request.export_id)))

    def ListExports(self, request: pb.ListExportsRequest, context: Any) -> pb.ListExportsResponse:
        views, token = self.core.list(request.page_size, request.page_token)
        return pb.ListExportsResponse(exports=[export_pb(v) for v in views], next_page_token=token)

    def CancelExport(self, request: pb.CancelExportRequest, context: Any) -> pb.CancelExportResponse:
        return pb.CancelExportResponse(export=export_pb(self.core.cancel(request.export_id)))

    def DownloadFile(self, request: pb.DownloadFileRequest, context: grpc.ServicerContext
                     ) -> Iterator[pb.DownloadFileResponse]:
        f, chunks = self.core.download(request.export_id, request.name, request.chunk_size)
        yield pb.DownloadFileResponse(file=wire.job_file_to_pb(f))
        for chunk in chunks:  # the server closes this generator once the call ends
            yield pb.DownloadFileResponse(data=chunk)

    def DownloadArchive(self, request: pb.DownloadArchiveRequest, context: grpc.ServicerContext
                        ) -> Iterator[pb.DownloadArchiveResponse]:
        archive, chunks = self.core.archive(request.export_id, request.chunk_bytes, lambda: not context.done())
        try:
            yield pb.DownloadArchiveResponse(archive=pb.ArchiveHeader(
                name=archive.name, file_count=len(archive.files), uncompressed_size=archive.uncompressed_size,
                files=[wire.job_file_to_pb(f) for f in archive.files]))
            for chunk in chunks:
                yield pb.DownloadArchiveResponse(data=chunk)
        finally:
            chunks.close()  # a cancelled call stops between two reads of the store

    def GetFileUrl(self, request: pb.GetFileUrlRequest, context: Any) -> pb.GetFileUrlResponse:
        url, ttl = self.core.url(request.export_id, request.name, request.expires_seconds)
        return pb.GetFileUrlResponse(url=url, expires_seconds=ttl)
