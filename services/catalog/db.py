"""The catalog's SQLite file: one shared connection behind a lock, WAL, versioned migrations.

One connection guarded by a lock is simpler than per-thread connections and
fast enough: every statement here is a point lookup or a small indexed scan.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Each entry moves the schema from version i to i+1 (PRAGMA user_version). Only ever append.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE datasets (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL,
        training_type TEXT NOT NULL DEFAULT '',
        source_kind TEXT NOT NULL DEFAULT 'UNSPECIFIED',
        source_repo_id TEXT NOT NULL DEFAULT '',
        source_revision TEXT NOT NULL DEFAULT '',
        source_config TEXT NOT NULL DEFAULT '',
        source_splits TEXT NOT NULL DEFAULT '[]',
        splits TEXT NOT NULL DEFAULT '[]',
        field_mappings TEXT NOT NULL DEFAULT '{}',
        features TEXT NOT NULL DEFAULT '[]',
        row_features TEXT NOT NULL DEFAULT '[]',
        created_at REAL NOT NULL,
        import_job_id TEXT NOT NULL DEFAULT ''
    );
    CREATE UNIQUE INDEX datasets_import_job ON datasets(import_job_id) WHERE import_job_id != '';
    CREATE INDEX datasets_listing ON datasets(state, created_at DESC, id DESC);
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        phase TEXT NOT NULL,
        progress TEXT NOT NULL DEFAULT '{}',
        message TEXT NOT NULL DEFAULT '',
        error TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        heartbeat_at REAL,
        worker_id TEXT NOT NULL DEFAULT '',
        stalled INTEGER NOT NULL DEFAULT 0,
        attempt INTEGER NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        request_json TEXT NOT NULL DEFAULT '',
        checkpoint_json TEXT NOT NULL DEFAULT '',
        dataset_id INTEGER NOT NULL DEFAULT 0,
        files TEXT NOT NULL DEFAULT '[]',
        rows_skipped INTEGER NOT NULL DEFAULT 0,
        skip_reasons TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX jobs_listing ON jobs(kind, created_at DESC, id DESC);
    CREATE INDEX jobs_active ON jobs(phase, worker_id);
    CREATE TABLE mapping_templates (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        training_type TEXT NOT NULL,
        field_mappings TEXT NOT NULL,
        repo_id TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL
    );
    CREATE UNIQUE INDEX mapping_templates_key ON mapping_templates(name, training_type, repo_id);
    """,
    # v2: when a stalled job may be claimed again (back-off between attempts).
    "ALTER TABLE jobs ADD COLUMN retry_at REAL",
]


def _contains_ci(haystack: str | None, needle: str | None) -> int:
    # SQLite's lower() only folds ASCII; names are often not ASCII.
    return int((needle or "").casefold() in (haystack or "").casefold())


class Database:
    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        # No retry loop of ours: timeout=30 is SQLite's own busy handler, waiting up to 30 s for another process's
        # lock (a second catalog on the same file) before "database is locked".
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.row_factory = sqlite3.Row
        self._conn.create_function("contains_ci", 2, _contains_ci, deterministic=True)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()

    @property
    def schema_version(self) -> int:
        row = self.query_one("PRAGMA user_version")
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        current = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
        if current > len(MIGRATIONS):
            raise RuntimeError(f"catalog database {self.path} has schema v{current}, newer than this code "
                               f"(v{len(MIGRATIONS)})")
        for version in range(current, len(MIGRATIONS)):
            with self.transaction():
                for stmt in MIGRATIONS[version].split(";"):
                    if stmt.strip():
                        self._conn.execute(stmt)
                self._conn.execute(f"PRAGMA user_version = {version + 1}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT under the lock; rolls back on any exception."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._conn.execute(sql, params)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._conn.execute(sql, params).fetchall())

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
            return row

    def close(self) -> None:
        with self._lock:
            self._conn.close()
