"""Dot-path mapping sources (services/importer/paths.py): resolution and Arrow evaluation, the literal-dot rule,
errors, vectorised vs per-row output, field_paths, Parquet projection of path roots, and - through the real
importer gRPC server against the stand-in hub - previews and imports of the nested acme/agent-traces repo with
the training type inferred from the mapping."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ferry import wire
from ferry.canonical import TrainingType
from ferry.catalog.v1 import catalog_pb2 as cpb
from ferry.errors import FailedPrecondition, InvalidArgument
from ferry.importer.v1 import importer_pb2 as pb
from ferry.importer.v1 import importer_pb2_grpc
from ferry.jobs import Job
from services.importer import reader
from services.importer.convert import RowMapper
from services.importer.core import effective_training_type
from services.importer.mapping import validate_mapping
from services.importer.paths import PathError, evaluate, field_paths, resolve, select_sources, value_at
from services.importer.sources import LocalFile
from tests.fixtures.catalog import RunningCatalog
from tests.fixtures.importer import importer_env, start_importer
from tests.hubstub.repos import AGENT_TRACES_FIELDS, AGENT_TRACES_REPO, AGENT_TRACES_SPLITS, build_agent_traces
from tests.hubstub.stub import StubHub

SL, DPO, CHAT = TrainingType.SL, TrainingType.DPO, TrainingType.CHAT
ROLE = pa.struct([("role", pa.string()), ("content", pa.string())])
AGENT_SCHEMA = pa.schema(AGENT_TRACES_FIELDS)
AGENT_PATHS = ["id", "message", "message.role", "message.content", "response", "response.text", "response.meta",
               "response.meta.model", "response.meta.tokens", "turns", "turns.role", "turns.content", "score.value"]
SL_PATHS = {"prompt": "message.content", "completion": "response.text"}


def r(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def traces() -> pa.Table:
    """agent-traces-shaped rows with the awkward cases: null structs, null fields, empty and null lists, a null
    list item, non-ASCII, and a flat `score.value` column."""
    rows: list[dict[str, Any]] = [
        {"id": "a", "message": r("user", "Bonjour, ça va ?"),
         "response": {"text": "Très bien — merci 😀", "meta": {"model": "m1", "tokens": 5}},
         "turns": [r("user", "Bonjour, ça va ?"), r("assistant", "Très bien — merci 😀")], "score.value": 0.5},
        {"id": "b", "message": None, "response": {"text": None, "meta": None}, "turns": None, "score.value": None},
        {"id": "c", "message": r("user", "  "), "response": None, "turns": [], "score.value": 1.0},
        {"id": "d", "message": r("user", 'say "hi"\n\tnow'), "response": {"text": "hi\u2028there", "meta": None},
         "turns": [r("user", "u1"), None, r("assistant", "a1"), r("user", "u2")], "score.value": 0.25},
        {"id": "e", "message": r("user", "東京"), "response": {"text": "Tokyo", "meta": {"model": None, "tokens": 9}},
         "turns": [r("user", "東京"), r("assistant", "Tokyo")], "score.value": 0.75},
    ]
    return pa.Table.from_pylist(rows, schema=AGENT_SCHEMA)


def evaluated(table: pa.Table, text: str) -> list[Any]:
    path = resolve(table.schema, text)
    return list(evaluate(table.column(path.root), path).to_pylist())


def error(schema: pa.Schema, tt: TrainingType, mapping: dict[str, str]) -> str:
    with pytest.raises(InvalidArgument) as exc:
        RowMapper(tt, mapping, schema)
    assert exc.value.field == "field_mappings"
    return exc.value.message


def batch(table: pa.Table) -> pa.RecordBatch:
    return table.combine_chunks().to_batches()[0]


# -- resolution and evaluation ---------------------------------------------------------------------------------


def test_struct_and_nested_struct_fields() -> None:
    t = traces()
    found = resolve(t.schema, "message.content")
    assert (found.root, found.steps, found.type) == ("message", ("content",), pa.string())
    assert evaluated(t, "message.content") == ["Bonjour, ça va ?", None, "  ", 'say "hi"\n\tnow', "東京"]
    deep = resolve(t.schema, "response.meta.tokens")
    assert (deep.root, deep.steps, deep.type) == ("response", ("meta", "tokens"), pa.int64())
    assert evaluated(t, "response.meta.tokens") == [5, None, None, None, 9]  # null struct, null parent: null
    assert evaluated(t, "response.meta.model") == ["m1", None, None, None, None]


def test_list_of_structs_collects_the_field_of_every_item() -> None:
    t = traces()
    found = resolve(t.schema, "turns.content")
    assert found.type == pa.list_(pa.string()) and found.steps == ("content",)
    assert evaluated(t, "turns.content") == [["Bonjour, ça va ?", "Très bien — merci 😀"], None, [],
                                             ["u1", None, "a1", "u2"], ["東京", "Tokyo"]]
    assert evaluated(t, "turns.role")[3] == ["user", None, "assistant", "user"]


def test_list_index_negative_index_and_out_of_range_is_null() -> None:
    t = traces()
    assert resolve(t.schema, "turns.0.content").steps == (0, "content")
    assert evaluated(t, "turns.0.content") == ["Bonjour, ça va ?", None, None, "u1", "東京"]
    assert evaluated(t, "turns.-1.content") == ["Très bien — merci 😀", None, None, "u2", "Tokyo"]
    assert evaluated(t, "turns.1.content") == ["Très bien — merci 😀", None, None, None, "Tokyo"]  # item 1 is null
    assert evaluated(t, "turns.3.role") == [None, None, None, "user", None]
    assert evaluated(t, "turns.4.role") == [None] * 5
    assert evaluated(t, "turns.-4.role") == [None, None, None, "user", None]
    assert evaluated(t, "turns.-5.role") == [None] * 5
    assert evaluated(t, "turns.99999999999999999999.role") == evaluated(t, "turns.-99999999999999999999.role") == [
        None] * 5
    whole = resolve(t.schema, "turns.-1")
    assert whole.type == ROLE and evaluated(t, "turns.-1")[0] == r("assistant", "Très bien — merci 😀")


def test_deep_nesting_lists_of_lists_and_sliced_chunked_input() -> None:
    inner = pa.list_(pa.struct([("name", pa.string()), ("args", pa.list_(pa.struct([("k", pa.string())])))]))
    schema = pa.schema([("episode", pa.struct([("steps", pa.list_(pa.struct([("calls", inner)])))])),
                        ("grid", pa.large_list(pa.list_(ROLE)))])
    rows = [
        {"episode": {"steps": [{"calls": [{"name": "ls", "args": [{"k": "-l"}, {"k": "/tmp"}]}]},
                               {"calls": []}]},
         "grid": [[r("user", "a"), r("assistant", "b")], [r("user", "c")]]},
        {"episode": None, "grid": None},
        {"episode": {"steps": [{"calls": [{"name": "cat", "args": None}, None]}]}, "grid": [[], None]},
    ]
    t = pa.Table.from_pylist(rows, schema=schema)
    assert evaluated(t, "episode.steps.calls.name") == [[["ls"], []], None, [["cat", None]]]
    assert evaluated(t, "episode.steps.0.calls.-1.args.1.k") == ["/tmp", None, None]
    assert evaluated(t, "episode.steps.calls.args.k") == [[[["-l", "/tmp"]], []], None, [[None, None]]]
    assert resolve(schema, "grid.content").type == pa.large_list(pa.list_(pa.string()))
    assert evaluated(t, "grid.content") == [[["a", "b"], ["c"]], None, [[], None]]
    assert evaluated(t, "grid.0.-1.role") == ["assistant", None, None]
    # Slices and several chunks give the same values as the whole table, row for row.
    chunked = pa.concat_tables([t.slice(1), t.slice(0, 1), t.slice(1, 2)])
    assert chunked.column("episode").num_chunks == 3
    for text in ("episode.steps.calls.name", "episode.steps.0.calls.-1.args.1.k", "grid.content", "grid.0.-1.role"):
        want = evaluated(t, text)
        assert evaluated(chunked, text) == want[1:] + want[:1] + want[1:]
        path = resolve(schema, text)
        for start in range(3):
            sliced = t.slice(start).combine_chunks().to_batches()[0]
            assert evaluate(sliced.column(path.root), path).to_pylist() == want[start:]
            # The per-row walk over Python values agrees with Arrow.
            assert [value_at(row[path.root], path.steps) for row in sliced.to_pylist()] == want[start:]


def test_python_walk_accepts_datasets_dict_of_lists() -> None:
    steps = resolve(traces().schema, "turns.-1.content").steps
    assert value_at({"role": ["user", "assistant"], "content": ["q", "a"]}, steps) == "a"
    assert value_at({"role": ["user"], "content": ["q"]}, resolve(traces().schema, "turns.3.content").steps) is None
    assert value_at({"role": ["user"], "content": ["q"]}, ("content",)) == ["q"]
    assert value_at("not a struct", ("content",)) is None


def test_literal_dotted_column_always_wins() -> None:
    # A flat column named `score.value` AND a struct `score` with a field `value`: the flat column is read.
    t = pa.table({"score.value": ["flat-1", "flat-2"], "score": [{"value": "nested-1"}, {"value": "nested-2"}],
                  "answer": ["x", "y"]})
    out = RowMapper(SL, {"prompt": "score.value", "completion": "answer"}, t.schema)
    assert out.paths == {} and out.columns == ["score.value", "answer"]
    assert [row for row, _ in out.map_rows(t.to_pylist())] == [
        {"prompt": "flat-1", "completion": "x"}, {"prompt": "flat-2", "completion": "y"}]
    assert json.loads(out.map_batch(batch(t)).jsonl.splitlines()[1]) == {"prompt": "flat-2", "completion": "y"}
    # A path may start at a flat dotted column: the longest top-level name that resolves is the root.
    u = pa.table({"meta.info": [{"text": "deep"}], "meta": [{"other": "z"}], "answer": ["a"]})
    path = resolve(u.schema, "meta.info.text")
    assert (path.root, path.steps) == ("meta.info", ("text",))
    m = RowMapper(SL, {"prompt": "meta.info.text", "completion": "answer"}, u.schema)
    assert m.columns == ["meta.info", "answer"]
    assert m.map_batch(batch(u)).jsonl == b'{"prompt":"deep","completion":"a"}\n'
    # The flat float column of agent-traces is found as a column (not a path) and refused for its type.
    assert "column 'score.value' is double, not text" in error(AGENT_SCHEMA, SL, {"prompt": "score.value",
                                                                                  "completion": "response.text"})


def test_unresolvable_paths_are_invalid_argument_naming_field_mappings() -> None:
    columns = "(columns: id, message, response, turns, score.value)"
    cases = {
        "message.body": "'message' has no field 'body' (its fields: role, content)",
        "reply.text": "no top-level column is named 'reply'",
        "id.x": "'id' is string, which has no field 'x'",
        "response.meta.tokens.x": "'response.meta.tokens' is int64, which has no field 'x'",
        "turns.content.x": "'turns.content' is string, which has no field 'x'",
        "message..content": "not a dot-path",
    }
    for spec, reason in cases.items():
        msg = error(AGENT_SCHEMA, SL, {"prompt": spec, "completion": "response.text"})
        assert msg.startswith(f"field_mappings['prompt']: column {spec!r} is not in the source"), msg
        assert reason in msg and msg.endswith(columns), msg
    with pytest.raises(PathError):
        resolve(AGENT_SCHEMA, "message")
    # The same through validate_mapping, and in joins and conversation specs.
    with pytest.raises(InvalidArgument) as exc:
        validate_mapping(AGENT_SCHEMA, SL, {"prompt": "message.content+message.nope", "completion": "response.text"})
    assert exc.value.field == "field_mappings" and "'message.nope'" in exc.value.message
    assert "'turns.nope'" in error(AGENT_SCHEMA, CHAT, {"messages": "turns.nope"})
    # A column name without a dot keeps the plain missing-column message.
    assert error(AGENT_SCHEMA, SL, {"prompt": "nope", "completion": "response.text"}) == (
        f"field_mappings['prompt']: column 'nope' is not in the source {columns}")


def test_resolved_paths_are_type_checked_like_columns() -> None:
    s = AGENT_SCHEMA
    assert "path 'response.meta.tokens' is int64, not text" in error(s, SL, {"prompt": "message.content",
                                                                              "completion": "response.meta.tokens"})
    assert "column 'message' is struct" in error(s, SL, {"prompt": "message", "completion": "response.text"})
    assert "path 'turns.-1' is struct<role: string, content: string>, not text" in error(
        s, SL, {"prompt": "turns.-1", "completion": "response.text"})
    msg = error(s, SL, {"prompt": "turns.content", "completion": "response.text"})
    assert "path 'turns.content' is a list of messages; use 'turns:turns.content'" in msg
    assert "path 'response.meta' is struct" in error(s, CHAT, {"messages": "response.meta"})
    assert "not a text transcript" in error(s, SL, {"prompt": "transcript:turns.role", "completion": "id"})
    # Paths that fit: text fields, a join, a conversation list.
    RowMapper(SL, {"prompt": "message.content+id", "completion": "response.text", "system": "response.meta.model"}, s)
    RowMapper(CHAT, {"messages": "turns"}, s)
    RowMapper(SL, {"prompt": "turns:turns.content", "completion": "turns:turns.content"}, s)


def test_mapper_reads_root_columns_and_maps_paths_both_ways() -> None:
    t = traces()
    mapping = {"prompt": "message.content+turns.-1.content", "completion": "response.text",
               "system": "response.meta.model"}
    mapper = RowMapper(SL, mapping, t.schema)
    assert mapper.columns == ["message", "turns", "response"]
    assert mapper.sources == ["message.content", "turns.-1.content", "response.text", "response.meta.model"]
    fast = mapper.map_batch(batch(t), row_offset=0)
    slow = RowMapper(SL, mapping, t.schema).map_batch(batch(t), force_per_row=True)
    assert fast == slow  # byte-identical output, same skips and reasons
    rows = [json.loads(line) for line in fast.jsonl.decode().split("\n")[:-1]]
    assert rows == [
        {"prompt": "Bonjour, ça va ?\n\nTrès bien — merci 😀", "completion": "Très bien — merci 😀", "system": "m1"},
        {"prompt": 'say "hi"\n\tnow\n\nu2', "completion": "hi\u2028there"},
        {"prompt": "東京\n\nTokyo", "completion": "Tokyo"},
    ]
    # Row 2: a blank content joined with the last item of an empty list is no prompt at all.
    assert fast.rows_skipped == 2 and fast.skip_reasons == ["row 1: prompt is missing; completion is missing",
                                                            "row 2: prompt is missing; completion is missing"]
    # Previews: Arrow rows and plain Python rows give the same as the import.
    py = RowMapper(SL, mapping, t.schema).map_rows(t.to_pylist())
    assert py == mapper.map_table_rows(t)
    assert [row for row, _ in py if row is not None] == rows
    # Only the root columns a batch needs must be there; missing ones are a clear error.
    with pytest.raises(FailedPrecondition, match="'turns'"):
        mapper.map_batch(batch(t.drop_columns(["turns"])))


def test_vectorised_output_is_byte_identical_to_the_per_row_path() -> None:
    t = traces()
    big = pa.concat_tables([t] * 40)  # 200 rows, 40 chunks: the mapper sees one combined batch
    for mapping in (SL_PATHS, {"prompt": "turns.0.content", "completion": "turns.-1.content"},
                    {"prompt": "message.content+response.meta.model", "completion": "response.text",
                     "system": "message.role"}):
        fast = RowMapper(SL, mapping, t.schema).map_batch(batch(big))
        slow = RowMapper(SL, mapping, t.schema).map_batch(batch(big), force_per_row=True)
        assert fast == slow and fast.rows_ok > 0 and fast.rows_skipped > 0
        assert RowMapper(SL, mapping, t.schema).vectorised
        # The python walk over to_pylist() rows gives the same rows, hence the same bytes.
        py = [row for row, _ in RowMapper(SL, mapping, t.schema).map_rows(big.to_pylist()) if row is not None]
        assert b"".join(json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
                        for row in py) == fast.jsonl


def test_conversations_from_paths() -> None:
    episode = pa.struct([("turns", pa.list_(ROLE)), ("title", pa.string())])
    t = pa.Table.from_pylist([
        {"episode": {"turns": [r("system", "S"), r("user", "q1"), r("assistant", "a1"), r("user", "q2"),
                               r("assistant", "a2")], "title": "t"}},
        {"episode": {"turns": [r("user", "only")], "title": "u"}},
        {"episode": None},
    ], schema=pa.schema([("episode", episode)]))
    chat = RowMapper(CHAT, {"messages": "episode.turns"}, t.schema)
    assert not chat.vectorised and chat.columns == ["episode"]
    out = chat.map_batch(batch(t))
    assert out.rows_ok == 1 and json.loads(out.jsonl)["messages"][0] == r("system", "S")
    assert out.skip_reasons[1] == "row 2: conversation 'episode.turns' is missing"
    sl = RowMapper(SL, {t_: "turns:episode.turns" for t_ in ("prompt", "completion", "history", "system")},
                   t.schema)
    assert json.loads(sl.map_batch(batch(t)).jsonl) == {
        "prompt": "q2", "completion": "a2", "system": "S", "history": [r("user", "q1"), r("assistant", "a1")]}


def test_select_sources_keeps_tables_and_batches() -> None:
    t = traces()
    m = RowMapper(SL, SL_PATHS, t.schema)
    as_table = select_sources(pa.concat_tables([t, t]), m.sources, m.paths)
    assert isinstance(as_table, pa.Table) and as_table.column_names == ["message.content", "response.text"]
    assert as_table.num_rows == 10
    as_batch = select_sources(batch(t), m.sources, m.paths)
    assert isinstance(as_batch, pa.RecordBatch) and as_batch.column(0).to_pylist()[4] == "東京"


# -- field_paths -------------------------------------------------------------------------------------------------


def test_field_paths_in_schema_order_with_children() -> None:
    schema = pa.schema([("prompt", pa.string()),
                        ("message", pa.struct([("role", pa.string()),
                                               ("content", pa.struct([("text", pa.string())]))]))])
    assert field_paths(schema) == ["prompt", "message", "message.role", "message.content", "message.content.text"]
    assert field_paths(AGENT_SCHEMA) == AGENT_PATHS
    # At most 4 names deep; lists of lists of structs list their items' fields; a shadowed path is left out.
    deep = pa.struct([("b", pa.struct([("c", pa.struct([("d", pa.struct([("e", pa.string())]))]))]))])
    schema = pa.schema([("a", deep), ("grid", pa.list_(pa.list_(ROLE))), ("a.b", pa.string()),
                        ("tags", pa.list_(pa.string()))])
    assert field_paths(schema) == ["a", "a.b.c", "a.b.c.d", "grid", "grid.role", "grid.content", "a.b", "tags"]
    assert field_paths(schema, max_depth=2) == ["a", "grid", "grid.role", "grid.content", "a.b", "tags"]
    for text in field_paths(AGENT_SCHEMA):
        if text not in AGENT_SCHEMA.names:
            resolve(AGENT_SCHEMA, text)  # every listed path is selectable


def test_field_paths_of_the_agent_traces_repo(tmp_path: Path) -> None:
    build_agent_traces(tmp_path)
    d = tmp_path / AGENT_TRACES_REPO
    for split, n in AGENT_TRACES_SPLITS.items():
        table = pq.read_table(d / "data" / f"{split}-00000-of-00001.parquet")
        assert table.num_rows == n
        assert field_paths(table.schema) == AGENT_PATHS
        for row in table.to_pylist():
            roles = [t["role"] for t in row["turns"]]
            assert 2 <= len(roles) <= 4 and roles == ["user", "assistant", "user", "assistant"][:len(roles)]
            assert row["turns"][0] == row["message"] and row["turns"][1]["content"] == row["response"]["text"]
    again = tmp_path / "again"
    build_agent_traces(again)
    assert (again / AGENT_TRACES_REPO / "data" / "train-00000-of-00001.parquet").read_bytes() == (
        d / "data" / "train-00000-of-00001.parquet").read_bytes()  # deterministic


# -- Parquet projection --------------------------------------------------------------------------------------------


def test_parquet_projection_reads_the_root_columns_of_paths(tmp_path: Path) -> None:
    t = pa.concat_tables([traces()] * 200)
    rng = random.Random(0)
    t = t.append_column("padding", pa.array([rng.randbytes(1000).hex() for _ in range(t.num_rows)]))
    path = tmp_path / "traces.parquet"
    pq.write_table(t, path, row_group_size=250)
    f = LocalFile(path, path.name, path.stat().st_size)
    meta = reader.read_parquet_meta(f)
    assert meta.leaf_roots() == ["id", "message", "message", "response", "response", "response", "turns", "turns",
                                 "score.value", "padding"]
    mapper = RowMapper(SL, {"prompt": "message.content+turns.-1.content", "completion": "response.text"},
                       meta.schema)
    columns = mapper.columns
    assert columns == ["message", "turns", "response"]
    # Only the chunks of the root columns are fetched: far less than the file (padding is most of it).
    assert meta.projected_bytes(columns) < f.size / 4
    with ThreadPoolExecutor(2) as pool:
        out = []
        for table, _ in reader.iter_parquet_files(lambda i: meta, 1, reader.Position(), pool, columns=columns):
            assert set(table.column_names) == set(columns)
            out.append(mapper.map_batch(batch(table)).jsonl)
        whole = RowMapper(SL, {"prompt": "message.content+turns.-1.content", "completion": "response.text"},
                          t.schema).map_batch(batch(t))
        assert b"".join(out) == whole.jsonl
        # A flat column with a dot in its name is fetched by its own chunks (its leaf path is `score.value` too).
        flat = list(reader.iter_parquet_files(lambda i: meta, 1, reader.Position(), pool,
                                              columns=["score.value"]))
        assert pa.concat_tables([x for x, _ in flat]).column("score.value").to_pylist() == t.column(
            "score.value").to_pylist()
        assert 0 < meta.projected_bytes(["score.value"]) < meta.projected_bytes(["padding"]) / 50


# -- training type inference in the importer core ----------------------------------------------------------------


def test_effective_training_type() -> None:
    assert effective_training_type(DPO, SL_PATHS) is DPO  # a given type is kept
    assert effective_training_type(CHAT, {}) is CHAT
    assert effective_training_type(None, SL_PATHS) is SL
    assert effective_training_type(None, {"messages": "turns", "system": ""}) is CHAT
    assert effective_training_type(None, {"prompt": "a", "chosen": "b", "rejected": "c"}) is DPO
    assert effective_training_type(None, {}) is None
    assert effective_training_type(None, {"prompt": " ", "completion": ""}) is None  # blanks are "not mapped"
    with pytest.raises(InvalidArgument) as exc:
        effective_training_type(None, {"system": "message.content", "history": ""})
    assert exc.value.field == "training_type" and "'system'" in exc.value.message


# -- through the importer's gRPC server ------------------------------------------------------------------------


@dataclass
class Grpc:
    stub: importer_pb2_grpc.ImporterServiceStub
    catalog: RunningCatalog
    hub: StubHub

    def wait(self, import_id: str, timeout: float = 60.0) -> Job:
        deadline = time.monotonic() + timeout
        while True:
            p = wire.job_from_pb(self.stub.GetImportProgress(pb.GetImportProgressRequest(import_id=import_id)).job)
            if p.phase.terminal:
                return p
            assert time.monotonic() < deadline, f"import {import_id} did not finish: {p}"
            time.sleep(0.05)

    def examples(self, dataset_id: int, split: str, page: int = 7) -> list[dict[str, Any]]:
        """Every stored row of a split, paged through the catalog."""
        out: list[dict[str, Any]] = []
        while True:
            resp = self.catalog.stub.ListExamples(cpb.ListExamplesRequest(
                dataset_id=dataset_id, split=split, offset=len(out), limit=page))
            out += [json.loads(e.json) for e in resp.examples]
            if not resp.examples or len(out) >= resp.total:
                return out


@pytest.fixture
def importer(s3_env: dict[str, str], catalog_server: RunningCatalog, hub: StubHub, tmp_path: Path) -> Iterator[Grpc]:
    """The importer's real gRPC server (no gateway) against the stand-in hub, a real catalog and SeaweedFS."""
    server = start_importer(importer_env(s3_env, catalog_server.addr, hub.url, tmp_path))
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Grpc(importer_pb2_grpc.ImporterServiceStub(channel), catalog_server, hub)
    finally:
        channel.close()
        server.stop(grace=0.5)


def _source(hub: StubHub, split: str) -> list[dict[str, Any]]:
    return list(pq.read_table(hub.repo_dir(AGENT_TRACES_REPO) / "data" / f"{split}-00000-of-00001.parquet")
                .to_pylist())


def _refused(call: Any, request: Any) -> str:
    with pytest.raises(grpc.RpcError) as exc:
        call(request)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value
    return str(exc.value.details())


def test_info_lists_field_paths(importer: Grpc) -> None:
    info = importer.stub.GetDatasetInfo(pb.GetDatasetInfoRequest(dataset_name=AGENT_TRACES_REPO))
    assert list(info.field_paths) == AGENT_PATHS
    assert [f.name for f in info.features] == ["id", "message", "response", "turns", "score.value"]
    assert {s.name: s.num_rows for s in info.splits} == AGENT_TRACES_SPLITS
    flat = importer.stub.GetDatasetInfo(pb.GetDatasetInfoRequest(dataset_name="openai/gsm8k", config="main"))
    assert list(flat.field_paths) == ["question", "answer"]


def test_preview_maps_paths_with_the_type_inferred(importer: Grpc) -> None:
    resp = importer.stub.PreviewDataset(pb.PreviewDatasetRequest(
        dataset_name=AGENT_TRACES_REPO, num_samples=40, field_mappings=SL_PATHS))
    assert resp.training_type == cpb.TRAINING_TYPE_SL and dict(resp.field_mappings) == SL_PATHS
    raw = [json.loads(x) for x in resp.raw_samples_json]
    samples = [json.loads(x) for x in resp.samples_json]
    assert raw == _source(importer.hub, "train") and not resp.problems
    assert samples == [{"prompt": x["message"]["content"], "completion": x["response"]["text"]} for x in raw]
    # Index paths, on the test split; the type given explicitly is reported as used.
    resp = importer.stub.PreviewDataset(pb.PreviewDatasetRequest(
        dataset_name=AGENT_TRACES_REPO, split="test", num_samples=10, training_type=cpb.TRAINING_TYPE_SL,
        field_mappings={"prompt": "turns.0.content", "completion": "turns.1.content", "system": "response.meta.model"}))
    assert resp.training_type == cpb.TRAINING_TYPE_SL
    assert [json.loads(x) for x in resp.samples_json] == [
        {"prompt": x["message"]["content"], "completion": x["response"]["text"], "system": x["response"]["meta"]["model"]}
        for x in _source(importer.hub, "test")]
    # messages -> CHAT; conversations ending with the user are problems, not samples.
    resp = importer.stub.PreviewDataset(pb.PreviewDatasetRequest(
        dataset_name=AGENT_TRACES_REPO, num_samples=40, field_mappings={"messages": "turns"}))
    assert resp.training_type == cpb.TRAINING_TYPE_CHAT
    ends_with_user = [i for i, x in enumerate(_source(importer.hub, "train")) if x["turns"][-1]["role"] == "user"]
    assert [p.index for p in resp.problems] == ends_with_user and ends_with_user
    assert len(resp.samples_json) == 40 - len(ends_with_user)
    # Neither type nor mapping: the raw rows, and no type.
    resp = importer.stub.PreviewDataset(pb.PreviewDatasetRequest(dataset_name=AGENT_TRACES_REPO, num_samples=3))
    assert resp.training_type == cpb.TRAINING_TYPE_UNSPECIFIED and list(resp.samples_json) == list(
        resp.raw_samples_json)


def test_import_with_paths_and_no_type_stores_the_nested_values(importer: Grpc) -> None:
    started = importer.stub.StartImport(pb.StartImportRequest(dataset_name=AGENT_TRACES_REPO,
                                                              field_mappings=SL_PATHS))
    done = importer.wait(started.import_id)
    assert done.phase.status == "complete", done
    assert done.rows_skipped == 0 and done.progress.rows_done == sum(AGENT_TRACES_SPLITS.values())
    ds = importer.catalog.stub.GetDataset(cpb.GetDatasetRequest(dataset_id=done.dataset_id)).dataset
    assert ds.training_type == cpb.TRAINING_TYPE_SL and dict(ds.field_mappings) == SL_PATHS
    assert [s.name for s in ds.splits] == ["train", "test"]
    for split, n in AGENT_TRACES_SPLITS.items():
        stored = importer.examples(done.dataset_id, split)
        want = [{"prompt": x["message"]["content"], "completion": x["response"]["text"]}
                for x in _source(importer.hub, split)]
        assert len(stored) == n and stored == want


def test_literal_columns_unresolvable_paths_and_uninferable_types_are_refused(importer: Grpc) -> None:
    stub = importer.stub
    preview, start = stub.PreviewDataset, stub.StartImport
    # `score.value` is the flat float column, found as a column (a path could not resolve: there is no `score`).
    for call, req in ((preview, pb.PreviewDatasetRequest), (start, pb.StartImportRequest)):
        msg = _refused(call, req(dataset_name=AGENT_TRACES_REPO,
                                 field_mappings={"prompt": "score.value", "completion": "response.text"}))
        assert "field_mappings['prompt']: column 'score.value' is double, not text" in msg
        msg = _refused(call, req(dataset_name=AGENT_TRACES_REPO,
                                 field_mappings={"prompt": "message.body", "completion": "response.text"}))
        assert "field_mappings['prompt']" in msg and "'message.body'" in msg and "'body'" in msg
        assert msg.endswith("(columns: id, message, response, turns, score.value)")
        msg = _refused(call, req(dataset_name=AGENT_TRACES_REPO,
                                 field_mappings={"system": "message.content", "history": " "}))
        assert "training_type could not be inferred" in msg and "'system'" in msg and "'history'" not in msg
        assert "prompt+completion for SL" in msg and "prompt+chosen+rejected for DPO" in msg
        assert "messages for CHAT" in msg
        # Inferred DPO, then validated as DPO like a given type.
        msg = _refused(call, req(dataset_name=AGENT_TRACES_REPO,
                                 field_mappings={"prompt": "message.content", "chosen": "response.text"}))
        assert "required target 'rejected' is not mapped for DPO" in msg
    assert _refused(start, pb.StartImportRequest(dataset_name=AGENT_TRACES_REPO)) == (
        "training_type is required when field_mappings is empty (one of SL, DPO, CHAT)")
    assert _refused(start, pb.StartImportRequest(dataset_name=AGENT_TRACES_REPO, field_mappings={"prompt": ""})) == (
        "training_type is required when field_mappings is empty (one of SL, DPO, CHAT)")
    # Nothing was queued.
    assert list(importer.catalog.stub.ListJobs(cpb.ListJobsRequest(kind=cpb.JOB_KIND_IMPORT)).jobs) == []
