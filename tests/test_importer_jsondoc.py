"""The streaming JSON document reader: every shape a Hub `.json` file takes, fed in any chunking, in bounded memory."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pytest

from ferry.errors import FailedPrecondition
from services.importer import reader
from services.importer.hub import Meter
from services.importer.jsondoc import JsonDocument
from services.importer.sources import LocalFile

ROWS = [{"instruction": f"do {i} \"now\" ü 東京", "output": f"done\n{i}", "n": i, "tags": ["a", f"t{i}"], "meta": {"b": i}}
        for i in range(300)]


def _feed_all(text: bytes, step: int, **kw: int) -> tuple[list[object], JsonDocument]:
    doc = JsonDocument("x.json", **kw)
    out: list[object] = []
    for i in range(0, len(text), step):
        out += doc.feed(text[i:i + step])
    out += doc.feed(b"", final=True)
    return out, doc


@pytest.mark.parametrize("step", [1, 3, 7, 64, 1 << 20])
def test_array_of_records_in_any_chunking(step: int) -> None:
    text = json.dumps(ROWS, indent=1, ensure_ascii=False).encode()
    got, doc = _feed_all(b"\xef\xbb\xbf" + text, step)  # with a BOM, as some Windows-made files have
    assert got == ROWS and doc.mode == "done"


def test_numbers_split_across_chunks_are_not_truncated() -> None:
    got, _ = _feed_all(b"[12345, 6.5e3, -7, true, null, \"s\"]", 2)
    assert got == [12345, 6500.0, -7, True, None, "s"]


def test_object_holding_a_list_of_records_streams_when_large() -> None:
    text = json.dumps({"version": "1.0", "data": ROWS, "count": len(ROWS)}).encode()
    small, doc = _feed_all(text, 1000)
    assert small == ROWS and doc.mode == "done"
    # Past the probe size the object is walked key by key and the records come out before the file ends.
    doc = JsonDocument("x.json", probe_bytes=2_000)
    first = doc.feed(text[: len(text) // 2])
    assert doc.mode == "records" and 0 < len(first) < len(ROWS)
    rest = doc.feed(text[len(text) // 2:]) + doc.feed(b"", final=True)
    assert first + rest == ROWS


def test_json_lines_under_a_json_name_are_handed_over() -> None:
    text = b"".join(json.dumps(r).encode() + b"\n" for r in ROWS)
    doc = JsonDocument("x.json")
    assert doc.feed(text[:5000]) == [] and doc.mode == "jsonl"
    assert doc.pending() == text[:5000]


def test_small_document_shapes() -> None:
    assert _feed_all(json.dumps({"q": ["a", "b"], "a": ["c", "d"]}).encode(), 5)[0] == [
        {"q": "a", "a": "c"}, {"q": "b", "a": "d"}]
    assert _feed_all(b'{"q": "only one"}', 4)[0] == [{"q": "only one"}]
    # A large columnar object: its lists are whole values, then the columns become rows.
    cols = {"q": [f"q{i}" for i in range(2_000)], "a": [f"a{i}" for i in range(2_000)]}
    got, _ = _feed_all(json.dumps(cols).encode(), 500, probe_bytes=1_000)
    assert got == [{"q": f"q{i}", "a": f"a{i}"} for i in range(2_000)]


@pytest.mark.parametrize(("text", "message"), [
    (b"[1, 2,]", "not valid JSON"),
    (b'[{"a": 1}', "ends"),
    (b'[{"a": 1}] [2]', "extra data"),
    (b'"just a string"', "not a list of records"),
    (b'[{"a": 1} {"b": 2}]', "expected ','"),
    (b"\xff\xfe[]", "not UTF-8"),
])
def test_malformed_documents_fail_clearly(text: bytes, message: str) -> None:
    with pytest.raises(FailedPrecondition, match=message):
        _feed_all(text, 3)


def test_two_lists_of_records_in_a_large_object_are_refused() -> None:
    text = json.dumps({"train": ROWS, "test": ROWS}).encode()
    with pytest.raises(FailedPrecondition, match="more than one list of records"):
        _feed_all(text, 1000, probe_bytes=1_000)


def test_a_single_oversized_value_is_an_error_not_unbounded_memory() -> None:
    text = b'[{"a": "' + b"x" * 50_000 + b'"}]'
    with pytest.raises(FailedPrecondition, match="larger than"):
        _feed_all(text, 1000, max_value_bytes=10_000)


def _array_file(path: Path, n: int) -> LocalFile:
    row = {"prompt": "p" * 200, "completion": "c" * 600}
    with path.open("w") as fh:
        fh.write("[\n")
        for i in range(n):
            fh.write(json.dumps({**row, "i": i}) + (",\n" if i < n - 1 else "\n"))
        fh.write("]\n")
    return LocalFile(path, path.name, path.stat().st_size, None)


def _peak_reading(f: LocalFile) -> tuple[int, int]:
    """(rows read, peak bytes the Python heap held meanwhile)."""
    tracemalloc.start()
    try:
        count = 0
        for table, pos in reader.iter_text_file(f, 0, reader.Position()):
            count += table.num_rows
            assert pos.row == count
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_large_json_array_file_streams_in_bounded_memory_and_resumes(tmp_path: Path) -> None:
    small, large = _array_file(tmp_path / "small.json", 15_000), _array_file(tmp_path / "train.json", 60_000)
    n_small, peak_small = _peak_reading(small)
    n_large, peak_large = _peak_reading(large)  # ~50 MB
    assert (n_small, n_large) == (15_000, 60_000)
    # Four times the rows, the same memory: it does not grow with the file (it did when the file was read whole).
    assert peak_large < 1.3 * peak_small and peak_large < large.size / 4, (peak_small, peak_large, large.size)
    # Resuming by rows skips what was imported.
    rest = list(reader.iter_text_file(large, 0, reader.Position(0, 0, 12_345, 0)))
    assert pa.concat_tables([t for t, _ in rest]).column("i").to_pylist() == list(range(12_345, 60_000))
    # A preview reads a small prefix of it, not the whole document.
    meter = Meter()
    head = reader.read_prefix_rows(LocalFile(large.abspath, large.path, large.size, meter), 5)
    assert head.column("i").to_pylist() == [0, 1, 2, 3, 4] and meter.bytes <= 64 * 1024


def test_json_lines_named_json_stream_through_the_lines_reader(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:50]))
    got = list(reader.iter_text_file(LocalFile(path, path.name, path.stat().st_size, None), 0, reader.Position(),
                                     batch_rows=20))
    assert pa.concat_tables([t for t, _ in got]).to_pylist() == ROWS[:50]
    assert [p.row for _, p in got] == [20, 40, 50] and all(p.byte_offset == 0 for _, p in got)


@pytest.mark.parametrize("step", [1, 5, 1 << 20])
def test_values_pythons_json_writes_come_out_as_json_loads_reads_them(step: int) -> None:
    # NaN, Infinity (json.dump writes them for float nan/inf), an overflowing exponent, a lone surrogate escape:
    # json.loads reads all four, so the JSON lines reader's fallback does too (ijson's yajl refuses or mangles them).
    text = b'[{"a": NaN, "b": -Infinity, "c": 1e400, "s": "\\ud800x", "f": 0.1}, Infinity, 2.5]'
    got, _ = _feed_all(text, step)
    assert repr(got) == repr(json.loads(text)) == "[{'a': nan, 'b': -inf, 'c': inf, 's': '\\ud800x', 'f': 0.1}, inf, 2.5]"
