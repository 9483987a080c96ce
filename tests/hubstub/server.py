"""A stand-in HuggingFace Hub on loopback, so the real `huggingface_hub` and `datasets` clients run in tests.

Only the dataset routes the clients use are served (info, list, tree, paths-info, resolve, whoami). The dataset-viewer
service and `refs/convert/parquet` are deliberately absent (the real mirrors lack them): they answer 404 like
anything else unknown, with the `X-Error-Code` header huggingface_hub maps to its exceptions.

Repos live on disk: `<root>/<owner>/<name>/` holds the files exactly as a clone would, and
`<root>/<owner>/<name>.meta.json` the Hub metadata (gated, downloads, likes, tags, description, lastModified...).
No Xet headers are ever sent, so clients download over plain HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import yaml  # type: ignore[import-untyped]

META_SUFFIX = ".meta.json"
DEFAULT_LAST_MODIFIED = "2024-01-15T10:20:30.000Z"
DEFAULT_CREATED_AT = "2023-06-01T08:00:00.000Z"
LFS_SUFFIXES = (".parquet", ".gz", ".arrow", ".zip", ".zst", ".bz2", ".xz", ".tar", ".bin", ".npy", ".lz4")
LFS_MIN_SIZE = 10 * 1024 * 1024
TREE_PAGE = 1000
TREE_PAGE_EXPANDED = 50
CHUNK = 64 * 1024
SHA_RE = re.compile(r"^[0-9a-f]{40}$")

# Hashing large files is the slow part of starting a server; keep results across server instances.
_HASH_CACHE: dict[tuple[str, int, int], tuple[str, str | None]] = {}
_HASH_LOCK = threading.Lock()


def _git_blob_sha1(data_iter: Any, size: int) -> hashlib._Hash:
    h = hashlib.sha1(f"blob {size}\0".encode())
    for chunk in data_iter:
        h.update(chunk)
    return h


def _iter_file(path: Path) -> Any:
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            yield chunk


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class RepoFile:
    path: str  # path inside the repo, with "/"
    abspath: Path
    size: int
    oid: str  # git blob id (of the LFS pointer for LFS files)
    lfs_sha256: str | None

    @property
    def etag(self) -> str:
        return self.lfs_sha256 or self.oid


def _hash_file(abspath: Path, rel: str, size: int, mtime_ns: int) -> tuple[str, str | None]:
    key = (str(abspath), size, mtime_ns)
    with _HASH_LOCK:
        hit = _HASH_CACHE.get(key)
    if hit is not None:
        return hit
    is_lfs = rel.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE
    if is_lfs:
        h = hashlib.sha256()
        for chunk in _iter_file(abspath):
            h.update(chunk)
        sha256 = h.hexdigest()
        pointer = lfs_pointer(sha256, size)
        oid = _git_blob_sha1([pointer], len(pointer)).hexdigest()
        result: tuple[str, str | None] = (oid, sha256)
    else:
        result = (_git_blob_sha1(_iter_file(abspath), size).hexdigest(), None)
    with _HASH_LOCK:
        _HASH_CACHE[key] = result
    return result


@dataclass
class Repo:
    """One dataset repo: a folder of files plus its Hub metadata; the sha is derived from the content."""

    repo_id: str
    folder: Path
    meta: dict[str, Any]
    files: dict[str, RepoFile] = field(default_factory=dict)
    sha: str = ""
    card_data: dict[str, Any] | None = None

    @classmethod
    def load(cls, repo_id: str, folder: Path, meta: dict[str, Any]) -> Repo:
        repo = cls(repo_id=repo_id, folder=folder, meta=dict(meta))
        repo.scan()
        return repo

    def scan(self) -> None:
        files: dict[str, RepoFile] = {}
        for dirpath, dirnames, filenames in os.walk(self.folder):
            dirnames[:] = sorted(d for d in dirnames if d != ".git")
            for name in sorted(filenames):
                abspath = Path(dirpath) / name
                rel = abspath.relative_to(self.folder).as_posix()
                st = abspath.stat()
                oid, sha256 = _hash_file(abspath, rel, st.st_size, st.st_mtime_ns)
                files[rel] = RepoFile(rel, abspath, st.st_size, oid, sha256)
        self.files = dict(sorted(files.items()))
        h = hashlib.sha1(self.repo_id.encode())
        for rel, f in self.files.items():
            h.update(f"\0{rel}\0{f.oid}".encode())
        self.sha = h.hexdigest()
        self.card_data = _read_card_data(self.folder / "README.md")

    @property
    def gated(self) -> str | bool:
        return self.meta.get("gated", False) or False

    @property
    def private(self) -> bool:
        return bool(self.meta.get("private", False))

    def tags(self) -> list[str]:
        if "tags" in self.meta:
            return list(self.meta["tags"])
        return _tags_from_card(self.card_data, self.files)

    def dirs(self) -> set[str]:
        out: set[str] = set()
        for rel in self.files:
            parts = rel.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                out.add("/".join(parts[:i]))
        return out

    def tree_oid(self, directory: str) -> str:
        h = hashlib.sha1(f"tree {directory}".encode())
        prefix = directory + "/"
        for rel, f in self.files.items():
            if rel.startswith(prefix):
                h.update(f"{rel}\0{f.oid}".encode())
        return h.hexdigest()

    def summary(self) -> dict[str, Any]:
        author = self.repo_id.split("/")[0] if "/" in self.repo_id else None
        return {
            "_id": hashlib.sha1(self.repo_id.encode()).hexdigest()[:24],
            "id": self.repo_id,
            "author": author,
            "sha": self.sha,
            "lastModified": self.meta.get("lastModified", DEFAULT_LAST_MODIFIED),
            "createdAt": self.meta.get("createdAt", DEFAULT_CREATED_AT),
            "private": self.private,
            "gated": self.gated,
            "disabled": False,
            "downloads": int(self.meta.get("downloads", 0)),
            "likes": int(self.meta.get("likes", 0)),
            "trendingScore": int(self.meta.get("trendingScore", 0)),
            "tags": self.tags(),
            "description": self.meta.get("description", ""),
            "key": "",
        }

    def info(self, blobs: bool = False) -> dict[str, Any]:
        out = self.summary()
        out["cardData"] = self.card_data if self.card_data is not None else {}
        out["citation"] = self.meta.get("citation")
        out["paperswithcode_id"] = self.meta.get("paperswithcode_id")
        out["usedStorage"] = sum(f.size for f in self.files.values())
        siblings = []
        for f in self.files.values():
            s: dict[str, Any] = {"rfilename": f.path}
            if blobs:
                s["size"] = f.size
                s["blobId"] = f.oid
                if f.lfs_sha256:
                    s["lfs"] = {
                        "size": f.size,
                        "sha256": f.lfs_sha256,
                        "pointerSize": len(lfs_pointer(f.lfs_sha256, f.size)),
                    }
            siblings.append(s)
        out["siblings"] = siblings
        return out

    def last_commit(self) -> dict[str, Any]:
        return {
            "id": self.sha,
            "title": self.meta.get("commitTitle", "Upload dataset"),
            "date": self.meta.get("lastModified", DEFAULT_LAST_MODIFIED),
        }

    def file_entry(self, f: RepoFile, expand: bool) -> dict[str, Any]:
        e: dict[str, Any] = {"type": "file", "oid": f.oid, "size": f.size, "path": f.path}
        if f.lfs_sha256:
            e["lfs"] = {"oid": f.lfs_sha256, "size": f.size, "pointerSize": len(lfs_pointer(f.lfs_sha256, f.size))}
        if expand:
            e["lastCommit"] = self.last_commit()
        return e

    def dir_entry(self, d: str, expand: bool) -> dict[str, Any]:
        e: dict[str, Any] = {"type": "directory", "oid": self.tree_oid(d), "size": 0, "path": d}
        if expand:
            e["lastCommit"] = self.last_commit()
        return e


def _read_card_data(readme: Path) -> dict[str, Any] | None:
    if not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8")
    m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
    if not m:
        return None
    data = yaml.safe_load(m.group(1))
    return data if isinstance(data, dict) else None


def _as_list(v: Any) -> list[Any]:
    if v is None:
        return []
    return list(v) if isinstance(v, list) else [v]


def _tags_from_card(card: dict[str, Any] | None, files: dict[str, RepoFile]) -> list[str]:
    """Derive the tags the Hub computes from a card and the file formats."""
    tags: list[str] = []
    card = card or {}
    for key in ("task_categories", "task_ids", "language", "size_categories", "multilinguality"):
        for v in _as_list(card.get(key)):
            tags.append(f"{key}:{v}")
    for v in _as_list(card.get("license")):
        tags.append(f"license:{v}")
    for v in _as_list(card.get("tags")):
        tags.append(str(v))
    fmts = set()
    for rel in files:
        if rel.endswith(".parquet"):
            fmts.add("parquet")
        elif rel.endswith((".json", ".jsonl", ".json.gz", ".jsonl.gz")):
            fmts.add("json")
        elif rel.endswith((".csv", ".csv.gz")):
            fmts.add("csv")
    tags += [f"format:{f}" for f in sorted(fmts)]
    if fmts:
        tags += ["modality:text", "library:datasets"]
    tags.append("region:us")
    return tags


class HubState:
    """Everything the handler threads share: repos, auth, counters, request log and fault switches."""

    def __init__(self, repos_root: Path | None, token: str) -> None:
        self.lock = threading.Lock()
        self.repos: dict[str, Repo] = {}
        self.token = token
        # A real account's token that has NOT been granted access to gated repos.
        self.other_token = "hf_stub_noaccess_" + secrets.token_hex(8)
        self.gate_metadata = True
        self.page_size = 1000
        self.bytes_by_path: dict[str, int] = defaultdict(int)
        self.requests: list[dict[str, Any]] = []
        self.api_failure: int | None = None
        self.api_failure_retry_after: int | None = None
        self.fail_resolve = True
        self.drops: list[tuple[str, int]] = []
        self.always_drop: tuple[str, int] | None = None
        self.bytes_per_second: float | None = None
        self.connections: set[socket.socket] = set()
        # Off by default: /resolve serves LFS bytes itself. On: 302 to a signed "CDN" URL like the real Hub.
        self.redirect_lfs = False
        self.port = 0
        self._secret = secrets.token_bytes(16)
        if repos_root is not None:
            self.load_root(repos_root)

    def load_root(self, root: Path) -> None:
        for owner_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for repo_dir in sorted(p for p in owner_dir.iterdir() if p.is_dir()):
                meta_path = owner_dir / (repo_dir.name + META_SUFFIX)
                meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
                repo_id = meta.pop("id", f"{owner_dir.name}/{repo_dir.name}")
                self.add_repo(repo_id, repo_dir, **meta)

    def add_repo(self, repo_id: str, folder: Path, **meta: Any) -> Repo:
        repo = Repo.load(repo_id, Path(folder), meta)
        with self.lock:
            self.repos[repo_id] = repo
        return repo

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append(entry)

    def count(self, key: str, n: int) -> None:
        with self.lock:
            self.bytes_by_path[key] += n

    def sign(self, *parts: str) -> str:
        return hmac.new(self._secret, "\0".join(parts).encode(), hashlib.sha256).hexdigest()

    def take_drop(self, key: str) -> int | None:
        """Return the byte count after which to cut this transfer, consuming a one-shot switch."""
        with self.lock:
            for i, (sub, after) in enumerate(self.drops):
                if sub in key:
                    del self.drops[i]
                    return after
            if self.always_drop is not None and self.always_drop[0] in key:
                return self.always_drop[1]
        return None


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


def _fmt_size_error(n: int) -> str:
    return f"bytes */{n}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hubstub/1.0"
    state: HubState  # set on the subclass created per server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr access log
        return

    def setup(self) -> None:
        super().setup()
        with self.state.lock:
            self.state.connections.add(self.connection)

    def finish(self) -> None:
        with self.state.lock:
            self.state.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    # -------------------------------------------------------------------------------------------- plumbing
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        self._status = 0
        self._sent = 0
        split = urlsplit(self.path)
        raw_path = split.path
        query = parse_qs(split.query, keep_blank_values=True)
        body = b""
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            body = self.rfile.read(length)
        try:
            self._route(method, raw_path, query, body)
        except HubError as e:
            self._send_error(e)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self.state.record(
                {
                    "method": method,
                    "path": unquote(raw_path),
                    "query": split.query,
                    "status": self._status,
                    "range": self.headers.get("Range"),
                    "authorized": self._auth_kind() == "valid",
                    "bytes": self._sent,
                    "time": time.time(),
                }
            )

    def _send_json(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_error(self, e: HubError) -> None:
        headers = dict(e.headers)
        if e.code:
            headers["X-Error-Code"] = e.code
        headers["X-Error-Message"] = e.message
        self._send_json({"error": e.message}, e.status, headers)

    def _auth_kind(self) -> str:
        auth = self.headers.get("Authorization") or ""
        if not auth:
            return "none"
        tok = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if tok and secrets.compare_digest(tok, self.state.token):
            return "valid"
        if tok and secrets.compare_digest(tok, self.state.other_token):
            return "noaccess"
        return "invalid"

    def _check_auth(self, repo: Repo | None) -> None:
        kind = self._auth_kind()
        if kind == "invalid":
            raise HubError(401, "Invalid credentials in Authorization header")
        if repo is None:
            return
        if repo.private and kind != "valid":
            raise HubError(401, "Repository not found", "RepoNotFound")
        if repo.gated and kind != "valid":
            msg = (
                f"Access to dataset {repo.repo_id} is restricted. You must have access to it and be authenticated "
                "to access it. Please log in."
                if kind == "none"
                else f"Access to dataset {repo.repo_id} is restricted and you are not in the authorized list. "
                f"Visit https://huggingface.co/datasets/{repo.repo_id} to ask for access."
            )
            raise HubError(401 if kind == "none" else 403, msg, "GatedRepo")

    def _maybe_fail(self, is_resolve: bool) -> None:
        st = self.state
        if st.api_failure is not None and (not is_resolve or st.fail_resolve):
            headers = {}
            if st.api_failure_retry_after is not None:
                headers["Retry-After"] = str(st.api_failure_retry_after)
            raise HubError(st.api_failure, "Hub is temporarily unavailable (injected outage)", None, headers)

    # -------------------------------------------------------------------------------------------- routing
    def _route(self, method: str, raw_path: str, query: dict[str, list[str]], body: bytes) -> None:
        segs = [unquote(s) for s in raw_path.split("/")[1:]]
        if segs and segs[-1] == "":
            segs = segs[:-1]
        if len(segs) >= 2 and segs[0] == "api" and segs[1] == "datasets":
            self._maybe_fail(False)
            if len(segs) == 2 and method == "GET":
                return self._list(query)
            repo_id, rest = self._split_repo(segs[2:])
            return self._api_repo(method, repo_id, rest, query, body)
        if segs[:2] == ["api", "whoami-v2"] and method == "GET":
            self._maybe_fail(False)
            return self._whoami()
        if segs and segs[0] == "cdn-lfs" and method in ("GET", "HEAD"):
            self._maybe_fail(True)
            return self._cdn(method, segs[1:], query)
        if len(segs) >= 2 and segs[0] == "datasets" and method in ("GET", "HEAD"):
            self._maybe_fail(True)
            repo_id, rest = self._split_repo(segs[1:])
            if len(rest) >= 3 and rest[0] == "resolve":
                rev, path_segs = self._split_rev(rest[1:])
                return self._resolve(method, repo_id, rev, "/".join(path_segs))
        self._maybe_fail(False)
        raise HubError(404, "Sorry, we can't find the page you are looking for.", "NotFound")

    @staticmethod
    def _split_repo(segs: list[str]) -> tuple[str, list[str]]:
        if not segs:
            raise HubError(404, "Repository not found", "RepoNotFound")
        if "/" in segs[0]:  # URL-encoded "owner%2Fname"
            return segs[0], segs[1:]
        if len(segs) == 1:
            return segs[0], []
        return f"{segs[0]}/{segs[1]}", segs[2:]

    @staticmethod
    def _split_rev(segs: list[str]) -> tuple[str, list[str]]:
        # Special refs travel unencoded (e.g. refs/convert/parquet, refs/pr/1).
        if segs and segs[0] == "refs" and len(segs) >= 3:
            return "/".join(segs[:3]), segs[3:]
        return segs[0], segs[1:]

    def _get_repo(self, repo_id: str) -> Repo:
        with self.state.lock:
            repo = self.state.repos.get(repo_id)
        if repo is None:
            self._check_auth(None)
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _check_rev(self, repo: Repo, rev: str) -> None:
        if rev not in ("main", repo.sha):
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound", {"X-Repo-Commit": repo.sha})

    def _api_repo(self, method: str, repo_id: str, rest: list[str], query: dict[str, list[str]], body: bytes) -> None:
        repo = self._get_repo(repo_id)
        if self.state.gate_metadata:
            self._check_auth(repo)
        else:
            self._check_auth(None)
        if not rest and method == "GET":
            return self._send_json(repo.info(blobs=_truthy(query, "blobs")))
        if len(rest) == 2 and rest[0] == "revision" and method == "GET":
            self._check_rev(repo, rest[1])
            return self._send_json(repo.info(blobs=_truthy(query, "blobs")))
        if len(rest) >= 2 and rest[0] == "tree" and method == "GET":
            rev, path_segs = self._split_rev(rest[1:])
            self._check_rev(repo, rev)
            return self._tree(repo, rev, "/".join(path_segs), query)
        if len(rest) >= 2 and rest[0] == "paths-info" and method == "POST":
            rev, _ = self._split_rev(rest[1:])
            self._check_rev(repo, rev)
            return self._paths_info(repo, body)
        if rest == ["refs"] and method == "GET":
            return self._send_json(
                {"branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": repo.sha}], "converts": [],
                 "tags": []}
            )
        raise HubError(404, "Sorry, we can't find the page you are looking for.", "NotFound")

    # -------------------------------------------------------------------------------------------- API routes
    def _whoami(self) -> None:
        kind = self._auth_kind()
        if kind in ("none", "invalid"):
            raise HubError(401, "Invalid credentials in Authorization header")
        name = "ferry-tester" if kind == "valid" else "ferry-outsider"
        self._send_json({"type": "user", "name": name, "fullname": name, "orgs": [],
                         "auth": {"type": "access_token", "accessToken": {"displayName": "stub", "role": "read"}}})

    def _list(self, query: dict[str, list[str]]) -> None:
        self._check_auth(None)
        with self.state.lock:
            repos = list(self.state.repos.values())
        searches = [s.lower() for s in query.get("search", []) if s]
        authors = [a for a in query.get("author", []) if a]
        filters = [f for f in query.get("filter", []) if f]
        gated = query.get("gated", [None])[0]
        out = []
        for r in repos:
            if any(s not in r.repo_id.lower() for s in searches):
                continue
            if authors and r.repo_id.split("/")[0] not in authors:
                continue
            tags = set(r.tags())
            if any(f not in tags and f != r.repo_id for f in filters):
                continue
            if gated is not None and bool(r.gated) != (gated.lower() == "true"):
                continue
            if r.private and self._auth_kind() != "valid":
                continue
            out.append(r)
        sort = query.get("sort", [None])[0]
        direction = query.get("direction", ["-1"])[0]
        if sort:
            key_name = {"last_modified": "lastModified", "created_at": "createdAt",
                        "trending_score": "trendingScore"}.get(sort, sort)

            def key(r: Repo) -> Any:
                return r.summary().get(key_name) or 0

            out.sort(key=lambda r: r.repo_id)
            out.sort(key=key, reverse=direction != "1")
        else:
            out.sort(key=lambda r: r.repo_id)
        limit = _int_param(query, "limit")
        if limit is not None:
            out = out[:limit]
        cursor = _int_param(query, "cursor") or 0
        page = out[cursor : cursor + self.state.page_size]
        full = _truthy(query, "full")
        expand = query.get("expand", []) + query.get("expand[]", [])
        items = []
        for r in page:
            info = r.info() if (full or expand) else r.summary()
            if not full and not expand:
                pass
            elif expand:
                info = {k: v for k, v in info.items() if k in expand or k in ("_id", "id")}
            items.append(info)
        headers = {}
        if cursor + self.state.page_size < len(out):
            q = {k: v for k, v in query.items() if k != "cursor"}
            q["cursor"] = [str(cursor + self.state.page_size)]
            host = self.headers.get("Host", "127.0.0.1")
            headers["Link"] = f'<http://{host}/api/datasets?{urlencode(q, doseq=True)}>; rel="next"'
        self._send_json(items, headers=headers)

    def _tree(self, repo: Repo, rev: str, path: str, query: dict[str, list[str]]) -> None:
        recursive = _truthy(query, "recursive")
        expand = _truthy(query, "expand")
        path = path.strip("/")
        dirs = repo.dirs()
        if path and path not in dirs:
            if path in repo.files:
                raise HubError(404, f"{path} is not a directory", "EntryNotFound", {"X-Repo-Commit": repo.sha})
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": repo.sha})
        prefix = path + "/" if path else ""
        entries: list[dict[str, Any]] = []
        for d in sorted(dirs):
            if d.startswith(prefix) and (recursive or "/" not in d[len(prefix):]):
                entries.append(repo.dir_entry(d, expand))
        for rel, f in repo.files.items():
            if rel.startswith(prefix) and (recursive or "/" not in rel[len(prefix):]):
                entries.append(repo.file_entry(f, expand))
        entries.sort(key=lambda e: (e["path"].split("/")[:-1], e["type"] != "directory", e["path"]))
        page_size = TREE_PAGE_EXPANDED if expand else TREE_PAGE
        cursor = _int_param(query, "cursor") or 0
        page = entries[cursor : cursor + page_size]
        headers = {"X-Repo-Commit": repo.sha}
        if cursor + page_size < len(entries):
            host = self.headers.get("Host", "127.0.0.1")
            q = {"recursive": str(recursive), "expand": str(expand), "cursor": str(cursor + page_size)}
            url_path = f"/api/datasets/{repo.repo_id}/tree/{quote(rev, safe='')}"
            if path:
                url_path += "/" + quote(path, safe="")
            headers["Link"] = f'<http://{host}{url_path}?{urlencode(q)}>; rel="next"'
        self._send_json(page, headers=headers)

    def _paths_info(self, repo: Repo, body: bytes) -> None:
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            payload = json.loads(body or b"{}")
            paths = _as_list(payload.get("paths"))
            expand = bool(payload.get("expand"))
        else:
            form = parse_qs(body.decode(), keep_blank_values=True)
            paths = form.get("paths", [])
            expand = (form.get("expand", ["False"])[0]).lower() == "true"
        dirs = repo.dirs()
        out = []
        for p in paths:
            p = str(p).strip("/")
            if p in repo.files:
                out.append(repo.file_entry(repo.files[p], expand))
            elif p in dirs:
                out.append(repo.dir_entry(p, expand))
        self._send_json(out, headers={"X-Repo-Commit": repo.sha})

    # -------------------------------------------------------------------------------------------- resolve
    def _resolve(self, method: str, repo_id: str, rev: str, path: str) -> None:
        repo = self._get_repo(repo_id)
        self._check_auth(repo)
        self._check_rev(repo, rev)
        f = repo.files.get(path)
        if f is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": repo.sha})
        if f.lfs_sha256 and self.state.redirect_lfs:
            return self._redirect_to_cdn(repo, f)
        self._serve_file(method, repo, f, hub_headers=True)

    def _redirect_to_cdn(self, repo: Repo, f: RepoFile) -> None:
        """Like the Hub: LFS content comes from a signed URL on another host (here `localhost`, same port)."""
        expires = str(int(time.time()) + 3600)
        sig = self.state.sign(repo.repo_id, f.path, f.lfs_sha256 or "", expires)
        location = (
            f"http://localhost:{self.state.port}/cdn-lfs/{repo.repo_id}/{f.lfs_sha256}/"
            f"{quote(f.path)}?{urlencode({'Expires': expires, 'Signature': sig})}"
        )
        body = f"Found. Redirecting to {location}".encode()
        self._status = 302
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", f'"{f.oid}"')
        self.send_header("X-Repo-Commit", repo.sha)
        self.send_header("X-Linked-Etag", f'"{f.lfs_sha256}"')
        self.send_header("X-Linked-Size", str(f.size))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _cdn(self, method: str, segs: list[str], query: dict[str, list[str]]) -> None:
        # /cdn-lfs/{owner}/{name}/{sha256}/{path...}?Expires=..&Signature=..
        if len(segs) < 4:
            raise HubError(404, "Not Found")
        repo_id, sha256, path = f"{segs[0]}/{segs[1]}", segs[2], "/".join(segs[3:])
        expires = query.get("Expires", [""])[0]
        sig = query.get("Signature", [""])[0]
        if not expires.isdigit() or int(expires) < time.time():
            raise HubError(403, "Request has expired")
        if not secrets.compare_digest(sig, self.state.sign(repo_id, path, sha256, expires)):
            raise HubError(403, "Invalid signature")
        with self.state.lock:
            repo = self.state.repos.get(repo_id)
        f = repo.files.get(path) if repo else None
        if repo is None or f is None or f.lfs_sha256 != sha256:
            raise HubError(404, "Not Found")
        self._serve_file(method, repo, f, hub_headers=False)

    def _serve_file(self, method: str, repo: Repo, f: RepoFile, hub_headers: bool) -> None:
        size = f.size
        start, end = 0, size - 1
        status = 200
        rng = self.headers.get("Range")
        if rng:
            parsed = _parse_range(rng, size)
            if parsed is None:
                extra = {"Content-Range": _fmt_size_error(size)}
                if hub_headers:
                    extra["X-Repo-Commit"] = repo.sha
                raise HubError(416, "Requested Range Not Satisfiable", None, extra)
            start, end = parsed
            status = 206
        length = max(0, end - start + 1)
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{f.etag}"')
        if hub_headers:
            self.send_header("X-Repo-Commit", repo.sha)
            if f.lfs_sha256:
                self.send_header("X-Linked-Etag", f'"{f.lfs_sha256}"')
                self.send_header("X-Linked-Size", str(f.size))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Disposition", f'inline; filename="{f.path.rsplit("/", 1)[-1]}"')
        self.end_headers()
        if method == "HEAD" or length == 0:
            return
        key = f"{repo.repo_id}/{f.path}"
        drop_after = self.state.take_drop(key)
        self._stream(f.abspath, start, length, key, drop_after)

    def _stream(self, abspath: Path, start: int, length: int, key: str, drop_after: int | None) -> None:
        remaining = length
        with abspath.open("rb") as fh:
            fh.seek(start)
            while remaining > 0:
                bps = self.state.bytes_per_second
                n = min(CHUNK, remaining)
                if bps:
                    n = min(n, max(1024, int(bps / 20)))
                if drop_after is not None:
                    n = min(n, drop_after - self._sent)
                    if n <= 0:
                        self._drop()
                        return
                chunk = fh.read(n)
                if not chunk:
                    break
                self.wfile.write(chunk)
                self._sent += len(chunk)
                remaining -= len(chunk)
                self.state.count(key, len(chunk))
                if bps:
                    time.sleep(len(chunk) / bps)
        if drop_after is not None and self._sent >= drop_after and remaining > 0:
            self._drop()

    def _drop(self) -> None:
        """Cut the connection mid-body, as a flaky network would."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _truthy(query: dict[str, list[str]], name: str) -> bool:
    v = query.get(name, [""])[0]
    return v.lower() in ("1", "true", "yes")


def _int_param(query: dict[str, list[str]], name: str) -> int | None:
    v = query.get(name, [""])[0]
    if not v:
        return None
    try:
        return int(v)
    except ValueError as e:
        raise HubError(400, f"Invalid {name}: {v}", "BadRequest") from e


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    m = re.match(r"^\s*bytes=(\d*)-(\d*)\s*(,.*)?$", header)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None
    if m.group(1) == "":
        n = int(m.group(2))
        if n == 0 or size == 0:
            return None
        return max(0, size - n), size - 1
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


class HubServer:
    """The running stub: an HTTP server thread over a HubState."""

    def __init__(self, repos_root: Path | None = None, token: str | None = None, host: str = "127.0.0.1") -> None:
        self.state = HubState(Path(repos_root) if repos_root else None, token or "hf_stub_" + secrets.token_hex(16))
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer((host, 0), handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.state.port = self.port
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="hubstub", daemon=True
        )

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut kept-alive connections, so no pooled client connection reaches a dead stub."""
        self.httpd.shutdown()
        self.httpd.server_close()
        with self.state.lock:
            conns = list(self.state.connections)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)
