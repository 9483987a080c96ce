"""CatalogService over gRPC: protobuf in, one core call, protobuf out (ferry/wire.py translates). No logic here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from ferry import wire
from ferry.catalog.v1 import catalog_pb2 as pb
from ferry.catalog.v1 import catalog_pb2_grpc
from services.catalog.core import CatalogCore

SERVICE_NAME = "ferry.catalog.v1.CatalogService"


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, catalog: CatalogCore) -> None:
        self.catalog = catalog

    # -- datasets ---------------------------------------------------------------------

    def ReserveDataset(self, request: pb.ReserveDatasetRequest, context: grpc.ServicerContext) -> Any:
        dataset_id, prefix = self.catalog.datasets.reserve(request.import_job_id)
        return pb.ReserveDatasetResponse(dataset_id=dataset_id, object_prefix=prefix)

    def RegisterDataset(self, request: pb.RegisterDatasetRequest, context: grpc.ServicerContext) -> Any:
        ds = self.catalog.datasets.register(wire.registration_from_pb(request))
        return pb.RegisterDatasetResponse(dataset=wire.dataset_to_pb(ds))

    def GetDataset(self, request: pb.GetDatasetRequest, context: grpc.ServicerContext) -> Any:
        return pb.GetDatasetResponse(dataset=wire.dataset_to_pb(self.catalog.datasets.get(request.dataset_id)))

    def ListDatasets(self, request: pb.ListDatasetsRequest, context: grpc.ServicerContext) -> Any:
        page = self.catalog.datasets.list_datasets(
            page_size=request.page_size, page_token=request.page_token, name_contains=request.name_contains,
            training_type=wire.training_type_from_pb(request.training_type), source_repo_id=request.source_repo_id,
        )
        return pb.ListDatasetsResponse(datasets=[wire.dataset_to_pb(d) for d in page.datasets],
                                       next_page_token=page.next_page_token, total_size=page.total_size)

    def DeleteDataset(self, request: pb.DeleteDatasetRequest, context: grpc.ServicerContext) -> Any:
        return pb.DeleteDatasetResponse(objects_deleted=self.catalog.datasets.delete(request.dataset_id))

    def ListExamples(self, request: pb.ListExamplesRequest, context: grpc.ServicerContext) -> Any:
        page = self.catalog.datasets.list_examples(request.dataset_id, request.split, request.offset, request.limit)
        return pb.ListExamplesResponse(
            dataset_id=page.dataset_id, split=page.split, total=page.total, offset=page.offset, limit=page.limit,
            examples=[pb.Example(index=e.index, json=e.json) for e in page.examples],
        )

    # -- jobs ---------------------------------------------------------------------------

    def CreateJob(self, request: pb.CreateJobRequest, context: grpc.ServicerContext) -> Any:
        job = self.catalog.jobs.create(wire.job_kind_from_pb(request.kind), request.request_json, request.dataset_id,
                                       request.job_id, request.message)
        return pb.CreateJobResponse(job=wire.job_to_pb(job))

    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> Any:
        return pb.GetJobResponse(job=wire.job_to_pb(self.catalog.jobs.get(request.job_id)))

    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> Any:
        phases = [p for p in (wire.phase_from_pb(v, "phases") for v in request.phases) if p is not None]
        page = self.catalog.jobs.list_jobs(wire.job_kind_from_pb(request.kind), phases, request.page_size, request.page_token)
        return pb.ListJobsResponse(jobs=[wire.job_to_pb(j) for j in page.jobs], next_page_token=page.next_page_token)

    def UpdateJob(self, request: pb.UpdateJobRequest, context: grpc.ServicerContext) -> Any:
        job = self.catalog.jobs.update(wire.job_update_from_pb(request))
        return pb.UpdateJobResponse(job=wire.job_to_pb(job))

    def ClaimJob(self, request: pb.ClaimJobRequest, context: grpc.ServicerContext) -> Any:
        job = self.catalog.jobs.claim(wire.job_kind_from_pb(request.kind), request.worker_id, request.job_id)
        return pb.ClaimJobResponse(job=wire.job_to_pb(job)) if job is not None else pb.ClaimJobResponse()

    def CancelJob(self, request: pb.CancelJobRequest, context: grpc.ServicerContext) -> Any:
        return pb.CancelJobResponse(job=wire.job_to_pb(self.catalog.jobs.cancel(request.job_id)))

    async def WatchJob(self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext
                       ) -> AsyncIterator[pb.WatchJobResponse]:
        """Async: an open watch waits on the server's event loop, not in one of its threads."""
        async for job in self.catalog.jobs.watch(request.job_id):
            yield pb.WatchJobResponse(job=wire.job_to_pb(job))

    # -- mapping templates ----------------------------------------------------------------

    def SaveMappingTemplate(self, request: pb.SaveMappingTemplateRequest, context: grpc.ServicerContext) -> Any:
        t = self.catalog.templates.save(request.name, wire.training_type_from_pb(request.training_type),
                                        dict(request.field_mappings), request.repo_id)
        return pb.SaveMappingTemplateResponse(template=wire.template_to_pb(t))

    def ListMappingTemplates(self, request: pb.ListMappingTemplatesRequest, context: grpc.ServicerContext) -> Any:
        items = self.catalog.templates.list_templates(wire.training_type_from_pb(request.training_type),
                                                      request.repo_id)
        return pb.ListMappingTemplatesResponse(templates=[wire.template_to_pb(t) for t in items])

    def DeleteMappingTemplate(self, request: pb.DeleteMappingTemplateRequest, context: grpc.ServicerContext) -> Any:
        self.catalog.templates.delete(request.template_id)
        return pb.DeleteMappingTemplateResponse()
