"""Idempotency keys for starting jobs: a client that retries a POST after a timeout gets the job it started.

A key names one job id (a UUID derived from the job kind and the key), so the catalog's unique job id is
what makes two concurrent requests with one key start one job. The request's fingerprint is stored in the
job's request_json, so the key reused for a different request is refused instead of answering a wrong job.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Any

from ferry.errors import AlreadyExists, InvalidArgument
from ferry.jobs import Job, JobKind

MAX_KEY = 300  # the gateway scopes a client's key (up to 255 characters) with a short caller prefix
_KEY = re.compile(r"[\x21-\x7e]+")
_NAMESPACE = uuid.UUID("5f0c3b1e-2a7d-4c36-9d0e-6f1d8f0a7c42")
FIELD = "idempotency_key"


def job_id(kind: JobKind, key: str) -> str:
    """The job id `key` stands for (one per kind)."""
    if len(key) > MAX_KEY or not _KEY.fullmatch(key):
        raise InvalidArgument(f"idempotency_key must be 1-{MAX_KEY} visible ASCII characters", field=FIELD)
    return str(uuid.uuid5(_NAMESPACE, f"{kind.value}:{key}"))


def fingerprint(request: dict[str, Any]) -> str:
    """What the caller asked, as a digest: the same fields give the same fingerprint."""
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()


def stamp(request_json: str, print_: str) -> str:
    """request_json with the fingerprint the job was started for."""
    return json.dumps({**json.loads(request_json), "idempotency_fingerprint": print_}, sort_keys=True)


def same_request(job: Job, print_: str) -> Job:
    """`job` when it was started for this request; ALREADY_EXISTS naming the key otherwise."""
    try:
        stored = json.loads(job.request_json).get("idempotency_fingerprint") if job.request_json else None
    except ValueError:
        stored = None
    if stored != print_:
        raise AlreadyExists(f"this idempotency key already started {job.kind.value.lower()} {job.id} for a "
                            "different request; use a new key for a new request", field=FIELD)
    return job
