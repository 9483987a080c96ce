"""Reading data files as Arrow record batches, fetching only the bytes needed.

Parquet: the footer by one ranged GET (two if the metadata is large), then each row group's byte span by one
ranged GET; row groups are fetched ahead by a small bounded thread pool while earlier ones convert. JSON lines
and CSV stream (with streaming decompression); a preview reads growing prefixes only. Every read reports a
`Position` after each batch so an import can checkpoint and resume without starting over.
"""

from __future__ import annotations

import bz2
import io
import itertools
import json
import lzma
import queue
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from ferry.errors import FailedPrecondition, FerryError
from services.importer.jsondoc import JsonDocument
from services.importer.sources import SourceFile, data_format

TEXT_BLOCK = 4 * 1024 * 1024
BATCH_ROWS = 4_000
PREFETCH_ROW_GROUPS = 3
FOOTER_GUESS = 16 * 1024
# Column chunks closer than this are fetched in one ranged GET.
MERGE_GAP = 256 * 1024


def _bad_file(path: str, exc: Exception) -> FailedPrecondition:
    return FailedPrecondition(f"data file {path} could not be read: {type(exc).__name__}: {str(exc)[:300]}")


# -- decompression -----------------------------------------------------------------------------------------------

class _Decompressor:
    """Streaming decompression for .gz (multi-member), .bz2, .xz and .zst."""

    def __init__(self, comp: str) -> None:
        self.comp = comp
        self._d: Any = self._new()

    def _new(self) -> Any:
        if self.comp == "gz":
            return zlib.decompressobj(zlib.MAX_WBITS | 32)
        if self.comp == "bz2":
            return bz2.BZ2Decompressor()
        if self.comp == "xz":
            return lzma.LZMADecompressor()
        if self.comp in ("zst", "zstd"):
            import zstandard

            return zstandard.ZstdDecompressor().decompressobj()
        return None

    def feed(self, data: bytes) -> bytes:
        if self._d is None:
            return data
        out = []
        while data:
            out.append(self._d.decompress(data))
            data = b""
            if self.comp in ("gz", "bz2", "xz") and getattr(self._d, "eof", False):
                rest = self._d.unused_data
                if rest:
                    self._d = self._new()
                    data = rest
        return b"".join(out)


def decompressed_chunks(chunks: Iterator[bytes], comp: str) -> Iterator[bytes]:
    d = _Decompressor(comp)
    for c in chunks:
        out = d.feed(c)
        if out:
            yield out


# -- positions ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Position:
    """Where reading a file stopped: row group + row (Parquet), or rows read (+ byte offset if seekable)."""

    file_index: int = 0
    row_group: int = 0
    row: int = 0
    byte_offset: int = 0

    def to_json(self) -> dict[str, int]:
        return {"file": self.file_index, "rg": self.row_group, "row": self.row, "byte": self.byte_offset}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Position:
        return cls(int(d.get("file", 0)), int(d.get("rg", 0)), int(d.get("row", 0)), int(d.get("byte", 0)))


# -- parquet -----------------------------------------------------------------------------------------------------

class _SparseFile(io.RawIOBase):
    """A read-only file of `size` bytes of which only some byte ranges are held (footer + one row group)."""

    def __init__(self, size: int, segments: list[tuple[int, bytes]]) -> None:
        self._size = size
        self._segments = sorted(segments)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self._size - self._pos
        for start, data in self._segments:
            if start <= self._pos < start + len(data):
                off = self._pos - start
                out = data[off: off + n]
                self._pos += len(out)
                return bytes(out)
        raise OSError(f"byte {self._pos} was not fetched")

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


@dataclass
class ParquetMeta:
    file: SourceFile
    metadata: pq.FileMetaData
    footer: bytes
    footer_start: int
    # The bytes fetched with the footer (the whole file when it is small): row groups inside are not re-fetched.
    tail: bytes = b""
    tail_start: int = 0
    _roots: list[str] | None = field(default=None, init=False, repr=False)
    _keep: dict[tuple[str, ...], list[bool]] = field(default_factory=dict, init=False, repr=False)

    @property
    def num_rows(self) -> int:
        return int(self.metadata.num_rows)

    @property
    def schema(self) -> pa.Schema:
        return self.metadata.schema.to_arrow_schema()

    def leaf_roots(self) -> list[str]:
        """The top-level column each leaf column chunk belongs to, in file order.

        Counted from the schema, not split out of the dotted leaf path: a flat column named `score.value` has
        the leaf path `score.value` too.
        """
        if self._roots is None:
            roots = [f.name for f in self.schema for _ in range(_leaf_count(f.type))]
            if len(roots) != self.metadata.num_columns:  # a schema shape not counted right: fall back to paths
                roots = [self.metadata.schema.column(c).path.split(".", 1)[0]
                         for c in range(self.metadata.num_columns)]
            self._roots = roots
        return self._roots

    def _wanted_leaves(self, columns: list[str]) -> list[bool]:
        """Leaves of `columns`: those under each top-level column, plus any pyarrow's by-name selection also
        reads (a dotted leaf path equal to or under the name), so decoding never needs a byte not fetched."""
        key = tuple(columns)
        if key not in self._keep:
            wanted = set(columns)
            roots = self.leaf_roots()
            keep = []
            for c in range(self.metadata.num_columns):
                path = self.metadata.schema.column(c).path
                keep.append(roots[c] in wanted or any(path == w or path.startswith(w + ".") for w in wanted))
            self._keep[key] = keep
        return self._keep[key]

    def _leaf_ranges(self, i: int, columns: list[str] | None) -> list[tuple[int, int]]:
        """Byte ranges of the row group's column chunks (only those of `columns` when given), merged."""
        rg = self.metadata.row_group(i)
        keep = self._wanted_leaves(columns) if columns is not None else None
        ranges = []
        for c in range(rg.num_columns):
            col = rg.column(c)
            if keep is not None and not keep[c]:
                continue
            first = col.data_page_offset
            if col.has_dictionary_page and col.dictionary_page_offset is not None and col.dictionary_page_offset > 0:
                first = min(first, col.dictionary_page_offset)
            ranges.append((int(first), int(min(first + col.total_compressed_size, self.footer_start))))
        ranges.sort()
        merged: list[tuple[int, int]] = []
        for a, b in ranges:
            if merged and a - merged[-1][1] <= MERGE_GAP:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        return merged

    def projected_bytes(self, columns: list[str] | None) -> int:
        """Bytes an import of `columns` downloads from this file (its column chunks, merged as they are fetched)."""
        return sum(b - a for i in range(self.metadata.num_row_groups) for a, b in self._leaf_ranges(i, columns))

    def fetch_row_group(self, i: int, columns: list[str] | None = None) -> list[tuple[int, bytes]]:
        """The row group's bytes (only the column chunks of `columns` when given), one ranged GET per range."""
        out = []
        for start, end in self._leaf_ranges(i, columns):
            if self.tail and start >= self.tail_start:
                out.append((start, self.tail[start - self.tail_start: end - self.tail_start]))
            else:
                out.append((start, self.file.read_range(start, end - start)))
        return out

    def decode_row_group(self, i: int, spans: list[tuple[int, bytes]], columns: list[str] | None = None
                         ) -> pa.Table:
        raw = _SparseFile(self.file.size, [*spans, (self.footer_start, self.footer)])
        try:
            pf = pq.ParquetFile(raw, metadata=self.metadata)
            # One thread: row groups are already decoded while others download and convert.
            return pf.read_row_group(i, columns=columns, use_threads=False)
        except FerryError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _bad_file(self.file.path, exc) from None


def _leaf_count(t: pa.DataType) -> int:
    """Parquet leaf columns an Arrow type is stored in."""
    if pa.types.is_dictionary(t):
        return 1
    if isinstance(t, pa.ExtensionType):
        return _leaf_count(t.storage_type)
    if pa.types.is_struct(t):
        return sum(_leaf_count(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_map(t):
        return _leaf_count(t.key_type) + _leaf_count(t.item_type)
    if (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
            or pa.types.is_list_view(t) or pa.types.is_large_list_view(t)):
        return _leaf_count(t.value_type)
    return 1


def read_parquet_meta(f: SourceFile) -> ParquetMeta:
    if f.size < 12:
        raise FailedPrecondition(f"data file {f.path} is too small to be Parquet")
    guess = min(f.size, FOOTER_GUESS)
    tail = f.read_range(f.size - guess, guess)
    if tail[-4:] != b"PAR1":
        raise FailedPrecondition(f"data file {f.path} is not a Parquet file (bad magic)")
    meta_len = int.from_bytes(tail[-8:-4], "little")
    need = meta_len + 8
    if need > len(tail):
        if need > f.size:
            raise FailedPrecondition(f"data file {f.path} has a corrupt Parquet footer")
        tail = f.read_range(f.size - need, need - len(tail)) + tail
    footer = tail[-need:]
    try:
        metadata = pq.read_metadata(pa.BufferReader(footer))
    except Exception as exc:  # noqa: BLE001
        raise _bad_file(f.path, exc) from None
    return ParquetMeta(f, metadata, footer, f.size - need, tail, f.size - len(tail))


# -- text formats ------------------------------------------------------------------------------------------------

def _table_from_rows(rows: list[Any], schema: pa.Schema | None) -> pa.Table:
    rows = [r if isinstance(r, dict) else {"value": r} for r in rows]
    if schema is not None:
        try:
            return pa.Table.from_pylist(rows, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            pass
    return pa.Table.from_pylist(rows)


def parse_jsonl_block(block: bytes, schema: pa.Schema | None, path: str) -> pa.Table:
    """Complete JSON lines -> table; Arrow's parser first, json.loads when types do not fit."""
    if not block.strip():
        return pa.table({}) if schema is None else schema.empty_table()
    try:
        opts = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore") if schema is not None \
            else pajson.ParseOptions(newlines_in_values=False)
        return pajson.read_json(io.BytesIO(block), read_options=pajson.ReadOptions(block_size=max(len(block), 1 << 20)),
                                parse_options=opts)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        rows = []
        for n, line in enumerate(block.split(b"\n")):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise FailedPrecondition(f"data file {path}: line {n + 1} of a block is not JSON: {exc}") from None
        return _table_from_rows(rows, schema)


def _csv_reader(stream: io.RawIOBase, fmt: str) -> pacsv.CSVStreamingReader:
    return pacsv.open_csv(
        io.BufferedReader(stream, buffer_size=TEXT_BLOCK),
        read_options=pacsv.ReadOptions(block_size=TEXT_BLOCK),
        parse_options=pacsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True),
    )


class _IterStream(io.RawIOBase):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._it = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


# -- one interface over every format -----------------------------------------------------------------------------

Batch = tuple[pa.Table, Position]


def _slices(table: pa.Table, rows: int, skip: int = 0) -> Iterator[tuple[int, pa.Table]]:
    """Batches of `rows` rows without the first `skip` (already imported), each with the row after it."""
    for off in range(0, table.num_rows, rows):
        end = min(off + rows, table.num_rows)
        if end <= skip:
            continue
        yield end, table.slice(max(off, skip), end - max(off, skip))


def text_start_byte(f: SourceFile, file_index: int, start: Position) -> int:
    """Where reading a text file resumes: the recorded byte offset (uncompressed JSONL only), else 0."""
    fmt, comp = data_format(f.path)
    return start.byte_offset if (start.file_index == file_index and fmt == "jsonl" and not comp) else 0


class Prefetch:
    """Reads an iterator of byte chunks in a pool thread, at most `depth` chunks ahead (bounded memory)."""

    _END = object()

    def __init__(self, chunks: Iterator[bytes], pool: ThreadPoolExecutor, depth: int = 64) -> None:
        self._q: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._chunks = chunks
        self._future = pool.submit(self._run)

    def _run(self) -> None:
        try:
            for chunk in self._chunks:
                if not self._put(chunk):
                    return
            self._put(self._END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(exc)
        finally:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self._q.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()


def iter_text_file(f: SourceFile, file_index: int, start: Position, batch_rows: int = BATCH_ROWS,
                   schema: pa.Schema | None = None, raw: Iterable[bytes] | None = None) -> Iterator[Batch]:
    """Batches of a JSON/JSONL/CSV file, resuming at `start` (byte offset if uncompressed JSONL, else by rows).

    `raw` may supply the file's bytes from text_start_byte() on (e.g. a Prefetch already under way)."""
    fmt, comp = data_format(f.path)
    skip_rows = start.row if start.file_index == file_index else 0
    byte_start = text_start_byte(f, file_index, start)
    if byte_start:
        skip_rows = 0
    row = start.row if start.file_index == file_index else 0
    chunks = decompressed_chunks(iter(raw) if raw is not None else f.iter_range(byte_start), comp)
    try:
        if fmt == "jsonl":
            yield from _iter_jsonl(chunks, f.path, file_index, row, byte_start, skip_rows, batch_rows, comp, schema)
        elif fmt == "json":
            yield from _iter_json_document(chunks, f.path, file_index, row, skip_rows, batch_rows, schema)
        else:
            reader = _csv_reader(_IterStream(chunks), fmt)
            for rb in reader:
                table = pa.Table.from_batches([rb])
                yield from _emit(table, file_index, row, 0, 0, skip_rows, batch_rows, "csv")
                skip_rows = max(0, skip_rows - table.num_rows)
                row += table.num_rows
    except FerryError:
        raise
    except (pa.ArrowInvalid, ValueError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise _bad_file(f.path, exc) from None


def _iter_jsonl(chunks: Iterable[bytes], path: str, file_index: int, row: int, pos_bytes: int, skip_rows: int,
                batch_rows: int, comp: str, schema: pa.Schema | None) -> Iterator[Batch]:
    """JSON lines in blocks of whole lines; positions carry byte offsets when `comp` is "" (resumable by seek)."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        if len(pending) < TEXT_BLOCK:
            continue
        cut = pending.rfind(b"\n")
        if cut < 0:
            continue
        block, pending = pending[: cut + 1], pending[cut + 1:]
        table = parse_jsonl_block(block, schema, path)
        schema = schema or table.schema
        consumed = len(block)
        yield from _emit(table, file_index, row, pos_bytes, consumed, skip_rows, batch_rows, comp)
        skip_rows = max(0, skip_rows - table.num_rows)
        row += table.num_rows
        pos_bytes += consumed
    if pending.strip():
        table = parse_jsonl_block(pending, schema, path)
        yield from _emit(table, file_index, row, pos_bytes, len(pending), skip_rows, batch_rows, comp)


def _iter_json_document(chunks: Iterable[bytes], path: str, file_index: int, row: int, skip_rows: int,
                        batch_rows: int, schema: pa.Schema | None) -> Iterator[Batch]:
    """A .json file's records, streamed (jsondoc); resumable by row count only."""
    doc = JsonDocument(path)
    it = iter(chunks)
    rows: list[Any] = []

    def flush(final: bool) -> Iterator[Batch]:
        nonlocal rows, row, skip_rows, schema
        while len(rows) >= batch_rows or (final and rows):
            take, rows = rows[:batch_rows], rows[batch_rows:]
            row += len(take)
            if skip_rows >= len(take):
                skip_rows -= len(take)
                continue
            table = _table_from_rows(take[skip_rows:], schema)
            skip_rows = 0
            schema = schema or table.schema
            yield table, Position(file_index, 0, row, 0)

    for chunk in it:
        rows += doc.feed(chunk)
        if doc.mode == "jsonl":
            # JSON lines under a .json name: hand every byte seen so far, then the rest, to the lines reader.
            yield from _iter_jsonl(itertools.chain([doc.pending()], it), path, file_index, row, 0, skip_rows,
                                   batch_rows, "json", schema)
            return
        yield from flush(False)
    rows += doc.feed(b"", final=True)
    if doc.mode == "jsonl":
        yield from _iter_jsonl(iter([doc.pending()]), path, file_index, row, 0, skip_rows, batch_rows, "json", schema)
        return
    yield from flush(True)


def _emit(table: pa.Table, file_index: int, row: int, pos_bytes: int, consumed: int, skip_rows: int,
          batch_rows: int, comp: str) -> Iterator[Batch]:
    """Slices of a parsed block; only the block's last slice may carry the byte offset after it."""
    n = table.num_rows
    for end, part in _slices(table, batch_rows, skip_rows):
        last = end == n
        byte = pos_bytes + consumed if (last and not comp) else 0
        yield part, Position(file_index, 0, row + end, byte)


def iter_parquet_files(metas: Callable[[int], ParquetMeta], n_files: int, start: Position, pool: ThreadPoolExecutor,
                       batch_rows: int = BATCH_ROWS, prefetch: int = PREFETCH_ROW_GROUPS,
                       columns: list[str] | None = None) -> Iterator[Batch]:
    """Row groups of several Parquet files in order, the next `prefetch` fetched while the current one converts."""
    def units() -> Iterator[tuple[int, int, ParquetMeta]]:
        for fi in range(start.file_index, n_files):
            meta = metas(fi)
            first = start.row_group if fi == start.file_index else 0
            for rg in range(first, meta.metadata.num_row_groups):
                yield fi, rg, meta

    window: deque[tuple[int, int, ParquetMeta, Future[list[tuple[int, bytes]]]]] = deque()
    it = units()
    try:
        while True:
            while len(window) < prefetch:
                nxt = next(it, None)
                if nxt is None:
                    break
                fi, rg, meta = nxt
                window.append((fi, rg, meta, pool.submit(meta.fetch_row_group, rg, columns)))
            if not window:
                return
            fi, rg, meta, fut = window.popleft()
            table = meta.decode_row_group(rg, fut.result(), columns)
            skip = start.row if (fi == start.file_index and rg == start.row_group) else 0
            n = table.num_rows
            for end, part in _slices(table, batch_rows, skip):
                pos = Position(fi, rg + 1, 0) if end == n else Position(fi, rg, end)
                yield part, pos
            del table
    finally:
        for *_, fut in window:
            fut.cancel()


# -- previews and schemas ----------------------------------------------------------------------------------------

def read_prefix_rows(f: SourceFile, n: int, first: int = 64 * 1024, limit: int = 64 * 1024 * 1024) -> pa.Table:
    """At least `n` rows (or the whole file) of a text file, fetching growing prefixes only."""
    fmt, comp = data_format(f.path)
    have = 0
    raw = b""
    want = first
    while True:
        end = min(f.size, want)
        if end > have:
            raw += f.read_range(have, end - have)
            have = end
        whole = have >= f.size
        try:
            data = b"".join(decompressed_chunks(iter([raw]), comp))
        except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
            raise _bad_file(f.path, exc) from None
        if fmt == "json":
            doc = JsonDocument(f.path)
            rows = doc.feed(data, final=whole)
            if doc.mode != "jsonl":
                if len(rows) >= n or whole:
                    return _table_from_rows(rows[:n], None)
            else:
                fmt = "jsonl"
        if fmt == "jsonl":
            cut = len(data) if whole else data.rfind(b"\n") + 1
            if cut > 0:
                table = parse_jsonl_block(data[:cut], None, f.path)
                if table.num_rows >= n or whole:
                    return table.slice(0, n)
        elif fmt != "json":
            cut = len(data) if whole else data.rfind(b"\n") + 1
            if cut > 0:
                try:
                    table = pacsv.read_csv(io.BytesIO(data[:cut]), parse_options=pacsv.ParseOptions(
                        delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True))
                except pa.ArrowInvalid as exc:
                    if whole:
                        raise _bad_file(f.path, exc) from None
                    table = None
                if table is not None and (table.num_rows > n or whole):
                    return table.slice(0, n)
        if whole or have >= limit:
            raise FailedPrecondition(f"data file {f.path}: could not read {n} rows from its first {have} bytes")
        want *= 4


def read_head(files: list[SourceFile], n: int, pool: ThreadPoolExecutor) -> tuple[pa.Table, pa.Schema]:
    """The first `n` rows of a split (possibly across files) and the split's schema."""
    tables: list[pa.Table] = []
    schema: pa.Schema | None = None
    got = 0
    for i, f in enumerate(files):
        fmt, _ = data_format(f.path)
        if fmt == "parquet":
            meta = read_parquet_meta(f)
            schema = schema or meta.schema
            for rg in range(meta.metadata.num_row_groups):
                if got >= n:
                    break
                t = meta.decode_row_group(rg, meta.fetch_row_group(rg))
                tables.append(t.slice(0, n - got))
                got += min(t.num_rows, n - got)
        else:
            t = read_prefix_rows(f, max(n - got, 1))
            schema = schema or t.schema
            tables.append(t.slice(0, n - got))
            got += min(t.num_rows, n - got)
        if got >= n or (i == 0 and n == 0):
            break
    assert schema is not None
    if not tables:
        return schema.empty_table(), schema
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        table = tables[0]
    return table, schema


def parquet_row_counts(files: list[SourceFile], pool: ThreadPoolExecutor) -> tuple[int, list[ParquetMeta]]:
    metas = list(pool.map(read_parquet_meta, files))
    return sum(m.num_rows for m in metas), metas
