"""Bounds on what the catalog accepts and stores, for every gRPC caller (the gateway bounds its own inputs too).

A value past a bound that a caller chose (a name, a mapping, a job's request) is refused with INVALID_ARGUMENT
naming the field; text a worker writes about its job (messages, errors, skip reasons) is clipped instead, so a
worker never loses its job over a long exception text. An error message quotes at most PREFIX characters of the
value it refuses.
"""

from __future__ import annotations

from collections.abc import Mapping

from ferry.errors import InvalidArgument
from ferry.limits import MAX_KEY, MAX_NAME, MAX_SPEC, PREFIX, prefix, short  # noqa: F401 - re-exported

MAX_SPLIT_NAME = 200  # split names (as the gateway's)
MAX_OBJECT_KEY = 1024  # object and index keys (S3's own limit, in bytes)
MAX_REPO_ID = 1024  # a template's repo: a Hub repo id or a local path
MAX_WORKER_ID = 256  # a worker's id (importer-<host>-<pid>-<random>)
MAX_MAPPINGS = 200  # entries of a field mapping
MAX_MAPPING_KEY, MAX_MAPPING_VALUE = MAX_KEY, MAX_SPEC
MAX_REQUEST_JSON_BYTES = 1024 * 1024  # a job's request_json, UTF-8
MAX_MESSAGE = 2000  # a job's message and error, and each skip reason (clipped)
MAX_SKIP_REASONS = 100  # skip reasons kept per job (the first ones)


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` cut to at most `limit` characters, "..." marking a cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_length(value: str, limit: int, field: str) -> None:
    if len(value) > limit:
        raise InvalidArgument(f"{field} must be at most {limit} characters, got {len(value)}: {short(value)}",
                              field=field)


def check_mappings(mappings: Mapping[str, str], field: str = "field_mappings") -> None:
    if len(mappings) > MAX_MAPPINGS:
        raise InvalidArgument(f"{field} must have at most {MAX_MAPPINGS} entries, got {len(mappings)}", field=field)
    for target, source in mappings.items():
        if len(target) > MAX_MAPPING_KEY:
            raise InvalidArgument(f"{field}: target field {short(target)} is longer than {MAX_MAPPING_KEY} "
                                  f"characters ({len(target)})", field=field)
        if len(source) > MAX_MAPPING_VALUE:
            raise InvalidArgument(f"{field}: the source of {short(target)} is longer than {MAX_MAPPING_VALUE} "
                                  f"characters ({len(source)}): {short(source)}", field=field)


def check_request_json(request_json: str, field: str = "request_json") -> None:
    # Each character is at most 4 bytes in UTF-8: only a long text needs encoding to be measured.
    if len(request_json) * 4 > MAX_REQUEST_JSON_BYTES:
        size = len(request_json.encode("utf-8", errors="surrogatepass"))
        if size > MAX_REQUEST_JSON_BYTES:
            raise InvalidArgument(f"{field} must be at most {MAX_REQUEST_JSON_BYTES} bytes (UTF-8), got {size}",
                                  field=field)
