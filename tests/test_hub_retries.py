"""The Hub client's retry policy for file bytes, against the stand-in hub (a real HTTP server that cuts
connections): failures in a row are bounded, a byte received starts the count again, and the waits back off."""

from __future__ import annotations

import time

import pytest

from ferry.errors import Unavailable
from services.importer.hub import MAX_ATTEMPTS, HubClient, Meter
from tests.hubstub.stub import StubHub

REPO = "openai/openai_humaneval"
PATH = "openai_humaneval/test-00000-of-00001.parquet"


def test_drops_after_progress_do_not_use_up_the_attempts(hub: StubHub) -> None:
    client = HubClient(hub.url)
    try:
        size = (hub.repo_dir(REPO) / PATH).stat().st_size
        drops = MAX_ATTEMPTS + 2  # more cuts than attempts, each after some bytes arrived
        for _ in range(drops):
            hub.drop_connection_once("openai_humaneval/test-", after_bytes=size // (drops + 2))
        data = client.open_file(REPO, hub.repo_sha(REPO), PATH, size, None, Meter()).read_range(0, size)
        assert data == (hub.repo_dir(REPO) / PATH).read_bytes()
        ranges = [r.get("range") for r in hub.requests if r["path"].endswith(PATH)]
        assert len(ranges) == drops + 1 and len(set(ranges)) == drops + 1  # each retry resumed further on
    finally:
        client.close()


def test_failures_in_a_row_back_off_then_name_the_file_and_byte(hub: StubHub) -> None:
    client = HubClient(hub.url)
    try:
        size = (hub.repo_dir(REPO) / PATH).stat().st_size
        hub.drop_connection_once("openai_humaneval/test-", after_bytes=1000)
        for _ in range(MAX_ATTEMPTS + 3):
            hub.drop_connection_once("openai_humaneval/test-", after_bytes=0)
        t0 = time.monotonic()
        with pytest.raises(Unavailable, match=rf"download of {REPO}/{PATH} failed after {MAX_ATTEMPTS} attempts "
                                              rf"at byte 1000 of {size}: "):
            client.open_file(REPO, hub.repo_sha(REPO), PATH, size, None, Meter()).read_range(0, size)
        # One attempt with progress, then MAX_ATTEMPTS - 1 more without: 5 failures in a row in all, with
        # 0.2 + 0.4 + 0.8 + 1.6 s of waits between them.
        assert time.monotonic() - t0 >= 3.0
        ranges = [r.get("range") for r in hub.requests if r["path"].endswith(PATH)]
        assert ranges == [f"bytes=0-{size - 1}"] + [f"bytes=1000-{size - 1}"] * (MAX_ATTEMPTS - 1)
    finally:
        client.close()
