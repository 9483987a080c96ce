"""Talking to the Hub: metadata through `huggingface_hub.HfApi`, file bytes by ranged HTTP.

File bytes are read with our own ranged GETs (not hf_hub_download) so that a
preview fetches only a Parquet footer and a row group, an import counts every
byte it downloads, and a dropped connection resumes from the byte reached.
Nothing here calls the dataset-viewer service or the refs/convert/parquet branch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from huggingface_hub import HfApi
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from ferry.errors import Cancelled, FerryError, InvalidArgument, NotFound, PermissionDenied, Unavailable

log = logging.getLogger("ferry.importer.hub")

READ_CHUNK = 1024 * 1024
MAX_ATTEMPTS = 5
SORTS = {"downloads": "downloads", "likes": "likes", "trending_score": "trending_score", "trending": "trending_score",
         "created_at": "created_at", "created": "created_at", "last_modified": "last_modified",
         "modified": "last_modified"}


class Meter:
    """Thread-safe byte counter shared by the downloads of one job or request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bytes = 0
        # Set to make every download using this meter stop at its next chunk (cancel, shutdown).
        self.abort = threading.Event()

    def add(self, n: int) -> None:
        with self._lock:
            self.bytes += n


def token_needed(repo_id: str) -> PermissionDenied:
    return PermissionDenied(
        f"{repo_id} is a gated dataset: a HuggingFace token with access is needed "
        "(send it in the X-HF-Token header or set HF_TOKEN on the importer)"
    )


def hub_error(exc: Exception, repo_id: str, what: str, token: str | None) -> FerryError:
    """The domain error for a failed Hub call, saying what failed (never a fallback)."""
    if isinstance(exc, FerryError):
        return exc
    if isinstance(exc, GatedRepoError):
        if not token:
            return token_needed(repo_id)
        return PermissionDenied(f"the HuggingFace token has no access to the gated dataset {repo_id}; "
                                f"request access on its Hub page")
    if isinstance(exc, RevisionNotFoundError):
        return NotFound(f"revision not found in {repo_id}", field="revision")
    if isinstance(exc, EntryNotFoundError):
        return NotFound(f"file not found in {repo_id} ({what})")
    if isinstance(exc, RepositoryNotFoundError):
        return NotFound(f"dataset {repo_id!r} was not found on the Hub", field="dataset_name")
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        if status == 401:
            return PermissionDenied(f"the Hub refused the HuggingFace token ({what} {repo_id})")
        if status == 403:
            return PermissionDenied(f"the Hub denied access to {repo_id} ({what})")
        if status == 404:
            return NotFound(f"dataset {repo_id!r} was not found on the Hub", field="dataset_name")
        return Unavailable(f"the HuggingFace Hub failed ({what} {repo_id}): HTTP {status} {_hub_message(exc)}")
    if isinstance(exc, httpx.HTTPError | OSError):
        return Unavailable(f"the HuggingFace Hub is unreachable ({what} {repo_id}): {type(exc).__name__}")
    return Unavailable(f"the HuggingFace Hub failed ({what} {repo_id}): {type(exc).__name__}")


def _hub_message(exc: HfHubHTTPError) -> str:
    resp = exc.response
    if resp is None:
        return ""
    msg = resp.headers.get("X-Error-Message") or ""
    return msg[:200]


@dataclass(frozen=True)
class RepoEntry:
    path: str
    size: int


@dataclass
class RepoMeta:
    repo_id: str
    sha: str
    gated: bool
    private: bool
    card_data: dict[str, Any]
    description: str
    files: list[RepoEntry]


class HubClient:
    """One per importer: an HfApi for metadata and a pooled HTTP client for file bytes."""

    def __init__(self, endpoint: str, default_token: str = "", timeout: float = 30.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._default_token = default_token
        self.api = HfApi(endpoint=self.endpoint, token=False, library_name="ferry")
        self._http = httpx.Client(
            follow_redirects=True,
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )

    def close(self) -> None:
        self._http.close()

    def token(self, request_token: str | None) -> str | None:
        """The per-request token if given, else the importer's HF_TOKEN, else none."""
        return request_token or self._default_token or None

    # -- metadata -------------------------------------------------------------------------------

    def search(self, query: str, limit: int, sort: str = "", task_category: str = "", language: str = "",
               size_category: str = "", author: str = "", token: str | None = None) -> list[dict[str, Any]]:
        if sort and sort not in SORTS:
            raise InvalidArgument(f"sort must be one of {', '.join(sorted(set(SORTS.values())))}; got {sort!r}",
                                  field="sort")
        kwargs: dict[str, Any] = {}
        if task_category:
            kwargs["task_categories"] = task_category
        if language:
            kwargs["language"] = language
        if size_category:
            kwargs["size_categories"] = size_category
        if author:
            kwargs["author"] = author
        if sort:
            kwargs["sort"] = SORTS[sort]
        try:
            found = list(self.api.list_datasets(search=query or None, limit=limit, full=True,
                                                token=self.token(token) or False, **kwargs))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a domain error
            raise hub_error(exc, query or "*", "search", token) from None
        out = []
        for d in found:
            card_data = getattr(d, "card_data", None)
            card = card_data.to_dict() if card_data is not None else {}
            out.append({
                "name": d.id,
                "description": (d.description or card.get("pretty_name") or "")[:500],
                "downloads": int(d.downloads or 0),
                "likes": int(d.likes or 0),
                "tags": list(d.tags or []),
                "author": d.author or (d.id.split("/")[0] if "/" in d.id else ""),
                "last_modified": d.last_modified.isoformat() if d.last_modified else "",
                "gated": bool(d.gated),
                "private": bool(d.private),
            })
        return out

    def repo_meta(self, repo_id: str, revision: str | None, token: str | None) -> RepoMeta:
        """Info and full file listing, both at one sha (the revision is pinned here)."""
        tok = self.token(token)
        try:
            info = self.api.dataset_info(repo_id, revision=revision or None, token=tok or False)
        except Exception as exc:  # noqa: BLE001
            raise hub_error(exc, repo_id, "dataset info", tok) from None
        sha = info.sha or ""
        if not sha:
            raise Unavailable(f"the Hub did not report a revision sha for {repo_id}")
        try:
            tree = self.api.list_repo_tree(repo_id, recursive=True, revision=sha, repo_type="dataset",
                                           token=tok or False)
            files = [RepoEntry(e.path, int(getattr(e, "size", 0) or 0)) for e in tree if hasattr(e, "blob_id")]
        except Exception as exc:  # noqa: BLE001
            if isinstance(exc, GatedRepoError | HfHubHTTPError) and info.gated and not tok:
                raise token_needed(repo_id) from None
            raise hub_error(exc, repo_id, "list files", tok) from None
        card = info.card_data.to_dict() if info.card_data is not None else {}
        return RepoMeta(repo_id=repo_id, sha=sha, gated=bool(info.gated), private=bool(info.private),
                        card_data=card, description=info.description or "", files=files)

    # -- file bytes -----------------------------------------------------------------------------

    def file_url(self, repo_id: str, sha: str, path: str) -> str:
        return f"{self.endpoint}/datasets/{repo_id}/resolve/{sha}/{quote(path)}"

    def open_file(self, repo_id: str, sha: str, path: str, size: int, token: str | None, meter: Meter | None,
                  gated: bool = False) -> RemoteFile:
        return RemoteFile(self, repo_id, sha, path, size, self.token(token), meter, gated)


class RemoteFile:
    """A file of a repo at a pinned sha, read by ranged GETs that resume after a dropped connection."""

    def __init__(self, hub: HubClient, repo_id: str, sha: str, path: str, size: int, token: str | None,
                 meter: Meter | None, gated: bool) -> None:
        self.hub = hub
        self.repo_id = repo_id
        self.path = path
        self.size = size
        self._url = hub.file_url(repo_id, sha, path)
        self._token = token
        self._meter = meter
        self._gated = gated

    def __repr__(self) -> str:
        return f"RemoteFile({self.repo_id}:{self.path})"

    def _headers(self, start: int, end: int | None) -> dict[str, str]:
        h = {"Range": f"bytes={start}-{'' if end is None else end}", "Accept-Encoding": "identity"}
        if self._token:
            h["Authorization"] = f"Bearer {self._token}"
        return h

    def _check(self, resp: httpx.Response) -> None:
        if resp.status_code in (200, 206):
            return
        code = resp.headers.get("X-Error-Code", "")
        msg = resp.headers.get("X-Error-Message", "")[:200]
        if resp.status_code in (401, 403) or code == "GatedRepo":
            if not self._token and (self._gated or code == "GatedRepo"):
                raise token_needed(self.repo_id)
            raise PermissionDenied(f"the Hub denied access to {self.repo_id}/{self.path}: {msg}")
        if resp.status_code == 404:
            raise NotFound(f"file {self.path} not found in {self.repo_id}")
        if resp.status_code == 416:
            raise Unavailable(f"the Hub refused the byte range of {self.repo_id}/{self.path}")
        raise _Retryable(f"HTTP {resp.status_code} {msg}")

    def iter_range(self, start: int = 0, end: int | None = None, chunk: int = READ_CHUNK) -> Iterator[bytes]:
        """Bytes [start, end) (end None = to EOF); a dropped connection resumes from the byte reached.

        Up to MAX_ATTEMPTS attempts in a row without a byte received, 0.2, 0.4, 0.8, 1.6 s apart: every byte that
        arrives starts the count again, so a long download survives drops spread over its length. Then
        Unavailable names the file, the attempts, the byte reached and the last error.
        """
        pos = start
        stop = self.size if end is None else min(end, self.size)
        if pos >= stop:
            return

        def retrying(state: RetryCallState) -> None:
            log.warning("download of %s/%s interrupted at byte %d (%s); retrying", self.repo_id, self.path, pos,
                        state.outcome.exception() if state.outcome else None)

        attempts = Retrying(stop=stop_after_attempt(MAX_ATTEMPTS), wait=wait_exponential(multiplier=0.2, max=2.0),
                            retry=retry_if_exception_type((httpx.TransportError, _Retryable)), before_sleep=retrying)
        try:
            for attempt in attempts:
                with attempt:
                    with self.hub._http.stream("GET", self._url, headers=self._headers(pos, stop - 1)) as resp:
                        self._check(resp)
                        if resp.status_code == 200 and pos > 0:
                            raise _Retryable("the server ignored the Range header")
                        for data in resp.iter_raw():  # as received, so a cut loses nothing already read
                            if self._meter is not None and self._meter.abort.is_set():
                                raise Cancelled(f"download of {self.path} stopped")
                            if not data:
                                continue
                            data = data[: stop - pos]
                            pos += len(data)
                            if self._meter is not None:
                                self._meter.add(len(data))
                            # Bytes arrived: a failure from here on is the first of a new run (count and waits).
                            attempt.retry_state.attempt_number = 1
                            yield data
                            if pos >= stop:
                                break
                    if pos < stop:
                        raise _Retryable("connection closed early")
        except RetryError as err:
            raise Unavailable(
                f"download of {self.repo_id}/{self.path} failed after {MAX_ATTEMPTS} attempts "
                f"at byte {pos} of {self.size}: {err.last_attempt.exception()}"
            ) from None

    def read_range(self, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        return b"".join(self.iter_range(start, start + length))


class _Retryable(Exception):
    pass
