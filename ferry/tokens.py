"""FERRY_TOKEN_KEY: the key that seals per-request HF tokens into import jobs (services/importer/tokens.py).

Made here (`make run` makes one per data dir, tests make their own) and read here (the importer's config checks
it at start-up), so both sides agree on one format: 32 random bytes in base64.
"""

from __future__ import annotations

import base64
import binascii
import os

from ferry.config import ConfigError

KEY_BYTES = 32


def new_key() -> str:
    """A fresh key: 32 random bytes in base64 (44 characters)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def parse_key(text: str) -> bytes:
    """FERRY_TOKEN_KEY: 32 random bytes in base64 (`python -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())"`)."""
    try:
        key = base64.b64decode(text.strip() + "=" * (-len(text.strip()) % 4), altchars=b"-_", validate=False)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise ConfigError("FERRY_TOKEN_KEY must be 32 random bytes in base64 (44 characters)")
    return key
