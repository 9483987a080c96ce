"""`make run`: the whole local stack in one foreground process.

Starts a local S3 server (unless FERRY_S3_ENDPOINT names one), then the catalog,
importer and exporter gRPC services and the gateway, each as a child process in
its own session, waits for each to report healthy, prints where each listens, and
then supervises them: a child that exits without being asked is restarted after a
back-off (1, 2, 4, 8 s, then 8 s), its exit code or signal logged; a child that dies
5 times within 60 s stops the stack (exit code 1), which prints its name, how it
ended and its last log lines. On Ctrl-C or SIGTERM everything stops in reverse
order (gateway first, object store last), escalating to SIGKILL only after a grace
period. The pids are kept in $FERRY_DATA_DIR/run/pids.json while it runs.

Why a loop of our own rather than a process supervisor library (judged against honcho 2.0, supervisor 4.3
and circus 0.19): honcho runs a Procfile the Foreman way, every process at once, and stops them all when one
exits: no restart at all. supervisord is a daemon driven by ini files and XML-RPC whose retry policy counts
failed *starts* with a linear back-off (a service that ran and then died is restarted at once, forever), so
neither 1, 2, 4, 8 s nor "5 deaths in 60 s stops the stack with the last log lines" can be had from it. circus
brings its own arbiter, ZeroMQ and signal handling, and its flapping plugin pauses a watcher for a fixed
`retry_in` rather than backing off. None of them starts the services in order behind health checks (gRPC
health, the gateway's /healthz), ties each child to this process's life (PR_SET_PDEATHSIG) or keeps the
signal-as-a-flag main loop; the messages and timings tests/test_stack_supervise.py and tests/test_make_run.py
pin would have to be rebuilt around any of them. What is needed here is ~80 lines: `Backoff` (the policy,
unit-tested on its own) and `Stack.supervise` (one pass).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import grpc
import urllib3
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import Field, field_validator

from ferry import config as c
from ferry import procs, seaweed, tokens

ROOT = Path(__file__).resolve().parent.parent
LOCAL_DEV_ORIGINS = ",".join(f"http://{host}:{port}" for port in (5173, 3000) for host in ("localhost", "127.0.0.1"))


class StackConfig(c.Settings):
    """What `make run` itself reads; the variables are declared with the services that read them too, with
    `make run`'s own defaults here."""

    data_dir: Path = c.data_dir(ROOT / ".ferry-data", doc_default="`.ferry-data` in the repository")
    # Unset: make run starts a local object store.
    s3_endpoint: str = c.S3Config.declared("endpoint", default="")
    local_s3_port: c.Port = Field(8333, validation_alias="FERRY_LOCAL_S3_PORT",
                                  description="port of the local SeaweedFS started when `FERRY_S3_ENDPOINT` is unset")
    gateway_port: c.Port = c.gateway_port()
    catalog_addr: c.Address = c.catalog_addr()
    importer_addr: c.Address = c.importer_addr()
    exporter_addr: c.Address = c.exporter_addr()
    grace: float = c.shutdown_grace()
    # The services' gRPC listen address: loopback only on a dev machine unless the operator says otherwise.
    grpc_host: c.GrpcHost = c.grpc_host("127.0.0.1")
    # Browser origins the gateway serves: the seeds' web clients' dev servers (Vite :5173, create-react-app
    # :3000) unless the operator says otherwise.
    cors_origins: c.OriginsText = c.cors_origins(LOCAL_DEV_ORIGINS)
    # Set: the importer uses it; unset: make run makes one per data dir.
    token_key: c.Secret = c.token_key()

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        return path.resolve()

    @field_validator("catalog_addr", "importer_addr", "exporter_addr")
    @classmethod
    def _has_port(cls, addr: str) -> str:
        """make run starts each service on the port of its address."""
        if not re.fullmatch(r".+:\d{1,5}", addr) or int(addr.rsplit(":", 1)[1]) > 65535:
            raise ValueError(f"must be host:port under make run, got {addr!r}")
        return addr


def _owner_only(path: Path, new: str) -> str:
    """The secret kept in `path`; on first use `new`, written readable by its owner only (mode 0600)."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(new + "\n")
    return new


def _port(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def how_it_ended(returncode: int) -> str:
    """`exited with code 3` / `killed by SIGKILL` (Popen gives -N for death by signal N)."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def last_lines(path: Path, n: int = 20) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 64 * 1024))
            return "\n".join(fh.read().decode("utf-8", "replace").splitlines()[-n:])
    except OSError as exc:
        return f"(cannot read {path}: {exc})"


@dataclass
class Backoff:
    """Restart policy of one supervised process.

    The n-th death within `window` seconds waits `first * 2**(n-1)` seconds (capped at `cap`) before the
    restart; the `max_deaths`-th gives up. A process that stays up for `window` seconds starts afresh at `first`.
    """

    first: float = 1.0
    cap: float = 8.0
    max_deaths: int = 5
    window: float = 60.0
    deaths: deque[float] = field(default_factory=deque)

    def died(self, now: float) -> float | None:
        """Record a death at `now`: seconds to wait before restarting, or None when it keeps dying."""
        self.deaths.append(now)
        while self.deaths and self.deaths[0] <= now - self.window:
            self.deaths.popleft()
        if len(self.deaths) >= self.max_deaths:
            return None
        return float(min(self.cap, self.first * 2 ** (len(self.deaths) - 1)))


class Process(Protocol):
    """What the supervisor needs of a child process (subprocess.Popen; a fake in unit tests)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


@dataclass
class Child:
    name: str
    where: str
    launch: Callable[[], Process]  # starts it (again); does not wait for it to be ready
    ready: Callable[[], bool]  # one quick health probe
    log_path: Path
    stop_grace: float = 25.0
    proc: Process | None = None
    restarts: Backoff = field(default_factory=Backoff)
    restart_at: float | None = None  # dead, to be started again at this time
    restarted_at: float | None = None  # started again at this time, not healthy yet
    last_exit: str = ""

    def start(self) -> Process:
        self.proc = self.launch()
        return self.proc

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def grpc_ready(target: str, timeout: float = 0.5) -> bool:
    with grpc.insecure_channel(target) as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""),
                                                              timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


def http_ready(url: str, timeout: float = 1.0) -> bool:
    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=timeout, read=5.0), retries=False)
    try:
        return bool(http.request("GET", url).status == 200)
    except urllib3.exceptions.HTTPError:
        return False


@dataclass
class Stack:
    cfg: StackConfig
    children: list[Child] = field(default_factory=list)
    store: seaweed.Seaweed | None = None

    def local_s3_credentials(self) -> tuple[str, str]:
        """Keys for the local S3 server, made once per data dir and reused."""
        made = json.dumps({"access_key": "ferry-local", "secret_key": secrets.token_urlsafe(24)})
        creds = json.loads(_owner_only(self.cfg.data_dir / "s3" / "credentials.json", made))
        return creds["access_key"], creds["secret_key"]

    def local_token_key(self) -> str:
        """The key that seals per-request HF tokens into import jobs (so a restarted importer can resume them),
        made once per data dir like the local S3 keys."""
        return _owner_only(self.cfg.data_dir / "importer-token.key", tokens.new_key())

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT)
        env["FERRY_DATA_DIR"] = str(self.cfg.data_dir)
        env["FERRY_CATALOG_ADDR"] = self.cfg.catalog_addr
        env["FERRY_IMPORTER_ADDR"] = self.cfg.importer_addr
        env["FERRY_EXPORTER_ADDR"] = self.cfg.exporter_addr
        env["FERRY_GATEWAY_PORT"] = str(self.cfg.gateway_port)
        env["FERRY_GRPC_HOST"] = self.cfg.grpc_host
        env["FERRY_CORS_ORIGINS"] = self.cfg.cors_origins
        if self.store is not None:
            env["FERRY_S3_ENDPOINT"] = f"http://{self.store.endpoint}"
            env["FERRY_S3_ACCESS_KEY"] = self.store.access_key
            env["FERRY_S3_SECRET_KEY"] = self.store.secret_key
        return env

    def _log_path(self, name: str) -> Path:
        return self.cfg.data_dir / "logs" / f"{name}.log"

    def _popen(self, name: str, module: str, extra: dict[str, str]) -> Process:
        env = self.child_env()
        env.update(extra)
        log = open(self._log_path(name), "ab")
        try:
            return subprocess.Popen([sys.executable, "-m", module], env=env, cwd=ROOT, stdout=log,
                                    stderr=subprocess.STDOUT, preexec_fn=procs.own_session_tied_to_parent())
        finally:
            log.close()

    def spawn(self, name: str, module: str, where: str, ready: Callable[[], bool],
              extra: dict[str, str] | None = None) -> Child:
        child = Child(name, where, lambda: self._popen(name, module, extra or {}), ready, self._log_path(name),
                      stop_grace=self.cfg.grace + 5)
        child.start()
        self.children.append(child)
        return child

    def _launch_store(self) -> Process:
        """Start (or start again, on the same port with the same keys) the local SeaweedFS."""
        access, secret = self.local_s3_credentials()
        port = _port(self.store.endpoint) if self.store is not None else self.cfg.local_s3_port
        self.store = seaweed.start(self.cfg.data_dir / "s3", access, secret, s3_port=port, wait=False)
        return self.store.proc

    def start(self) -> None:
        (self.cfg.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        if not self.cfg.s3_endpoint:
            print(f"starting local object store (SeaweedFS) on 127.0.0.1:{self.cfg.local_s3_port} ...", flush=True)
            store = Child("object store", "", self._launch_store, lambda: self.store is not None and self.store.ready(),
                          self.cfg.data_dir / "s3" / "weed.log", stop_grace=15.0)
            store.start()
            assert self.store is not None
            store.where = f"http://{self.store.endpoint}  (bucket from FERRY_S3_BUCKET)"
            self.children.append(store)
            self.wait_ready(store)

        def grpc_child(name: str, addr: str, extra: dict[str, str]) -> Child:
            target = addr.replace("localhost", "127.0.0.1")
            return self.spawn(name, f"services.{name}", addr, lambda: grpc_ready(target),
                              {"FERRY_GRPC_PORT": str(_port(addr)), **extra})

        self.wait_ready(grpc_child("catalog", self.cfg.catalog_addr, {}))
        token = {} if self.cfg.token_key else {"FERRY_TOKEN_KEY": self.local_token_key()}
        services = [grpc_child("importer", self.cfg.importer_addr, token),
                    grpc_child("exporter", self.cfg.exporter_addr, {})]
        for child in services:
            self.wait_ready(child)
        url = f"http://127.0.0.1:{self.cfg.gateway_port}/healthz"
        gateway = self.spawn("gateway", "gateway", f"http://localhost:{self.cfg.gateway_port}",
                             lambda: http_ready(url))
        self.wait_ready(gateway)

    def wait_ready(self, child: Child, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert child.proc is not None
            if (code := child.proc.poll()) is not None:
                raise RuntimeError(f"{child.name} {how_it_ended(code)}; see {child.log_path}")
            if child.ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{child.name} did not become healthy on {child.where} within {timeout:.0f}s")

    def _died(self, child: Child, now: float, how: str) -> bool:
        """Schedule a restart after the back-off; False when the child keeps dying."""
        child.last_exit = how
        child.restarted_at = None
        delay = child.restarts.died(now)
        deaths = f"{len(child.restarts.deaths)} time(s) within {child.restarts.window:.0f}s"
        if delay is None:
            print(f"{child.name} {how}; it died {deaths}: giving up.\n"
                  f"last lines of {child.log_path}:\n{last_lines(child.log_path)}", flush=True)
            return False
        print(f"{child.name} {how} (died {deaths}); restarting it in {delay:.0f}s", flush=True)
        child.restart_at = now + delay
        return True

    def supervise(self, now: float) -> Child | None:
        """One pass over the children: notice deaths, restart those whose back-off is over, report recoveries.
        Returns the child that keeps dying, if one does (the stack then stops)."""
        for child in self.children:
            assert child.proc is not None
            if child.restart_at is None:
                code = child.proc.poll()
                if code is not None:
                    if not self._died(child, now, f"(pid {child.proc.pid}) {how_it_ended(code)}"):
                        return child
                elif child.restarted_at is not None and child.ready():
                    print(f"{child.name} is healthy again, {now - child.restarted_at:.1f}s after its restart",
                          flush=True)
                    child.restarted_at = None
            elif now >= child.restart_at:
                child.restart_at = None
                try:
                    child.start()
                except (OSError, RuntimeError) as exc:
                    if not self._died(child, now, f"could not be started: {exc}"):
                        return child
                    continue
                child.restarted_at = now
                print(f"restarted {child.name} (pid {child.pid})", flush=True)
                self.write_pids()
        return None

    @property
    def pids_path(self) -> Path:
        return self.cfg.data_dir / "run" / "pids.json"

    def write_pids(self) -> None:
        """{"stack": pid, "<child>": pid, ...} for operators and tests; replaced atomically."""
        pids = {"stack": os.getpid(), **{ch.name: ch.pid for ch in self.children if ch.proc is not None}}
        self.pids_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.pids_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(pids) + "\n")
        tmp.replace(self.pids_path)

    def stop(self) -> None:
        """Reverse order: nothing calls a service after it is gone."""
        for child in reversed(self.children):
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
                try:
                    child.proc.wait(child.stop_grace)
                except subprocess.TimeoutExpired:
                    print(f"{child.name} did not stop in time; killing it", flush=True)
                    child.proc.kill()
                    child.proc.wait(10)
        self.pids_path.unlink(missing_ok=True)

    def describe(self) -> str:
        lines = ["Ferry is running:"]
        if self.store is None:
            lines.append(f"  object store  {self.cfg.s3_endpoint}")
        for child in self.children:
            lines.append(f"  {child.name:<13} {child.where}  (pid {child.pid})")
        lines.append(f"  API docs      http://localhost:{self.cfg.gateway_port}/docs")
        lines.append(f"  data          {self.cfg.data_dir}   logs: {self.cfg.data_dir / 'logs'}   pids: {self.pids_path}")
        lines.append("Press Ctrl-C to stop.")
        return "\n".join(lines)


def main() -> int:
    # If whatever started us (make, a shell, a test) dies, stop everything cleanly.
    procs.die_with_parent(signal.SIGTERM)
    cfg = c.read_or_exit("make run", StackConfig.from_env)
    stack = Stack(cfg)
    stop = procs.StopSignals()
    code = 0
    try:
        stack.start()
        stack.write_pids()
        print(stack.describe(), flush=True)
        while not stop.wait(0.5):
            failed = stack.supervise(time.monotonic())
            if failed is not None:
                print(f"{failed.name} keeps dying ({failed.last_exit}); stopping Ferry", flush=True)
                code = 1
                break
    except Exception as exc:  # noqa: BLE001 - reported, then everything is stopped
        print(f"failed to start Ferry: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        print("stopping Ferry ...", flush=True)
        stack.stop()
        print("stopped.", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
