"""Child processes that cannot outlive their parent.

Ferry's supervisor (`make run`) and the test fixtures start servers in sessions
of their own (so a terminal's Ctrl-C reaches only the supervisor, which stops them
in order). The price is that a parent killed outright would orphan them; the
kernel's parent-death signal closes that gap.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import signal
import sys
import time
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` to this process when its parent exits (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def own_session_tied_to_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A Popen preexec_fn: new session, and `sig` when the parent dies."""

    def setup() -> None:
        os.setsid()
        die_with_parent(sig)
        # A signal mask survives exec: never hand a blocked SIGTERM/SIGINT down to a server.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})

    return setup


class StopSignals:
    """SIGTERM and SIGINT as a flag that a loop polls, and SIGUSR1 to print every thread's stack.

    The handler only stores a number: a handler that takes a lock (threading.Event.set() does) can deadlock
    when the signal lands while the main thread holds that same lock, e.g. inside Event.wait(). `kill -USR1`
    on a process that seems stuck prints where each thread is to stderr (the process's log).
    """

    def __init__(self) -> None:
        self.signum = 0
        # Whoever started us may have left these blocked or ignored; a server must always hear them.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)
        faulthandler.register(signal.SIGUSR1, all_threads=True)

    def _handle(self, signum: int, _frame: object) -> None:
        if not self.signum:
            self.signum = signum

    def wait(self, timeout: float | None = None, poll: float = 0.1) -> bool:
        """True once a stop signal has arrived; False if `timeout` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.signum:
            left = poll if deadline is None else min(poll, deadline - time.monotonic())
            if left <= 0:
                return False
            time.sleep(left)  # a signal runs the handler during the sleep; the loop then sees the flag
        return True
