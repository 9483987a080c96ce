"""Sparse line-offset index for JSONL objects, so a page at any offset is two ranged GETs.

Layout of `{split}.idx` (little-endian): magic b"FRYIDX01", then uint64 stride,
line count and byte size, then one uint64 byte offset per `stride` lines (the
start of lines 0, stride, 2*stride, ...). A page of `limit` rows at `offset`
reads 16 bytes of index and at most `limit + stride` lines of JSONL, whatever
the offset.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable
from dataclasses import dataclass

MAGIC = b"FRYIDX01"
HEADER = struct.Struct("<8sQQQ")
DEFAULT_STRIDE = 256


class LineIndexBuilder:
    """Feed it the JSONL bytes in any chunking; it records every stride-th line start."""

    def __init__(self, stride: int = DEFAULT_STRIDE) -> None:
        self.stride = stride
        self.offsets = array("Q")
        self.lines = 0
        self.size = 0
        self._at_line_start = True

    def feed(self, chunk: bytes) -> None:
        pos = 0
        n = len(chunk)
        while pos < n:
            if self._at_line_start:
                if self.lines % self.stride == 0:
                    self.offsets.append(self.size + pos)
                self._at_line_start = False
            # Count whole lines until the next one that starts a stride block.
            to_boundary = self.stride - (self.lines % self.stride)
            nl = pos - 1
            for _ in range(to_boundary):
                found = chunk.find(b"\n", nl + 1)
                if found < 0:
                    break
                nl = found
                self.lines += 1
                if self.lines % self.stride == 0:
                    break
            if nl < pos:
                break  # the rest of the chunk is the middle of a line
            pos = nl + 1
            self._at_line_start = True
        self.size += n

    def finish(self) -> bytes:
        if not self._at_line_start:
            self.lines += 1  # last line without a trailing newline
            self._at_line_start = True
        return HEADER.pack(MAGIC, self.stride, self.lines, self.size) + self.offsets.tobytes()


@dataclass(frozen=True)
class IndexHeader:
    stride: int
    lines: int
    size: int


def parse_header(data: bytes) -> IndexHeader:
    magic, stride, lines, size = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ValueError("not a Ferry JSONL index")
    return IndexHeader(stride, lines, size)


def read_page(
    read_range: Callable[[str, int, int], bytes], jsonl_key: str, index_key: str, offset: int, limit: int
) -> tuple[list[bytes], int]:
    """Lines [offset, offset+limit) of a JSONL object, and its total line count.

    `read_range(key, start, length)` does one ranged GET.
    """
    header = parse_header(read_range(index_key, 0, HEADER.size))
    if offset >= header.lines or limit <= 0:
        return [], header.lines
    first_block = offset // header.stride
    last_line = min(offset + limit, header.lines)
    end_block = -(-last_line // header.stride)  # block after the last needed line
    n_entries = header.size and -(-header.lines // header.stride)
    want = min(end_block, n_entries) - first_block + 1
    want = min(want, n_entries - first_block)
    raw = read_range(index_key, HEADER.size + 8 * first_block, 8 * want)
    entries = array("Q")
    entries.frombytes(raw)
    start = entries[0]
    end = entries[end_block - first_block] if end_block < n_entries else header.size
    blob = read_range(jsonl_key, start, end - start)
    lines = blob.split(b"\n")
    skip = offset - first_block * header.stride
    return [line for line in lines[skip: skip + (last_line - offset)]], header.lines
