"""The manifests' environment matches what the code reads, in both directions.

The variables read are found by scanning the Python source of ferry/, services/ and gateway/
(AST: settings fields declared with `validation_alias="X"` (ferry.config), ferry.config helpers
get_str/get_int/get_float/get_bool/get_list with a literal name, os.environ.get / os.getenv /
os.environ[...] / "X" in os.environ). Which service needs which
variable follows the code: a service needs what its own package reads plus what the ferry/
functions and classes it uses read (e.g. S3Config.from_env -> FERRY_S3_*), transitively.
"""

from __future__ import annotations

import ast
import functools
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.test_deploy_images import stages
from tests.test_deploy_manifests import by_kind, containers, ferry_service_of, https_egress, rendered

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("ferry", "services", "gateway")
HELPERS = {"get_str", "get_int", "get_float", "get_bool", "get_list"}
# os.environ.setdefault(...) is the code configuring a library for itself, not a setting to deploy.
ENV_METHODS = {"get"}
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|_KEYS?$")

# Read by the code but deliberately left out of the manifests. Keep short, say why.
ALLOW_UNSET = {
    # Follows the scheme of FERRY_S3_ENDPOINT (https:// -> TLS); setting it could contradict the endpoint.
    "FERRY_S3_SECURE",
}
# Set in the manifests although no Ferry code reads it. Keep short, say why.
ALLOW_EXTRA = {
    # Read by huggingface_hub/datasets (cache location): points them at the writable scratch volume.
    "HF_HOME",
}


@dataclass
class Unit:
    """A top-level def/class of a module (name) or the module's own top-level code (name None)."""

    module: str
    name: str | None
    reads: set[str] = field(default_factory=set)
    refs: set[tuple[str, str | None]] = field(default_factory=set)


@dataclass
class Scan:
    units: dict[tuple[str, str | None], Unit]
    modules: dict[str, Path]
    non_literal: list[str]

    def reads_of(self, package: str) -> set[str]:
        """Variables read by `package` and by everything it uses, transitively."""
        todo = [key for key in self.units if key[0] == package or key[0].startswith(package + ".")]
        seen: set[tuple[str, str | None]] = set()
        while todo:
            key = todo.pop()
            if key in seen or key not in self.units:
                continue
            seen.add(key)
            todo.extend(self.units[key].refs)
        return {var for key in seen for var in self.units[key].reads}

    def all_reads(self) -> set[str]:
        return {var for unit in self.units.values() for var in unit.reads}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_os_environ(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ" and isinstance(node.value, ast.Name)
            and node.value.id == "os") or (isinstance(node, ast.Name) and node.id == "environ")


def _literal(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _env_reads(tree: ast.AST, where: str) -> tuple[set[str], list[str]]:
    """Literal variable names read in `tree`, and the places that read a non-literal name."""
    names: set[str] = set()
    bad: list[str] = []

    def take(arg: ast.expr | None, node: ast.AST) -> None:
        name = _literal(arg)
        if name is None:
            bad.append(f"{where}:{getattr(node, 'lineno', '?')}")
        else:
            names.add(name)

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
            first = node.args[0] if node.args else None
            for kw in node.keywords:
                if kw.arg == "validation_alias":  # a pydantic-settings field: Field(..., validation_alias="X")
                    take(kw.value, node)
            if fname in HELPERS:
                take(first, node)
            elif fname == "getenv":
                take(first, node)
            elif isinstance(func, ast.Attribute) and func.attr in ENV_METHODS and _is_os_environ(func.value):
                take(first, node)
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_os_environ(node.value):
            take(node.slice, node)
        elif isinstance(node, ast.Compare) and _is_os_environ(node.comparators[0]) \
                and isinstance(node.ops[0], ast.In | ast.NotIn):
            take(node.left, node)
    return names, bad


class _Resolver:
    """Maps names in one module to (module, top-level name) of the scanned code."""

    def __init__(self, module: str, is_package: bool, tree: ast.Module, modules: set[str]) -> None:
        self.module, self.modules = module, modules
        self.aliases: dict[str, str] = {}  # local name -> dotted path (module or module.symbol)
        package = module if is_package else module.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        self.aliases[a.asname] = a.name
                    else:
                        top = a.name.split(".")[0]
                        self.aliases[top] = top
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = package
                    for _ in range(node.level - 1):
                        pkg = pkg.rpartition(".")[0]
                    base = f"{pkg}.{base}" if base else pkg
                for a in node.names:
                    self.aliases[a.asname or a.name] = f"{base}.{a.name}"
        self.top_level = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef
                                                                      | ast.ClassDef)}

    def resolve(self, dotted: str) -> set[tuple[str, str | None]]:
        """`c.S3Config.from_env` -> {("ferry.config", None), ("ferry.config", "S3Config")}."""
        head, _, rest = dotted.partition(".")
        if head in self.aliases:
            path = self.aliases[head] + ("." + rest if rest else "")
        elif head in self.top_level:
            return {(self.module, head)}
        else:
            return set()
        parts = path.split(".")
        for i in range(len(parts), 0, -1):
            mod = ".".join(parts[:i])
            if mod in self.modules:
                symbol = parts[i] if i < len(parts) else None
                return {(mod, None), (mod, symbol)} if symbol else {(mod, None)}
        return set()


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _refs(tree: ast.AST, resolver: _Resolver) -> set[tuple[str, str | None]]:
    refs: set[tuple[str, str | None]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name | ast.Attribute):
            dotted = _dotted(node)
            if dotted:
                refs |= resolver.resolve(dotted)
    return refs


@functools.cache
def scan() -> Scan:
    paths = {}
    for top in SCANNED:
        for path in (ROOT / top).rglob("*.py"):
            if "_pb2" not in path.name:
                paths[_module_name(path)] = path
    modules = set(paths)
    units: dict[tuple[str, str | None], Unit] = {}
    non_literal: list[str] = []
    # Mentioning a module imports it: its parent packages' __init__ runs too.
    for module, path in paths.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        where = str(path.relative_to(ROOT))
        resolver = _Resolver(module, path.name == "__init__.py", tree, modules)
        module_unit = Unit(module, None)
        parent = module.rpartition(".")[0]
        if parent in modules:
            module_unit.refs.add((parent, None))
        for stmt in tree.body:
            reads, bad = _env_reads(stmt, where)
            non_literal += bad
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                units[(module, stmt.name)] = Unit(module, stmt.name, reads, _refs(stmt, resolver) | {(module, None)})
            else:
                module_unit.reads |= reads
                module_unit.refs |= _refs(stmt, resolver)
        units[(module, None)] = module_unit
    return Scan(units, paths, non_literal)


def image_env() -> set[str]:
    """Variables the image itself sets (ENV in the final stage of deploy/Dockerfile)."""
    names: set[str] = set()
    for kind, args in stages(ROOT / "deploy" / "Dockerfile")[-1]:
        if kind == "ENV":
            names |= {m.group(1) for m in re.finditer(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", args)}
    return names


def _service_env(overlay: str) -> dict[str, tuple[str, set[str]]]:
    """workload/container -> (service module, variable names that container gets, image ENV included)."""
    docs = rendered(overlay)
    data: dict[tuple[str, str], set[str]] = {}
    for d in by_kind(docs, "ConfigMap", "Secret"):
        data[(d["kind"], d["metadata"]["name"])] = set((d.get("data") or {}) | (d.get("stringData") or {}))
    out: dict[str, tuple[str, set[str]]] = {}
    for w in by_kind(docs, "Deployment", "StatefulSet", "Job"):
        for _, c in containers(w):
            service = ferry_service_of(c)
            if not service:
                continue
            names = image_env() | {e["name"] for e in c.get("env", [])}
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    names |= data[("ConfigMap", src["configMapRef"]["name"])]
                if "secretRef" in src:
                    names |= data[("Secret", src["secretRef"]["name"])]
            out[f"{w['kind']}/{w['metadata']['name']}/{c['name']}"] = (service, names)
    return out


def _manifest_vars(overlay: str) -> tuple[set[str], set[str]]:
    """Keys of Ferry's ConfigMap and Secret, plus env set directly on Ferry containers."""
    docs = rendered(overlay)
    config: set[str] = set()
    secret: set[str] = set()
    for d in by_kind(docs, "ConfigMap", "Secret"):
        if d["metadata"]["name"].startswith("ferry-config"):
            config |= set(d["data"])
        elif d["metadata"]["name"].startswith("ferry-secrets"):
            secret |= set(d.get("data") or {})
    for w in by_kind(docs, "Deployment", "StatefulSet"):
        for _, c in containers(w):
            if not ferry_service_of(c):
                continue
            for e in c.get("env", []):
                from_secret = "secretKeyRef" in e.get("valueFrom", {})
                (secret if from_secret else config).add(e["name"])
    return config, secret


def test_image_env_is_parsed() -> None:
    assert {"PYTHONPATH", "PYTHONUNBUFFERED", "PATH"} <= image_env()


def test_scanner_finds_known_reads() -> None:
    """The scanner itself works: known reads and the S3Config -> FERRY_S3_* link are found."""
    s = scan()
    assert {"FERRY_LOG_LEVEL", "FERRY_S3_ENDPOINT", "FERRY_API_KEYS", "FERRY_GATEWAY_PORT"} <= s.all_reads()
    gateway = s.reads_of("gateway")
    assert {"FERRY_API_KEYS", "FERRY_CATALOG_ADDR", "FERRY_LOG_LEVEL"} <= gateway
    assert "FERRY_S3_ENDPOINT" not in gateway, "the gateway never builds an S3Config"


def test_variable_names_are_literal() -> None:
    """A computed name would hide a variable from this test and from the manifests."""
    assert not scan().non_literal, f"environment variable read with a non-literal name at {scan().non_literal}"


def test_every_ferry_service_is_deployed() -> None:
    deployed = {service for service, _ in _service_env("prod").values()}
    packages = {m for m in scan().modules if m.count(".") == 1 and m.startswith("services.")
                and (ROOT / m.replace(".", "/") / "__main__.py").exists()}
    assert packages | {"gateway"} <= deployed, f"not deployed: {packages - deployed}"


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_each_container_gets_what_its_service_reads(overlay: str) -> None:
    problems = []
    for where, (service, names) in _service_env(overlay).items():
        missing = scan().reads_of(service) - names - ALLOW_UNSET
        if missing:
            problems.append(f"{where} ({service}) reads but is not given: {sorted(missing)}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_each_container_gets_only_the_secrets_its_service_reads(overlay: str) -> None:
    """Least privilege: e.g. the gateway never sees the S3 keys, the catalog never the HF token."""
    docs = rendered(overlay)
    problems = []
    for w in by_kind(docs, "Deployment", "StatefulSet"):
        for _, c in containers(w):
            service = ferry_service_of(c)
            if not service:
                continue
            assert not any("secretRef" in src for src in c.get("envFrom", [])), "secrets are passed key by key"
            given = {e["name"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
            extra = given - scan().reads_of(service)
            if extra:
                problems.append(f"{w['metadata']['name']}/{c['name']} gets secrets it never reads: {sorted(extra)}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_manifests_set_nothing_unread(overlay: str) -> None:
    config, secret = _manifest_vars(overlay)
    # Only what the deployed processes read counts (dev tooling such as ferry/stack.py does not).
    deployed = {service for service, _ in _service_env(overlay).values()}
    read = set().union(*(scan().reads_of(service) for service in deployed))
    unused = (config | secret) - read - ALLOW_EXTRA
    assert not unused, f"set in the manifests but read by no deployed Ferry service: {sorted(unused)}"


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_secrets_live_in_secrets(overlay: str) -> None:
    config, secret = _manifest_vars(overlay)
    secret_like = {v for v in scan().all_reads() if SECRET_NAME.search(v)}
    assert not (config & secret_like), f"secret values in a ConfigMap or plain env: {sorted(config & secret_like)}"
    assert secret_like - ALLOW_UNSET <= secret, f"not in ferry-secrets: {sorted(secret_like - secret)}"


def test_allow_lists_are_still_needed() -> None:
    """Stale allow-list entries would hide future mistakes."""
    reads = scan().all_reads()
    assert ALLOW_UNSET <= reads, f"ALLOW_UNSET lists variables nothing reads: {sorted(ALLOW_UNSET - reads)}"
    config, _ = _manifest_vars("prod")
    assert not (ALLOW_EXTRA & reads), f"ALLOW_EXTRA lists variables the code reads: {sorted(ALLOW_EXTRA & reads)}"
    assert ALLOW_EXTRA <= config


def report() -> dict[str, Any]:
    """Per service, the variables it reads (python -m tests.test_deploy_env)."""
    s = scan()
    services = sorted({m for m in s.modules if m.startswith("services.") and m.count(".") == 1} | {"gateway"})
    out: dict[str, Any] = {svc: sorted(s.reads_of(svc)) for svc in services}
    by_var: dict[str, list[str]] = defaultdict(list)
    for svc, names in out.items():
        for n in names:
            by_var[n].append(svc)
    out["_unreached"] = sorted(s.all_reads() - set(by_var))
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(report(), indent=2))


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_storage_wait_init_containers_get_the_s3_settings(overlay: str) -> None:
    """`healthcheck.py storage` builds an S3Config, so its container needs every FERRY_S3_* it reads;
    and every service that uses object storage waits for it."""
    s3_vars = scan().units[("ferry.config", "S3Config")].reads
    assert "FERRY_S3_ENDPOINT" in s3_vars
    docs = rendered(overlay)
    cm = {d["metadata"]["name"]: set(d["data"]) for d in by_kind(docs, "ConfigMap")}
    for w in by_kind(docs, "Deployment", "StatefulSet"):
        spec = w["spec"]["template"]["spec"]
        inits = {c["name"]: c for c in spec.get("initContainers", [])}
        service = ferry_service_of(spec["containers"][0])
        if service and "FERRY_S3_ENDPOINT" in scan().reads_of(service):
            assert "wait-for-storage" in inits, w["metadata"]["name"]
        if "wait-for-storage" in inits:
            c = inits["wait-for-storage"]
            assert c["command"][-3:] == ["storage", "--wait", "900"]
            names = {e["name"] for e in c.get("env", [])}
            for src in c.get("envFrom", []):
                names |= cm[src["configMapRef"]["name"]]
            assert s3_vars - ALLOW_UNSET <= names, f"{w['metadata']['name']}: {sorted(s3_vars - names)}"


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_only_services_that_call_the_hub_get_internet_egress(overlay: str) -> None:
    """HTTPS to any address is the one wide-open path: it follows who reads HF_ENDPOINT."""
    docs = rendered(overlay)
    expected = set()
    for w in by_kind(docs, "Deployment", "StatefulSet"):
        service = ferry_service_of(w["spec"]["template"]["spec"]["containers"][0])
        if service and "HF_ENDPOINT" in scan().reads_of(service):
            expected.add(w["metadata"]["name"])  # each workload's policy is named like it
    assert "ferry-importer" in expected
    assert https_egress(docs) == expected


def test_readme_lists_every_variable() -> None:
    readme = (ROOT / "deploy" / "README.md").read_text()
    config, secret = _manifest_vars("prod")
    undocumented = {v for v in config | secret | ALLOW_UNSET if f"`{v}`" not in readme}
    assert not undocumented, f"deploy/README.md does not list: {sorted(undocumented)}"
