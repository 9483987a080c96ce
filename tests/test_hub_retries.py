"""The Hub client's retry policy for file bytes, against the stand-in hub (a real HTTP server that cuts
connections): failures in a row are bounded, a byte received starts the count again, and the waits back off; a
Hub that always delivers a little and then drops is given up after the download deadline, and every reconnect is
reported to the meter's on_retry."""

from __future__ import annotations

import re
import time

import pytest

from ferry.errors import Unavailable
from services.importer.hub import MAX_ATTEMPTS, DownloadGaveUp, DownloadRetry, HubClient, Meter
from tests.hubstub.stub import StubHub

REPO = "openai/openai_humaneval"
PATH = "openai_humaneval/test-00000-of-00001.parquet"


def _ranges(hub: StubHub, expected: int) -> list[str | None]:
    """The Range of every request for PATH. The stand-in hub logs a request once it has answered, which can be
    a moment after the client read the last byte, so wait (briefly) for the log to have `expected` entries."""
    deadline = time.monotonic() + 5
    while True:
        ranges = [r.get("range") for r in hub.requests if r["path"].endswith(PATH)]
        if len(ranges) >= expected or time.monotonic() > deadline:
            return ranges
        time.sleep(0.02)


def test_drops_after_progress_do_not_use_up_the_attempts(hub: StubHub) -> None:
    client = HubClient(hub.url)
    try:
        size = (hub.repo_dir(REPO) / PATH).stat().st_size
        drops = MAX_ATTEMPTS + 2  # more cuts than attempts, each after some bytes arrived
        for _ in range(drops):
            hub.drop_connection_once("openai_humaneval/test-", after_bytes=size // (drops + 2))
        data = client.open_file(REPO, hub.repo_sha(REPO), PATH, size, None, Meter()).read_range(0, size)
        assert data == (hub.repo_dir(REPO) / PATH).read_bytes()
        ranges = _ranges(hub, drops + 1)
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
        ranges = _ranges(hub, MAX_ATTEMPTS)
        assert ranges == [f"bytes=0-{size - 1}"] + [f"bytes=1000-{size - 1}"] * (MAX_ATTEMPTS - 1)
    finally:
        client.close()


def test_a_hub_that_keeps_dropping_is_given_up_after_the_deadline_and_every_retry_is_heard(hub: StubHub) -> None:
    # The download deadline counts from the first drop; every connection delivers 1,000 bytes then drops, so
    # the failures-in-a-row bound never trips and only the deadline ends the read.
    client = HubClient(hub.url, download_deadline=1.0)
    heard: list[DownloadRetry] = []
    try:
        size = (hub.repo_dir(REPO) / PATH).stat().st_size
        # 80 kB at 1,000 bytes a connection: the waits between reconnects alone (0.2 s each) outlast the deadline.
        assert size > 20_000
        hub.drop_every_connection("openai_humaneval/test-", after_bytes=1000)
        f = client.open_file(REPO, hub.repo_sha(REPO), PATH, size, None, Meter(on_retry=heard.append))
        with pytest.raises(DownloadGaveUp) as err:
            f.read_range(0, size)
        retries = [e for e in heard if not e.ended]
        n = len(retries)
        assert n >= 2
        assert err.value.code == "UNAVAILABLE"
        assert re.fullmatch(
            rf"the Hub kept dropping the connection: download of {REPO}/{PATH} gave up at byte {(n + 1) * 1000:,} "
            rf"of {size:,} after {n} reconnects \(still incomplete \d+s after its first drop: "
            rf"FERRY_IMPORT_DOWNLOAD_DEADLINE_SECONDS=1\); last cause: .+", err.value.message), err.value.message
        # Each reconnect resumed where the cut left off, and was reported before it was made.
        assert [(e.path, e.retry, e.position, e.size) for e in retries] == [
            (PATH, k, k * 1000, size) for k in range(1, n + 1)]
        assert all(e.cause and e.read == retries[0].read for e in retries)
        # Then the end of the read, so a message about its retries can be taken back.
        assert heard[-1].ended and heard[-1].read == retries[0].read and heard[-1].retry == n
        # n + 1 connections (the stub may not have logged the last cut one yet), each resuming at the byte reached.
        ranges = [r.get("range") for r in hub.requests if r["path"].endswith(PATH)]
        assert n <= len(ranges) <= n + 1
        assert ranges == [f"bytes={k * 1000}-{size - 1}" for k in range(len(ranges))]
    finally:
        hub.drop_every_connection(None)
        client.close()


def test_a_read_that_recovers_reports_its_retry_then_its_end(hub: StubHub) -> None:
    client = HubClient(hub.url, download_deadline=1.0)
    heard: list[DownloadRetry] = []
    try:
        size = (hub.repo_dir(REPO) / PATH).stat().st_size
        hub.drop_connection_once("openai_humaneval/test-", after_bytes=5000)
        f = client.open_file(REPO, hub.repo_sha(REPO), PATH, size, None, Meter(on_retry=heard.append))
        assert f.read_range(0, size) == (hub.repo_dir(REPO) / PATH).read_bytes()
        assert [(e.retry, e.position, e.ended) for e in heard] == [(1, 5000, False), (1, size, True)]
        # A read that never dropped reports nothing.
        heard.clear()
        assert f.read_range(0, 1000) == (hub.repo_dir(REPO) / PATH).read_bytes()[:1000]
        assert heard == []
    finally:
        client.close()


def test_the_reads_of_one_file_share_its_reconnects(hub: StubHub) -> None:
    # Short reads each complete within the deadline, but together they use up the file's reconnects.
    client = HubClient(hub.url, max_reconnects=5)
    heard: list[DownloadRetry] = []
    try:
        size = (hub.repo_dir(REPO) / PATH).stat().st_size
        data = (hub.repo_dir(REPO) / PATH).read_bytes()
        hub.drop_every_connection("openai_humaneval/test-", after_bytes=1000)
        f = client.open_file(REPO, hub.repo_sha(REPO), PATH, size, None, Meter(on_retry=heard.append))
        assert f.read_range(0, 2500) == data[:2500]  # 2 reconnects
        assert f.read_range(10_000, 2500) == data[10_000:12_500]  # 4
        with pytest.raises(DownloadGaveUp) as err:
            f.read_range(20_000, 2500)  # the 5th, then a drop past the bound
        message, _, cause = err.value.message.partition("; last cause: ")
        assert message == (
            f"the Hub kept dropping the connection: download of {REPO}/{PATH} gave up at byte 22,000 of {size:,} "
            f"after 5 reconnects (the most a file may take: FERRY_IMPORT_DOWNLOAD_MAX_RECONNECTS=5)")
        assert "(received 1000 bytes, expected 1500)" in cause  # httpx's words for the cut
        assert [(e.retry, e.position, e.ended) for e in heard] == [
            (1, 1000, False), (2, 2000, False), (2, 2500, True),
            (3, 11_000, False), (4, 12_000, False), (4, 12_500, True),
            (5, 21_000, False), (5, 22_000, True)]
    finally:
        hub.drop_every_connection(None)
        client.close()
