"""The code's layout: every service has the same shape, and protobuf/gRPC stay in the modules that translate.

A service's core works on the domain types (ferry/jobs.py, ferry/datasets.py, ferry/canonical.py); only its
servicer.py (protobuf in, core call, protobuf out) and server.py (wiring) see gRPC. In the shared library
only the modules listed in GRPC_MODULES do.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("catalog", "importer", "exporter")
SERVICE_FILES = {"__init__.py", "__main__.py", "config.py", "core.py", "servicer.py", "server.py"}
# The services that run jobs (import, export) keep their job runner in jobs.py.
JOB_RUNNERS = {"importer", "exporter"}
# Modules of ferry/ that speak gRPC or protobuf, and why.
GRPC_MODULES = {
    "ferry/grpcserver.py": "serving: error interceptor, health, reflection, graceful stop",
    "ferry/wire.py": "the protobuf <-> domain translation",
    "ferry/catalog_client.py": "the catalog's gRPC client",
    "ferry/rpcerrors.py": "domain errors <-> gRPC statuses with google.rpc details",
    "ferry/stack.py": "`make run` waits for each service's gRPC health",
}


def _grpc_imports(path: Path) -> list[str]:
    """The gRPC and protobuf modules `path` imports (grpc*, google.protobuf, *_pb2, *_pb2_grpc)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            last = name.rsplit(".", 1)[-1]
            if (name.split(".")[0] in ("grpc", "grpc_health", "grpc_reflection") or name.startswith("google.protobuf")
                    or last.endswith("_pb2") or last.endswith("_pb2_grpc")):
                found.append(name)
    return found


def _python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_service_has_the_same_files() -> None:
    for name in SERVICES:
        folder = ROOT / "services" / name
        files = {p.name for p in folder.glob("*.py")}
        expected = SERVICE_FILES | ({"jobs.py"} if name in JOB_RUNNERS else set())
        assert expected <= files, f"services/{name} lacks {sorted(expected - files)}"


def test_service_cores_import_no_grpc_and_no_protobuf() -> None:
    offenders = {}
    for name in SERVICES:
        for path in _python_files(ROOT / "services" / name):
            if path.name in ("servicer.py", "server.py"):
                continue
            found = _grpc_imports(path)
            if found:
                offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}, f"only servicer.py and server.py may import gRPC or protobuf: {offenders}"


def test_shared_library_speaks_grpc_only_where_it_translates() -> None:
    offenders = {}
    for path in _python_files(ROOT / "ferry"):
        rel = path.relative_to(ROOT).as_posix()
        if rel in GRPC_MODULES or "/v1/" in rel:  # v1/: the generated protobuf code
            continue
        found = _grpc_imports(path)
        if found:
            offenders[rel] = found
    assert offenders == {}, f"ferry/ modules outside {sorted(GRPC_MODULES)} import gRPC or protobuf: {offenders}"


def test_the_checks_see_an_import() -> None:
    assert {"grpc", "ferry.catalog.v1.catalog_pb2"} <= set(_grpc_imports(ROOT / "services/catalog/servicer.py"))
    assert "google.protobuf.timestamp_pb2" in _grpc_imports(ROOT / "ferry/wire.py")
    assert _grpc_imports(ROOT / "services/catalog/core.py") == []


def test_sync_handlers_use_no_context_calls_that_need_await() -> None:
    """The servers are grpc.aio: a plain (sync) handler runs on a thread, where `context.abort()` and friends are
    coroutines that would silently do nothing. Handlers raise ferry.errors instead (ErrorInterceptor)."""
    needs_await = {"abort", "abort_with_status", "read", "write", "send_initial_metadata", "is_active"}
    found = []
    for svc in SERVICES:
        path = ROOT / "services" / svc / "servicer.py"
        for fn in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(fn, ast.FunctionDef):
                continue
            for node in ast.walk(fn):
                if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                        and node.value.id == "context" and node.attr in needs_await):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {fn.name} uses context.{node.attr}")
    assert not found, "\n".join(found)
