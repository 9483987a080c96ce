"""Field-mapping suggestions and validation (docs/importer-mapping.md).

Suggestions are returned in the same spec syntax `field_mappings` accepts, so a
UI can pass them straight back to an import. The rules are ordered on purpose:
an exact column name beats a known alias beats weaker signals (types, sample
content), and identifier/score/metadata columns are never suggested -- the
tool Ferry replaces mapped `prompt_id` to prompt and `score_chosen` to chosen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ferry.canonical import TrainingType
from services.importer.convert_turns import ConversationError, parse_transcript, parse_turns
from services.importer.mapping_spec import (
    TRANSCRIPT_PREFIX,
    TURNS_PREFIX,
    check_mapping,
    describe_type,
    is_text_type,
    message_style,
)

__all__ = ["Suggestion", "describe_schema", "suggest_mapping", "validate_mapping"]


@dataclass(frozen=True)
class Suggestion:
    source_field: str
    target_field: str
    confidence: float
    reason: str


def describe_schema(schema: pa.Schema) -> list[tuple[str, str]]:
    return [(f.name, describe_type(f.type)) for f in schema]


def validate_mapping(schema: pa.Schema, training_type: TrainingType, field_mappings: dict[str, str]) -> None:
    """Raises ferry.errors.InvalidArgument(field='field_mappings') naming the first problem."""
    check_mapping(schema, training_type, field_mappings)


# --- name rules -----------------------------------------------------------------------------------------------

# A column with any of these tokens is never a text source (prompt_id, score_chosen, chosen_rating, row_index...).
NEVER_TOKENS = {
    "id", "ids", "uuid", "guid", "hash", "md5", "sha", "sha1", "sha256", "score", "scores", "rating", "ratings",
    "index", "idx", "url", "urls", "uri", "href", "metadata", "meta", "timestamp", "datetime", "date",
}
# ...nor a column whose name is, or ends in, one of these (chosen_model, source, category, num_tokens).
NEVER_LAST = {
    "model", "models", "source", "sources", "category", "categories", "label", "labels", "tag", "tags", "lang",
    "language", "license", "split", "domain", "annotator", "annotators", "length", "len", "count", "tokens",
    "votes", "margin", "reward", "rewards", "weight", "weights", "rank", "ranking", "quality", "time", "link",
    "links", "task", "type", "point", "test", "tests", "name", "title", "status", "level", "difficulty",
}
# Pre-formatted "everything in one string" columns: using one as a prompt was the alpaca bug.
FORMATTED = {"text", "full_text", "formatted", "formatted_text", "combined", "all_text", "prompt_response", "sample"}

PROMPT_ALIASES = ("instruction", "question", "query", "problem", "input", "user_prompt", "prompt_text",
                  "user_input", "request", "instructions", "human", "user", "inputs")
PROMPT_PARTNERS = ("input", "context", "inputs")  # appended to an instruction-like prompt when present
COMPLETION_ALIASES = ("output", "response", "answer", "canonical_solution", "solution", "assistant", "gpt",
                      "reply", "output_text", "completion_text", "generation", "target", "outputs", "answers")
# For SL from preference-shaped text columns: the preferred response is a completion.
COMPLETION_WEAK = ("chosen", "chosen_response", "response_chosen", "chosen_completion")
CHOSEN_ALIASES = ("chosen_response", "response_chosen", "chosen_text", "chosen_completion", "chosen_answer",
                  "preferred", "preferred_response", "positive", "accepted", "better_response", "winner",
                  "response_a_chosen")
REJECTED_ALIASES = ("rejected_response", "response_rejected", "rejected_text", "rejected_completion",
                    "rejected_answer", "dispreferred", "dispreferred_response", "negative", "worse_response", "loser")
SYSTEM_ALIASES = ("system_prompt", "system_message", "sys_prompt", "system_instruction", "systemprompt")
MESSAGES_ALIASES = ("conversations", "conversation", "dialog", "dialogue", "chat", "turns", "messages_list",
                    "dialogs", "chats")

EXACT, ALIAS_TOP, ALIAS_STEP, ALIAS_MIN = 0.98, 0.9, 0.02, 0.7


def _tokens(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return [t for t in re.split(r"[^a-z0-9]+", spaced.lower()) if t]


def _never(name: str) -> bool:
    toks = _tokens(name)
    return not toks or any(t in NEVER_TOKENS for t in toks) or toks[-1] in NEVER_LAST


def _norm(name: str) -> str:
    return "_".join(_tokens(name))


@dataclass
class _Col:
    name: str
    text: bool
    conversation: str | None  # "list" (typed message list) | "json" (text holding one, per samples) | None
    transcript: bool | None  # True/False per samples, None when there are no samples of it
    never: bool
    avg_len: float | None


def _classify(schema: pa.Schema, sample_rows: list[dict[str, Any]] | None) -> list[_Col]:
    out = []
    for f in schema:
        values = [r.get(f.name) for r in sample_rows or [] if isinstance(r, dict) and r.get(f.name) is not None]
        text = is_text_type(f.type)
        conversation = "list" if message_style(f.type) else None
        transcript = None
        avg_len = None
        if text and values:
            strings = [v for v in values if isinstance(v, str)]
            avg_len = sum(map(len, strings)) / len(strings) if strings else None
            transcript = _mostly(strings, _looks_like_transcript)
            if _mostly(strings, _looks_like_json_conversation):
                conversation = "json"
        out.append(_Col(f.name, text, conversation, transcript, _never(f.name), avg_len))
    return out


def _mostly(values: list[str], pred: Any) -> bool:
    return bool(values) and sum(1 for v in values if pred(v)) * 2 > len(values)


def _looks_like_transcript(value: str) -> bool:
    if "Human:" not in value or "Assistant:" not in value:
        return False
    try:
        turns = parse_transcript(value)
    except ConversationError:
        return False
    return any(t["role"] == "user" for t in turns) and any(t["role"] == "assistant" for t in turns)


def _looks_like_json_conversation(value: str) -> bool:
    if not value.lstrip().startswith("["):
        return False
    try:
        turns = parse_turns(value)
    except ConversationError:
        return False
    return all(isinstance(t, dict) for t in turns) and not value.lstrip().startswith('["')


# --- finding candidates ---------------------------------------------------------------------------------------


@dataclass
class _Pick:
    col: _Col
    confidence: float
    reason: str


def _by_name(cols: list[_Col], target: str, aliases: tuple[str, ...], ok: Any, used: set[str],
             what: str) -> _Pick | None:
    usable = [c for c in cols if not c.never and c.name not in used and ok(c)]
    for c in usable:
        if c.name == target or _norm(c.name) == target:
            return _Pick(c, EXACT, f"column '{c.name}' is named like the {target} field")
    for rank, alias in enumerate(aliases):
        for c in usable:
            if _norm(c.name) == alias:
                conf = max(ALIAS_MIN, ALIAS_TOP - ALIAS_STEP * rank)
                return _Pick(c, round(conf, 2), f"'{c.name}' is a common name for the {what}")
    return None


def _plain_text(c: _Col) -> bool:
    return c.text and c.transcript is not True and c.conversation is None


def _find_text(cols: list[_Col], target: str, aliases: tuple[str, ...], used: set[str], what: str) -> _Pick | None:
    return _by_name(cols, target, aliases, _plain_text, used, what)


def _find_conversation(cols: list[_Col], used: set[str], names: tuple[str, ...] = ("messages", *MESSAGES_ALIASES),
                       fallback: bool = True) -> _Pick | None:
    pick = _by_name(cols, names[0], names[1:], lambda c: c.conversation is not None, used, "conversation")
    if pick or not fallback:
        return pick
    # A preference dataset's chosen conversation is a whole conversation too (ultrafeedback's chosen == messages).
    pick = _by_name(cols, "chosen", CHOSEN_ALIASES, lambda c: c.conversation is not None, used, "conversation")
    if pick:
        return _Pick(pick.col, 0.8, f"'{pick.col.name}' holds the preferred conversation")
    others = [c for c in cols if c.conversation is not None and not c.never and c.name not in used]
    if others:
        return _Pick(others[0], 0.6, f"'{others[0].name}' is the only list of messages")
    return None


def _find_transcript(cols: list[_Col], used: set[str], presume: bool) -> _Pick | None:
    """A Human:/Assistant: transcript column; `presume` accepts a text 'chosen' column when there are no samples."""
    confirmed = [c for c in cols if c.transcript is True and not c.never and c.name not in used]
    if confirmed:
        pick = _by_name(confirmed, "chosen", CHOSEN_ALIASES, lambda c: True, set(), "preferred transcript")
        col = pick.col if pick else confirmed[0]
        return _Pick(col, 0.92, f"sample values of '{col.name}' are Human:/Assistant: transcripts")
    if presume:
        pick = _by_name(cols, "chosen", CHOSEN_ALIASES, lambda c: c.text and c.transcript is None, used, "")
        if pick:
            return _Pick(pick.col, 0.6, f"no prompt column: '{pick.col.name}' is taken as a Human:/Assistant: "
                                        "transcript holding the prompt (no samples to confirm)")
    return None


def _weak_text(cols: list[_Col], used: set[str]) -> list[_Col]:
    return [c for c in cols if _plain_text(c) and not c.never and c.name not in used and _norm(c.name) not in FORMATTED]


# --- per training type ----------------------------------------------------------------------------------------


def _from_conversation(spec: str, col: str, targets: tuple[str, ...], confidence: float, kind: str) -> list[Suggestion]:
    what = {
        "prompt": "the user turn before the final assistant turn",
        "completion": "the final assistant turn",
        "chosen": "the final assistant turn",
        "rejected": "the final assistant turn",
        "history": "the turns before the prompt (multi-turn context)",
        "system": "the system turn, if any",
        "messages": "the whole conversation",
    }
    conf = {"history": min(confidence, 0.85), "system": min(confidence, 0.8)}
    return [Suggestion(spec, t, round(conf.get(t, confidence), 2), f"{what[t]} of {kind} '{col}'") for t in targets]


def _system(cols: list[_Col], used: set[str]) -> list[Suggestion]:
    pick = _find_text(cols, "system", SYSTEM_ALIASES, used, "system prompt")
    if not pick:
        return []
    used.add(pick.col.name)
    return [Suggestion(pick.col.name, "system", pick.confidence, pick.reason)]


def _prompt_plain(cols: list[_Col], pick: _Pick, used: set[str]) -> Suggestion:
    used.add(pick.col.name)
    if _norm(pick.col.name) not in PROMPT_PARTNERS:
        partner = next((c for alias in PROMPT_PARTNERS for c in cols
                        if _norm(c.name) == alias and _plain_text(c) and not c.never and c.name not in used), None)
        if partner is not None:
            used.add(partner.name)
            return Suggestion(f"{pick.col.name}+{partner.name}", "prompt", round(min(pick.confidence, 0.9), 2),
                              f"'{pick.col.name}' followed by '{partner.name}' (joined with a blank line; "
                              f"just '{pick.col.name}' when '{partner.name}' is empty)")
    return Suggestion(pick.col.name, "prompt", pick.confidence, pick.reason)


def _suggest_pairs(cols: list[_Col]) -> list[Suggestion]:
    """prompt/completion(/system/history) for SL, also used for CHAT when there is no conversation."""
    used: set[str] = set()
    p = _find_text(cols, "prompt", PROMPT_ALIASES, used, "prompt")
    c = _find_text(cols, "completion", COMPLETION_ALIASES, used | ({p.col.name} if p else set()), "completion")
    if c is None and p is not None:
        c = _find_text(cols, "completion", COMPLETION_WEAK, used | {p.col.name}, "preferred response")
        if c is not None:
            c = _Pick(c.col, 0.75, f"'{c.col.name}' is the preferred response of a preference pair")
    if p and c:
        used.add(c.col.name)
        pair = [_prompt_plain(cols, p, used), Suggestion(c.col.name, "completion", c.confidence, c.reason)]
        return pair + _system(cols, used)
    conv = _find_conversation(cols, used)
    if conv:
        spec = TURNS_PREFIX + conv.col.name
        return _from_conversation(spec, conv.col.name, ("prompt", "completion", "history", "system"),
                                  conv.confidence if conv.confidence < EXACT else 0.95, "conversation")
    tr = _find_transcript(cols, used, presume=p is None)
    if tr:
        return _from_conversation(TRANSCRIPT_PREFIX + tr.col.name, tr.col.name,
                                  ("prompt", "completion", "history", "system"), tr.confidence, "transcript")
    # Weak signals: whatever plain text columns remain, shorter ones as prompt, longer as completion.
    out: list[Suggestion] = []
    if p:
        out.append(_prompt_plain(cols, p, used))
    if c:
        used.add(c.col.name)
        out.append(Suggestion(c.col.name, "completion", c.confidence, c.reason))
    rest = _weak_text(cols, used)
    missing = [t for t in ("prompt", "completion") if t not in {s.target_field for s in out}]
    if len(missing) == 2 and len(rest) >= 2:
        a, b = rest[0], rest[1]
        if a.avg_len is not None and b.avg_len is not None and a.avg_len > b.avg_len:
            a, b = b, a
        why = "by average sample length" if a.avg_len is not None else "by column order"
        out += [Suggestion(a.name, "prompt", 0.3, f"unrecognised text column; the shorter of two {why}"),
                Suggestion(b.name, "completion", 0.3, f"unrecognised text column; the longer of two {why}")]
        used.update((a.name, b.name))
    elif len(missing) == 1 and rest:
        out.append(Suggestion(rest[0].name, missing[0], 0.3, "the only remaining unrecognised text column"))
        used.add(rest[0].name)
    out.sort(key=lambda s: ("prompt", "completion").index(s.target_field))
    return out + _system(cols, used)


def _suggest_dpo(cols: list[_Col]) -> list[Suggestion]:
    used: set[str] = set()
    ch = _pick_response(cols, "chosen", CHOSEN_ALIASES, used)
    rj = _pick_response(cols, "rejected", REJECTED_ALIASES, used)
    prompt_conv = _find_conversation(cols, used, names=("prompt", *PROMPT_ALIASES), fallback=False)
    p = _find_text(cols, "prompt", PROMPT_ALIASES, used, "prompt")
    # No prompt anywhere: chosen/rejected strings must be transcripts holding it (hh-rlhf), unless samples say not.
    presume = p is None and prompt_conv is None and (ch is None or ch.col.transcript is None)
    out = _dpo_prompt(cols, p, prompt_conv, ch, used, presume)
    for pick, target in ((ch, "chosen"), (rj, "rejected")):
        if pick is not None:
            out += _dpo_response(pick, target, presume)
    if p:
        out += _system(cols, used)
    order = ("prompt", "chosen", "rejected", "history", "system")
    out.sort(key=lambda s: order.index(s.target_field))
    return out


def _pick_response(cols: list[_Col], target: str, aliases: tuple[str, ...], used: set[str]) -> _Pick | None:
    """The chosen or rejected column (text or conversation), marked used."""
    pick = _by_name(cols, target, aliases, lambda c: c.text or c.conversation is not None, used,
                    f"{target} response")
    if pick:
        used.add(pick.col.name)
    return pick


def _response_spec(pick: _Pick, presume: bool) -> tuple[str, str]:
    """(spec, kind) of a chosen/rejected column: a conversation, a transcript, or plain text."""
    c = pick.col
    if c.conversation is not None:
        return TURNS_PREFIX + c.name, "conversation"
    if c.transcript is True or (presume and c.transcript is None):
        return TRANSCRIPT_PREFIX + c.name, "transcript"
    return c.name, "text"


def _dpo_prompt(cols: list[_Col], p: _Pick | None, prompt_conv: _Pick | None, ch: _Pick | None, used: set[str],
                presume: bool) -> list[Suggestion]:
    """The prompt: a text column, else a prompt conversation, else the turns before the chosen response."""
    if p:
        return [_prompt_plain(cols, p, used)]
    if prompt_conv:
        used.add(prompt_conv.col.name)
        return _from_conversation(TURNS_PREFIX + prompt_conv.col.name, prompt_conv.col.name,
                                  ("prompt", "history", "system"), prompt_conv.confidence, "conversation")
    if ch:
        spec, kind = _response_spec(ch, presume)
        if kind != "text":
            conf = 0.9 if kind == "conversation" else (0.92 if ch.col.transcript else 0.6)
            return _from_conversation(spec, ch.col.name, ("prompt", "history", "system"), conf, kind)
    return []


def _dpo_response(pick: _Pick, target: str, presume: bool) -> list[Suggestion]:
    """The chosen or rejected field: the column itself, or the final assistant turn of its conversation."""
    spec, kind = _response_spec(pick, presume)
    if kind == "text":
        return [Suggestion(spec, target, pick.confidence, pick.reason)]
    conf = pick.confidence if kind == "conversation" else (0.92 if pick.col.transcript else 0.6)
    return _from_conversation(spec, pick.col.name, (target,), conf, kind)


def _suggest_chat(cols: list[_Col]) -> list[Suggestion]:
    conv = _find_conversation(cols, set())
    if conv:
        spec = conv.col.name
        return [Suggestion(spec, "messages", conv.confidence if conv.confidence < EXACT else 0.95,
                           f"{conv.reason}" if conv.confidence < EXACT else f"'{spec}' is a list of messages")]
    p = _find_text(cols, "prompt", PROMPT_ALIASES, set(), "prompt")
    tr = _find_transcript(cols, set(), presume=p is None)
    if tr:
        return [Suggestion(TRANSCRIPT_PREFIX + tr.col.name, "messages", tr.confidence,
                           f"the whole conversation of transcript '{tr.col.name}'; {tr.reason}")]
    return [s for s in _suggest_pairs(cols) if s.target_field in ("prompt", "completion", "system")]


def suggest_mapping(schema: pa.Schema, training_type: TrainingType,
                    sample_rows: list[dict[str, Any]] | None = None) -> list[Suggestion]:
    """Suggested field mappings, at most one source per target; may be incomplete when nothing fits."""
    tt = training_type if isinstance(training_type, TrainingType) else TrainingType.parse(training_type)
    cols = _classify(schema, sample_rows)
    if tt is TrainingType.SL:
        return _suggest_pairs(cols)
    if tt is TrainingType.DPO:
        return _suggest_dpo(cols)
    return _suggest_chat(cols)


def suggestions_to_mappings(suggestions: list[Suggestion]) -> dict[str, str]:
    """The field_mappings an import takes, straight from suggestions."""
    return {s.target_field: s.source_field for s in suggestions}
