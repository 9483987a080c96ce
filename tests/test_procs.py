"""Children started in their own session still die when their parent is killed outright."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent

PARENT = """
import subprocess, sys, time
from ferry.procs import own_session_tied_to_parent
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                         preexec_fn=own_session_tied_to_parent())
print(child.pid, flush=True)
time.sleep(120)
"""


def test_child_dies_when_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    child = psutil.Process(child_pid)
    assert child.is_running() and os.getsid(child_pid) == child_pid  # its own session
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not child.is_running() or child.status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.05)
    else:
        child.kill()
        raise AssertionError("the child outlived its SIGKILLed parent")


STOPPER = """
import sys, time
from ferry.procs import StopSignals
stop = StopSignals()
print("ready", flush=True)
while not stop.wait(float(sys.argv[1])):
    pass
print(f"stopped by {stop.signum}", flush=True)
"""


def _stopper(poll: str, preexec: object = None) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", STOPPER, poll], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            preexec_fn=preexec)  # type: ignore[arg-type]
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def test_stop_signals_are_never_lost_whenever_they_land() -> None:
    import random

    rng = random.Random(7)
    for _ in range(12):
        proc = _stopper("0.0005")  # a tight loop: the signal lands anywhere in it
        time.sleep(rng.uniform(0, 0.05))
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=5)
        assert out == f"stopped by {int(signal.SIGTERM)}\n"


def test_a_blocked_sigterm_inherited_from_the_parent_is_unblocked() -> None:
    # Whoever starts a server may hand it a mask with SIGTERM blocked (a mask survives exec).
    proc = _stopper("0.5", lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}))
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=5)
    assert out.startswith("stopped by")
    # own_session_tied_to_parent() never hands a blocked SIGTERM down either.
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        from ferry.procs import own_session_tied_to_parent

        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                                 preexec_fn=own_session_tied_to_parent())
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    try:
        blocked = next(line for line in Path(f"/proc/{child.pid}/status").read_text().splitlines()
                       if line.startswith("SigBlk:"))
        assert not int(blocked.split()[1], 16) & (1 << (signal.SIGTERM - 1)), blocked
    finally:
        child.kill()
        child.wait()


def test_sigusr1_prints_every_threads_stack_and_keeps_running() -> None:
    proc = _stopper("0.5")
    proc.send_signal(signal.SIGUSR1)
    time.sleep(0.5)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=5)
    assert out.startswith("stopped by") and "Current thread" in err and 'File "<string>"' in err
