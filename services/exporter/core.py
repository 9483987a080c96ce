"""The exporter's operations, free of transport: formats, start/get/list/watch/cancel exports, serve their files.

The exporter keeps no state of its own: each export is a catalog job (kind EXPORT) whose request_json holds
the validated request; jobs.py runs it. Speaks to the catalog through ferry.catalog_client; protobuf <-> caller
translation stays in servicer.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ferry import idempotency
from ferry.catalog_client import CatalogClient
from ferry.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from ferry.jobs import Job, JobFile, JobKind, Phase
from ferry.storage import ObjectStore
from services.exporter.archive import CHUNK_BYTES, EPOCH, Member, entry_path, zip_stream
from services.exporter.config import ExporterConfig
from services.exporter.formats import FORMATS, check_dataset, check_request, get_format
from services.exporter.jobs import JobPool, source_dataset

# DownloadArchive's chunk_bytes: below 4 MiB so a data message fits a gRPC client's default receive limit.
MIN_CHUNK_BYTES = 1024
MAX_CHUNK_BYTES = 4 * 1024 * 1024 - 1024


@dataclass
class ExportView:
    """An export as callers see it: the catalog job plus its parsed request."""

    job: Job
    request: dict[str, Any]


@dataclass(frozen=True)
class Archive:
    """What DownloadArchive announces before the zip bytes: `NAME.zip` and the files in it."""

    name: str
    files: list[JobFile]
    uncompressed_size: int


class ExporterCore:
    def __init__(self, cfg: ExporterConfig, catalog: CatalogClient, store: ObjectStore, pool: JobPool | None
                 ) -> None:
        self.cfg = cfg
        self.catalog = catalog
        self.store = store
        self.pool = pool

    # -- requests -------------------------------------------------------------------

    def formats(self) -> list[dict[str, Any]]:
        return [f.as_dict() for f in FORMATS.values()]

    def start(self, dataset_id: int, format_name: str, output_filename: str, system_message: str | None,
              train_split: float | None, params: dict[str, str], idempotency_key: str = "") -> ExportView:
        """Validate the request against the dataset, then queue the export job (or, for a repeated
        `idempotency_key`, answer the job the first request started)."""
        job_id, print_ = "", ""
        if idempotency_key:
            job_id = idempotency.job_id(JobKind.EXPORT, idempotency_key)
            print_ = idempotency.fingerprint({"dataset_id": dataset_id, "format": format_name,
                                              "output_filename": output_filename, "system_message": system_message,
                                              "train_split": train_split, "params": params})
            existing = self._job_if_any(job_id)
            if existing is not None:
                return self._view(idempotency.same_request(existing, print_))
        req = check_request(dataset_id, format_name, output_filename, system_message, train_split, params)
        src = source_dataset(self.catalog.get_dataset(dataset_id))
        check_dataset(get_format(req.format), src.training_type, [s.name for s in src.splits], params)
        if not src.splits:
            raise FailedPrecondition(f"dataset {dataset_id} has no splits to export", field="dataset_id")
        request_json = json.dumps(req.to_json())
        try:
            job = self.catalog.create_job(JobKind.EXPORT, idempotency.stamp(request_json, print_) if print_
                                          else request_json, dataset_id=dataset_id, job_id=job_id,
                                          message=f"queued: {req.format} export of dataset {dataset_id}")
        except AlreadyExists:
            if not print_:
                raise
            return self._view(idempotency.same_request(self.catalog.get_job(job_id), print_))
        if self.pool is not None:
            self.pool.submit(job.id)
        return ExportView(job, req.to_json())

    def _job_if_any(self, job_id: str) -> Job | None:
        try:
            return self.catalog.get_job(job_id)
        except NotFound:
            return None

    def _view(self, job: Job) -> ExportView:
        try:
            request = json.loads(job.request_json) if job.request_json else {}
        except ValueError:
            request = {}
        return ExportView(job, request)

    def get(self, export_id: str) -> ExportView:
        if not export_id:
            raise InvalidArgument("export_id is required", field="export_id")
        try:
            job = self.catalog.get_job(export_id)
        except NotFound:
            raise NotFound(f"export {export_id} not found") from None
        if job.kind is not JobKind.EXPORT:
            raise NotFound(f"export {export_id} not found")
        return self._view(job)

    def list(self, page_size: int, page_token: str) -> tuple[list[ExportView], str]:
        page = self.catalog.list_jobs(JobKind.EXPORT, page_size=page_size or 50, page_token=page_token)
        return [self._view(j) for j in page.jobs], page.next_page_token

    def cancel(self, export_id: str) -> ExportView:
        self.get(export_id)
        return self._view(self.catalog.cancel_job(export_id))

    def _complete(self, export_id: str) -> ExportView:
        view = self.get(export_id)
        if view.job.phase is not Phase.COMPLETE:
            raise FailedPrecondition(f"export {export_id} is not complete (status {view.job.phase.status})",
                                     field="export_id")
        return view

    def file(self, export_id: str, name: str) -> JobFile:
        view = self._complete(export_id)
        for f in view.job.files:
            if f.name == name:
                return f
        raise NotFound(f"export {export_id} has no file {name!r}; files: {', '.join(f.name for f in view.job.files)}")

    def download(self, export_id: str, name: str, chunk_size: int) -> tuple[JobFile, Iterator[bytes]]:
        f = self.file(export_id, name)
        return f, self.store.iter_chunks(f.object_key, chunk_size=chunk_size or 1024 * 1024)

    def archive(self, export_id: str, chunk_bytes: int, is_active: Callable[[], bool]
                ) -> tuple[Archive, Generator[bytes, None, None]]:
        """Every file of a complete export as one zip under the folder `output_filename` (archive.py).

        Checks happen here, at once; the bytes are produced lazily by the returned generator,
        which raises DataLoss for a stored file that does not match its record.
        """
        if chunk_bytes and not MIN_CHUNK_BYTES <= chunk_bytes <= MAX_CHUNK_BYTES:
            raise InvalidArgument(f"chunk_bytes must be 0 (1 MiB) or between {MIN_CHUNK_BYTES} and "
                                  f"{MAX_CHUNK_BYTES}", field="chunk_bytes")
        view = self._complete(export_id)
        folder = str(view.request.get("output_filename") or export_id)
        files = list(view.job.files)
        members = [Member(f.name, entry_path(folder, f.name), f.object_key, f.size, f.sha256) for f in files]
        stamp = EPOCH
        if view.job.finished_at is not None:
            t = datetime.fromtimestamp(int(view.job.finished_at), UTC)
            stamp = max(EPOCH, (t.year, t.month, t.day, t.hour, t.minute, t.second))
        chunks = zip_stream(self.store, members, chunk_bytes=chunk_bytes or CHUNK_BYTES, date_time=stamp,
                            is_active=is_active)
        return Archive(f"{folder}.zip", files, sum(f.size for f in files)), chunks

    def url(self, export_id: str, name: str, expires: int) -> tuple[str, int]:
        if expires < 0 or expires > 604800:
            raise InvalidArgument("expires_seconds must be between 1 and 604800", field="expires_seconds")
        f = self.file(export_id, name)
        ttl = expires or self.cfg.url_ttl_seconds
        return self.store.presigned_get(f.object_key, ttl, filename=name.rsplit("/", 1)[-1]), ttl
