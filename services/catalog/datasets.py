"""Dataset records: reserve -> objects written -> register (READY) -> browse -> delete.

A dataset only becomes visible once every split object is in storage and indexed,
so nobody can page through, or export, half an import.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

from ferry import jsonl
from ferry.canonical import TrainingType
from ferry.datasets import (
    Dataset,
    DatasetRegistration,
    DatasetSource,
    DatasetState,
    Example,
    Feature,
    SourceKind,
    Split,
)
from ferry.errors import FailedPrecondition, Internal, InvalidArgument, NotFound
from ferry.storage import ObjectStore
from services.catalog import paging
from services.catalog.db import Database
from services.catalog.limits import (
    MAX_NAME,
    MAX_OBJECT_KEY,
    MAX_SPLIT_NAME,
    check_length,
    check_mappings,
    short,
)

log = logging.getLogger("ferry.catalog.datasets")

MAX_EXAMPLES = 1000
DEFAULT_EXAMPLES = 100


def prefix_of(dataset_id: int) -> str:
    return f"datasets/{dataset_id}/"


def index_key_for(object_key: str) -> str:
    """`datasets/7/train.jsonl` -> `datasets/7/train.idx`."""
    base = object_key[: -len(".jsonl")] if object_key.endswith(".jsonl") else object_key
    return base + ".idx"


@dataclass
class ExamplesPage:
    dataset_id: int
    split: str
    examples: list[Example]
    total: int
    offset: int
    limit: int


@dataclass
class DatasetPage:
    datasets: list[Dataset]
    next_page_token: str
    total_size: int


def _features(raw: str) -> list[Feature]:
    return [Feature(f["name"], f["dtype"]) for f in json.loads(raw)]


def _features_json(features: list[Feature]) -> str:
    return json.dumps([{"name": f.name, "dtype": f.dtype} for f in features])


def _row_to_dataset(row: sqlite3.Row) -> Dataset:
    return Dataset(
        id=int(row["id"]),
        name=row["name"],
        source=DatasetSource(
            kind=SourceKind(row["source_kind"]),
            repo_id=row["source_repo_id"],
            revision=row["source_revision"],
            config=row["source_config"],
            splits=list(json.loads(row["source_splits"])),
        ),
        training_type=TrainingType(row["training_type"]) if row["training_type"] else None,
        splits=[Split(**s) for s in json.loads(row["splits"])],
        field_mappings=dict(json.loads(row["field_mappings"])),
        features=_features(row["features"]),
        row_features=_features(row["row_features"]),
        created_at=float(row["created_at"]),
        state=DatasetState(row["state"]),
        import_job_id=row["import_job_id"],
    )


def _registration_row(
    req: DatasetRegistration, training_type: TrainingType, splits: list[Split], target: Dataset | None
) -> dict[str, Any]:
    """The columns of a READY dataset row."""
    return {
        "name": req.name.strip(),
        "state": DatasetState.READY.value,
        "training_type": training_type.value,
        "source_kind": req.source.kind.value,
        "source_repo_id": req.source.repo_id,
        "source_revision": req.source.revision,
        "source_config": req.source.config,
        "source_splits": json.dumps(list(req.source.splits)),
        "splits": json.dumps([s.__dict__ for s in splits]),
        "field_mappings": json.dumps(dict(req.field_mappings), sort_keys=True),
        "features": _features_json(req.features),
        "row_features": _features_json(req.row_features),
        "created_at": time.time(),
        "import_job_id": req.import_job_id or (target.import_job_id if target else ""),
    }


class Datasets:
    def __init__(self, db: Database, store: ObjectStore) -> None:
        self.db = db
        self.store = store
        # Datasets a delete of this process is removing now; guarded by _delete_lock.
        self._deleting: set[int] = set()
        self._delete_lock = threading.Lock()

    # -- lookups ----------------------------------------------------------------

    def _load(self, dataset_id: int) -> Dataset | None:
        row = self.db.query_one("SELECT * FROM datasets WHERE id = ?", (dataset_id,))
        return _row_to_dataset(row) if row else None

    def _by_job(self, import_job_id: str) -> Dataset | None:
        row = self.db.query_one("SELECT * FROM datasets WHERE import_job_id = ?", (import_job_id,))
        return _row_to_dataset(row) if row else None

    def get(self, dataset_id: int) -> Dataset:
        """A READY dataset; reserved (PENDING) and DELETING ones do not exist for readers."""
        ds = self._load(dataset_id) if dataset_id > 0 else None
        if ds is None or ds.state is not DatasetState.READY:
            raise NotFound(f"dataset {dataset_id} not found")
        return ds

    # -- reserve / register -------------------------------------------------------

    def reserve(self, import_job_id: str = "") -> tuple[int, str]:
        """Allocate an id for an import; the same import job always gets the same id back (resume)."""
        if import_job_id:
            existing = self._by_job(import_job_id)
            if existing is not None:
                if existing.state is DatasetState.DELETING:
                    raise FailedPrecondition(f"dataset {existing.id} of import job {import_job_id} is being deleted")
                return existing.id, prefix_of(existing.id)
        try:
            cur = self.db.execute(
                "INSERT INTO datasets (state, created_at, import_job_id) VALUES (?, ?, ?)",
                (DatasetState.PENDING.value, time.time(), import_job_id),
            )
        except sqlite3.IntegrityError:  # a concurrent reserve for the same job won
            existing = self._by_job(import_job_id)
            assert existing is not None
            return existing.id, prefix_of(existing.id)
        dataset_id = int(cur.lastrowid or 0)
        return dataset_id, prefix_of(dataset_id)

    def _validate(self, req: DatasetRegistration) -> TrainingType:
        if not req.name.strip():
            raise InvalidArgument("name must not be empty", field="name")
        check_length(req.name.strip(), MAX_NAME, "name")
        if req.training_type is None:
            raise InvalidArgument("training_type is required: one of SL, DPO, CHAT", field="training_type")
        training_type = req.training_type
        if not req.splits:
            raise InvalidArgument("splits must list at least one split", field="splits")
        seen: set[str] = set()
        for i, split in enumerate(req.splits):
            if not split.name.strip():
                raise InvalidArgument(f"splits[{i}].name must not be empty", field=f"splits[{i}].name")
            check_length(split.name, MAX_SPLIT_NAME, f"splits[{i}].name")
            if split.name in seen:
                raise InvalidArgument(f"split {split.name!r} is listed twice", field=f"splits[{i}].name")
            seen.add(split.name)
            if not split.object_key:
                raise InvalidArgument(f"splits[{i}].object_key must not be empty", field=f"splits[{i}].object_key")
            check_length(split.object_key, MAX_OBJECT_KEY, f"splits[{i}].object_key")
            check_length(split.index_key, MAX_OBJECT_KEY, f"splits[{i}].index_key")
            if split.num_rows < 0 or split.num_bytes < 0:
                raise InvalidArgument(f"splits[{i}] row and byte counts must be >= 0", field=f"splits[{i}]")
        check_mappings(req.field_mappings)
        for key in req.field_mappings:
            if not key:
                raise InvalidArgument("field_mappings has an empty target field", field="field_mappings")
        return training_type

    def _complete_split(self, split: Split) -> Split:
        """Check the split's objects exist; count rows and build the index when the caller did not."""
        size = self.store.stat(split.object_key)
        if size is None:
            raise FailedPrecondition(
                f"split {split.name!r}: object {split.object_key} does not exist in storage", field="splits"
            )
        out = Split(split.name, split.num_rows, split.num_bytes or size, split.object_key, split.index_key)
        if split.index_key:
            head = self._index_header(split.index_key, split.name)
            if head.size != size:
                raise FailedPrecondition(
                    f"split {split.name!r}: index {split.index_key} describes {head.size} bytes but "
                    f"{split.object_key} has {size}", field="splits"
                )
            out.num_rows = head.lines
            return out
        builder = jsonl.LineIndexBuilder()
        for chunk in self.store.iter_chunks(split.object_key):
            builder.feed(chunk)
        out.index_key = index_key_for(split.object_key)
        self.store.put_bytes(out.index_key, builder.finish())
        out.num_rows = builder.lines
        out.num_bytes = builder.size
        return out

    def _index_header(self, index_key: str, split_name: str) -> jsonl.IndexHeader:
        try:
            data = self.store.get_bytes(index_key, 0, jsonl.HEADER.size)
        except NotFound:
            raise FailedPrecondition(
                f"split {split_name!r}: index {index_key} does not exist in storage", field="splits"
            ) from None
        try:
            return jsonl.parse_header(data)
        except (ValueError, struct.error):
            raise FailedPrecondition(f"split {split_name!r}: {index_key} is not a Ferry JSONL index",
                                     field="splits") from None

    def register(self, req: DatasetRegistration) -> Dataset:
        """Make a dataset READY. Registering again for the same import job returns the first result."""
        training_type = self._validate(req)
        target = self._target(req)
        if target is not None and self._already_registered(target, req):
            return target
        splits = [self._complete_split(s) for s in req.splits]
        values = _registration_row(req, training_type, splits, target)
        try:
            dataset_id = self._write_registration(values, target)
        except (_Raced, sqlite3.IntegrityError):
            return self._raced_registration(req)
        ds = self._load(dataset_id)
        assert ds is not None
        log.info("registered dataset %d %r (%s, %d splits)", ds.id, ds.name, training_type.value, len(splits))
        return ds

    def _target(self, req: DatasetRegistration) -> Dataset | None:
        """The reserved dataset the registration fills (by import job, else by id); None for a new one."""
        target: Dataset | None = None
        if req.import_job_id:
            target = self._by_job(req.import_job_id)
            if target is not None and req.dataset_id and target.id != req.dataset_id:
                raise FailedPrecondition(
                    f"import job {req.import_job_id} already has dataset {target.id}, not {req.dataset_id}",
                    field="dataset_id",
                )
        if target is None and req.dataset_id:
            target = self._load(req.dataset_id)
            if target is None:
                raise NotFound(f"dataset {req.dataset_id} not found")
            if target.import_job_id and req.import_job_id and target.import_job_id != req.import_job_id:
                raise FailedPrecondition(
                    f"dataset {target.id} was reserved for import job {target.import_job_id}", field="import_job_id"
                )
        return target

    @staticmethod
    def _already_registered(target: Dataset, req: DatasetRegistration) -> bool:
        """True when this import job registered `target` before; raises when it cannot be registered."""
        if target.state is DatasetState.READY:
            if req.import_job_id and target.import_job_id == req.import_job_id:
                return True
            raise FailedPrecondition(f"dataset {target.id} is already registered", field="dataset_id")
        if target.state is DatasetState.DELETING:
            raise FailedPrecondition(f"dataset {target.id} is being deleted", field="dataset_id")
        return False

    def _write_registration(self, values: dict[str, Any], target: Dataset | None) -> int:
        """Insert the READY row, or fill the reserved one (raises _Raced when it is no longer PENDING)."""
        with self.db.transaction() as conn:
            if target is None:
                cur = conn.execute(
                    f"INSERT INTO datasets ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                    list(values.values()),
                )
                return int(cur.lastrowid or 0)
            cols = ", ".join(f"{k} = ?" for k in values)
            cur = conn.execute(
                f"UPDATE datasets SET {cols} WHERE id = ? AND state = ?",
                [*values.values(), target.id, DatasetState.PENDING.value],
            )
            if cur.rowcount == 0:
                raise _Raced()
            return target.id

    def _raced_registration(self, req: DatasetRegistration) -> Dataset:
        """A concurrent register for the same import job finished first: answer as it did."""
        winner = self._by_job(req.import_job_id) if req.import_job_id else None
        if winner is not None and winner.state is DatasetState.READY:
            return winner
        raise FailedPrecondition(f"dataset {req.dataset_id} changed while registering; retry") from None

    # -- listing ----------------------------------------------------------------------

    def list_datasets(
        self,
        page_size: int = 0,
        page_token: str = "",
        name_contains: str = "",
        training_type: TrainingType | None = None,
        source_repo_id: str = "",
    ) -> DatasetPage:
        size = paging.page_size(page_size)
        where = ["state = ?"]
        params: list[Any] = [DatasetState.READY.value]
        if name_contains:
            where.append("contains_ci(name, ?)")
            params.append(name_contains)
        if training_type is not None:
            where.append("training_type = ?")
            params.append(training_type.value)
        if source_repo_id:
            where.append("source_repo_id = ?")
            params.append(source_repo_id)
        count = self.db.query_one(f"SELECT COUNT(*) FROM datasets WHERE {' AND '.join(where)}", params)
        total = int(count[0]) if count else 0
        cursor = paging.decode(page_token)
        if cursor is not None:
            if not isinstance(cursor[1], int):
                raise InvalidArgument("page_token is not a token this server issued", field="page_token")
            where.append("(created_at < ? OR (created_at = ? AND id < ?))")
            params += [cursor[0], cursor[0], cursor[1]]
        rows = self.db.query(
            f"SELECT * FROM datasets WHERE {' AND '.join(where)} ORDER BY created_at DESC, id DESC LIMIT ?",
            [*params, size + 1],
        )
        datasets = [_row_to_dataset(r) for r in rows[:size]]
        token = paging.encode(datasets[-1].created_at, datasets[-1].id) if len(rows) > size else ""
        return DatasetPage(datasets, token, total)

    # -- delete -------------------------------------------------------------------------

    def delete(self, dataset_id: int) -> int:
        """Hide the dataset, remove its objects, then its row. Returns how many objects were removed.

        Atomic: of concurrent deletes of one dataset exactly one succeeds, the others get NOT_FOUND (it is gone,
        or being deleted by someone else). A reserved (PENDING) dataset can be deleted too: that is how an
        import that failed or was cancelled releases its reservation. If storage fails midway the row stays
        DELETING (still invisible); deleting again, or restarting the catalog, finishes the job.
        """
        ds = self._claim_delete(dataset_id)
        try:
            removed = self._finish_delete(ds)
        finally:
            with self._delete_lock:
                self._deleting.discard(dataset_id)
        log.info("deleted dataset %d (%d objects)", dataset_id, removed)
        return removed

    def _claim_delete(self, dataset_id: int) -> Dataset:
        """Mark the dataset DELETING and this process's delete as the one in progress; NotFound when it is gone or
        another delete has it. A row already DELETING with no delete in progress here was left by one that
        failed (or by a previous process): this delete takes it over."""
        if dataset_id <= 0:
            raise NotFound(f"dataset {dataset_id} not found")
        with self._delete_lock:
            if dataset_id in self._deleting:
                raise NotFound(f"dataset {dataset_id} not found (it is being deleted)")
            with self.db.transaction() as conn:
                row = conn.execute("SELECT * FROM datasets WHERE id = ?", (dataset_id,)).fetchone()
                if row is None:
                    raise NotFound(f"dataset {dataset_id} not found")
                conn.execute("UPDATE datasets SET state = ? WHERE id = ? AND state != ?",
                             (DatasetState.DELETING.value, dataset_id, DatasetState.DELETING.value))
            self._deleting.add(dataset_id)
        return _row_to_dataset(row)

    def _finish_delete(self, ds: Dataset) -> int:
        """Remove the objects of a dataset marked DELETING, then its row."""
        removed = self._remove_objects(ds)
        self.db.execute("DELETE FROM datasets WHERE id = ? AND state = ?", (ds.id, DatasetState.DELETING.value))
        return removed

    def _remove_objects(self, ds: Dataset) -> int:
        prefix = prefix_of(ds.id)
        removed = self.store.delete_prefix(prefix)
        # Splits registered from keys outside the prefix are removed one by one.
        for split in ds.splits:
            for key in (split.object_key, split.index_key):
                if key and not key.startswith(prefix) and self.store.stat(key) is not None:
                    self.store.delete(key)
                    removed += 1
        return removed

    def finish_interrupted_deletes(self) -> int:
        """Complete deletes a previous process started but did not finish (called at start-up)."""
        rows = self.db.query("SELECT id FROM datasets WHERE state = ?", (DatasetState.DELETING.value,))
        for row in rows:
            try:
                self.delete(int(row["id"]))
            except NotFound:
                pass  # finished meanwhile by a delete call
            except Exception:  # noqa: BLE001 - retried at the next start or delete
                log.warning("could not finish deleting dataset %d yet", row["id"])
        return len(rows)

    # -- examples -------------------------------------------------------------------------

    def list_examples(self, dataset_id: int, split: str = "", offset: int = 0, limit: int = 0) -> ExamplesPage:
        """One page of a split: two ranged reads of index and JSONL, whatever the offset."""
        if offset < 0:
            raise InvalidArgument(f"offset must be >= 0, got {offset}", field="offset")
        if limit == 0:
            limit = DEFAULT_EXAMPLES
        if limit < 0 or limit > MAX_EXAMPLES:
            raise InvalidArgument(f"limit must be between 1 and {MAX_EXAMPLES}, got {limit}", field="limit")
        ds = self.get(dataset_id)
        if not ds.splits:
            raise NotFound(f"dataset {dataset_id} has no splits")
        chosen = ds.splits[0] if not split else next((s for s in ds.splits if s.name == split), None)
        if chosen is None:
            names = ", ".join(s.name for s in ds.splits)
            raise NotFound(f"split {short(split)} not found in dataset {dataset_id}; available splits: {names}")

        def read_range(key: str, start: int, length: int) -> bytes:
            if length <= 0:
                return b""
            try:
                return self.store.get_bytes(key, start, length)
            except NotFound:
                self.get(dataset_id)  # deleted meanwhile: NOT_FOUND like any later read
                raise Internal(f"object {key} of dataset {dataset_id} is missing from storage") from None

        lines, total = jsonl.read_page(read_range, chosen.object_key, chosen.index_key, offset, limit)
        examples = [
            Example(offset + i, line.decode("utf-8", errors="replace").rstrip("\r")) for i, line in enumerate(lines)
        ]
        return ExamplesPage(dataset_id, chosen.name, examples, total, offset, limit)


class _Raced(Exception):
    pass
