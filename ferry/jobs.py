"""Jobs as every service sees them: the catalog stores them, importer and exporter workers run them.

Plain domain types, no gRPC: ferry/wire.py translates them to and from the catalog's protobuf messages.
A job is created QUEUED, claimed by one worker, moves through its work phases while that worker reports
with `JobUpdate`s (each one also a heartbeat), and ends in a terminal phase (docs/catalog.md).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["TERMINAL", "TERMINAL_STATUSES", "Job", "JobFile", "JobKind", "JobPage", "JobProgress", "JobUpdate",
           "Phase"]


class JobKind(str, enum.Enum):
    IMPORT = "IMPORT"
    EXPORT = "EXPORT"


class Phase(str, enum.Enum):
    QUEUED = "QUEUED"
    DOWNLOADING = "DOWNLOADING"
    CONVERTING = "CONVERTING"
    EXPORTING = "EXPORTING"
    SAVING = "SAVING"
    COMPLETE = "COMPLETE"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        """Whether the job has ended: a terminal phase never changes again."""
        return self in TERMINAL

    @property
    def status(self) -> str:
        """The lower-case name progress answers and REST show ("queued", ..., "cancelled")."""
        return self.value.lower()


TERMINAL = (Phase.COMPLETE, Phase.ERROR, Phase.CANCELLED)
# The statuses of the terminal phases, for code that sees only the lower-case names.
TERMINAL_STATUSES = frozenset(p.status for p in TERMINAL)


@dataclass
class JobProgress:
    rows_done: int = 0
    rows_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    rows_per_second: float = 0.0
    bytes_per_second: float = 0.0
    percent: float = 0.0


@dataclass
class JobFile:
    """A file a job produced (an export's output) in the object store."""

    name: str
    object_key: str
    size: int = 0
    sha256: str = ""


@dataclass
class Job:
    id: str
    kind: JobKind
    phase: Phase
    progress: JobProgress = field(default_factory=JobProgress)
    message: str = ""
    error: str = ""
    # Seconds since the epoch; the optional ones are None until they happen.
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    heartbeat_at: float | None = None
    worker_id: str = ""
    stalled: bool = False
    attempt: int = 0
    # When a stalled job may be claimed again (its back-off); None otherwise.
    retry_at: float | None = None
    cancel_requested: bool = False
    # The validated request (JSON) and the worker's resume state (JSON); never a secret in clear.
    request_json: str = ""
    checkpoint_json: str = ""
    dataset_id: int = 0
    files: list[JobFile] = field(default_factory=list)
    rows_skipped: int = 0
    skip_reasons: list[str] = field(default_factory=list)


@dataclass
class JobUpdate:
    """What the owning worker reports: every field left at its default leaves the job's value as it is."""

    job_id: str
    worker_id: str
    phase: Phase | None = None
    progress: JobProgress | None = None
    message: str = ""
    error: str = ""
    checkpoint_json: str = ""
    dataset_id: int = 0
    files: list[JobFile] = field(default_factory=list)
    rows_skipped: int = 0
    skip_reasons: list[str] = field(default_factory=list)


@dataclass
class JobPage:
    jobs: list[Job]
    next_page_token: str
