"""Dot-paths into nested source columns (docs/importer-mapping.md, "Dot-paths").

A mapping source may name a value inside nested columns: `message.content` (a struct field),
`messages.content` (that field of every item of a list of structs, as a list), `messages.0.content` /
`messages.-1.content` (one item by index; negative counts from the end; out of range is null), to any depth.
A top-level column whose name is the whole text always wins: real datasets have flat columns named
`subreddit.nsfw`. Names inside the path may contain dots too; the longest name that resolves wins.

`resolve` checks a path against a schema and gives its value type, so mapping validation treats a resolved path
exactly like a column of that type. `evaluate` computes a path's values from its root column with Arrow kernels
(struct field extraction, list offsets), batch by batch, so imports stay vectorised and memory stays bounded;
`value_at` is the same walk over Python values (preview rows, `datasets`-formatted rows). `field_paths` lists
every selectable path of a schema for a UI. Nothing here knows about gRPC.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ferry.errors import FailedPrecondition

__all__ = ["MAX_LISTED_DEPTH", "FieldPath", "PathError", "describe_type", "evaluate", "field_paths", "is_list_like",
           "resolve", "select_sources", "value_at"]

# field_paths lists paths of at most this many names (root included).
MAX_LISTED_DEPTH = 4
SEPARATOR = "."
_INDEX = re.compile(r"-?[0-9]+\Z")
_FAR = 1 << 62

# A step is a struct field name (applied to every item when the value is a list) or a list index.
Step = str | int


class PathError(ValueError):
    """The text does not resolve as a path; the message says where it stops."""


@dataclass(frozen=True)
class FieldPath:
    text: str  # as written in the mapping, e.g. "messages.-1.content"
    root: str  # the top-level column it starts from
    steps: tuple[Step, ...]
    type: pa.DataType  # the type of the values it yields


# -- types -------------------------------------------------------------------------------------------------------

def is_list_like(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
            or pa.types.is_list_view(t) or pa.types.is_large_list_view(t))


def _list_of(list_type: pa.DataType, value_type: pa.DataType) -> pa.DataType:
    """The type of a list whose items were each mapped to `value_type` (what `evaluate` builds)."""
    return pa.list_(value_type) if pa.types.is_list(list_type) else pa.large_list(value_type)


def describe_type(t: pa.DataType) -> str:
    """An Arrow type as users read it: `list<struct<role: string, content: string>>`."""
    return str(t).replace("element: ", "").replace("item: ", "")


def _field_names(t: pa.StructType) -> str:
    return ", ".join(t.field(i).name for i in range(t.num_fields))


# -- resolving ---------------------------------------------------------------------------------------------------

def resolve(schema: pa.Schema, text: str) -> FieldPath:
    """`text` as a path into `schema`; raises PathError saying where it stops.

    Call this only for text that is not itself a top-level column name (a literal column always wins).
    """
    parts = text.split(SEPARATOR)
    if len(parts) < 2 or any(not p for p in parts):
        raise PathError("it is not a dot-path (names separated by single dots)")
    first: PathError | None = None
    for k in range(len(parts) - 1, 0, -1):  # the longest top-level name first: 'a.b' before 'a'
        root = SEPARATOR.join(parts[:k])
        i = schema.get_field_index(root)
        if i < 0:
            continue
        try:
            steps, vt = _walk(schema.field(i).type, parts[k:], root)
        except PathError as exc:
            first = first or exc
            continue
        return FieldPath(text, root, steps, vt)
    raise first or PathError(f"no top-level column is named {parts[0]!r}")


def _walk(t: pa.DataType, parts: Sequence[str], where: str) -> tuple[tuple[Step, ...], pa.DataType]:
    if not parts:
        return (), t
    if pa.types.is_struct(t):
        first: PathError | None = None
        for k in range(len(parts), 0, -1):  # a field name may contain dots: the longest that resolves wins
            name = SEPARATOR.join(parts[:k])
            i = t.get_field_index(name)
            if i < 0:
                continue
            try:
                steps, vt = _walk(t.field(i).type, parts[k:], f"{where}.{name}")
            except PathError as exc:
                first = first or exc
                continue
            return (name, *steps), vt
        raise first or PathError(f"{where!r} has no field {parts[0]!r} (its fields: {_field_names(t)})")
    if is_list_like(t):
        if _INDEX.match(parts[0]):
            steps, vt = _walk(t.value_type, parts[1:], f"{where}.{parts[0]}")
            return (int(parts[0]), *steps), vt
        item = t.value_type
        if not (pa.types.is_struct(item) or is_list_like(item)):
            raise PathError(f"{where!r} is a list of {describe_type(item)}: {parts[0]!r} is neither a field of its "
                            "items nor an index")
        steps, vt = _walk(item, parts, where)  # the field, taken from every item
        return steps, _list_of(t, vt)
    raise PathError(f"{where!r} is {describe_type(t)}, which has no field {parts[0]!r}")


def field_paths(schema: pa.Schema, max_depth: int = MAX_LISTED_DEPTH) -> list[str]:
    """Every selectable source of `schema`, in schema order, each path followed by its children.

    Columns give their name, struct fields `parent.child`, a list of structs its items' fields under the list's
    own path (`messages.role`). At most `max_depth` names per path. A path spelled like a top-level column is
    left out (the column wins), and so is any path that would not resolve back to the same field.
    """
    top = set(schema.names)
    out: list[str] = []
    seen: set[str] = set()

    def children(t: pa.DataType, root: str, prefix: str, names: tuple[str, ...]) -> None:
        while is_list_like(t):
            t = t.value_type
        if not pa.types.is_struct(t) or len(names) + 1 >= max_depth:
            return
        for i in range(t.num_fields):
            child = t.field(i)
            text = f"{prefix}{SEPARATOR}{child.name}"
            steps = (*names, child.name)
            if text not in top and text not in seen and _reaches(schema, text, root, steps):
                seen.add(text)
                out.append(text)
            # Children of a path that is not selectable itself (shadowed by a column) may still be.
            children(child.type, root, text, steps)

    for f in schema:
        if f.name in seen:
            continue
        seen.add(f.name)
        out.append(f.name)
        children(f.type, f.name, f.name, ())
    return out


def _reaches(schema: pa.Schema, text: str, root: str, steps: tuple[str, ...]) -> bool:
    try:
        found = resolve(schema, text)
    except PathError:
        return False
    return found.root == root and tuple(s for s in found.steps if isinstance(s, str)) == steps


# -- evaluating --------------------------------------------------------------------------------------------------

def evaluate(column: pa.Array | pa.ChunkedArray, path: FieldPath) -> pa.Array | pa.ChunkedArray:
    """The path's values for every row of its root column (one value per row; null where it does not reach)."""
    if isinstance(column, pa.ChunkedArray):
        chunks = [_eval(c, path.steps, path) for c in column.chunks]
        return pa.chunked_array(chunks) if chunks else pa.chunked_array([], type=path.type)
    return _eval(column, path.steps, path)


def _mismatch(path: FieldPath, t: pa.DataType, step: Step) -> FailedPrecondition:
    # The schema said the path resolves; a batch whose columns have another shape cannot be mapped.
    return FailedPrecondition(f"source batch does not fit mapped path {path.text!r}: a value is "
                              f"{describe_type(t)} where {step!r} was expected to apply")


def _as_offsets_list(arr: pa.Array) -> pa.Array:
    t = arr.type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return arr
    return arr.cast(pa.large_list(t.value_type))


def _eval(arr: pa.Array, steps: tuple[Step, ...], path: FieldPath) -> pa.Array:
    if not steps:
        return arr
    step, rest = steps[0], steps[1:]
    t = arr.type
    if pa.types.is_struct(t):
        i = t.get_field_index(step) if isinstance(step, str) else -1
        if i < 0:
            raise _mismatch(path, t, step)
        return _eval(pc.struct_field(arr, [i]), rest, path)  # null where the struct is null
    if not is_list_like(t):
        raise _mismatch(path, t, step)
    arr = _as_offsets_list(arr)
    offsets = np.asarray(arr.offsets)  # already shifted by the array's slice offset
    if isinstance(step, int):
        step = max(-_FAR, min(_FAR, step))  # beyond any list's length either way, and safe in int64
        starts = offsets[:-1].astype(np.int64)
        lengths = offsets[1:].astype(np.int64) - starts
        pos = np.full(len(arr), step, dtype=np.int64) if step >= 0 else lengths + step
        ok = (pos >= 0) & (pos < lengths)
        if arr.null_count:
            ok &= arr.is_valid().to_numpy(zero_copy_only=False)
        picked = pc.take(arr.values, pa.array(np.where(ok, starts + pos, 0), type=pa.int64(), mask=~ok))
        return _eval(picked, rest, path)
    lo, hi = int(offsets[0]), int(offsets[-1])
    items = _eval(arr.values.slice(lo, hi - lo), steps, path)  # the same steps, for every item
    rebased = pa.array(offsets - lo, type=arr.offsets.type)
    cls = pa.ListArray if pa.types.is_list(arr.type) else pa.LargeListArray
    return cls.from_arrays(rebased, items, mask=arr.is_null() if arr.null_count else None)


def value_at(value: Any, steps: Sequence[Step]) -> Any:
    """`evaluate` for one row's Python value (also accepts `datasets`' dict-of-lists form of a list of structs)."""
    for n, step in enumerate(steps):
        if value is None:
            return None
        if isinstance(step, int):
            if isinstance(value, list):
                value = _item(value, step)
            elif isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
                value = {k: _item(v, step) for k, v in value.items()}
            else:
                return None
        elif isinstance(value, dict):
            value = value.get(step)
        elif isinstance(value, list):
            return [value_at(item, steps[n:]) for item in value]
        else:
            return None
    return value


def _item(items: list[Any], index: int) -> Any:
    i = index if index >= 0 else len(items) + index
    return items[i] if 0 <= i < len(items) else None


def select_sources(batch: pa.RecordBatch | pa.Table, sources: Sequence[str], paths: dict[str, FieldPath]
                   ) -> pa.RecordBatch | pa.Table:
    """A batch of exactly `sources`, in order: literal columns as they are, paths computed from their roots."""
    arrays = [evaluate(batch.column(paths[s].root), paths[s]) if s in paths else batch.column(s) for s in sources]
    if isinstance(batch, pa.Table):
        return pa.Table.from_arrays(arrays, names=list(sources))
    return pa.RecordBatch.from_arrays(arrays, names=list(sources))
