"""Per-request HuggingFace tokens, sealed so that another importer replica can resume the job.

A token sent with an import request (X-HF-Token) is needed again if the job is resumed elsewhere (the importer
that took it restarted or died). The job record is the only place every replica sees, and it must never hold a
secret in clear, so the token goes there encrypted (AES-256-GCM) with FERRY_TOKEN_KEY, a key only the importers
have, and bound to the job's id (the associated data), so a sealed token copied into another job opens nowhere.
The key itself is made and parsed by ferry.tokens (new_key, parse_key), which `make run` uses too.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "v1."


class TokenSealer:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, token: str, job_id: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, token.encode(), job_id.encode())
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, sealed: str, job_id: str) -> str | None:
        """The token, or None if it was sealed with another key, for another job, or altered."""
        if not sealed.startswith(PREFIX):
            return None
        try:
            raw = base64.urlsafe_b64decode(sealed[len(PREFIX):])
            return self._aead.decrypt(raw[:12], raw[12:], job_id.encode()).decode()
        except (InvalidTag, ValueError, binascii.Error, UnicodeDecodeError):
            return None
