"""The importer's operations, free of transport: search, info, suggest, preview, start/watch/cancel imports.

Every request is validated completely (source, revision, config, splits, mapping, training type, limits)
before an import job is created, so a bad request fails at once with a status naming the field, never later
inside a queued job.
"""

from __future__ import annotations

import json
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ferry import idempotency
from ferry.canonical import TrainingType
from ferry.catalog_client import CatalogClient
from ferry.datasets import SourceKind
from ferry.errors import AlreadyExists, InvalidArgument, NotFound
from ferry.jobs import Job, JobKind
from services.importer import bounds, reader
from services.importer.convert import RowMapper
from services.importer.hub import HubClient, Meter
from services.importer.jobs import ImportRequest, JobPool, features_of
from services.importer.mapping import Suggestion, suggest_mapping, suggestions_to_mappings, validate_mapping
from services.importer.paths import field_paths
from services.importer.sources import Source, data_format, resolve

log = logging.getLogger("ferry.importer.core")

SAMPLE_ROWS = 5
# Info and preview count rows from Parquet footers only up to this many files per split (imports always do).
MAX_FOOTERS = 64
MAX_PREVIEW = 100


def _mapped(field_mappings: dict[str, str]) -> bool:
    """Whether any target is mapped (forms send blank strings for the targets they leave out)."""
    return any(not (isinstance(v, str) and not v.strip()) for v in field_mappings.values())


def effective_training_type(given: TrainingType | None, field_mappings: dict[str, str]) -> TrainingType | None:
    """The given training type or, when unspecified, the one the mapping's targets imply; None with neither."""
    if given is not None:
        return given
    if _mapped(field_mappings):
        return TrainingType.infer(field_mappings)
    return None


@dataclass
class SplitSummary:
    name: str
    num_rows: int
    num_bytes: int
    num_files: int
    formats: list[str]


@dataclass
class DatasetInfo:
    source: Source
    config: str
    splits: list[SplitSummary]
    features: list[tuple[str, str]]
    notes: list[str] = field(default_factory=list)
    # Every selectable mapping source of the first split's schema, nested dot-paths included (paths.field_paths).
    field_paths: list[str] = field(default_factory=list)


@dataclass
class Preview:
    dataset_name: str
    config: str
    split: str
    revision: str
    samples: list[dict[str, Any]]
    raw_samples: list[dict[str, Any]]
    problems: list[tuple[int, list[str]]]
    total_samples: int
    field_mappings: dict[str, str]
    features: list[tuple[str, str]]
    # The type the samples were mapped with (given or inferred from the mapping); None for raw rows.
    training_type: TrainingType | None = None


def _jsonable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        out.append(json.loads(json.dumps(r, default=str, ensure_ascii=False)))
    return out


class ImporterCore:
    def __init__(self, hub: HubClient, catalog: CatalogClient, pool: JobPool | None, local_dirs: tuple[str, ...]
                 ) -> None:
        self.hub = hub
        self.catalog = catalog
        self.pool = pool
        self.local_dirs = local_dirs
        self.io = ThreadPoolExecutor(max_workers=8, thread_name_prefix="importer-meta")

    def close(self) -> None:
        self.io.shutdown(wait=False, cancel_futures=True)

    # -- helpers ---------------------------------------------------------------------------------------------

    def _source(self, name: str, revision: str, token: str | None) -> Source:
        if not (name or "").strip():
            raise InvalidArgument("dataset_name is required", field="dataset_name")
        return resolve(self.hub, name.strip(), revision, token, self.local_dirs)

    def _split_rows_bytes(self, source: Source, config: str, split: str, paths: list[str],
                          columns: list[str] | None = None) -> tuple[int, int]:
        """Rows of a split (-1 unknown) and the bytes reading it takes (only `columns`' chunks for Parquet)."""
        num_bytes = sum(source.sizes.get(p, 0) for p in paths)
        if paths and all(data_format(p)[0] == "parquet" for p in paths) and (
                columns is not None or len(paths) <= MAX_FOOTERS):
            files = [source.open(p) for p in paths]
            rows, metas = reader.parquet_row_counts(files, self.io)
            if columns is not None:
                num_bytes = sum(m.projected_bytes(columns) for m in metas)
            return rows, num_bytes
        return _card_rows(source.card, config, split), num_bytes

    def _head(self, source: Source, config: str, split: str, n: int, meter: Meter | None = None
              ) -> tuple[pa.Table, pa.Schema]:
        files = [source.open(p, meter) for p in source.split_files(config, split)]
        return reader.read_head(files, n, self.io)

    # -- operations ------------------------------------------------------------------------------------------

    def search(self, query: str, limit: int, sort: str = "", task_category: str = "", language: str = "",
               size_category: str = "", author: str = "", token: str | None = None) -> list[dict[str, Any]]:
        if limit < 0 or limit > 100:
            raise InvalidArgument("limit must be between 1 and 100", field="limit")
        return self.hub.search(query, limit or 20, sort, task_category, language, size_category, author, token)

    @bounds.bounded(bounds.info)
    def info(self, name: str, config: str = "", revision: str = "", token: str | None = None) -> DatasetInfo:
        source = self._source(name, revision, token)
        chosen, notes = source.choose_config(config)
        layout = source.layout.configs[chosen]
        splits = []
        futures = {s: self.io.submit(self._split_rows_bytes, source, chosen, s, paths)
                   for s, paths in layout.splits.items()}
        for s, paths in layout.splits.items():
            rows, nbytes = futures[s].result()
            fmts = sorted({data_format(p)[0] for p in paths})
            splits.append(SplitSummary(s, rows, nbytes, len(paths), fmts))
        features: list[tuple[str, str]] = []
        sources: list[str] = []
        if layout.splits:
            _, schema = self._head(source, chosen, source.first_split(chosen), 1)
            features = features_of(schema)
            sources = field_paths(schema)
        return DatasetInfo(source, chosen, splits, features, notes, sources)

    @bounds.bounded(bounds.suggest)
    def suggest(self, name: str, training_type: TrainingType | None, config: str = "", split: str = "",
                token: str | None = None) -> tuple[list[Suggestion], list[tuple[str, str]], str, str]:
        if training_type is None:
            raise InvalidArgument("training_type is required: one of SL, DPO, CHAT", field="training_type")
        tt = training_type
        source = self._source(name, "", token)
        chosen, _ = source.choose_config(config)
        split = split or source.first_split(chosen)
        head, schema = self._head(source, chosen, split, SAMPLE_ROWS)
        return suggest_mapping(schema, tt, head.to_pylist()), features_of(schema), chosen, split

    @bounds.bounded(bounds.preview)
    def preview(self, name: str, split: str = "", config: str = "", num_samples: int = 10,
                field_mappings: dict[str, str] | None = None, training_type: TrainingType | None = None,
                token: str | None = None, meter: Meter | None = None) -> Preview:
        if num_samples < 0 or num_samples > MAX_PREVIEW:
            raise InvalidArgument(f"num_samples must be between 1 and {MAX_PREVIEW}", field="num_samples")
        n = num_samples or 10
        mappings = dict(field_mappings or {})
        # Unspecified with a mapping: inferred from its targets; unspecified without one: raw rows.
        tt = effective_training_type(training_type, mappings)
        source = self._source(name, "", token)
        chosen, _ = source.choose_config(config)
        split = split or source.first_split(chosen)
        paths = source.split_files(chosen, split)
        head, schema = self._head(source, chosen, split, n, meter)
        raw = _jsonable(head.to_pylist())
        total = -1
        if all(data_format(p)[0] == "parquet" for p in paths) and len(paths) <= MAX_FOOTERS:
            total, _ = reader.parquet_row_counts([source.open(p, meter) for p in paths], self.io)
        else:
            total = _card_rows(source.card, chosen, split)
        samples = raw
        problems: list[tuple[int, list[str]]] = []
        if tt is not None:
            if not mappings:
                mappings = suggestions_to_mappings(suggest_mapping(schema, tt, raw[:SAMPLE_ROWS]))
            validate_mapping(schema, tt, mappings)
            mapper = RowMapper(tt, mappings, schema)
            samples = []
            for i, (row, probs) in enumerate(mapper.map_table_rows(head)):
                if row is not None:
                    samples.append(row)
                if probs:
                    problems.append((i, probs))
        return Preview(source.repo_id, chosen, split, source.revision, samples, raw, problems, total, mappings,
                       features_of(schema), tt)

    @bounds.bounded(bounds.start_import)
    def start_import(self, name: str, splits: list[str], config: str, training_type: TrainingType | None,
                     field_mappings: dict[str, str], max_samples: int, dataset_name: str = "", revision: str = "",
                     token: str | None = None, idempotency_key: str = "") -> Job:
        """Validate the request against the source, then queue the import job (or, for a repeated
        `idempotency_key`, answer the job the first request started)."""
        job_id, print_ = str(uuid.uuid4()), ""
        if idempotency_key:
            job_id = idempotency.job_id(JobKind.IMPORT, idempotency_key)
            print_ = idempotency.fingerprint({
                "dataset_name": name, "splits": splits, "config": config, "max_samples": max_samples,
                "training_type": training_type.value if training_type else None, "field_mappings": field_mappings,
                "name": dataset_name, "revision": revision})
            existing = self._job_if_any(job_id)
            if existing is not None:
                return idempotency.same_request(existing, print_)
        req = self._import_request(name, splits, config, training_type, field_mappings, max_samples, dataset_name,
                                   revision, token)
        if token and self.pool is not None and self.pool.sealer is not None:
            req.sealed_token = self.pool.sealer.seal(token, job_id)  # so another replica can resume the job
        request_json = idempotency.stamp(req.to_json(), print_) if print_ else req.to_json()
        try:
            job = self.catalog.create_job(JobKind.IMPORT, request_json, job_id=job_id,
                                          message=f"queued: {req.repo_id} {req.config} {', '.join(req.splits)}")
        except AlreadyExists:
            if not print_:
                raise
            return idempotency.same_request(self.catalog.get_job(job_id), print_)  # a concurrent twin won
        if self.pool is not None:
            self.pool.submit(job.id, token)
        return job

    def _job_if_any(self, job_id: str) -> Job | None:
        try:
            return self.catalog.get_job(job_id)
        except NotFound:
            return None

    def _import_request(self, name: str, splits: list[str], config: str, training_type: TrainingType | None,
                        field_mappings: dict[str, str], max_samples: int, dataset_name: str, revision: str,
                        token: str | None) -> ImportRequest:
        """The import as its job will run it: source pinned, splits and mapping checked, totals estimated."""
        found = effective_training_type(training_type, dict(field_mappings))
        if found is None:
            raise InvalidArgument("training_type is required when field_mappings is empty (one of SL, DPO, CHAT)",
                                  field="training_type")
        tt = found
        source = self._source(name, revision, token)
        chosen, _ = source.choose_config(config, required=True)
        layout = source.layout.configs[chosen]
        wanted = list(dict.fromkeys(s for s in splits if s)) or list(layout.splits)
        if not wanted:
            raise NotFound(f"{source.repo_id} config {chosen!r} has no splits", field="split")
        for s in wanted:
            source.split_files(chosen, s)  # NotFound naming the split and listing the valid ones
        head, schema = self._head(source, chosen, wanted[0], SAMPLE_ROWS)
        mappings = dict(field_mappings)
        if not mappings:
            mappings = suggestions_to_mappings(suggest_mapping(schema, tt, head.to_pylist()))
        validate_mapping(schema, tt, mappings)
        columns = RowMapper(tt, mappings, schema).columns
        rows_total = 0
        bytes_total = 0
        for s in wanted:
            paths = source.split_files(chosen, s)
            rows, nbytes = self._split_rows_bytes(source, chosen, s, paths, columns)
            bytes_total += nbytes
            rows_total = rows_total + rows if rows >= 0 and rows_total >= 0 else -1
        if max_samples:
            known = rows_total if rows_total >= 0 else max_samples * len(wanted)
            rows_total = min(known, max_samples * len(wanted))
        default_name = source.repo_id.rstrip("/").rsplit("/", 1)[-1] if source.kind is not SourceKind.HUB \
            else source.repo_id
        if chosen != source.layout.default_config and chosen != "default":
            default_name += f" ({chosen})"
        return ImportRequest(
            dataset_name=name.strip(), source_kind=source.kind, repo_id=source.repo_id, revision=source.revision,
            config=chosen, splits=wanted, training_type=tt, field_mappings=mappings,
            max_samples=max_samples, name=(dataset_name or default_name[:bounds.MAX_NAME]).strip(),
            features=features_of(schema),
            bytes_total=bytes_total if not max_samples else 0, rows_total=max(rows_total, 0),
        )

    def get_job(self, import_id: str) -> Job:
        job = self.catalog.get_job(_check_id(import_id))
        if job.kind is not JobKind.IMPORT:
            raise NotFound(f"import {import_id} not found", field="import_id")
        return job

    def cancel(self, import_id: str) -> Job:
        self.get_job(import_id)
        return self.catalog.cancel_job(import_id)


def _check_id(import_id: str) -> str:
    if not import_id:
        raise InvalidArgument("import_id is required", field="import_id")
    if len(import_id) > 100:
        raise InvalidArgument(f"import_id is {len(import_id)} characters; an import id is a UUID (36)",
                              field="import_id")
    return import_id


def _card_rows(card: dict[str, Any], config: str, split: str) -> int:
    """Rows of a split from the README's dataset_info, when it says; -1 otherwise."""
    info = card.get("dataset_info")
    entries = info if isinstance(info, list) else [info] if isinstance(info, dict) else []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        name = entry.get("config_name") or "default"
        if name != config and len(entries) > 1:
            continue
        for s in entry.get("splits") or []:
            if isinstance(s, dict) and s.get("name") == split and isinstance(s.get("num_examples"), int):
                return int(s["num_examples"])
    return -1
