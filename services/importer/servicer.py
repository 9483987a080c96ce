"""gRPC translation only: protobuf in, ImporterCore call, protobuf out."""

from __future__ import annotations

import json
from typing import Any

import grpc

from ferry import wire
from ferry.canonical import TrainingType
from ferry.catalog.v1 import catalog_pb2 as cpb
from ferry.importer.v1 import importer_pb2 as pb
from ferry.importer.v1 import importer_pb2_grpc
from services.importer.core import ImporterCore
from services.importer.popular import categories

SERVICE_NAME = "ferry.importer.v1.ImporterService"


def request_token(context: grpc.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "x-hf-token" and value:
            return str(value).strip() or None
    return None


def _features(pairs: list[tuple[str, str]]) -> list[cpb.Feature]:
    return [cpb.Feature(name=n, dtype=t) for n, t in pairs]


def _str_list(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, list | tuple):
        return [str(x) for x in v]
    return [str(v)]


class ImporterServicer(importer_pb2_grpc.ImporterServiceServicer):
    def __init__(self, core: ImporterCore) -> None:
        self.core = core

    def SearchDatasets(self, request: pb.SearchDatasetsRequest, context: grpc.ServicerContext
                       ) -> pb.SearchDatasetsResponse:
        found = self.core.search(request.query, request.limit, request.sort, request.task_category,
                                 request.language, request.size_category, request.author, request_token(context))
        return pb.SearchDatasetsResponse(datasets=[pb.HubDatasetSummary(**d) for d in found])

    def GetDatasetInfo(self, request: pb.GetDatasetInfoRequest, context: grpc.ServicerContext
                       ) -> pb.GetDatasetInfoResponse:
        info = self.core.info(request.dataset_name, request.config, request.revision, request_token(context))
        src = info.source
        card = src.card
        return pb.GetDatasetInfoResponse(
            dataset_name=src.repo_id, revision=src.revision, configs=src.layout.names(), config=info.config,
            default_config=src.layout.default_config, config_required=not src.layout.default_config,
            splits=[pb.SplitInfo(name=s.name, num_rows=s.num_rows, num_bytes=s.num_bytes, num_files=s.num_files,
                                 formats=s.formats) for s in info.splits],
            features=_features(info.features),
            card=pb.CardData(license=", ".join(_str_list(card.get("license"))),
                             task_categories=_str_list(card.get("task_categories")),
                             size_categories=_str_list(card.get("size_categories")),
                             languages=_str_list(card.get("language")),
                             pretty_name=str(card.get("pretty_name") or "")),
            description=src.description, gated=src.gated, source_kind=wire.source_kind_to_pb(src.kind), notes=info.notes,
            field_paths=info.field_paths,
        )

    def SuggestMapping(self, request: pb.SuggestMappingRequest, context: grpc.ServicerContext
                       ) -> pb.SuggestMappingResponse:
        sugg, feats, config, split = self.core.suggest(
            request.dataset_name, wire.training_type_from_pb(request.training_type), request.config, request.split,
            request_token(context))
        return pb.SuggestMappingResponse(
            suggestions=[pb.MappingSuggestion(source_field=s.source_field, target_field=s.target_field,
                                              confidence=s.confidence, reason=s.reason) for s in sugg],
            features=_features(feats), config=config, split=split)

    def PreviewDataset(self, request: pb.PreviewDatasetRequest, context: grpc.ServicerContext
                       ) -> pb.PreviewDatasetResponse:
        p = self.core.preview(request.dataset_name, request.split, request.config, request.num_samples,
                              dict(request.field_mappings), wire.training_type_from_pb(request.training_type),
                              request_token(context))
        dumps = lambda r: json.dumps(r, ensure_ascii=False, default=str)  # noqa: E731
        return pb.PreviewDatasetResponse(
            dataset_name=p.dataset_name, split=p.split, config=p.config,
            samples_json=[dumps(r) for r in p.samples], raw_samples_json=[dumps(r) for r in p.raw_samples],
            problems=[pb.RowProblems(index=i, problems=probs) for i, probs in p.problems],
            total_samples=p.total_samples, field_mappings=p.field_mappings, features=_features(p.features),
            revision=p.revision, training_type=wire.training_type_to_pb(p.training_type))

    def StartImport(self, request: pb.StartImportRequest, context: grpc.ServicerContext) -> pb.StartImportResponse:
        job = self.core.start_import(request.dataset_name, list(request.splits), request.config,
                                     wire.training_type_from_pb(request.training_type), dict(request.field_mappings),
                                     request.max_samples, request.name, request.revision, request_token(context),
                                     request.idempotency_key)
        return pb.StartImportResponse(import_id=job.id, job=wire.job_to_pb(job))

    def GetImportProgress(self, request: pb.GetImportProgressRequest, context: grpc.ServicerContext
                          ) -> pb.GetImportProgressResponse:
        return pb.GetImportProgressResponse(job=wire.job_to_pb(self.core.get_job(request.import_id)))

    def CancelImport(self, request: pb.CancelImportRequest, context: grpc.ServicerContext
                     ) -> pb.CancelImportResponse:
        return pb.CancelImportResponse(job=wire.job_to_pb(self.core.cancel(request.import_id)))

    def ListPopularDatasets(self, request: pb.ListPopularDatasetsRequest, context: grpc.ServicerContext
                            ) -> pb.ListPopularDatasetsResponse:
        return pb.ListPopularDatasetsResponse(categories=[
            pb.PopularCategory(name=c.name, datasets=[
                pb.PopularDataset(name=d.name, description=d.description, samples=d.samples,
                                  recommended=d.recommended, subset=d.subset,
                                  training_type=wire.training_type_to_pb(TrainingType(d.training_type)),
                                  splits=list(d.splits))
                for d in c.datasets])
            for c in categories()])
