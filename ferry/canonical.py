"""Canonical rows: the one shape Ferry stores per training type (docs/canonical-rows.md).

The importer maps every source into these and validates with `problems()`;
the exporter reads only these. Keeping both sides on this module is what lets a
new source or a new format be added without touching the other side.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any


class TrainingType(str, enum.Enum):
    SL = "SL"
    DPO = "DPO"
    CHAT = "CHAT"

    @classmethod
    def parse(cls, value: str) -> TrainingType:
        from ferry.errors import InvalidArgument

        try:
            return cls(str(value).strip().upper())
        except ValueError:
            raise InvalidArgument(
                f"training_type must be one of SL, DPO, CHAT; got {value!r}", field="training_type"
            ) from None

    @classmethod
    def infer(cls, targets: Iterable[str] | Mapping[str, str]) -> TrainingType:
        """The type a field mapping's targets imply (a mapping's blank-valued targets do not count).

        chosen or rejected -> DPO; else messages -> CHAT; else prompt or completion -> SL. Whether the
        mapping is complete and valid for that type is checked afterwards, like for a given type.
        Raises InvalidArgument(field="training_type") when nothing decides it.
        """
        from ferry.errors import InvalidArgument

        if isinstance(targets, Mapping):
            names = [t for t, v in targets.items() if not (isinstance(v, str) and not v.strip())]
        else:
            names = list(targets)
        given = set(names)
        if given & {"chosen", "rejected"}:
            return cls.DPO
        if "messages" in given:
            return cls.CHAT
        if given & {"prompt", "completion"}:
            return cls.SL
        listed = ", ".join(map(repr, names)) if names else "none"
        raise InvalidArgument(
            f"training_type could not be inferred from the field_mappings targets (given: {listed}); "
            "map prompt+completion for SL, prompt+chosen+rejected for DPO or messages for CHAT, "
            "or set training_type",
            field="training_type",
        )


ROLES = ("system", "user", "assistant")
HISTORY_ROLES = ("user", "assistant")

# Required and optional keys of each row shape.
REQUIRED: dict[TrainingType, tuple[str, ...]] = {
    TrainingType.SL: ("prompt", "completion"),
    TrainingType.DPO: ("prompt", "chosen", "rejected"),
    TrainingType.CHAT: ("messages",),
}
OPTIONAL: dict[TrainingType, tuple[str, ...]] = {
    TrainingType.SL: ("system", "history"),
    TrainingType.DPO: ("system", "history"),
    TrainingType.CHAT: (),
}


def _message_problems(messages: Any, where: str, roles: tuple[str, ...]) -> list[str]:
    if not isinstance(messages, list):
        return [f"{where} must be a list of {{role, content}}"]
    out = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            out.append(f"{where}[{i}] is not an object")
            continue
        role = msg.get("role")
        if role not in roles:
            out.append(f"{where}[{i}].role {role!r} is not one of {', '.join(roles)}")
        if not isinstance(msg.get("content"), str):
            out.append(f"{where}[{i}].content is missing or not text")
    return out


def problems(training_type: TrainingType, row: dict[str, Any]) -> list[str]:
    """Why `row` is not a valid canonical row of `training_type` (empty when valid)."""
    out: list[str] = []
    if training_type is TrainingType.CHAT:
        messages = row.get("messages")
        out += _message_problems(messages, "messages", ROLES)
        if isinstance(messages, list) and not out:
            roles = [m["role"] for m in messages]
            if "user" not in roles:
                out.append("messages has no user turn")
            if "assistant" not in roles:
                out.append("messages has no assistant turn")
            elif roles[-1] != "assistant":
                out.append("messages does not end with an assistant turn")
            if any(not m["content"].strip() for m in messages if m["role"] != "system"):
                out.append("messages has an empty turn")
        return out
    for key in REQUIRED[training_type]:
        value = row.get(key)
        if not isinstance(value, str):
            out.append(f"{key} is missing" if value is None else f"{key} is not text")
        elif not value.strip():
            out.append(f"{key} is empty")
    system = row.get("system")
    if system is not None and not isinstance(system, str):
        out.append("system is not text")
    if row.get("history") is not None:
        out += _message_problems(row["history"], "history", HISTORY_ROLES)
    if training_type is TrainingType.DPO and not out and row["chosen"] == row["rejected"]:
        out.append("chosen and rejected are identical")
    return out


def to_messages(training_type: TrainingType, row: dict[str, Any], response_key: str | None = None,
                system_message: str | None = None) -> list[dict[str, str]]:
    """The row as a chat transcript: system, history, prompt, then the response.

    For DPO the response is `chosen` unless `response_key` says otherwise; a
    `system_message` is used only when the row has no system of its own.
    """
    if training_type is TrainingType.CHAT:
        messages = [dict(m) for m in row["messages"]]
        if system_message and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": system_message})
        return messages
    out: list[dict[str, str]] = []
    system = row.get("system") or system_message
    if system:
        out.append({"role": "system", "content": system})
    out.extend({"role": m["role"], "content": m["content"]} for m in row.get("history") or [])
    out.append({"role": "user", "content": row["prompt"]})
    key = response_key or ("completion" if training_type is TrainingType.SL else "chosen")
    out.append({"role": "assistant", "content": row[key]})
    return out
