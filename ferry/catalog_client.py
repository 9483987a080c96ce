"""The catalog's gRPC client for the other services: domain types in and out, domain errors raised.

The importer and exporter cores talk to the catalog only through this class, so they never see protobuf or
grpc: arguments and answers are ferry.jobs / ferry.datasets types (translated by ferry/wire.py), and a
status from the catalog is re-raised as the ferry.errors class of its code (NOT_FOUND stays NotFound).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from ferry import wire
from ferry.catalog.v1 import catalog_pb2 as pb
from ferry.catalog.v1 import catalog_pb2_grpc
from ferry.datasets import Dataset, DatasetRegistration
from ferry.jobs import Job, JobKind, JobPage, JobUpdate, Phase
from ferry.rpcerrors import from_rpc_error


class CatalogClient:
    def __init__(self, addr: str, timeout: float = 30.0) -> None:
        self.addr = addr
        self.channel = grpc.insecure_channel(addr, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
        self.stub = catalog_pb2_grpc.CatalogServiceStub(self.channel)
        self.timeout = timeout

    def close(self) -> None:
        self.channel.close()

    def _call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        try:
            return getattr(self.stub, method)(request, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, "catalog") from None

    # -- jobs -----------------------------------------------------------------------------------------------------

    def create_job(self, kind: JobKind, request_json: str = "", dataset_id: int = 0, job_id: str = "",
                   message: str = "") -> Job:
        resp = self._call("CreateJob", pb.CreateJobRequest(
            kind=wire.job_kind_to_pb(kind), request_json=request_json, dataset_id=dataset_id, job_id=job_id,
            message=message))
        return wire.job_from_pb(resp.job)

    def get_job(self, job_id: str) -> Job:
        return wire.job_from_pb(self._call("GetJob", pb.GetJobRequest(job_id=job_id)).job)

    def list_jobs(self, kind: JobKind | None = None, phases: Iterable[Phase] = (), page_size: int = 0,
                  page_token: str = "") -> JobPage:
        resp = self._call("ListJobs", pb.ListJobsRequest(
            kind=wire.job_kind_to_pb(kind), phases=[wire.phase_to_pb(p) for p in phases], page_size=page_size,
            page_token=page_token))
        return JobPage([wire.job_from_pb(j) for j in resp.jobs], resp.next_page_token)

    def claim_job(self, kind: JobKind, worker_id: str, job_id: str = "") -> Job | None:
        """The given job, or the oldest waiting one of `kind`, now owned by `worker_id`; None when there is none."""
        resp = self._call("ClaimJob", pb.ClaimJobRequest(kind=wire.job_kind_to_pb(kind), worker_id=worker_id,
                                                         job_id=job_id))
        return wire.job_from_pb(resp.job) if resp.HasField("job") else None

    def update_job(self, update: JobUpdate) -> Job:
        return wire.job_from_pb(self._call("UpdateJob", wire.job_update_to_pb(update)).job)

    def cancel_job(self, job_id: str) -> Job:
        return wire.job_from_pb(self._call("CancelJob", pb.CancelJobRequest(job_id=job_id)).job)

    def reserve_dataset(self, import_job_id: str) -> tuple[int, str]:
        """The dataset id kept for an import (the same one again for the same job) and its object prefix."""
        resp = self._call("ReserveDataset", pb.ReserveDatasetRequest(import_job_id=import_job_id))
        return int(resp.dataset_id), str(resp.object_prefix)

    def register_dataset(self, registration: DatasetRegistration) -> Dataset:
        return wire.dataset_from_pb(self._call("RegisterDataset", wire.registration_to_pb(registration)).dataset)

    def get_dataset(self, dataset_id: int) -> Dataset:
        return wire.dataset_from_pb(self._call("GetDataset", pb.GetDatasetRequest(dataset_id=dataset_id)).dataset)

    def delete_dataset(self, dataset_id: int) -> int:
        """Deletes the dataset (a reserved one too) and its objects; how many objects were removed."""
        return int(self._call("DeleteDataset", pb.DeleteDatasetRequest(dataset_id=dataset_id)).objects_deleted)
