"""Talking to the Hub: metadata through `huggingface_hub.HfApi`, file bytes by ranged HTTP.

File bytes are read with our own ranged GETs (not hf_hub_download) so that a
preview fetches only a Parquet footer and a row group, an import counts every
byte it downloads, and a dropped connection resumes from the byte reached.
Nothing here calls the dataset-viewer service or the refs/convert/parquet branch.

Reconnecting after dropped connections is bounded three ways: MAX_ATTEMPTS failed connections in a row without a
byte (Unavailable: the Hub is down, a job may resume later), and, for a Hub that keeps delivering a little and
then dropping (DownloadGaveUp), the download deadline of a read (counted from its first drop) and the reconnects
allowed for one file (all its reads). Each reconnect is reported through the Meter's `on_retry` callback, so the
caller can say so while it happens. A loop of our own rather than tenacity's: its count restarts whenever bytes
arrive, it has two more stops than "N in a row" and it ends at once on cancel while waiting to reconnect, which
with tenacity meant resetting its state from inside (as an earlier version did) and reading less plainly.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from huggingface_hub import HfApi
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ferry.errors import Cancelled, FerryError, InvalidArgument, NotFound, PermissionDenied, Unavailable

log = logging.getLogger("ferry.importer.hub")

READ_CHUNK = 1024 * 1024
# Failed connections in a row without a byte received before a read fails (Unavailable); the waits between them
# double from RETRY_WAIT up to RETRY_WAIT_MAX.
MAX_ATTEMPTS = 5
RETRY_WAIT = 0.2
RETRY_WAIT_MAX = 2.0
# Defaults of the bounds of a download that keeps being cut (DownloadGaveUp), set by the importer's configuration:
# how long a read whose connection dropped may keep reconnecting, in download time from its first drop
# (FERRY_IMPORT_DOWNLOAD_DEADLINE_SECONDS), and how many reconnects one file may take over all its reads
# (FERRY_IMPORT_DOWNLOAD_MAX_RECONNECTS).
DOWNLOAD_DEADLINE = 600.0
MAX_RECONNECTS = 1000
_READS = itertools.count(1)
SORTS = {"downloads": "downloads", "likes": "likes", "trending_score": "trending_score", "trending": "trending_score",
         "created_at": "created_at", "created": "created_at", "last_modified": "last_modified",
         "modified": "last_modified"}


@dataclass
class _ReadState:
    """Where one ranged read stands, across its connections."""

    pos: int
    stop: int
    read: int  # this read's number, so the meter can tell reads apart
    failures: int = 0  # failed connections in a row without a byte received
    dropped: bool = False  # whether a connection of this read has dropped yet
    spent: float = 0.0  # download time since the first drop
    since: float = 0.0  # when the current stretch of download time began (after the first drop)
    cause: str = ""
    retry: int = 0  # the file's reconnects as of this read's last one


class DownloadGaveUp(Unavailable):
    """A download kept being cut past its deadline or its reconnects. Resuming the import would only start the same
    bounds again, so the job fails instead (unlike the Unavailable of a Hub that delivers nothing, which it
    resumes)."""


@dataclass(frozen=True)
class DownloadRetry:
    """What a read reports through Meter.on_retry: each reconnect after a dropped connection, then its end."""

    read: int  # which read (one ranged read of one file) this is about; unique in the process
    path: str  # the file's path in the repo
    retry: int  # reconnects of the file so far (all its reads)
    position: int  # the byte of the file the reconnect resumes at
    size: int
    cause: str  # why the last connection failed
    ended: bool = False  # the read is over (complete, failed or abandoned): what it reported no longer holds


class Meter:
    """Thread-safe byte counter shared by the downloads of one job or request.

    `on_retry`, when set, hears every reconnect of those downloads and the end of each read that reconnected
    (DownloadRetry); it is called on the downloading thread and must return quickly.
    """

    def __init__(self, on_retry: Callable[[DownloadRetry], None] | None = None) -> None:
        self._lock = threading.Lock()
        self.bytes = 0
        # Set to make every download using this meter stop at its next chunk (cancel, shutdown).
        self.abort = threading.Event()
        self.on_retry = on_retry

    def add(self, n: int) -> None:
        with self._lock:
            self.bytes += n

    def retrying(self, event: DownloadRetry) -> None:
        if self.on_retry is None:
            return
        try:
            self.on_retry(event)
        except Exception:  # noqa: BLE001 - reporting must never break the download
            log.exception("reporting a download retry failed")


def token_needed(repo_id: str) -> PermissionDenied:
    return PermissionDenied(
        f"{repo_id} is a gated dataset: a HuggingFace token with access is needed "
        "(send it in the X-HF-Token header or set HF_TOKEN on the importer)"
    )


def hub_error(exc: Exception, repo_id: str, what: str, token: str | None) -> FerryError:
    """The domain error for a failed Hub call, saying what failed (never a fallback)."""
    if isinstance(exc, FerryError):
        return exc
    if isinstance(exc, HFValidationError):
        # huggingface_hub refuses the repo id before any request (a name sources.check_repo_id should have caught).
        return InvalidArgument(f"dataset_name {repo_id[:40]!r} is not a valid Hub repo id: {exc}"[:300],
                               field="dataset_name")
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

    def __init__(self, endpoint: str, default_token: str = "", timeout: float = 30.0,
                 download_deadline: float = DOWNLOAD_DEADLINE, max_reconnects: int = MAX_RECONNECTS) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._default_token = default_token
        self.download_deadline = download_deadline
        self.max_reconnects = max_reconnects
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
    """A file of a repo at a pinned sha, read by ranged GETs that resume after a dropped connection.

    Its reads (several at once for Parquet row groups) share one count of reconnects, bounded by the hub's
    max_reconnects.
    """

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
        self._lock = threading.Lock()
        self.reconnects = 0  # over all reads of this file

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

        Reconnecting is bounded three ways:
        - MAX_ATTEMPTS failed connections in a row without a byte received, RETRY_WAIT (0.2), 0.4, 0.8, 1.6 s
          apart: every byte that arrives starts the count again, so a long download survives drops spread over
          its length. Then Unavailable names the file, the attempts, the byte reached and the last error.
        - the hub's download deadline, counted from this read's first dropped connection in download time (the
          time the caller holds the bytes it was given does not count), and its max_reconnects for the file over
          all its reads: a connection that is delivering is never cut, but past either bound the next drop ends
          the read with DownloadGaveUp naming the file, the byte reached, the reconnects and the last cause. So a
          Hub that always delivers a little and then drops cannot keep a download going forever.
        Each reconnect, and then the end of a read that reconnected, goes to the meter's on_retry.
        """
        st = _ReadState(start, self.size if end is None else min(end, self.size), next(_READS))
        if st.pos >= st.stop:
            return
        try:
            while True:
                try:
                    yield from self._connection(st)
                    if st.pos >= st.stop:
                        return
                    raise _Retryable("the connection closed early")
                except (httpx.TransportError, _Retryable) as exc:
                    st.cause = _describe(exc)
                self._reconnect(st)
        finally:
            if st.retry and self._meter is not None:
                self._meter.retrying(DownloadRetry(st.read, self.path, st.retry, st.pos, self.size, st.cause,
                                                   ended=True))

    def _connection(self, st: _ReadState) -> Iterator[bytes]:
        """One connection's bytes from st.pos on, counted into `st` as they arrive."""
        with self.hub._http.stream("GET", self._url, headers=self._headers(st.pos, st.stop - 1)) as resp:
            self._check(resp)
            if resp.status_code == 200 and st.pos > 0:
                raise _Retryable("the server ignored the Range header")
            for data in resp.iter_raw():  # as received, so a cut loses nothing already read
                if self._meter is not None and self._meter.abort.is_set():
                    raise Cancelled(f"download of {self.path} stopped")
                if not data:
                    continue
                data = data[: st.stop - st.pos]
                st.pos += len(data)
                if self._meter is not None:
                    self._meter.add(len(data))
                st.failures = 0  # bytes arrived: a failure from here on is the first of a new run
                if st.dropped:
                    st.spent += time.monotonic() - st.since
                yield data
                st.since = time.monotonic()
                if st.pos >= st.stop:
                    return

    def _reconnect(self, st: _ReadState) -> None:
        """After a dropped connection: give up past a bound (raising), else report the retry and wait."""
        now = time.monotonic()
        if st.dropped:
            st.spent += now - st.since
        st.dropped, st.since = True, now
        st.failures += 1
        if st.failures >= MAX_ATTEMPTS:
            raise Unavailable(f"download of {self.repo_id}/{self.path} failed after {MAX_ATTEMPTS} attempts "
                              f"at byte {st.pos} of {self.size}: {st.cause}")
        with self._lock:
            over = self._over_bounds(st.spent)
            if not over:
                self.reconnects += 1
            st.retry = self.reconnects
        if over:
            raise DownloadGaveUp(
                f"the Hub kept dropping the connection: download of {self.repo_id}/{self.path} gave up "
                f"at byte {st.pos:,} of {self.size:,} after {st.retry} reconnects ({over}); last cause: {st.cause}")
        if st.retry == 1 or st.retry % 100 == 0:
            log.warning("download of %s/%s interrupted at byte %d (%s); reconnect %d", self.repo_id,
                        self.path, st.pos, st.cause, st.retry)
        if self._meter is not None:
            self._meter.retrying(DownloadRetry(st.read, self.path, st.retry, st.pos, self.size, st.cause))
        wait = min(RETRY_WAIT_MAX, RETRY_WAIT * 2 ** (st.failures - 1))
        if self._meter is None:
            time.sleep(wait)
        elif self._meter.abort.wait(wait):  # cancelled or stopping while it waited
            raise Cancelled(f"download of {self.path} stopped")

    def _over_bounds(self, spent: float) -> str:
        """Which bound another reconnect would pass, in words ('' for none)."""
        deadline, most = self.hub.download_deadline, self.hub.max_reconnects
        if self.reconnects >= most:
            return f"the most a file may take: FERRY_IMPORT_DOWNLOAD_MAX_RECONNECTS={most}"
        if spent >= deadline:
            return (f"still incomplete {spent:.0f}s after its first drop: "
                    f"FERRY_IMPORT_DOWNLOAD_DEADLINE_SECONDS={deadline:g}")
        return ""

    def read_range(self, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        return b"".join(self.iter_range(start, start + length))


class _Retryable(Exception):
    pass


def _describe(exc: Exception) -> str:
    """Why a connection failed, short: the error's text, or its type when it has none."""
    text = str(exc) or type(exc).__name__
    return text[:200]
