"""Datasets as every service sees them: catalog records of imported, canonical JSONL splits.

Plain domain types, no gRPC: ferry/wire.py translates them to and from the catalog's protobuf messages.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ferry.canonical import TrainingType

__all__ = ["Dataset", "DatasetRegistration", "DatasetSource", "DatasetState", "Example", "Feature",
           "MappingTemplate", "SourceKind", "Split"]


class SourceKind(str, enum.Enum):
    UNSPECIFIED = "UNSPECIFIED"
    HUB = "HUB"
    LOCAL_DIR = "LOCAL_DIR"
    LOCAL_FILES = "LOCAL_FILES"


class DatasetState(str, enum.Enum):
    PENDING = "PENDING"
    READY = "READY"
    DELETING = "DELETING"


@dataclass
class DatasetSource:
    """Where the rows came from, pinned: the Hub repo (or local path), its revision, config and splits."""

    kind: SourceKind = SourceKind.UNSPECIFIED
    repo_id: str = ""
    revision: str = ""
    config: str = ""
    splits: list[str] = field(default_factory=list)


@dataclass
class Split:
    name: str
    num_rows: int = 0
    num_bytes: int = 0
    object_key: str = ""
    index_key: str = ""


@dataclass
class Feature:
    name: str
    dtype: str


@dataclass
class Dataset:
    id: int
    name: str
    source: DatasetSource
    training_type: TrainingType | None
    splits: list[Split]
    field_mappings: dict[str, str]
    # The source's columns, and the canonical rows' fields.
    features: list[Feature]
    row_features: list[Feature]
    created_at: float
    state: DatasetState
    import_job_id: str


@dataclass
class DatasetRegistration:
    """What an import registers once every split object is stored (the catalog checks it all)."""

    dataset_id: int = 0
    name: str = ""
    source: DatasetSource = field(default_factory=DatasetSource)
    training_type: TrainingType | None = None
    splits: list[Split] = field(default_factory=list)
    field_mappings: dict[str, str] = field(default_factory=dict)
    features: list[Feature] = field(default_factory=list)
    row_features: list[Feature] = field(default_factory=list)
    import_job_id: str = ""


@dataclass
class Example:
    index: int
    json: str


@dataclass
class MappingTemplate:
    id: str
    name: str
    training_type: TrainingType
    field_mappings: dict[str, str]
    repo_id: str
    created_at: float
