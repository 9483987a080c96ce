"""Records of a JSON document (not JSON lines), parsed as its bytes arrive.

A `.json` data file on the Hub is one of: an array of records; an object holding one list of records
(`{"version": ..., "data": [...]}`); a columnar object (`{"col": [...], ...}`); one record; or, quite often,
JSON lines under a `.json` name. Reading such a file whole would make memory grow with the dataset, so arrays of
records stream element by element (json's C scanner per element) and only one value at a time is ever held.

A document that starts with `{` is ambiguous until its first value ends: if another value follows it is JSON
lines (the caller switches to the JSON lines reader), if the file ends there it is one small document. Only when
that first value outgrows PROBE_BYTES is the object walked key by key so a huge list of records inside it streams.
No single value (a record, or a columnar list) may exceed MAX_VALUE_BYTES: such a file gets a clear error instead
of unbounded memory.

Why not ijson (judged against ijson 3.6, yajl2_c backend; `python -m bench jsondoc` measures both):
- speed: ijson.items_coro streams an array of records at ~89k rows per CPU second where this parser (json's C
  scanner once per element) does ~125k; in the importer's real path (rows into Arrow tables) ~79k against ~103k.
  That is ijson at its best, told the prefix up front: the shape rules here (a probe for JSON lines, a list of
  records under a key not known in advance, refusing two such lists, columnar objects) would take its parse events
  through Python, ~2 million of them per 50 MB, slower still.
- behaviour: yajl refuses NaN, Infinity and an overflowing exponent (1e400) and turns a lone surrogate escape
  ("\\ud800") into "?". Python's json.dump writes NaN, Infinity and such escapes, and json.loads (hence this
  parser, and the JSON lines reader's fallback) reads all four; the tests pin it. A UTF-8 BOM would need
  stripping first.
- memory: ijson holds less while parsing (~16 MB traced heap against ~40 MB on a 50 MB array, fed 4 MiB at a
  time), but the same once the rows become Arrow tables (peak RSS ~220 MB either way on 200 MB documents).
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Any

import pyarrow as pa

from ferry.errors import FailedPrecondition

PROBE_BYTES = 8 * 1024 * 1024
MAX_VALUE_BYTES = 64 * 1024 * 1024
_WS = re.compile(r"[ \t\n\r]*")
_TOKEN = re.compile(r"[^ \t\n\r,\]}:]*")
_decode = json.JSONDecoder().raw_decode
_VALUE_START = frozenset('{["-0123456789tfnNI')  # NaN and Infinity: Python's json reads them


class _Need(Exception):
    """More input is needed before the value at the cursor can be parsed."""


class JsonDocument:
    """Push parser: feed() bytes, get back the records completed so far.

    `mode` becomes "jsonl" when the document turns out to be JSON lines; the caller then reads `pending()` (every
    byte fed so far, nothing consumed) followed by the rest of the file as JSON lines.
    """

    def __init__(self, path: str, probe_bytes: int = PROBE_BYTES, max_value_bytes: int = MAX_VALUE_BYTES) -> None:
        self.path = path
        self.mode = "start"  # start | probe | array | object | records | columnar | after | done | jsonl
        self._probe = probe_bytes
        self._max = max_value_bytes
        self._dec = codecs.getincrementaldecoder("utf-8-sig")()
        self._raw: list[bytes] = []  # everything fed while the mode is undecided (for the JSON lines hand-over)
        self._buf = ""
        self._i = 0
        self._records_key: str | None = None
        self._key: str | None = None
        self._expect = "first"  # within an array or object: first | value | sep | key | colon
        self._other: dict[str, Any] = {}  # an object's non-record values, for the small-document rules
        self._final = False

    def pending(self) -> bytes:
        return b"".join(self._raw)

    def feed(self, data: bytes, final: bool = False) -> list[Any]:
        if self.mode in ("start", "probe"):
            self._raw.append(data)
        try:
            self._buf = self._buf[self._i:] + self._dec.decode(data, final)
        except UnicodeDecodeError as exc:
            raise self._error(f"is not UTF-8 text ({exc.reason})") from None
        self._i = 0
        self._final = final
        out: list[Any] = []
        try:
            self._run(out)
        except _Need:
            if final:
                raise self._error("ends in the middle of a value") from None
            if len(self._buf) - self._i > self._max:
                raise self._error(f"holds a single value larger than {self._max // (1 << 20)} MiB (or is malformed); "
                                  "only arrays of records stream: convert it to JSON lines or Parquet") from None
        if self.mode not in ("start", "probe", "jsonl"):
            self._raw = []
        return out

    # -- the state machine -------------------------------------------------------------------------------------

    def _ws(self) -> str:
        """Skip whitespace; the next character, or raise _Need (or return "" at the end of the input)."""
        self._i = _WS.match(self._buf, self._i).end()  # type: ignore[union-attr]
        if self._i < len(self._buf):
            return self._buf[self._i]
        if self._final:
            return ""
        raise _Need

    def _value(self) -> Any:
        """One complete value at the cursor; numbers and literals only once a character follows them."""
        start = self._i
        if start >= len(self._buf):
            if self._final:
                raise self._error("ends where a value was expected")
            raise _Need
        if self._buf[start] not in _VALUE_START:
            raise self._error(f"is not valid JSON: unexpected {self._buf[start]!r} at character {start}")
        try:
            value, end = _decode(self._buf, start)
        except json.JSONDecodeError as exc:
            if self._final:
                raise self._error(f"is not valid JSON: {exc}") from None
            raise _Need from None
        if self._buf[start] not in "{[\"":
            # A number or literal is only whole once a delimiter follows it: "6." may become "6.5".
            token_end = _TOKEN.match(self._buf, start).end()  # type: ignore[union-attr]
            if token_end >= len(self._buf) and not self._final:
                raise _Need
            if end != token_end:
                raise self._error(f"is not valid JSON: bad value {self._buf[start:token_end][:40]!r} at character "
                                  f"{start}")
        self._i = end
        return value

    def _run(self, out: list[Any]) -> None:
        while True:
            mode = self.mode
            if mode == "start":
                c = self._ws()
                if c == "[":
                    self._i += 1
                    self.mode = "array"
                    self._expect = "first"
                elif c == "{":
                    self.mode = "probe"
                elif c == "":
                    self.mode = "done"
                else:
                    raise self._error("is JSON but not a list of records")
            elif mode == "probe":
                self._probe_first_value(out)
            elif mode in ("array", "records"):
                self._elements(out)
            elif mode == "object":
                self._members(out)
            elif mode == "after":
                if self._ws() != "":
                    raise self._error(f"has extra data after its top-level value (at character {self._i})")
                self.mode = "done"
            else:  # done, jsonl
                return

    def _probe_first_value(self, out: list[Any]) -> None:
        start = self._i
        try:
            doc = self._value()
            following = self._ws()
        except _Need:
            self._i = start
            if len(self._buf) - start <= self._probe:
                raise
            # A large object: walk it key by key instead.
            self._i = start + 1
            self.mode = "object"
            self._expect = "first"
            return
        if following != "":
            self.mode = "jsonl"  # another value follows: JSON lines under a .json name
            self._i = start
            return
        out.extend(small_document(doc, self.path))
        self.mode = "done"

    def _elements(self, out: list[Any]) -> None:
        """Elements of the top-level array, or of the list of records inside an object.

        Each step commits its cursor move before the next may raise _Need, so a resumed feed() picks up exactly
        where the previous one stopped."""
        while True:
            c = self._ws()
            if c == "]" and self._expect in ("sep", "first"):
                self._i += 1
                self.mode = "after" if self.mode == "array" else "object"
                self._expect = "sep"  # the records list was one member of the object
                return
            if c == "":
                raise self._error("ends inside an array")
            if self._expect == "sep":
                if c != ",":
                    raise self._error(f"expected ',' or ']' at character {self._i}, found {c!r}")
                self._i += 1
                self._expect = "value"
                continue
            value = self._value()
            self._expect = "sep"
            out.append(value if self.mode == "array" or isinstance(value, dict) else {"value": value})

    def _members(self, out: list[Any]) -> None:
        """Members of a large top-level object: metadata values are kept, the one list of records streams."""
        while True:
            c = self._ws()
            expect = self._expect
            if c == "}" and expect in ("sep", "first"):
                self._i += 1
                self.mode = "after"
                self._finish_object(out)
                return
            if c == "":
                raise self._error("ends inside an object")
            if expect == "sep":
                if c != ",":
                    raise self._error(f"expected ',' or '}}' at character {self._i}, found {c!r}")
                self._i += 1
                self._expect = "key"
            elif expect in ("first", "key"):
                if c != '"':
                    raise self._error(f"expected a key at character {self._i}, found {c!r}")
                self._key = self._value()
                self._expect = "colon"
            elif expect == "colon":
                if c != ":":
                    raise self._error(f"expected ':' after key {self._key!r}, found {c!r}")
                self._i += 1
                self._expect = "value"
            else:
                key = str(self._key)
                if c == "[":
                    # Records (objects) stream; a list of anything else is a column, read as one value.
                    j = _WS.match(self._buf, self._i + 1).end()  # type: ignore[union-attr]
                    if j >= len(self._buf) and not self._final:
                        raise _Need
                    if j < len(self._buf) and self._buf[j] == "{":
                        if self._records_key is not None:
                            raise self._error(f"holds more than one list of records ({self._records_key!r} and "
                                              f"{key!r}); export one of them as its own file")
                        self._records_key = key
                        self._i += 1
                        self._expect = "first"
                        self.mode = "records"
                        return
                self._other[key] = self._value()
                self._expect = "sep"

    def _finish_object(self, out: list[Any]) -> None:
        if self._records_key is not None:
            return  # the records were already emitted; other members are metadata
        out.extend(small_document(self._other, self.path))

    def _error(self, what: str) -> FailedPrecondition:
        return FailedPrecondition(f"data file {self.path} {what}")


def small_document(doc: Any, path: str) -> list[Any]:
    """The records of a document that is held whole (it is small, or it is made of non-record values)."""
    if isinstance(doc, dict):
        lists = [v for v in doc.values() if isinstance(v, list)]
        if len(lists) == 1:
            return lists[0]
        if doc and all(isinstance(v, list) for v in doc.values()):
            try:
                return pa.table(doc).to_pylist()  # columnar: {"col": [...], ...}
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise FailedPrecondition(f"data file {path} looks columnar but its columns do not line up: "
                                         f"{exc}") from None
        return [doc]
    if isinstance(doc, list):
        return doc
    raise FailedPrecondition(f"data file {path} is JSON but not a list of records")
