"""`make run`'s supervision policy without real processes: back-off, restart, recovery report, give-up, stop order.

tests/test_make_run.py kills a real service under the real stack; this covers the timing rules exactly.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from ferry.stack import Backoff, Child, Stack, StackConfig, how_it_ended


class FakeProc:
    next_pid = 1000

    def __init__(self, log: list[str], name: str) -> None:
        FakeProc.next_pid += 1
        self.pid = FakeProc.next_pid
        self.returncode: int | None = None
        self.log, self.name = log, name

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, sig: int) -> None:
        self.log.append(f"{self.name} {signal.Signals(sig).name}")
        self.returncode = -sig

    def wait(self, timeout: float | None = None) -> int:
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _stack(tmp_path: Path) -> Stack:
    cfg = StackConfig(data_dir=tmp_path, s3_endpoint="http://127.0.0.1:1", local_s3_port=0, gateway_port=1,
                      catalog_addr="127.0.0.1:2", importer_addr="127.0.0.1:3", exporter_addr="127.0.0.1:4", grace=1)
    return Stack(cfg)


def _child(stack: Stack, name: str, events: list[str], healthy: list[bool]) -> Child:
    log_path = stack.cfg.data_dir / f"{name}.log"
    log_path.write_text("".join(f"{name} line {i}\n" for i in range(50)))

    def launch() -> FakeProc:
        events.append(f"{name} launched")
        return FakeProc(events, name)

    child = Child(name, "somewhere", launch, lambda: healthy[0], log_path)
    child.start()
    stack.children.append(child)
    return child


def _end(child: Child, returncode: int) -> None:
    """The child's process exits (as seen by the next poll)."""
    assert isinstance(child.proc, FakeProc)
    child.proc.returncode = returncode


def test_backoff_doubles_up_to_the_cap_and_gives_up_on_the_fifth_death_within_a_minute() -> None:
    b = Backoff()
    assert [b.died(t) for t in (0.0, 2.0, 5.0, 10.0)] == [1.0, 2.0, 4.0, 8.0]
    assert b.died(19.0) is None
    capped = Backoff(max_deaths=10)
    assert [capped.died(float(t)) for t in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_backoff_forgets_deaths_older_than_the_window() -> None:
    b = Backoff()
    assert [b.died(t) for t in (0.0, 10.0, 20.0, 30.0)] == [1.0, 2.0, 4.0, 8.0]
    # The first death is now more than 60 s ago: four in the window, not five, so no give-up.
    assert b.died(61.0) == 8.0
    # A long quiet spell starts the back-off afresh.
    assert b.died(500.0) == 1.0


def test_how_it_ended() -> None:
    assert how_it_ended(-9) == "killed by SIGKILL"
    assert how_it_ended(1) == "exited with code 1"
    assert how_it_ended(-200) == "killed by signal 200"


def test_a_dead_child_is_restarted_after_its_backoff_and_reported_healthy(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    stack = _stack(tmp_path)
    events: list[str] = []
    healthy = [True]
    catalog = _child(stack, "catalog", events, healthy)
    importer = _child(stack, "importer", events, healthy)
    first_pid = importer.pid
    assert stack.supervise(0.0) is None and events == ["catalog launched", "importer launched"]

    _end(importer, -signal.SIGKILL)  # kill -9
    healthy[0] = False
    assert stack.supervise(10.0) is None
    out = capsys.readouterr().out
    assert f"importer (pid {first_pid}) killed by SIGKILL" in out and "restarting it in 1s" in out
    assert stack.supervise(10.5) is None
    assert events[-1] == "importer launched" and len(events) == 2, "restarted before its back-off"
    assert stack.supervise(11.0) is None
    assert len(events) == 3 and importer.pid != first_pid
    assert f"restarted importer (pid {importer.pid})" in capsys.readouterr().out
    pids = json.loads((tmp_path / "run" / "pids.json").read_text())
    assert pids["importer"] == importer.pid and pids["catalog"] == catalog.pid
    assert stack.supervise(11.5) is None
    assert "healthy again" not in capsys.readouterr().out
    healthy[0] = True
    assert stack.supervise(13.0) is None
    assert "importer is healthy again, 2.0s after its restart" in capsys.readouterr().out
    assert catalog.proc is not None and catalog.proc.poll() is None and events.count("catalog launched") == 1


def test_a_child_that_keeps_dying_stops_the_stack_with_its_last_log_lines(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    stack = _stack(tmp_path)
    events: list[str] = []
    _child(stack, "catalog", events, [True])
    exporter = _child(stack, "exporter", events, [True])
    now, delays = 0.0, []
    for _ in range(4):
        _end(exporter, 3)
        assert stack.supervise(now) is None
        assert exporter.restart_at is not None
        delays.append(exporter.restart_at - now)
        now = exporter.restart_at
        assert stack.supervise(now) is None and exporter.proc is not None and exporter.proc.poll() is None
    assert delays == [1.0, 2.0, 4.0, 8.0]
    _end(exporter, 3)
    assert stack.supervise(now + 1) is exporter  # 5th death within 60 s
    out = capsys.readouterr().out
    assert "exporter (pid" in out and "exited with code 3; it died 5 time(s) within 60s: giving up" in out
    assert "exporter line 49" in out and "exporter line 30" in out and "exporter line 29" not in out
    assert exporter.last_exit.endswith("exited with code 3")
    # Then main() stops everything, in reverse order, and the pid file goes.
    stack.stop()
    assert events[-1] == "catalog SIGTERM"
    assert not (tmp_path / "run" / "pids.json").exists()


def test_stop_goes_in_reverse_order_and_does_not_restart(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    events: list[str] = []
    for name in ("object store", "catalog", "importer", "exporter", "gateway"):
        _child(stack, name, events, [True])
    del events[:]
    stack.stop()
    assert events == [f"{n} SIGTERM" for n in ("gateway", "exporter", "importer", "catalog", "object store")]
