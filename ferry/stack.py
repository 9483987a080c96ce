"""`make run`: the whole local stack in one foreground process.

Starts a local S3 server (unless FERRY_S3_ENDPOINT names one), then the catalog,
importer and exporter gRPC services and the gateway, each as a child process in
its own session, waits for each to report healthy, prints where each listens, and
on Ctrl-C or SIGTERM stops them in reverse order (gateway first, object store
last), escalating to SIGKILL only after a grace period. If any child dies, the
rest are stopped and the exit code is non-zero.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import urllib3
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ferry import config as c
from ferry import procs, seaweed

ROOT = Path(__file__).resolve().parent.parent


LOCAL_DEV_ORIGINS = ",".join(f"http://{host}:{port}" for port in (5173, 3000) for host in ("localhost", "127.0.0.1"))


@dataclass(frozen=True)
class StackConfig:
    data_dir: Path
    s3_endpoint: str
    local_s3_port: int
    gateway_port: int
    catalog_addr: str
    importer_addr: str
    exporter_addr: str
    grace: float

    @classmethod
    def from_env(cls) -> StackConfig:
        return cls(
            data_dir=Path(c.get_str("FERRY_DATA_DIR", str(ROOT / ".ferry-data"))).resolve(),
            s3_endpoint=c.get_str("FERRY_S3_ENDPOINT", ""),
            local_s3_port=c.get_int("FERRY_LOCAL_S3_PORT", 8333, minimum=0),
            gateway_port=c.get_int("FERRY_GATEWAY_PORT", 8000, minimum=0),
            catalog_addr=c.get_str("FERRY_CATALOG_ADDR", "localhost:50051"),
            importer_addr=c.get_str("FERRY_IMPORTER_ADDR", "localhost:50052"),
            exporter_addr=c.get_str("FERRY_EXPORTER_ADDR", "localhost:50053"),
            grace=c.get_float("FERRY_SHUTDOWN_GRACE_SECONDS", 20.0),
        )


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


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    where: str


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
        return _owner_only(self.cfg.data_dir / "importer-token.key", base64.b64encode(os.urandom(32)).decode())

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT)
        env["FERRY_DATA_DIR"] = str(self.cfg.data_dir)
        env["FERRY_CATALOG_ADDR"] = self.cfg.catalog_addr
        env["FERRY_IMPORTER_ADDR"] = self.cfg.importer_addr
        env["FERRY_EXPORTER_ADDR"] = self.cfg.exporter_addr
        env["FERRY_GATEWAY_PORT"] = str(self.cfg.gateway_port)
        if self.store is not None:
            env["FERRY_S3_ENDPOINT"] = f"http://{self.store.endpoint}"
            env["FERRY_S3_ACCESS_KEY"] = self.store.access_key
            env["FERRY_S3_SECRET_KEY"] = self.store.secret_key
        return env

    def spawn(self, name: str, module: str, where: str, extra: dict[str, str] | None = None) -> Child:
        env = self.child_env()
        env.update(extra or {})
        log = open(self.cfg.data_dir / "logs" / f"{name}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", module], env=env, cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=procs.own_session_tied_to_parent())
        log.close()
        child = Child(name, proc, where)
        self.children.append(child)
        return child

    def start(self) -> None:
        (self.cfg.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        if not self.cfg.s3_endpoint:
            access, secret = self.local_s3_credentials()
            print(f"starting local object store (SeaweedFS) on 127.0.0.1:{self.cfg.local_s3_port} ...", flush=True)
            self.store = seaweed.start(self.cfg.data_dir / "s3", access, secret, s3_port=self.cfg.local_s3_port)
        catalog = self.spawn("catalog", "services.catalog", self.cfg.catalog_addr,
                             {"FERRY_GRPC_PORT": str(_port(self.cfg.catalog_addr))})
        self.wait_grpc(catalog)
        for name, addr in (("importer", self.cfg.importer_addr), ("exporter", self.cfg.exporter_addr)):
            extra = {"FERRY_GRPC_PORT": str(_port(addr))}
            if name == "importer" and not os.environ.get("FERRY_TOKEN_KEY"):
                extra["FERRY_TOKEN_KEY"] = self.local_token_key()
            self.spawn(name, f"services.{name}", addr, extra)
        for child in self.children[1:]:
            self.wait_grpc(child)
        # The seeds' web clients run on these dev servers (Vite :5173, create-react-app :3000) and call :8000.
        cors = {} if os.environ.get("FERRY_CORS_ORIGINS") else {"FERRY_CORS_ORIGINS": LOCAL_DEV_ORIGINS}
        gateway = self.spawn("gateway", "gateway", f"http://localhost:{self.cfg.gateway_port}", cors)
        self.wait_http(gateway, f"http://127.0.0.1:{self.cfg.gateway_port}/healthz")

    def _check_alive(self, child: Child) -> None:
        if child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited with code {child.proc.returncode}; "
                               f"see {self.cfg.data_dir / 'logs' / (child.name + '.log')}")

    def wait_grpc(self, child: Child, timeout: float = 60.0) -> None:
        target = child.where.replace("localhost", "127.0.0.1")
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                self._check_alive(child)
                try:
                    resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                    if resp.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        raise RuntimeError(f"{child.name} did not become healthy on {child.where} within {timeout:.0f}s")

    def wait_http(self, child: Child, url: str, timeout: float = 60.0) -> None:
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=1.0, read=5.0), retries=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive(child)
            try:
                if http.request("GET", url).status == 200:
                    return
            except urllib3.exceptions.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{child.name} did not become healthy at {url} within {timeout:.0f}s")

    def stop(self) -> None:
        """Reverse order: nothing calls a service after it is gone."""
        for child in reversed(self.children):
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
                try:
                    child.proc.wait(self.cfg.grace + 5)
                except subprocess.TimeoutExpired:
                    print(f"{child.name} did not stop in time; killing it", flush=True)
                    child.proc.kill()
                    child.proc.wait(10)
        if self.store is not None:
            self.store.stop(grace=15.0)

    def describe(self) -> str:
        lines = ["Ferry is running:"]
        if self.store is not None:
            lines.append(f"  object store  http://{self.store.endpoint}  (bucket from FERRY_S3_BUCKET)")
        else:
            lines.append(f"  object store  {self.cfg.s3_endpoint}")
        for child in self.children:
            lines.append(f"  {child.name:<13} {child.where}  (pid {child.proc.pid})")
        lines.append(f"  API docs      http://localhost:{self.cfg.gateway_port}/docs")
        lines.append(f"  data          {self.cfg.data_dir}   logs: {self.cfg.data_dir / 'logs'}")
        lines.append("Press Ctrl-C to stop.")
        return "\n".join(lines)


def main() -> int:
    # If whatever started us (make, a shell, a test) dies, stop everything cleanly.
    procs.die_with_parent(signal.SIGTERM)
    cfg = StackConfig.from_env()
    stack = Stack(cfg)
    stop = procs.StopSignals()
    code = 0
    try:
        stack.start()
        print(stack.describe(), flush=True)
        while not stop.wait(0.5):
            failed = [child for child in stack.children if child.proc.poll() is not None]
            if failed:
                for child in failed:
                    print(f"{child.name} exited unexpectedly (code {child.proc.returncode}); stopping", flush=True)
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
