"""ferry.media: the Content-Type headers Ferry sets on what it writes and serves."""

from __future__ import annotations

import pytest

from ferry.media import content_type


@pytest.mark.parametrize(("name", "ctype"), [
    ("exports/abc/out.jsonl", "application/jsonl"),
    ("out.json", "application/json"),
    ("out_train.csv", "text/csv; charset=utf-8"),
    ("out.validation.txt", "text/plain; charset=utf-8"),
    ("out/README.md", "text/markdown; charset=utf-8"),
    ("out/push_to_hub.py", "text/x-python; charset=utf-8"),
    ("out.zip", "application/zip"),
    ("datasets/7/train.jsonl", "application/jsonl"),
    # Unknown or compressed: bytes, as before (a gzip of JSON lines is not JSON lines).
    ("out.jsonl.gz", "application/octet-stream"),
    ("out.parquet", "application/octet-stream"),
    ("no_extension", "application/octet-stream"),
])
def test_content_types(name: str, ctype: str) -> None:
    assert content_type(name) == ctype
