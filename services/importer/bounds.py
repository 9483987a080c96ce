"""Bounds on what the importer's operations accept, for every caller (the gateway bounds its own inputs too, but
gRPC callers reach the importer directly).

A value out of bounds is InvalidArgument naming the request field, its message quoting at most a short prefix of
the value. `bounded(check)` runs a check on a core operation's arguments (by parameter name) before it starts;
each check takes the core method's parameter names and ignores the others. Hub repo ids follow huggingface_hub's
validate_repo_id rules (with ASCII letters only, as the Hub has them), so a name the Hub client would refuse
before sending anything is INVALID_ARGUMENT here, never "the Hub failed".
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ferry.errors import InvalidArgument
from ferry.limits import MAX_ENTRIES, MAX_KEY, MAX_NAME, MAX_SPEC, short  # noqa: F401 - re-exported

MAX_REPO_PART = 96  # owner or name of a Hub repo id
MAX_REPO_ID = 2 * MAX_REPO_PART + 1
MAX_LOCAL_PATH = 4096  # a local folder or file under FERRY_LOCAL_SOURCE_DIRS (PATH_MAX)
MAX_REVISION = 256  # a branch, tag or sha
MAX_SPLIT = 128  # a split or config name
MAX_SPLITS = MAX_MAPPINGS = MAX_ENTRIES

_REPO_PART = re.compile(r"[A-Za-z0-9_.-]+")

P = ParamSpec("P")
R = TypeVar("R")


def bounded(check: Callable[..., None]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a core operation so `check` sees its arguments, by parameter name, before it runs."""
    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            check(**bound.arguments)
            return fn(*args, **kwargs)

        return run
    return wrap


# -- single values ------------------------------------------------------------------------------------------------

def check_text(field: str, value: str, most: int) -> None:
    if len(value or "") > most:
        raise InvalidArgument(f"{field} is longer than {most} characters: {short(value)}", field=field)


def repo_id_problem(repo_id: str) -> str:
    """Why `repo_id` is not a Hub repo id ('' when it is one): huggingface_hub's validate_repo_id rules."""
    parts = repo_id.split("/")
    if len(parts) > 2:
        return "it has more than one '/' (owner/name)"
    for part in parts:
        if not part:
            return "its owner or name is empty"
        if len(part) > MAX_REPO_PART:
            return f"its owner and its name may each have at most {MAX_REPO_PART} characters"
        if not _REPO_PART.fullmatch(part):
            return "it may hold only letters, digits, '-', '_' and '.'"
        if part[0] in "-." or part[-1] in "-.":
            return "its owner and name cannot start or end with '-' or '.'"
    if "--" in repo_id or ".." in repo_id:
        return "it cannot hold '--' or '..'"
    if repo_id.endswith(".git"):
        return "it cannot end in '.git'"
    try:
        validate_repo_id(repo_id)  # the client's own rules, should they be stricter than the above
    except HFValidationError:
        return "huggingface_hub refuses it"
    return ""


def check_repo_id(repo_id: str) -> None:
    """InvalidArgument naming dataset_name unless `repo_id` is a Hub repo id (owner/name or name)."""
    if not repo_id:
        raise InvalidArgument("dataset_name is required", field="dataset_name")
    problem = repo_id_problem(repo_id)
    if problem:
        raise InvalidArgument(f"dataset_name {short(repo_id)} is not a Hub repo id: {problem}", field="dataset_name")


def check_dataset_name(name: str) -> None:
    """A local path of at most MAX_LOCAL_PATH characters, or a Hub repo id (as pasted: URL forms too)."""
    from services.importer.sources import is_local, normalize_name  # sources imports this module

    check_text("dataset_name", name, MAX_LOCAL_PATH)
    repo_id = normalize_name(name)
    if repo_id and not is_local(repo_id):
        check_repo_id(repo_id)


def check_splits(splits: Sequence[str]) -> None:
    if len(splits) > MAX_SPLITS:
        raise InvalidArgument(f"splits has {len(splits)} entries; at most {MAX_SPLITS}", field="splits")
    for s in splits:
        if len(s) > MAX_SPLIT:
            raise InvalidArgument(f"splits: {short(s)} is longer than {MAX_SPLIT} characters", field="splits")


def check_mappings(field_mappings: Mapping[str, str] | None) -> None:
    mappings = field_mappings or {}
    if len(mappings) > MAX_MAPPINGS:
        raise InvalidArgument(f"field_mappings has {len(mappings)} entries; at most {MAX_MAPPINGS}",
                              field="field_mappings")
    for target, source in mappings.items():
        if len(target) > MAX_KEY:
            raise InvalidArgument(f"field_mappings: the target {short(target)} is longer than {MAX_KEY} characters",
                                  field="field_mappings")
        if len(source) > MAX_SPEC:
            raise InvalidArgument(f"field_mappings: the source of {short(target)} is longer than {MAX_SPEC} "
                                  f"characters: {short(source)}", field="field_mappings")


# -- the operations (parameter names as ImporterCore's) -----------------------------------------------------------

def info(*, name: str = "", config: str = "", revision: str = "", **_: Any) -> None:
    check_dataset_name(name)
    check_text("config", config, MAX_SPLIT)
    check_text("revision", revision, MAX_REVISION)


def suggest(*, name: str = "", config: str = "", split: str = "", **_: Any) -> None:
    check_dataset_name(name)
    check_text("config", config, MAX_SPLIT)
    check_text("split", split, MAX_SPLIT)


def preview(*, name: str = "", split: str = "", config: str = "", field_mappings: Mapping[str, str] | None = None,
            **_: Any) -> None:
    check_dataset_name(name)
    check_text("config", config, MAX_SPLIT)
    check_text("split", split, MAX_SPLIT)
    check_mappings(field_mappings)


def start_import(*, name: str = "", splits: Sequence[str] = (), config: str = "",
                 field_mappings: Mapping[str, str] | None = None, max_samples: int = 0, dataset_name: str = "",
                 revision: str = "", **_: Any) -> None:
    """`name` is the source (the request's dataset_name), `dataset_name` the new dataset's name (its name)."""
    check_dataset_name(name)
    check_splits(splits)
    check_text("config", config, MAX_SPLIT)
    check_mappings(field_mappings)
    if max_samples < 0:
        raise InvalidArgument("max_samples must be positive (0 or unset imports every row)", field="max_samples")
    check_text("name", dataset_name, MAX_NAME)
    check_text("revision", revision, MAX_REVISION)
