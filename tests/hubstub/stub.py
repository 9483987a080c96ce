"""The handle tests and benchmarks hold on a running stand-in Hub (counters, fault switches, repo registry)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.hubstub.server import HubServer


class StubHub:
    """A running stub Hub. `url` goes into HF_ENDPOINT; `token` opens the gated repos."""

    def __init__(self, server: HubServer, repos_root: Path | None) -> None:
        self._server = server
        self.repos_root = repos_root
        self.url = server.url
        self.token = server.state.token
        # A syntactically valid token of a user who was NOT granted access to gated repos (-> 403 GatedRepo).
        self.token_without_access = server.state.other_token

    # ---------------------------------------------------------------- repos
    def repo_dir(self, repo_id: str) -> Path:
        """The folder holding the repo's files: also usable as 'a local clone of the Hub repo'. Treat read-only."""
        return self._server.state.repos[repo_id].folder

    def repo_sha(self, repo_id: str) -> str:
        return self._server.state.repos[repo_id].sha

    def repo_ids(self) -> list[str]:
        return sorted(self._server.state.repos)

    def add_repo(self, repo_id: str, folder: str | Path, **meta: Any) -> None:
        """Serve `folder` as dataset `repo_id`. meta: gated ("manual"/"auto"/False), private, downloads, likes,
        tags, description, lastModified, createdAt."""
        self._server.state.add_repo(repo_id, Path(folder), **meta)

    # ---------------------------------------------------------------- counters
    def bytes_served(self, path_substring: str | None = None) -> int:
        """Body bytes sent by /resolve, for keys "<repo_id>/<path>" containing path_substring (all if None)."""
        st = self._server.state
        with st.lock:
            return sum(n for k, n in st.bytes_by_path.items() if path_substring is None or path_substring in k)

    def bytes_by_path(self) -> dict[str, int]:
        st = self._server.state
        with st.lock:
            return dict(st.bytes_by_path)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Request log: dicts with method, path (decoded), query, status, range, authorized, bytes, time."""
        st = self._server.state
        with st.lock:
            return list(st.requests)

    def reset_counters(self) -> None:
        st = self._server.state
        with st.lock:
            st.bytes_by_path.clear()
            st.requests.clear()

    # ---------------------------------------------------------------- faults
    def fail_api(self, status: int | None, *, include_resolve: bool = True, retry_after: int | None = None) -> None:
        """Hub outage: answer every request with `status` (e.g. 500/503); None restores service.

        huggingface_hub retries 5xx with backoff (1, 2, 4, 8, 8 s); `retry_after=0` sends Retry-After: 0 so each
        retry waits ~1 s instead."""
        st = self._server.state
        with st.lock:
            st.api_failure = status
            st.api_failure_retry_after = retry_after
            st.fail_resolve = include_resolve

    def drop_connection_once(self, path_substring: str, after_bytes: int) -> None:
        """The next /resolve GET whose "<repo_id>/<path>" contains path_substring is cut after `after_bytes`."""
        st = self._server.state
        with st.lock:
            st.drops.append((path_substring, int(after_bytes)))

    def drop_every_connection(self, path_substring: str | None, after_bytes: int = 0) -> None:
        """Every /resolve GET whose "<repo_id>/<path>" contains path_substring is cut after `after_bytes` (a
        response shorter than that is whole), until called with None. One-shot drops are taken first."""
        st = self._server.state
        with st.lock:
            st.always_drop = None if path_substring is None else (path_substring, int(after_bytes))

    def throttle(self, bytes_per_second: float | None) -> None:
        """Slow /resolve bodies down to about this rate (None: full speed)."""
        self._server.state.bytes_per_second = bytes_per_second

    def redirect_lfs(self, on: bool) -> None:
        """True: /resolve of an LFS file (parquet, .gz...) answers 302 to a signed URL on another host
        (http://localhost:<port>/cdn-lfs/...), exactly like the Hub's CDN redirect; the client must follow it and
        drops its Authorization header. Bytes are still counted under "<repo_id>/<path>". Default False."""
        self._server.state.redirect_lfs = on

    def set_page_size(self, n: int) -> None:
        """Items per /api/datasets page (Link-header pagination), default 1000 like the Hub."""
        self._server.state.page_size = n

    def gate_metadata(self, on: bool) -> None:
        """Whether gated repos also refuse /api/datasets/{id}... without a token (default True).

        False mimics the public Hub exactly: repo info and file listings are public, only /resolve is gated."""
        self._server.state.gate_metadata = on

    def client_env(self, hf_home: str | Path | None = None) -> dict[str, str]:
        """Environment for a subprocess (e.g. a service) that should talk to this hub."""
        env = {
            "HF_ENDPOINT": self.url,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_ENABLE_HF_TRANSFER": "0",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        }
        if hf_home is not None:
            env["HF_HOME"] = str(hf_home)
        return env

    def stop(self) -> None:
        self._server.stop()


@contextlib.contextmanager
def start_stub_hub(repos_root: str | Path | None, token: str | None = None) -> Iterator[StubHub]:
    """Serve every repo under repos_root (see tests.hubstub.repos.build_all) until the block exits.

    Does not touch the environment: set HF_ENDPOINT=hub.url yourself (or use point_clients_at)."""
    server = HubServer(Path(repos_root) if repos_root else None, token=token).start()
    try:
        yield StubHub(server, Path(repos_root) if repos_root else None)
    finally:
        server.stop()


def client_settings(url: str, hf_home: str | Path) -> list[tuple[Any, str, Any]]:
    """(module, attribute, value) triples that point already-imported huggingface_hub/datasets at this hub.

    Both libraries read HF_ENDPOINT and HF_HOME once at import, so setting the environment is not enough inside a
    process that imported them before the hub started."""
    import datasets.config as dcfg
    import huggingface_hub.constants as hcst

    hf_home = Path(hf_home)
    hub_cache = hf_home / "hub"
    ds_cache = hf_home / "datasets"
    out: list[tuple[Any, str, Any]] = [
        (hcst, "ENDPOINT", url),
        (hcst, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}"),
        (hcst, "HF_HOME", str(hf_home)),
        (hcst, "HF_HUB_CACHE", str(hub_cache)),
        (hcst, "HUGGINGFACE_HUB_CACHE", str(hub_cache)),
        (hcst, "HF_TOKEN_PATH", str(hf_home / "token")),
        (hcst, "HF_STORED_TOKENS_PATH", str(hf_home / "stored_tokens")),
        (hcst, "HF_XET_CACHE", str(hf_home / "xet")),
        (hcst, "HF_HUB_DISABLE_TELEMETRY", True),
        (hcst, "HF_ASSETS_CACHE", str(hf_home / "assets")),
        (dcfg, "HF_ENDPOINT", url),
        (dcfg, "HUB_DATASETS_URL", url + "/datasets/{repo_id}/resolve/{revision}/{path}"),
        (dcfg, "HF_CACHE_HOME", str(hf_home)),
        (dcfg, "HF_DATASETS_CACHE", ds_cache),
        (dcfg, "HF_MODULES_CACHE", hf_home / "modules"),
        (dcfg, "DOWNLOADED_DATASETS_PATH", ds_cache / dcfg.DOWNLOADED_DATASETS_DIR),
        (dcfg, "EXTRACTED_DATASETS_PATH", ds_cache / dcfg.DOWNLOADED_DATASETS_DIR / dcfg.EXTRACTED_DATASETS_DIR),
    ]
    return [(m, a, v) for m, a, v in out if hasattr(m, a)]


def point_clients_at(url: str, hf_home: str | Path) -> None:
    """Outside pytest (bench/): set env and module constants so this process talks to the stub."""
    os.environ["HF_ENDPOINT"] = url
    os.environ["HF_HOME"] = str(hf_home)
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    for mod, attr, value in client_settings(url, hf_home):
        setattr(mod, attr, value)
