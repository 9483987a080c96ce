"""Every environment variable is declared once (a settings field with validation_alias), read only through its
declaration, registered in ferry.config.ENV_VARS (made from the declarations) and documented by the generated
tables of docs/configuration.md."""

from __future__ import annotations

import ast
import re
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

from ferry.config import ENV_VARS, LIBRARY_VARIABLES, variables
from tests.test_deploy_env import scan

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import gen_config_docs  # noqa: E402

OURS = re.compile(r"^(FERRY_|HF_)")
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|_KEYS?$")


def _sources() -> list[Path]:
    return [p for top in ("ferry", "services", "gateway") for p in (ROOT / top).rglob("*.py") if "_pb2" not in p.name]


def _is_environ(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ")


def declared_names() -> Counter[str]:
    """How often each literal `validation_alias="X"` occurs in the code."""
    found: Counter[str] = Counter()
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg == "validation_alias" and isinstance(kw.value, ast.Constant):
                        found[kw.value.value] += 1
    return found


def direct_reads() -> dict[str, str]:
    """FERRY_*/HF_* read from the environment without a declaration: os.environ.get/[...]/in, os.getenv."""
    found: dict[str, str] = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            name = None
            if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                func = node.func
                if (isinstance(func, ast.Attribute) and func.attr == "get" and _is_environ(func.value)) or (
                        getattr(func, "attr", getattr(func, "id", "")) == "getenv"):
                    name = node.args[0].value
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_environ(node.value):
                name = node.slice.value if isinstance(node.slice, ast.Constant) else None
            elif isinstance(node, ast.Compare) and _is_environ(node.comparators[0]) and isinstance(node.left,
                                                                                                  ast.Constant):
                name = node.left.value
            if isinstance(name, str) and OURS.match(name):
                found.setdefault(name, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_variable_read_is_declared() -> None:
    read = {name for name in scan().all_reads() if OURS.match(name)}
    assert read, "the scan found nothing; it is broken"
    missing = sorted(read - set(ENV_VARS))
    assert not missing, f"read but not declared (ferry.config.variables()): {missing}"


def test_nothing_bypasses_the_declarations() -> None:
    """Read once, through a settings model: no os.environ / os.getenv of a Ferry variable anywhere else."""
    assert not direct_reads(), f"read from the environment directly, not through a declaration: {direct_reads()}"


def test_each_variable_is_declared_once() -> None:
    twice = {name: n for name, n in declared_names().items() if n > 1}
    assert not twice, f"declared more than once (share the declaration instead): {twice}"


def test_env_vars_come_from_the_declarations() -> None:
    library = {var.name for var in LIBRARY_VARIABLES}
    assert set(ENV_VARS) - library == set(declared_names()), "ENV_VARS and the declarations differ"
    assert not library & set(declared_names())
    assert ENV_VARS["FERRY_GRPC_PORT"] == "catalog `50051`, importer `50052`, exporter `50053`"
    assert ENV_VARS["FERRY_CATALOG_ADDR"] == "`localhost:50051`"
    assert ENV_VARS["FERRY_S3_ENDPOINT"].startswith("required")


def test_every_variable_is_described_and_read_by_someone() -> None:
    for var in variables().values():
        assert var.description and var.readers, var
        assert "\n" not in var.description, f"{var.name}: the description is one line"


def test_secret_variables_are_secrets() -> None:
    """A secret's repr is *** and a bad value is reported without it: every secret-looking name is typed so."""
    for var in variables().values():
        if SECRET_NAME.search(var.name):
            assert var.secret, f"{var.name} is not declared as ferry.config.Secret"


def test_every_variable_is_documented() -> None:
    docs = (ROOT / "docs" / "configuration.md").read_text()
    undocumented = [name for name in ENV_VARS if f"`{name}`" not in docs]
    assert not undocumented, f"missing from docs/configuration.md: {undocumented}"


def test_the_doc_matches_the_declarations() -> None:
    current = gen_config_docs.DOC.read_text()
    assert gen_config_docs.render(current) == current, "docs/configuration.md is out of date: run `make config-docs`"


def test_the_doc_generator_notices_a_change() -> None:
    found = variables()
    found["FERRY_IMPORT_WORKERS"] = replace(found["FERRY_IMPORT_WORKERS"], defaults={"importer": "`3`"})
    current = gen_config_docs.DOC.read_text()
    assert gen_config_docs.render(current, found) != current
    assert "| `FERRY_IMPORT_WORKERS` | `3` |" in gen_config_docs.render(current, found)


def test_the_deploy_readme_matches_the_manifests() -> None:
    """deploy/README.md's table of the ferry-config ConfigMap is generated too, and notices a change."""
    current = gen_config_docs.DEPLOY_README.read_text()
    assert gen_config_docs.render_deploy(current) == current, "deploy/README.md is out of date: run `make config-docs`"
    base = gen_config_docs.env_file(ROOT / "deploy" / "k8s" / "base" / "config.env")
    overlays = {o: gen_config_docs.overlay_values(o) for o in gen_config_docs.OVERLAYS}
    assert base["FERRY_IMPORT_WORKERS"] == "2" and overlays["prod"]["FERRY_IMPORT_WORKERS"] == "4"
    table = gen_config_docs.deploy_table(base={**base, "FERRY_IMPORT_WORKERS": "3"}, overlays=overlays)
    assert "| `FERRY_IMPORT_WORKERS` | `3` | `1` | `4` | importer |" in table
    assert table not in current


def test_service_addresses_are_written_once() -> None:
    """The catalog/importer/exporter ports (and so the default addresses) appear in ferry/config.py only."""
    for path in _sources():
        if path != ROOT / "ferry" / "config.py":
            text = path.read_text()
            assert not re.search(r"\b5005[123]\b", text), path
