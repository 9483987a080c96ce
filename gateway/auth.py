"""API-key check for /api/*: X-API-Key or Authorization: Bearer, compared in constant time."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

# Declared so /openapi.json shows the two ways to send a key and /docs can authorize; the check reads the
# headers itself (auto_error=False: a missing key is this module's 401, and only when keys are configured).
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKey",
                              description="One of FERRY_API_KEYS")
BEARER = HTTPBearer(auto_error=False, scheme_name="Bearer", description="One of FERRY_API_KEYS, as a bearer token")


def check_api_key(
    request: Request,
    _key: Annotated[str | None, Security(API_KEY_HEADER)] = None,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
) -> None:
    keys = request.app.state.config.api_keys
    if not keys:
        return
    given = request.headers.get("x-api-key", "")
    if not given:
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
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
