"""The catalog core: datasets, jobs and templates over one SQLite file and the bucket (no gRPC here)."""

from __future__ import annotations

from pathlib import Path

from ferry.storage import ObjectStore
from services.catalog.datasets import Datasets
from services.catalog.db import Database
from services.catalog.jobs import Jobs
from services.catalog.templates import Templates


class CatalogCore:
    def __init__(self, db_path: Path | str, store: ObjectStore, heartbeat_timeout: float,
                 max_watchers: int = 1000, *, max_attempts: int = 3, retry_backoff: float = 0.0) -> None:
        self.db = Database(db_path)
        self.store = store
        self.datasets = Datasets(self.db, store)
        self.jobs = Jobs(self.db, heartbeat_timeout, max_watchers=max_watchers, max_attempts=max_attempts,
                         retry_backoff=retry_backoff)
        self.templates = Templates(self.db)
        self._closed = False

    def start(self) -> None:
        self.datasets.finish_interrupted_deletes()
        self.jobs.start_sweeper()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.jobs.close()
        self.db.close()
