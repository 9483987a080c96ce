"""Source record batches -> canonical JSONL rows (docs/importer-mapping.md).

Plain and joined text columns go through a vectorised polars path that encodes
JSON in Rust; only conversations (message lists, transcripts) need Python per
row. Both paths produce byte-identical lines for the same row, and a skipped
row's reasons always come from the per-row path, i.e. from `ferry.canonical.problems`.
Dot-path sources (`message.content`) are computed column-wise first (paths.py),
so both paths see them as plain columns named like the spec.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from ferry.canonical import TrainingType, problems, to_messages
from ferry.errors import FailedPrecondition
from services.importer.convert_turns import (
    ConversationError,
    Parts,
    extract,
    parse_transcript,
    parse_turns,
    prefix_key,
    split,
)
from services.importer.mapping_spec import JOIN_SEPARATOR, Spec, check_mapping
from services.importer.paths import FieldPath, resolve, select_sources, value_at

MAX_SKIP_REASONS = 20

# Exactly the characters Python's str.strip() removes, so "blank" means the same here as in canonical.problems().
_WS = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_BLANK_RE = "^[" + _WS + "]*$"


@dataclass
class MappedBatch:
    jsonl: bytes
    rows_ok: int
    rows_skipped: int
    skip_reasons: list[str] = field(default_factory=list)


def _dumps(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


def _encode_lines(lines: list[str], rows: list[dict[str, Any]]) -> bytes:
    text = "".join(lines)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates can only come from JSON text inside a source value; escape them per row.
        out = []
        for line, row in zip(lines, rows, strict=True):
            try:
                out.append(line.encode("utf-8"))
            except UnicodeEncodeError:
                out.append(json.dumps(row, ensure_ascii=True, separators=(",", ":")).encode() + b"\n")
        return b"".join(out)


def _as_text_series(s: pl.Series) -> pl.Series:
    return s if s.dtype == pl.String else s.cast(pl.String)


class RowMapper:
    """Maps one source split's batches to canonical rows for one training type and mapping.

    Row numbers in skip reasons are 0-based positions in the split: the mapper counts
    the rows it has seen, so use one mapper per split or pass `row_offset`.
    """

    def __init__(self, training_type: TrainingType | str, field_mappings: dict[str, str], schema: pa.Schema):
        self.training_type = (training_type if isinstance(training_type, TrainingType)
                              else TrainingType.parse(training_type))
        self.schema = schema
        self.specs: dict[str, Spec] = check_mapping(schema, self.training_type, dict(field_mappings))
        self.field_mappings = {t: v for t, v in field_mappings.items() if t in self.specs}  # blanks dropped
        sources: list[str] = []
        for spec in self.specs.values():
            sources += [c for c in spec.columns if c not in sources]
        # The spec sources, in order; a source that is not a top-level column is a dot-path (paths.py).
        self.sources = sources
        self.paths: dict[str, FieldPath] = {s: resolve(schema, s) for s in sources if s not in schema.names}
        # The top-level columns to read (a path's root column), e.g. for a reader's projection.
        self.columns = list(dict.fromkeys(self.paths[s].root if s in self.paths else s for s in sources))
        self.vectorised = all(s.kind in ("column", "join") for s in self.specs.values())
        self._chat_from_pairs = self.training_type is TrainingType.CHAT and "messages" not in self.specs
        self._check_prefix = (self.training_type is TrainingType.DPO and self.specs["chosen"].is_conversation
                              and self.specs["rejected"].is_conversation)
        self._next_row = 0

    # --- public -----------------------------------------------------------------------------------------------

    def map_batch(self, batch: pa.RecordBatch | pa.Table, row_offset: int | None = None,
                  force_per_row: bool = False) -> MappedBatch:
        offset = self._next_row if row_offset is None else row_offset
        self._next_row = offset + batch.num_rows
        if batch.num_rows == 0:
            return MappedBatch(b"", 0, 0, [])
        missing = [c for c in self.columns if c not in batch.schema.names]
        if missing:
            # Data files of one split disagree on their columns: not something a mapping can fix.
            raise FailedPrecondition(f"source batch lacks mapped column(s) {', '.join(map(repr, missing))} "
                                     f"(it has {', '.join(batch.schema.names)})")
        # Paths are computed here, column-wise, into columns named like the spec: both conversions see plain columns.
        sub = select_sources(batch, self.sources, self.paths)
        if self.vectorised and not force_per_row:
            return self._map_vectorised(sub, offset)
        return self._map_per_row(sub, offset)

    def map_rows(self, rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any] | None, list[str]]]:
        """Each source row as (canonical row, []) or (None, problems); for previews.

        Rows are Python dicts of the source columns; dot-path sources are read out of them (`paths.value_at`)
        unless a row already holds a key named like the path.
        """
        return [self.convert_row(self._with_paths(row)) for row in rows]

    def map_table_rows(self, table: pa.Table | pa.RecordBatch) -> list[tuple[dict[str, Any] | None, list[str]]]:
        """`map_rows` for Arrow rows, with paths computed the way an import computes them."""
        return [self.convert_row(row) for row in select_sources(table, self.sources, self.paths).to_pylist()]

    def _with_paths(self, row: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(row, dict):
            return row
        missing = [s for s in self.paths if s not in row]
        if not missing:
            return row
        out = dict(row)
        for s in missing:
            out[s] = value_at(row.get(self.paths[s].root), self.paths[s].steps)
        return out

    def convert_row(self, values: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
        errors: list[str] = []
        parsed: dict[tuple[str, str], list[dict[str, str]] | ConversationError] = {}
        parts: dict[tuple[str, str], Parts] = {}
        got: dict[str, Any] = {}
        for target, spec in self.specs.items():
            if spec.kind == "column":
                got[target] = values.get(spec.column)
            elif spec.kind == "join":
                got[target] = self._join([values.get(c) for c in spec.columns])
            else:
                key = (spec.kind, spec.column)
                if key not in parsed:
                    reader = parse_turns if spec.kind == "turns" else parse_transcript
                    try:
                        parsed[key] = reader(values.get(spec.column))
                    except ConversationError as e:
                        parsed[key] = e
                        errors.append(f"{_source_label(spec)} {e}")  # once per source, not per target
                conv = parsed[key]
                if isinstance(conv, ConversationError):
                    continue
                if target != "messages" and key not in parts:
                    parts[key] = split(conv)
                try:
                    got[target] = extract(target, conv, parts.get(key))
                except ConversationError as e:
                    errors.append(f"{target}: {_source_label(spec)} {e}")
        if errors:
            return None, errors
        if self._check_prefix:
            chosen = parsed[(self.specs["chosen"].kind, self.specs["chosen"].column)]
            rejected = parsed[(self.specs["rejected"].kind, self.specs["rejected"].column)]
            assert isinstance(chosen, list) and isinstance(rejected, list)
            if prefix_key(chosen) != prefix_key(rejected):
                return None, ["chosen and rejected conversations differ before their final assistant turns"]
        return self._finish(got)

    # --- per row ----------------------------------------------------------------------------------------------

    @staticmethod
    def _join(parts: list[Any]) -> Any:
        texts = []
        for part in parts:
            if part is None:
                continue
            if not isinstance(part, str):
                return part  # not text: let canonical.problems() name it
            if part.strip():
                texts.append(part)
        return JOIN_SEPARATOR.join(texts) if texts else None

    def _finish(self, got: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
        tt = self.training_type
        if tt is TrainingType.CHAT and not self._chat_from_pairs:
            row: dict[str, Any] = {"messages": got["messages"]}
            found = problems(tt, row)
            return (None, found) if found else (row, [])
        keys = ("prompt", "chosen", "rejected") if tt is TrainingType.DPO else ("prompt", "completion")
        row = {k: got.get(k) for k in keys}
        system = got.get("system")
        if system is not None and not (isinstance(system, str) and not system.strip()):
            row["system"] = system
        if got.get("history"):
            row["history"] = got["history"]
        if self._chat_from_pairs:
            found = problems(TrainingType.SL, row)
            if found:
                return None, found
            row = {"messages": to_messages(TrainingType.SL, row)}
        found = problems(tt, row)
        return (None, found) if found else (row, [])

    def _map_per_row(self, sub: pa.RecordBatch | pa.Table, offset: int) -> MappedBatch:
        cols = [sub.column(i).to_pylist() for i in range(sub.num_columns)]
        names = sub.schema.names
        lines: list[str] = []
        rows: list[dict[str, Any]] = []
        reasons: list[str] = []
        skipped = 0
        for i, values in enumerate(zip(*cols, strict=True)):
            row, found = self.convert_row(dict(zip(names, values, strict=True)))
            if row is None:
                skipped += 1
                if len(reasons) < MAX_SKIP_REASONS:
                    reasons.append(f"row {offset + i}: {'; '.join(found)}")
                continue
            rows.append(row)
            lines.append(_dumps(row) + "\n")
        return MappedBatch(_encode_lines(lines, rows), len(rows), skipped, reasons)

    # --- vectorised -------------------------------------------------------------------------------------------

    def _text_expr(self, spec: Spec) -> pl.Expr:
        if spec.kind == "column":
            return pl.col(spec.column)
        parts = [pl.when(_is_blank(pl.col(c))).then(None).otherwise(pl.col(c)) for c in spec.columns]
        joined = pl.concat_str(parts, separator=JOIN_SEPARATOR, ignore_nulls=True)
        return pl.when(pl.all_horizontal([p.is_null() for p in parts])).then(None).otherwise(joined)

    def _map_vectorised(self, sub: pa.RecordBatch | pa.Table, offset: int) -> MappedBatch:
        df = pl.DataFrame([_as_text_series(pl.Series(name, sub.column(i)))
                           for i, name in enumerate(sub.schema.names)])
        tt = self.training_type
        required = ("prompt", "chosen", "rejected") if tt is TrainingType.DPO else ("prompt", "completion")
        text = {t: self._text_expr(s).alias(t) for t, s in self.specs.items()}
        df = df.select(list(text.values()))
        ok = pl.all_horizontal([pl.col(t).is_not_null() & ~_is_blank(pl.col(t)) for t in required])
        if tt is TrainingType.DPO:
            ok = ok & (pl.col("chosen") != pl.col("rejected")).fill_null(False)
        has_system = ("system" in text) and (pl.col("system").is_not_null() & ~_is_blank(pl.col("system")))
        pieces: list[pl.Expr]
        if self._chat_from_pairs:
            pieces = [pl.lit('{"messages":[')]
            if has_system is not False:
                pieces.append(pl.when(has_system)
                              .then(pl.concat_str([pl.lit('{"role":"system","content":'), _enc("system"),
                                                   pl.lit("},")]))
                              .otherwise(pl.lit("")))
            pieces += [pl.lit('{"role":"user","content":'), _enc("prompt"),
                       pl.lit('},{"role":"assistant","content":'), _enc("completion"), pl.lit("}]}\n")]
        elif "system" not in text:
            # The whole object in one encode: the same encoder as _enc, without stripping a wrapper per field.
            pieces = [pl.struct([pl.col(t) for t in required]).struct.json_encode(), pl.lit("\n")]
        else:
            pieces = []
            for i, t in enumerate(required):
                pieces += [pl.lit(("{" if i == 0 else ",") + json.dumps(t) + ":"), _enc(t)]
            if has_system is not False:
                pieces.append(pl.when(has_system).then(pl.concat_str([pl.lit(',"system":'), _enc("system")]))
                              .otherwise(pl.lit("")))
            pieces.append(pl.lit("}\n"))
        out = df.select(pl.concat_str(pieces).alias("line"), ok.alias("ok"))
        ok_col = out.get_column("ok")
        n_ok = int(ok_col.sum())
        good = out.get_column("line") if n_ok == len(ok_col) else out.filter(pl.col("ok")).get_column("line")
        jsonl = _joined_bytes(good)
        bad = (~ok_col).arg_true()
        reasons = []
        if len(bad):
            for idx in bad.head(MAX_SKIP_REASONS).to_list():
                values = {name: sub.column(j)[idx].as_py() for j, name in enumerate(sub.schema.names)}
                row, found = self.convert_row(values)
                reasons.append(f"row {offset + idx}: {'; '.join(found) if found else 'invalid row'}")
        return MappedBatch(jsonl, len(good), len(bad), reasons)


def _joined_bytes(lines: pl.Series) -> bytes:
    """The lines concatenated, straight from Arrow's value buffer (no Python str of the whole batch)."""
    if not len(lines):
        return b""
    arr = lines.to_arrow(compat_level=pl.CompatLevel.oldest())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count or not (pa.types.is_large_string(arr.type) or pa.types.is_string(arr.type)):
        return str(lines.str.join("").item()).encode("utf-8")
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64 if pa.types.is_large_string(arr.type) else np.int32)
    start, end = int(offsets[arr.offset]), int(offsets[arr.offset + len(arr)])
    data = arr.buffers()[2]
    return data[start:end].to_pybytes() if data is not None and end > start else b""


def _source_label(spec: Spec) -> str:
    return f"{'transcript' if spec.kind == 'transcript' else 'conversation'} {spec.column!r}"


def _is_blank(expr: pl.Expr) -> pl.Expr:
    return expr.str.contains(_BLANK_RE)


def _enc(name: str) -> pl.Expr:
    """A column's values as JSON string literals (polars encodes in Rust; strings keep non-ASCII as UTF-8)."""
    return pl.struct(pl.col(name).alias("v")).struct.json_encode().str.strip_prefix('{"v":').str.strip_suffix("}")
