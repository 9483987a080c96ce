"""API-key check for /api/*: X-API-Key or Authorization: Bearer, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Header, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

# Declared so /openapi.json shows the two ways to send a key and /docs can authorize; the check reads the
# headers itself (auto_error=False: a missing key is this module's 401, and only when keys are configured).
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKey",
                              description="One of FERRY_API_KEYS")
BEARER = HTTPBearer(auto_error=False, scheme_name="Bearer", description="One of FERRY_API_KEYS, as a bearer token")


IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", max_length=255, pattern=r"^[\x21-\x7E]+$",
    description="Makes a retried POST safe: the same key (per API key) returns the job the first request started, "
                "and the key with a different request is 409")]


def scoped_idempotency_key(request: Request, key: str | None) -> str:
    """The client's Idempotency-Key in its caller's scope, so two API keys never share one job."""
    if not key:
        return ""
    given = _presented_key(request) if request.app.state.config.api_keys else ""
    return f"{hashlib.sha256(given.encode()).hexdigest()[:16]}:{key}" if given else key


def _presented_key(request: Request) -> str:
    given = request.headers.get("x-api-key", "")
    if not given:
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
    return given


def check_api_key(
    request: Request,
    _key: Annotated[str | None, Security(API_KEY_HEADER)] = None,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
) -> None:
    keys = request.app.state.config.api_keys
    if not keys:
        return
    given = _presented_key(request)
    ok = False
    for key in keys:
        # Compare against every key so timing says nothing about which matched.
        ok |= hmac.compare_digest(given.encode(), str(key).encode())
    if not given or not ok:
        raise HTTPException(
            status_code=401,
            detail="missing or invalid API key (send X-API-Key or Authorization: Bearer)",
            headers={"WWW-Authenticate": "Bearer"},
        )
