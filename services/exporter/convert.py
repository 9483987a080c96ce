"""Row conversions from canonical rows to each export format (rules in docs/export-formats.md).

Two paths give the same bytes: `vector_*` functions convert a whole batch of
JSONL with polars (the hot path: no per-row Python), and the per-row builders
below handle what polars cannot express simply (rows whose turns do not
alternate, CHAT rows going to Alpaca). `tests/test_exporter_convert.py` checks
that both paths agree. Pure: no grpc, no storage.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import polars as pl

from ferry.canonical import TrainingType
from ferry.errors import FailedPrecondition

Row = dict[str, Any]
Turn = dict[str, str]

MSG = pl.Struct({"role": pl.String, "content": pl.String})
MSGS = pl.List(MSG)
SCHEMAS: dict[TrainingType, dict[str, Any]] = {
    TrainingType.SL: {"prompt": pl.String, "completion": pl.String, "system": pl.String, "history": MSGS},
    TrainingType.DPO: {"prompt": pl.String, "chosen": pl.String, "rejected": pl.String, "system": pl.String,
                       "history": MSGS},
    TrainingType.CHAT: {"messages": MSGS},
}
ROLES_ORDER = ("system", "user", "assistant")
LANGCHAIN_TYPES = {"user": "human", "assistant": "ai", "system": "system"}
SHAREGPT_FROM = {"user": "human", "assistant": "gpt", "system": "system"}
CSV_COLUMNS: dict[TrainingType, tuple[str, ...]] = {
    TrainingType.SL: ("prompt", "completion", "system", "history"),
    TrainingType.DPO: ("prompt", "chosen", "rejected", "system", "history"),
    TrainingType.CHAT: ("messages", "num_turns"),
}
LANGCHAIN_EXPORT_TYPES = ("documents", "chat", "qa_pairs")


@dataclass(frozen=True)
class Context:
    """What a conversion needs besides the row."""

    training_type: TrainingType
    system_message: str | None = None
    # langchain: documents | chat | qa_pairs
    export_type: str = "documents"
    dataset_id: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def row_overhead(ctx: Context) -> int:
    """Bytes an output row may carry beyond its own input: the request's system_message, as JSON text.

    Every format copies it into each row without a system of its own; its JSON text is the longest form any
    of them writes (CSV doubles only quotes, which JSON escapes too). The engine sizes batches with it.
    """
    return len(dumps(ctx.system_message)) if ctx.system_message else 0


# -- per-row helpers ------------------------------------------------------------


def _system(row: Row, ctx: Context) -> str | None:
    return row.get("system") or ctx.system_message or None


def _response_key(tt: TrainingType) -> str:
    return "completion" if tt is TrainingType.SL else "chosen"


def chat_parts(row: Row, ctx: Context) -> tuple[str | None, list[Turn]]:
    """(system, user/assistant turns) of any row; a CHAT row's system turns are joined."""
    if ctx.training_type is TrainingType.CHAT:
        systems = [m["content"] for m in row["messages"] if m["role"] == "system"]
        turns = [{"role": m["role"], "content": m["content"]} for m in row["messages"] if m["role"] != "system"]
        return ("\n\n".join(systems) if systems else ctx.system_message or None), turns
    turns = [{"role": m["role"], "content": m["content"]} for m in row.get("history") or []]
    turns.append({"role": "user", "content": row["prompt"]})
    if ctx.training_type is TrainingType.SL:
        turns.append({"role": "assistant", "content": row["completion"]})
    return _system(row, ctx), turns


def alternate(turns: list[Turn]) -> list[Turn]:
    """Turns as strict user/assistant alternation starting with user (LLaMA-Factory refuses others).

    Consecutive turns of one role are joined with a blank line; a leading
    assistant turn gets an empty user turn before it.
    """
    out: list[Turn] = []
    for t in turns:
        if out and out[-1]["role"] == t["role"]:
            out[-1] = {"role": t["role"], "content": out[-1]["content"] + "\n\n" + t["content"]}
        else:
            out.append(dict(t))
    if out and out[0]["role"] == "assistant":
        out.insert(0, {"role": "user", "content": ""})
    return out


def openai_messages(row: Row, ctx: Context) -> list[Turn]:
    tt = ctx.training_type
    if tt is TrainingType.CHAT:
        msgs = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        if ctx.system_message and not any(m["role"] == "system" for m in msgs):
            msgs.insert(0, {"role": "system", "content": ctx.system_message})
        return msgs
    out: list[Turn] = []
    system = _system(row, ctx)
    if system:
        out.append({"role": "system", "content": system})
    out.extend({"role": m["role"], "content": m["content"]} for m in row.get("history") or [])
    out.append({"role": "user", "content": row["prompt"]})
    out.append({"role": "assistant", "content": row[_response_key(tt)]})
    return out


def _pairs(turns: list[Turn]) -> list[list[str]]:
    """Alternating turns (user first, even length) as [[user, assistant], ...]."""
    return [[turns[i]["content"], turns[i + 1]["content"]] for i in range(0, len(turns) - 1, 2)]


# -- per-row builders, one per format ---------------------------------------------


def row_openai(row: Row, ctx: Context, _i: int) -> bytes:
    return dumps({"messages": openai_messages(row, ctx)})


def row_openai_dpo(row: Row, ctx: Context, _i: int) -> bytes:
    msgs: list[Turn] = []
    system = _system(row, ctx)
    if system:
        msgs.append({"role": "system", "content": system})
    msgs.extend({"role": m["role"], "content": m["content"]} for m in row.get("history") or [])
    msgs.append({"role": "user", "content": row["prompt"]})
    return dumps({
        "input": {"messages": msgs},
        "preferred_output": [{"role": "assistant", "content": row["chosen"]}],
        "non_preferred_output": [{"role": "assistant", "content": row["rejected"]}],
    })


def row_alpaca(row: Row, ctx: Context, _i: int) -> bytes:
    tt = ctx.training_type
    out: dict[str, Any]
    if tt is TrainingType.CHAT:
        system, turns = chat_parts(row, ctx)
        turns = alternate(turns)
        # Canonical CHAT rows end with an assistant turn, so after alternation the
        # last two turns are the final user and assistant turns.
        out = {"instruction": turns[-2]["content"], "input": "", "output": turns[-1]["content"]}
        history = _pairs(turns[:-2])
    else:
        system = _system(row, ctx)
        out = {"instruction": row["prompt"], "input": ""}
        if tt is TrainingType.SL:
            out["output"] = row["completion"]
        else:
            out["chosen"] = row["chosen"]
            out["rejected"] = row["rejected"]
        hist = alternate([{"role": m["role"], "content": m["content"]} for m in row.get("history") or []])
        if hist and hist[-1]["role"] == "user":
            # A trailing user turn has no answer: it becomes part of the instruction.
            out["instruction"] = hist[-1]["content"] + "\n\n" + out["instruction"]
            hist = hist[:-1]
        history = _pairs(hist)
    if system:
        out["system"] = system
    if history:
        out["history"] = history
    return dumps(out)


def _sharegpt_turns(system: str | None, turns: list[Turn]) -> list[dict[str, str]]:
    conv = [{"from": "system", "value": system}] if system else []
    conv.extend({"from": SHAREGPT_FROM[t["role"]], "value": t["content"]} for t in turns)
    return conv


def row_sharegpt(row: Row, ctx: Context, _i: int) -> bytes:
    system, turns = chat_parts(row, ctx)
    turns = alternate(turns)
    out: dict[str, Any] = {"conversations": _sharegpt_turns(system, turns)}
    if ctx.training_type is TrainingType.DPO:
        out["chosen"] = {"from": "gpt", "value": row["chosen"]}
        out["rejected"] = {"from": "gpt", "value": row["rejected"]}
    return dumps(out)


def _metadata(row: Row, ctx: Context, index: int) -> dict[str, Any]:
    meta: dict[str, Any] = {"dataset_id": ctx.dataset_id, "row": index,
                            "training_type": ctx.training_type.value}
    if ctx.training_type is TrainingType.DPO:
        meta["rejected"] = row["rejected"]
    return meta


def _transcript(msgs: list[Turn]) -> str:
    names = {"system": "System", "user": "Human", "assistant": "AI"}
    return "\n".join(f"{names[m['role']]}: {m['content']}" for m in msgs)


def row_langchain(row: Row, ctx: Context, index: int) -> bytes:
    meta = _metadata(row, ctx, index)
    if ctx.export_type == "chat":
        msgs = openai_messages(row, ctx)
        return dumps({"messages": [{"type": LANGCHAIN_TYPES[m["role"]], "content": m["content"]} for m in msgs],
                      "metadata": meta})
    if ctx.export_type == "qa_pairs":
        system, turns = chat_parts(row, ctx)
        if ctx.training_type is TrainingType.CHAT:
            last_user = max(i for i, t in enumerate(turns) if t["role"] == "user")
            question = turns[last_user]["content"]
            answer = "\n\n".join(t["content"] for t in turns[last_user + 1:])
            before = turns[:last_user]
        else:
            question, answer = row["prompt"], row[_response_key(ctx.training_type)]
            before = [{"role": m["role"], "content": m["content"]} for m in row.get("history") or []]
        if system:
            meta["system"] = system
        if before:
            meta["history"] = before
        return dumps({"question": question, "answer": answer, "metadata": meta})
    return dumps({"page_content": _transcript(openai_messages(row, ctx)), "metadata": meta})


def row_huggingface(row: Row, ctx: Context, _i: int) -> bytes:
    """Canonical columns, every key on every row, so the folder has one schema."""
    if ctx.training_type is TrainingType.CHAT:
        return dumps({"messages": openai_messages(row, ctx)})
    out = {k: row.get(k) for k in SCHEMAS[ctx.training_type]}
    out["system"] = _system(row, ctx)
    out["history"] = [{"role": m["role"], "content": m["content"]} for m in row["history"]] \
        if row.get("history") else None
    return dumps(out)


def csv_cells(row: Row, ctx: Context) -> list[str]:
    tt = ctx.training_type
    if tt is TrainingType.CHAT:
        msgs = openai_messages(row, ctx)
        return [dumps(msgs).decode(), str(len(msgs))]
    hist = row.get("history")
    cells = [row[k] for k in CSV_COLUMNS[tt][:-2]]
    cells.append(_system(row, ctx) or "")
    cells.append(dumps([{"role": m["role"], "content": m["content"]} for m in hist]).decode() if hist else "")
    return cells


RowBuilder = Callable[[Row, Context, int], bytes]
ROW_BUILDERS: dict[str, RowBuilder] = {
    "openai": row_openai,
    "openai_dpo": row_openai_dpo,
    "alpaca": row_alpaca,
    "sharegpt": row_sharegpt,
    "langchain": row_langchain,
    "huggingface": row_huggingface,
}


def _bad_row(index: int, ctx: Context, exc: Exception) -> FailedPrecondition:
    return FailedPrecondition(
        f"row {index} is not a canonical {ctx.training_type.value} row ({type(exc).__name__}: {exc}); "
        "see docs/canonical-rows.md")


def python_records(fmt: str, lines: Sequence[bytes], ctx: Context, first_index: int | Sequence[int]) -> list[bytes]:
    """One output record per canonical line, by the per-row builder."""
    build = ROW_BUILDERS[fmt]
    loads = orjson.loads
    indices = range(first_index, first_index + len(lines)) if isinstance(first_index, int) else first_index
    try:
        return [build(loads(line), ctx, int(idx)) for line, idx in zip(lines, indices, strict=True)]
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        pass
    out = []
    for line, idx in zip(lines, indices, strict=True):  # again, one by one, to name the bad row
        try:
            out.append(build(loads(line), ctx, int(idx)))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise _bad_row(int(idx), ctx, exc) from None
    return out


def python_csv(lines: Sequence[bytes], ctx: Context) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    loads = orjson.loads
    for i, line in enumerate(lines):
        try:
            w.writerow(csv_cells(loads(line), ctx))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise _bad_row(i, ctx, exc) from None
    return buf.getvalue().encode()


def csv_header(ctx: Context) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n").writerow(CSV_COLUMNS[ctx.training_type])
    return buf.getvalue().encode()


# -- vectorised batches (polars) ---------------------------------------------------


def read_batch(data: bytes, tt: TrainingType) -> pl.DataFrame:
    """A batch of canonical JSONL lines as columns of the training type's schema."""
    return pl.read_ndjson(io.BytesIO(data), schema=SCHEMAS[tt])


def _struct_msg(role: str | pl.Expr, content: pl.Expr, keys: tuple[str, str] = ("role", "content")) -> pl.Expr:
    role_expr = pl.lit(role) if isinstance(role, str) else role
    fields: dict[str, Any] = {keys[0]: role_expr, keys[1]: content}
    return pl.struct(**fields)


def _system_expr(ctx: Context) -> pl.Expr:
    """The row's own system text, else the request's system_message, else null."""
    own = pl.when(pl.col("system").str.len_bytes() > 0).then(pl.col("system"))
    return own.otherwise(pl.lit(ctx.system_message, dtype=pl.String))


def _one(expr: pl.Expr) -> pl.Expr:
    return pl.concat_list(expr)


def _history() -> pl.Expr:
    return pl.col("history").fill_null(pl.lit([], dtype=MSGS))


def _has_history() -> pl.Expr:
    return pl.col("history").list.len().fill_null(0) > 0


def _openai_messages_expr(ctx: Context) -> pl.Expr:
    """openai messages as a list-of-struct column (used where a real list is needed, e.g. CSV num_turns)."""
    tt = ctx.training_type
    if tt is TrainingType.CHAT:
        msgs = pl.col("messages")
        if not ctx.system_message:
            return msgs
        has_system = msgs.list.eval((pl.element().struct.field("role") == "system").any()).list.first()
        return pl.when(has_system).then(msgs).otherwise(
            pl.concat_list([_one(_struct_msg("system", pl.lit(ctx.system_message))), msgs]))
    system = _system_expr(ctx)
    sys_list = pl.when(system.is_not_null()).then(_one(_struct_msg("system", system))).otherwise(
        pl.lit([], dtype=MSGS))
    return pl.concat_list([
        sys_list, _history(), _one(_struct_msg("user", pl.col("prompt"))),
        _one(_struct_msg("assistant", pl.col(_response_key(tt)))),
    ])


# The record builders below write JSON text directly with string concatenation:
# polars encodes each string once (`_j`) and the rest is literal glue. That is
# several times faster than building list/struct columns and encoding those.
# Literal replacements on encoded JSON are safe: inside JSON strings every '"'
# is escaped, so a pattern starting with '{"' or ',"' only matches real keys.


def _j(expr: pl.Expr) -> pl.Expr:
    """JSON text of a column's values (a string, a list of turns, or null)."""
    return pl.struct(expr.alias("v")).struct.json_encode().str.strip_prefix('{"v":').str.strip_suffix("}")


def _lit(text: str) -> pl.Expr:
    return pl.lit(text, dtype=pl.String)


def _cat(*parts: pl.Expr) -> pl.Expr:
    return pl.concat_str(list(parts))


def _opt(cond: pl.Expr, *parts: pl.Expr) -> pl.Expr:
    return pl.when(cond).then(_cat(*parts)).otherwise(_lit(""))


def _turn(role: str, content: pl.Expr, keys: tuple[str, str] = ("role", "content")) -> pl.Expr:
    return _cat(_lit(f'{{"{keys[0]}":"{role}","{keys[1]}":'), _j(content), _lit("}"))


def _history_items() -> pl.Expr:
    """The history turns as JSON objects followed by a comma, or "" when there are none."""
    return _opt(_has_history(), _j(pl.col("history")).str.strip_prefix("[").str.strip_suffix("]"), _lit(","))


def _regular_history() -> pl.Expr:
    """History that already alternates user, assistant, ... and ends with an assistant turn."""
    roles = pl.col("history").list.eval(pl.element().struct.field("role")).list.join(",")
    return roles.str.contains(r"^user,assistant(,user,assistant)*$").fill_null(False)


def _history_pairs() -> pl.Expr:
    """A regular history as LLaMA-Factory's [[user, assistant], ...] JSON text."""
    enc = pl.struct(pl.element().struct.field("content").alias("v")).struct.json_encode() \
        .str.strip_prefix('{"v":').str.strip_suffix("}")
    pairs = pl.col("history").list.eval(pl.concat_str([
        pl.lit("["), enc.gather_every(2), pl.lit(","), enc.gather_every(2, 1), pl.lit("]")]).str.join(","))
    return _cat(_lit("["), pairs.list.first(), _lit("]"))


def _renamed(enc: pl.Expr, names: dict[str, str], keys: tuple[str, str]) -> pl.Expr:
    """Turn objects re-keyed: {"role":"user","content": -> {"<keys0>":"<names[user]>","<keys1>":."""
    for role, name in names.items():
        enc = enc.str.replace_all(f'{{"role":"{role}","content":', f'{{"{keys[0]}":"{name}","{keys[1]}":',
                                  literal=True)
    return enc


def _messages_json(ctx: Context, with_response: bool = True, names: dict[str, str] | None = None,
                   keys: tuple[str, str] = ("role", "content")) -> pl.Expr:
    """openai messages as JSON text: system?, history, user prompt, assistant response."""
    tt = ctx.training_type
    names = names or {r: r for r in ROLES_ORDER}
    renamed = names != {r: r for r in ROLES_ORDER} or keys != ("role", "content")
    if tt is TrainingType.CHAT:
        enc = _j(pl.col("messages"))
        if ctx.system_message:
            has_system = pl.col("messages").list.eval(
                (pl.element().struct.field("role") == "system").any()).list.first()
            head = '[{"role":"system","content":' + dumps(ctx.system_message).decode() + "},"
            enc = pl.when(has_system).then(enc).otherwise(_cat(_lit(head), enc.str.strip_prefix("[")))
        return _renamed(enc, names, keys) if renamed else enc
    system = _system_expr(ctx)
    hist = _history_items()
    parts = [_lit("["), _opt(system.is_not_null(), _turn(names["system"], system, keys), _lit(",")),
             _renamed(hist, names, keys) if renamed else hist, _turn(names["user"], pl.col("prompt"), keys)]
    if with_response:
        parts += [_lit(","), _turn(names["assistant"], pl.col(_response_key(tt)), keys)]
    return _cat(*parts, _lit("]"))


def _metadata_json(ctx: Context, index: pl.Expr, extra: Sequence[pl.Expr] | None = None) -> pl.Expr:
    """{"dataset_id", "row", "training_type", "rejected"?, then the `extra` JSON fragments}."""
    parts = [_lit(f'{{"dataset_id":{int(ctx.dataset_id)},"row":'), index.cast(pl.String),
             _lit(f',"training_type":"{ctx.training_type.value}"')]
    if ctx.training_type is TrainingType.DPO:
        parts += [_lit(',"rejected":'), _j(pl.col("rejected"))]
    parts.extend(extra or ())
    return _cat(*parts, _lit("}"))


# (JSON text expression, mask of rows left to the per-row builder), or None when a format has no vector path.
_Plan = tuple[pl.Expr, pl.Expr | None]


def _vector_expr(fmt: str, ctx: Context, index: pl.Expr) -> _Plan | None:
    """(JSON text expression, mask of rows left to the per-row builder) or None when unsupported."""
    build = _VECTOR_PLANS.get(fmt)
    return build(ctx, index) if build is not None else None


def _openai_plan(ctx: Context, index: pl.Expr) -> _Plan | None:
    return _cat(_lit('{"messages":'), _messages_json(ctx), _lit("}")), None


def _openai_dpo_plan(ctx: Context, index: pl.Expr) -> _Plan | None:
    if ctx.training_type is not TrainingType.DPO:
        return None
    return _cat(
        _lit('{"input":{"messages":'), _messages_json(ctx, with_response=False),
        _lit('},"preferred_output":['), _turn("assistant", pl.col("chosen")),
        _lit('],"non_preferred_output":['), _turn("assistant", pl.col("rejected")), _lit("]}")), None


def _huggingface_plan(ctx: Context, index: pl.Expr) -> _Plan | None:
    tt = ctx.training_type
    if tt is TrainingType.CHAT:
        return _cat(_lit('{"messages":'), _messages_json(ctx), _lit("}")), None
    parts: list[pl.Expr] = []
    for i, key in enumerate(k for k in SCHEMAS[tt] if k not in ("system", "history")):
        parts += [_lit(("{" if i == 0 else ",") + f'"{key}":'), _j(pl.col(key))]
    parts += [_lit(',"system":'), _j(_system_expr(ctx)), _lit(',"history":'),
              pl.when(_has_history()).then(_j(pl.col("history"))).otherwise(_lit("null")), _lit("}")]
    return _cat(*parts), None


def _alpaca_plan(ctx: Context, index: pl.Expr) -> _Plan | None:
    tt = ctx.training_type
    if tt is TrainingType.CHAT:
        return None
    system = _system_expr(ctx)
    parts = [_lit('{"instruction":'), _j(pl.col("prompt")), _lit(',"input":""')]
    if tt is TrainingType.SL:
        parts += [_lit(',"output":'), _j(pl.col("completion"))]
    else:
        parts += [_lit(',"chosen":'), _j(pl.col("chosen")), _lit(',"rejected":'), _j(pl.col("rejected"))]
    parts += [_opt(system.is_not_null(), _lit(',"system":'), _j(system)),
              _opt(_has_history(), _lit(',"history":'), _history_pairs()), _lit("}")]
    return _cat(*parts), _has_history() & ~_regular_history()


def _sharegpt_plan(ctx: Context, index: pl.Expr) -> _Plan | None:
    tt = ctx.training_type
    if tt is TrainingType.CHAT:
        return None
    system = _system_expr(ctx)
    keys = ("from", "value")
    parts = [_lit('{"conversations":['), _opt(system.is_not_null(), _turn("system", system, keys), _lit(",")),
             _renamed(_history_items(), SHAREGPT_FROM, keys), _turn("human", pl.col("prompt"), keys)]
    if tt is TrainingType.SL:
        parts += [_lit(","), _turn("gpt", pl.col("completion"), keys), _lit("]")]
    else:
        parts += [_lit('],"chosen":'), _turn("gpt", pl.col("chosen"), keys),
                  _lit(',"rejected":'), _turn("gpt", pl.col("rejected"), keys)]
    return _cat(*parts, _lit("}")), _has_history() & ~_regular_history()


def _langchain_plan(ctx: Context, index: pl.Expr) -> _Plan | None:
    chat = ctx.training_type is TrainingType.CHAT
    if ctx.export_type == "chat":
        msgs = _messages_json(ctx, names=LANGCHAIN_TYPES, keys=("type", "content"))
        return _cat(_lit('{"messages":'), msgs, _lit(',"metadata":'), _metadata_json(ctx, index), _lit("}")), None
    if ctx.export_type == "documents":
        return _cat(_lit('{"page_content":'), _j(_langchain_page_content(ctx)), _lit(',"metadata":'),
                    _metadata_json(ctx, index), _lit("}")), None
    if ctx.export_type == "qa_pairs" and not chat:
        system = _system_expr(ctx)
        meta = _metadata_json(ctx, index, [
            _opt(system.is_not_null(), _lit(',"system":'), _j(system)),
            _opt(_has_history(), _lit(',"history":'), _j(pl.col("history")))])
        return _cat(_lit('{"question":'), _j(pl.col("prompt")), _lit(',"answer":'),
                    _j(pl.col(_response_key(ctx.training_type))), _lit(',"metadata":'), meta, _lit("}")), None
    return None


def _langchain_page_content(ctx: Context) -> pl.Expr:
    """A langchain document's text: one "System: / Human: / AI: <content>" line per turn."""
    tt = ctx.training_type
    names = {"system": "System", "user": "Human", "assistant": "AI"}
    turns = pl.element().struct.field("role").replace_strict(names, return_dtype=pl.String)
    line = pl.concat_str([turns, pl.lit(": "), pl.element().struct.field("content")])
    if tt is TrainingType.CHAT:
        return _openai_messages_expr(ctx).list.eval(line).list.join("\n")
    system = _system_expr(ctx)
    hist = pl.when(_has_history()).then(
        pl.col("history").list.eval(line).list.join("\n") + pl.lit("\n")).otherwise(pl.lit(""))
    return pl.concat_str([
        pl.when(system.is_not_null()).then(pl.lit("System: ") + system + pl.lit("\n")).otherwise(pl.lit("")),
        hist, pl.lit("Human: "), pl.col("prompt"), pl.lit("\nAI: "), pl.col(_response_key(tt))])


_VECTOR_PLANS: dict[str, Callable[[Context, pl.Expr], _Plan | None]] = {
    "openai": _openai_plan,
    "openai_dpo": _openai_dpo_plan,
    "huggingface": _huggingface_plan,
    "alpaca": _alpaca_plan,
    "sharegpt": _sharegpt_plan,
    "langchain": _langchain_plan,
}


def _index_series(index: int | Sequence[int], n: int) -> pl.Series:
    if isinstance(index, int):
        return pl.Series("__index", range(index, index + n), dtype=pl.Int64)
    return pl.Series("__index", index, dtype=pl.Int64)


def _csv_frame(df: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    tt = ctx.training_type
    if tt is TrainingType.CHAT:
        msgs = _openai_messages_expr(ctx)
        return df.select(
            messages=pl.struct(m=msgs).struct.json_encode().str.strip_prefix('{"m":').str.strip_suffix("}"),
            num_turns=msgs.list.len())
    hist = pl.struct(h=pl.col("history")).struct.json_encode().str.strip_prefix('{"h":').str.strip_suffix("}")
    cols = [pl.col(k) for k in CSV_COLUMNS[tt][:-2]]
    return df.select(*cols, system=_system_expr(ctx).fill_null(""),
                     history=pl.when(_has_history()).then(hist).otherwise(pl.lit("")))


def convert_batch(fmt: str, data: bytes, ctx: Context, index: int | Sequence[int], sep: bytes = b"\n"
                  ) -> tuple[bytes, int]:
    """Convert a batch of canonical JSONL lines: (records joined by `sep`, row count).

    For csv the records are CSV rows, each ending in CRLF, and `sep` is unused.
    """
    if not data.strip():
        return b"", 0
    try:
        df = read_batch(data, ctx.training_type)
    except pl.exceptions.PolarsError:
        # Not the canonical shape polars expects: the per-row path says which row and why.
        lines = [line for line in data.split(b"\n") if line.strip()]
        if fmt == "csv":
            return python_csv(lines, ctx), len(lines)
        return sep.join(python_records(fmt, lines, ctx, index)), len(lines)
    n = df.height
    if fmt == "csv":
        if not n:
            return b"", 0
        buf = io.BytesIO()
        _csv_frame(df, ctx).write_csv(buf, include_header=False, quote_style="necessary", line_terminator="\r\n")
        return buf.getvalue(), n
    plan = _vector_expr(fmt, ctx, pl.col("__index"))
    if plan is None:
        lines = [line for line in data.split(b"\n") if line.strip()]
        return sep.join(python_records(fmt, lines, ctx, index)), n
    expr, mask = plan
    idx = pl.int_range(index, index + n, dtype=pl.Int64) if isinstance(index, int) else _index_series(index, n)
    frame = df.with_columns(idx.alias("__index"))
    out = frame.select(expr.alias("o")).to_series()
    if mask is not None:
        where = frame.select(pl.arg_where(mask)).to_series()
        if len(where):
            sub = frame[where]
            build = ROW_BUILDERS[fmt]
            values = [build(row, ctx, int(row["__index"])).decode() for row in sub.to_dicts()]
            out = out.scatter(where, values)
    # Binary, not str: no Python str is built (and UTF-8 scanned) for the whole batch.
    return out.str.join(sep.decode()).cast(pl.Binary).item(), n
