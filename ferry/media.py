"""Content types of the files Ferry writes and serves, by file name: one table for the exporter, the importer and
the gateway.

Python's mimetypes knows most of them (.json, .csv, .txt, .py, .zip); Ferry registers JSON lines and Markdown here,
once. The table is a private MimeTypes holding Python's built-in types only, not the host's /etc/mime.types, so a
name gets the same header on every machine. Text types carry their charset: Ferry writes UTF-8.
"""

from __future__ import annotations

import mimetypes
import posixpath

UNKNOWN = "application/octet-stream"

_TYPES = mimetypes.MimeTypes()  # Python's own table; the module-level functions would also read the host's files
_TYPES.add_type("application/jsonl", ".jsonl")
_TYPES.add_type("text/markdown", ".md")


def content_type(name: str) -> str:
    """The Content-Type of a file called `name` (a key or a path: its extension decides); UNKNOWN if unknown."""
    ctype = _TYPES.types_map[True].get(posixpath.splitext(name)[1].lower())
    if ctype is None:
        return UNKNOWN
    return f"{ctype}; charset=utf-8" if ctype.startswith("text/") else ctype
