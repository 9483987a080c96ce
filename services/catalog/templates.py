"""Saved field mappings, so a user maps a Hub repo's columns once and reuses it."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid

from ferry.canonical import TrainingType
from ferry.datasets import MappingTemplate
from ferry.errors import InvalidArgument, NotFound
from services.catalog.db import Database
from services.catalog.limits import MAX_NAME, MAX_REPO_ID, check_length, check_mappings, prefix


def _row(row: sqlite3.Row) -> MappingTemplate:
    return MappingTemplate(
        id=row["id"],
        name=row["name"],
        training_type=TrainingType(row["training_type"]),
        field_mappings=dict(json.loads(row["field_mappings"])),
        repo_id=row["repo_id"],
        created_at=float(row["created_at"]),
    )


class Templates:
    def __init__(self, db: Database) -> None:
        self.db = db

    def save(self, name: str, training_type: TrainingType | None, field_mappings: dict[str, str],
             repo_id: str = "") -> MappingTemplate:
        """Create, or replace the mappings of the template with the same name, type and repo."""
        name = name.strip()
        if not name:
            raise InvalidArgument("name must not be empty", field="name")
        check_length(name, MAX_NAME, "name")
        check_length(repo_id, MAX_REPO_ID, "repo_id")
        if training_type is None:
            raise InvalidArgument("training_type is required: one of SL, DPO, CHAT", field="training_type")
        tt = training_type
        if not field_mappings:
            raise InvalidArgument("field_mappings must map at least one field", field="field_mappings")
        check_mappings(field_mappings)
        for target, source in field_mappings.items():
            if not target.strip() or not source.strip():
                raise InvalidArgument("field_mappings entries need a target and a source column",
                                      field="field_mappings")
        mappings = json.dumps(dict(field_mappings), sort_keys=True)
        with self.db.transaction() as conn:
            existing = conn.execute(
                "SELECT id FROM mapping_templates WHERE name = ? AND training_type = ? AND repo_id = ?",
                (name, tt.value, repo_id),
            ).fetchone()
            if existing:
                template_id = existing["id"]
                conn.execute("UPDATE mapping_templates SET field_mappings = ? WHERE id = ?", (mappings, template_id))
            else:
                template_id = uuid.uuid4().hex
                conn.execute(
                    "INSERT INTO mapping_templates (id, name, training_type, field_mappings, repo_id, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (template_id, name, tt.value, mappings, repo_id, time.time()),
                )
        row = self.db.query_one("SELECT * FROM mapping_templates WHERE id = ?", (template_id,))
        assert row is not None
        return _row(row)

    def list_templates(self, training_type: TrainingType | None = None, repo_id: str = "") -> list[MappingTemplate]:
        where, params = [], []
        if training_type is not None:
            where.append("training_type = ?")
            params.append(training_type.value)
        if repo_id:
            where.append("repo_id = ?")
            params.append(repo_id)
        sql = "SELECT * FROM mapping_templates" + (f" WHERE {' AND '.join(where)}" if where else "")
        return [_row(r) for r in self.db.query(sql + " ORDER BY name, created_at", params)]

    def delete(self, template_id: str) -> None:
        if not template_id:
            raise InvalidArgument("template_id is required", field="template_id")
        cur = self.db.execute("DELETE FROM mapping_templates WHERE id = ?", (template_id,))
        if cur.rowcount == 0:
            raise NotFound(f"mapping template {prefix(template_id)} not found")
