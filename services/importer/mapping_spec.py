"""Mapping specs: the strings on the right-hand side of `field_mappings` (docs/importer-mapping.md).

A spec must survive a round trip through a proto map<string, string>, so every
way of reading a source is spelled as text: a column name, columns joined with
`+`, or `turns:COL` / `transcript:COL` for values taken out of a conversation.
The target field says which part of the conversation is meant. Any COL may be a
dot-path into nested columns (`message.content`, `messages.-1.content`; paths.py),
checked against the type it resolves to; a column literally named so always wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from ferry.canonical import OPTIONAL, REQUIRED, TrainingType
from ferry.errors import InvalidArgument
from services.importer.paths import SEPARATOR, PathError, describe_type, is_list_like, resolve

TURNS_PREFIX = "turns:"
TRANSCRIPT_PREFIX = "transcript:"
JOIN_SEPARATOR = "\n\n"

TEXT_TARGETS = ("prompt", "completion", "chosen", "rejected", "system")
CONVERSATION_TARGETS = ("messages", "history")
ALL_TARGETS = ("prompt", "completion", "chosen", "rejected", "messages", "system", "history")
# The turn a conversation spec yields for a response target is the final assistant turn.
RESPONSE_TARGETS = ("completion", "chosen", "rejected")

# CHAT rows may also be built from prompt/completion columns: messages = [system?, history..., user, assistant].
CHAT_FROM_PAIRS = ("prompt", "completion", "system", "history")


@dataclass(frozen=True)
class Spec:
    """A parsed source spec. kind: column | join | turns | transcript."""

    kind: str
    columns: tuple[str, ...]

    @property
    def column(self) -> str:
        return self.columns[0]

    @property
    def is_conversation(self) -> bool:
        return self.kind in ("turns", "transcript")


def allowed_targets(training_type: TrainingType) -> tuple[str, ...]:
    if training_type is TrainingType.CHAT:
        return ("messages", *CHAT_FROM_PAIRS)
    return REQUIRED[training_type] + OPTIONAL[training_type]


# --- column types ---------------------------------------------------------------------------------------------


def _unwrap(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def is_text_type(t: pa.DataType) -> bool:
    t = _unwrap(t)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def message_style(t: pa.DataType) -> str | None:
    """'role' for [{role, content}], 'sharegpt' for [{from, value}], 'strings' for [str]; else None."""
    if not is_list_like(t):
        return None
    value = t.value_type
    if is_text_type(value):
        return "strings"
    if not pa.types.is_struct(value):
        return None
    names = {value.field(i).name: value.field(i).type for i in range(value.num_fields)}
    if "role" in names and "content" in names and is_text_type(names["content"]):
        return "role"
    if "from" in names and "value" in names and is_text_type(names["value"]):
        return "sharegpt"
    return None


def is_messages_type(t: pa.DataType) -> bool:
    return message_style(t) is not None


# --- parsing and validation -----------------------------------------------------------------------------------


def _bad(message: str) -> InvalidArgument:
    return InvalidArgument(message, field="field_mappings")


def parse_spec(spec: str, column_names: set[str] | list[str]) -> Spec:
    """Parse without type checks. An exact column name always wins over the special syntax."""
    names = set(column_names)
    if spec in names:
        return Spec("column", (spec,))
    for prefix, kind in ((TURNS_PREFIX, "turns"), (TRANSCRIPT_PREFIX, "transcript")):
        if spec.startswith(prefix):
            return Spec(kind, (spec[len(prefix):],))
    if "+" in spec:
        return Spec("join", tuple(part.strip() for part in spec.split("+")))
    return Spec("column", (spec,))


def source_type(schema: pa.Schema, col: str, where: str = "field_mappings") -> pa.DataType:
    """The type of source `col`: a top-level column (always first, even when its name has dots) or a dot-path."""
    i = schema.get_field_index(col)
    if i >= 0:
        return schema.field(i).type
    names = ", ".join(schema.names)
    if col in schema.names:  # duplicate column name
        raise _bad(f"{where}: column {col!r} appears more than once in the source (columns: {names})")
    if SEPARATOR not in col:
        raise _bad(f"{where}: column {col!r} is not in the source (columns: {names})")
    try:
        return resolve(schema, col).type
    except PathError as exc:
        raise _bad(f"{where}: column {col!r} is not in the source and does not resolve as a dot-path: {exc} "
                   f"(columns: {names})") from None


def _label(col: str, schema: pa.Schema) -> str:
    return f"{'column' if col in schema.names else 'path'} {col!r}"


def check_spec(target: str, raw: str, schema: pa.Schema) -> Spec:
    """Parse `raw` for `target` and check it against the schema; raises InvalidArgument naming the problem."""
    where = f"field_mappings[{target!r}]"
    if not isinstance(raw, str) or not raw.strip():
        raise _bad(f"{where} is empty; give a source column")
    names = list(schema.names)
    spec = parse_spec(raw, names)
    types = {col: source_type(schema, col, where) for col in spec.columns}
    if spec.kind == "join":
        if len(spec.columns) < 2 or any(not c for c in spec.columns):
            raise _bad(f"{where}: {raw!r} must join two or more columns, like 'instruction+input'")
        if target not in TEXT_TARGETS:
            raise _bad(f"{where}: joined columns can only fill a text field, not {target!r}")
        for col, t in types.items():
            if not (is_text_type(t) or pa.types.is_null(t)):
                raise _bad(f"{where}: {_label(col, schema)} is {describe_type(t)}, not text")
        return spec
    t = types[spec.column]
    if spec.kind == "column" and target in CONVERSATION_TARGETS:
        # A plain column for messages/history is read as a conversation.
        spec = Spec("turns", spec.columns)
    if spec.kind == "turns":
        if not (is_messages_type(t) or is_text_type(t) or pa.types.is_null(t)):
            raise _bad(f"{where}: {_label(spec.column, schema)} is {describe_type(t)}, not a list of messages "
                       "({role, content} or {from, value}) or JSON text holding one")
        return spec
    if spec.kind == "transcript":
        if not (is_text_type(t) or pa.types.is_null(t)):
            raise _bad(f"{where}: {_label(spec.column, schema)} is {describe_type(t)}, not a text transcript")
        return spec
    # plain column for a text target
    if is_messages_type(t):
        raise _bad(f"{where}: {_label(spec.column, schema)} is a list of messages; use 'turns:{spec.column}' "
                   f"to take the {target} out of the conversation")
    if not (is_text_type(t) or pa.types.is_null(t)):
        raise _bad(f"{where}: {_label(spec.column, schema)} is {describe_type(t)}, not text")
    return spec


def check_mapping(schema: pa.Schema, training_type: TrainingType, field_mappings: dict[str, str]) -> dict[str, Spec]:
    """All specs parsed and checked, keyed by target; raises InvalidArgument(field='field_mappings').

    A target mapped to an empty string counts as not mapped (forms send blanks for unused optional fields).
    """
    if not isinstance(training_type, TrainingType):
        training_type = TrainingType.parse(training_type)
    if isinstance(field_mappings, dict):
        for target, raw in field_mappings.items():
            if not isinstance(raw, str):
                raise _bad(f"field_mappings[{target!r}] must be text, got {type(raw).__name__}")
        field_mappings = {t: v for t, v in field_mappings.items() if v.strip() or t not in ALL_TARGETS}
    if not isinstance(field_mappings, dict) or not field_mappings:
        raise _bad("field_mappings is empty; map at least the required fields "
                   f"({', '.join(REQUIRED[training_type])})")
    allowed = allowed_targets(training_type)
    for target in field_mappings:
        if target not in allowed:
            raise _bad(f"field_mappings: unknown target field {target!r} for {training_type.value} "
                       f"(expected one of {', '.join(allowed)})")
    specs = {target: check_spec(target, raw, schema) for target, raw in field_mappings.items()}
    if training_type is TrainingType.CHAT:
        if "messages" in specs:
            extra = [t for t in specs if t != "messages"]
            if extra:
                raise _bad(f"field_mappings: {', '.join(map(repr, extra))} cannot be mapped together with "
                           "'messages' for CHAT; map either messages or prompt and completion")
            return specs
        if "prompt" not in specs and "completion" not in specs:
            raise _bad("field_mappings: required target 'messages' is not mapped for CHAT")
        required: tuple[str, ...] = ("prompt", "completion")
    else:
        required = REQUIRED[training_type]
    for target in required:
        if target not in specs:
            raise _bad(f"field_mappings: required target {target!r} is not mapped for {training_type.value}")
    return specs
