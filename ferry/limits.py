"""The input bounds shared by the gateway and the services, and how an error quotes a refused value.

The gateway checks them before any work (a 422 naming the field); the services check them again for gRPC
callers (INVALID_ARGUMENT naming the field). Bounds only one layer knows stay beside it (gateway/limits.py,
services/importer/bounds.py, services/catalog/limits.py, services/exporter/formats.py).
"""

from __future__ import annotations

MAX_NAME = 256  # dataset and template names, revisions
MAX_KEY = 100  # a mapping target or an additional_params name
MAX_SPEC = 1000  # a mapping source (column, spec or dot-path) or an additional_params value
MAX_ENTRIES = 64  # entries in field_mappings, additional_params, splits
MAX_TEXT = 64 * 1024  # free text such as an export's system_message
PREFIX = 40  # characters of a refused value quoted in an error message


def prefix(value: object) -> str:
    """At most PREFIX characters of `value`, "..." marking a cut."""
    text = str(value)
    return text[:PREFIX] + "..." if len(text) > PREFIX else text


def short(value: object) -> str:
    """`value` quoted for an error message: at most a short prefix of it."""
    return repr(prefix(value))
