"""Every third-party import is declared, and every declared package is pinned to one version.

Runtime code (ferry/, services/, gateway/) must find its distributions in requirements.txt itself, since the image
installs only that file; tests/ and bench/ may also use requirements-dev.txt. "Declared" means listed by name: a
package that happens to arrive as another one's dependency is not declared, and could change or vanish with it.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_DIRS = ("ferry", "services", "gateway")
DEV_DIRS = ("bench", "tests")
RUNTIME_FILE = "requirements.txt"
DEV_FILE = "requirements-dev.txt"


def _local_modules() -> set[str]:
    """Top-level names that are this repository's code: its folders and modules at the root, and the scripts
    tests import by path (scripts/gen_protos.py, deploy/healthcheck.py)."""
    names = set()
    for folder in (ROOT, ROOT / "scripts", ROOT / "deploy"):
        for p in folder.iterdir():
            if p.suffix == ".py" or (p.is_dir() and not p.name.startswith(".")):
                names.add(p.stem)
    return names


def _optional_nodes(tree: ast.AST) -> set[int]:
    """Nodes inside `try: ... except ImportError` (an import that may fail needs no declaration)."""
    optional: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers):
            optional |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return optional


def third_party_imports(dirs: tuple[str, ...]) -> dict[str, str]:
    """Imported module (dotted, as written) -> the first file importing it, for every file under `dirs`."""
    local = _local_modules()
    found: dict[str, str] = {}
    for top in dirs:
        for path in sorted((ROOT / top).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            optional = _optional_nodes(tree)
            for node in ast.walk(tree):
                if id(node) in optional:
                    continue
                if isinstance(node, ast.Import):
                    modules = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    head = module.split(".")[0]
                    if head in local or head in sys.stdlib_module_names:
                        continue
                    found.setdefault(module, path.relative_to(ROOT).as_posix())
    return found


@cache
def _files_of(dist: str) -> tuple[str, ...]:
    return tuple(str(f) for f in metadata.files(dist) or ())


@cache
def _providers() -> dict[str, list[str]]:
    return dict(metadata.packages_distributions())


def distributions_of(module: str) -> set[str]:
    """The installed distributions providing `module` (canonical names); for a namespace shared by several
    (google.protobuf vs google.rpc), the one(s) shipping the imported submodule."""
    providers = _providers().get(module.split(".")[0], [])
    dists = set(providers)
    if len(dists) > 1:
        path = module.replace(".", "/")
        owners = {d for d in dists if any(f.startswith((path + "/", path + ".")) for f in _files_of(d))}
        dists = owners or dists
    return {canonicalize_name(d) for d in dists}


def requirement_lines(name: str, seen: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(file, line) for every requirement line of `name`, following `-r other.txt` includes."""
    out: list[tuple[str, str]] = []
    for raw in (ROOT / name).read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        if line.startswith(("-r ", "--requirement ")):
            included = line.split(None, 1)[1].strip()
            assert included not in seen, f"{name} includes {included} in a loop"
            out += requirement_lines(included, (*seen, name))
        else:
            out.append((name, line))
    return out


def declared(name: str) -> dict[str, str]:
    """Canonical distribution name -> the file that lists it, for `name` and the files it includes."""
    out = {}
    for file, line in requirement_lines(name):
        try:
            out[canonicalize_name(Requirement(line).name)] = file
        except InvalidRequirement:
            pass  # reported by the pinning test
    return out


def _undeclared(dirs: tuple[str, ...], allowed: dict[str, str], where: str) -> list[str]:
    missing = []
    reported: set[frozenset[str]] = set()
    for module, first_file in sorted(third_party_imports(dirs).items()):
        dists = distributions_of(module)
        if not dists:
            missing.append(f"{module} (imported in {first_file}): no installed distribution provides it")
        elif not dists & allowed.keys() and frozenset(dists) not in reported:
            reported.add(frozenset(dists))
            missing.append(f"{module} (imported in {first_file}): distribution {' or '.join(sorted(dists))} "
                           f"is not declared in {where}")
    return missing


def test_runtime_imports_are_declared_in_requirements_txt() -> None:
    own = {d: f for d, f in declared(RUNTIME_FILE).items() if f == RUNTIME_FILE}
    missing = _undeclared(RUNTIME_DIRS, own, RUNTIME_FILE)
    assert not missing, "runtime imports without a requirement:\n" + "\n".join(missing)


def test_test_and_bench_imports_are_declared() -> None:
    missing = _undeclared(DEV_DIRS, declared(DEV_FILE), f"{RUNTIME_FILE} or {DEV_FILE}")
    assert not missing, "test/bench imports without a requirement:\n" + "\n".join(missing)


def test_every_requirement_is_pinned_to_one_version() -> None:
    bad = []
    for file, line in requirement_lines(DEV_FILE):
        try:
            req = Requirement(line)
        except InvalidRequirement:
            bad.append(f"{file}: {line!r} is not a requirement this test understands (only `name==version` "
                       "lines and `-r file` includes)")
            continue
        specs = list(req.specifier)
        if req.url or len(specs) != 1 or specs[0].operator not in ("==", "===") or "*" in specs[0].version:
            bad.append(f"{file}: {line!r} is not pinned to one version (name==version)")
    assert not bad, "\n".join(bad)


def test_each_distribution_is_listed_once() -> None:
    seen: dict[str, str] = {}
    twice = []
    for file, line in requirement_lines(DEV_FILE):
        try:
            name = canonicalize_name(Requirement(line).name)
        except InvalidRequirement:
            continue
        if name in seen:
            twice.append(f"{name}: in {seen[name]} and {file}")
        seen[name] = file
    assert not twice, "listed more than once:\n" + "\n".join(twice)


def test_pins_are_the_installed_versions() -> None:
    """What the tests run against is what the files declare (a pin bumped without `make` reinstalling fails)."""
    wrong = []
    for file, line in requirement_lines(DEV_FILE):
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{file}: {req.name} is not installed")
            continue
        if not req.specifier.contains(installed, prereleases=True):
            wrong.append(f"{file}: {line!r} but {installed} is installed")
    assert not wrong, "\n".join(wrong)
