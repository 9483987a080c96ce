"""Where a dataset's rows are: configs -> splits -> data files, for Hub repos and local copies.

Resolution follows the Hub's own conventions, in this order:
1. the README's `configs:` YAML (data_files per split, `default: true`);
2. a loading script (`<name>.py`) without YAML configs is refused: Ferry only reads data files;
3. otherwise `datasets`' data-file patterns (data/{split}-0000x-of-0000y, file/folder names containing
   train/test/validation, else everything is `train`) give the `default` config, and every top-level folder
   whose files also split that way becomes a config of its own (hh-rlhf's harmless-base, ...).
Every file is read at the revision pinned here (a commit sha, or a content hash for local folders).
"""

from __future__ import annotations

import bisect
import hashlib
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import fsspec
import yaml  # type: ignore[import-untyped]
from datasets import DownloadConfig
from datasets.data_files import FILES_TO_IGNORE, EmptyDatasetError, get_data_patterns

from ferry.datasets import SourceKind
from ferry.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from services.importer.bounds import check_repo_id
from services.importer.hub import HubClient, Meter, RemoteFile

DATA_EXTENSIONS = (".parquet", ".jsonl", ".ndjson", ".json", ".csv", ".tsv")
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zstd")
DEFAULT_CONFIG = "default"


class SourceFile(Protocol):
    path: str
    size: int

    def iter_range(self, start: int = 0, end: int | None = None, chunk: int = ...) -> Any: ...

    def read_range(self, start: int, length: int) -> bytes: ...


def data_format(path: str) -> tuple[str, str]:
    """(format, compression) of a data file from its name; format '' when unsupported."""
    name = path.lower()
    comp = ""
    for c in COMPRESSIONS:
        if name.endswith(c):
            comp, name = c[1:], name[: -len(c)]
            break
    for ext in DATA_EXTENSIONS:
        if name.endswith(ext):
            fmt = ext[1:]
            return ("jsonl" if fmt == "ndjson" else fmt), comp
    return "", comp


def _is_data_file(path: str) -> bool:
    parts = path.split("/")
    if any(p.startswith(".") or p.startswith("__") for p in parts):
        return False
    if parts[-1] in FILES_TO_IGNORE:
        return False
    fmt, comp = data_format(path)
    return bool(fmt) and not (fmt == "parquet" and comp)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """fsspec-style glob: `*` stays within a folder, `**` crosses folders, `[..]` is a class."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            j = pattern.find("]", i)
            if j < 0:
                out.append(re.escape(pattern[i]))
                i += 1
            else:
                body = pattern[i + 1: j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def match_files(pattern: str, files: list[str]) -> list[str]:
    rx = _glob_regex(pattern.lstrip("/"))
    return [f for f in files if rx.match(f)]


@dataclass
class ConfigLayout:
    name: str
    # split -> data file paths, in reading order
    splits: dict[str, list[str]]


@dataclass
class Layout:
    configs: dict[str, ConfigLayout]
    default_config: str  # "" when the repo has several configs and no default

    def names(self) -> list[str]:
        return list(self.configs)


class _Listing:
    """Paths (files and their folders) under a root, for _ListingFS; a plain object so fsspec's instance token
    (the str() of the constructor's arguments, taken on every glob) stays short."""

    ROOT = "listing"

    def __init__(self, files: list[str]) -> None:
        self.entries: dict[str, dict[str, Any]] = {}
        for f in files:
            parts = f"{self.ROOT}/{f}".split("/")
            for i in range(1, len(parts)):
                folder = "/".join(parts[:i])
                self.entries.setdefault(folder, {"name": folder, "size": 0, "type": "directory"})
            name = "/".join(parts)
            self.entries[name] = {"name": name, "size": 0, "type": "file"}
        self.names = sorted(self.entries)


class _ListingFS(fsspec.AbstractFileSystem):
    """A read-only fsspec filesystem over a list of paths (a Hub tree listing or a local walk), so `datasets`'
    public get_data_patterns() can pick the split patterns without any file being fetched or written."""

    protocol = "ferry-listing"
    cachable = False  # one instance per glob, each holding its own listing

    def __init__(self, listing: _Listing, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._listing = listing

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        if path == "":
            return {"name": "", "size": 0, "type": "directory"}
        if path not in self._listing.entries:
            raise FileNotFoundError(path)
        return self._listing.entries[path]

    def find(self, path: str, maxdepth: int | None = None, withdirs: bool = False, detail: bool = False,
             **kwargs: Any) -> Any:
        # fsspec's own find walks folder by folder through ls(); one pass over the sorted names is enough here.
        path = self._strip_protocol(path)
        prefix = f"{path}/" if path else ""
        out: dict[str, dict[str, Any]] = {}
        if withdirs and path and self._listing.entries.get(path, {}).get("type") == "directory":
            out[path] = self._listing.entries[path]
        names = self._listing.names
        for name in names[bisect.bisect_left(names, prefix):]:
            if not name.startswith(prefix):
                break
            info = self._listing.entries[name]
            if (withdirs or info["type"] == "file") and (maxdepth is None or name.count("/", len(prefix)) < maxdepth):
                out[name] = info
        if not out and self._listing.entries.get(path, {}).get("type") == "file":
            out[path] = self._listing.entries[path]
        return out if detail else sorted(out)

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
        if self.info(path)["type"] == "file":
            found = {self._strip_protocol(path): self.info(path)}
        else:
            found = self.find(path, maxdepth=1, withdirs=True, detail=True)
            found.pop(self._strip_protocol(path), None)
        return list(found.values()) if detail else sorted(found)


fsspec.register_implementation(_ListingFS.protocol, _ListingFS, clobber=True)


def _split_patterns(files: list[str], base: str = "") -> dict[str, list[str]]:
    """Split -> files under `base`, by `datasets`' default data-file patterns."""
    rel = [f[len(base):] for f in files if f.startswith(base)]
    options = {_ListingFS.protocol: {"listing": _Listing(rel)}}
    try:
        patterns = get_data_patterns(f"{_ListingFS.protocol}://{_Listing.ROOT}",
                                     DownloadConfig(storage_options=options))
    except (EmptyDatasetError, ValueError):  # no data file matched; a split name `datasets` refuses
        return {}
    out: dict[str, list[str]] = {}
    for split, pats in patterns.items():
        seen: list[str] = []
        for p in pats:
            for f in match_files(p, rel):
                if f not in seen:
                    seen.append(f)
        if seen:
            out[str(split)] = [base + f for f in sorted(seen)]
    return out


def _yaml_configs(card: dict[str, Any], files: list[str]) -> tuple[dict[str, ConfigLayout], str]:
    configs: dict[str, ConfigLayout] = {}
    default = ""
    for entry in card.get("configs") or []:
        if not isinstance(entry, dict):
            continue
        name = str(entry.get("config_name") or DEFAULT_CONFIG)
        data_dir = str(entry.get("data_dir") or "").strip("/")
        base = f"{data_dir}/" if data_dir else ""
        spec = entry.get("data_files")
        splits: dict[str, list[str]] = {}
        if spec is None:
            splits = _split_patterns(files, base)
        else:
            if isinstance(spec, str | list) and not (isinstance(spec, list) and spec and isinstance(spec[0], dict)):
                spec = [{"split": "train", "path": spec}]
            if isinstance(spec, dict):
                spec = [{"split": k, "path": v} for k, v in spec.items()]
            for item in spec:
                split = str(item.get("split") or "train")
                paths = item.get("path")
                pats = [paths] if isinstance(paths, str) else list(paths or [])
                got: list[str] = []
                for p in pats:
                    for f in sorted(match_files(base + str(p), files)):
                        if f not in got:
                            got.append(f)
                splits[split] = got
        configs[name] = ConfigLayout(name, splits)
        if entry.get("default"):
            default = name
    if not default and len(configs) == 1:
        default = next(iter(configs))
    if not default and DEFAULT_CONFIG in configs:
        default = DEFAULT_CONFIG
    return configs, default


def resolve_layout(files: list[str], card: dict[str, Any], repo_name: str) -> Layout:
    data = [f for f in files if _is_data_file(f)]
    if card.get("configs"):
        configs, default = _yaml_configs(card, data)
        if configs:
            return Layout(configs, default)
    scripts = [f for f in files if "/" not in f and f.endswith(".py")]
    if scripts and (f"{repo_name}.py" in scripts or not data):
        raise FailedPrecondition(
            f"this dataset needs a loading script ({scripts[0]}); Ferry reads only data files "
            "(Parquet, JSON/JSONL, CSV) and does not run dataset scripts"
        )
    if not data:
        raise FailedPrecondition("the dataset has no data files Ferry can read (Parquet, JSON/JSONL, CSV)")
    # Keep one format when several are present (the Parquet copy of a JSONL set, say), like `datasets`.
    by_fmt: dict[str, int] = {}
    for f in data:
        by_fmt[data_format(f)[0]] = by_fmt.get(data_format(f)[0], 0) + 1
    if len(by_fmt) > 1:
        best = "parquet" if "parquet" in by_fmt else max(by_fmt, key=lambda k: by_fmt[k])
        data = [f for f in data if data_format(f)[0] == best]
    configs = {DEFAULT_CONFIG: ConfigLayout(DEFAULT_CONFIG, _split_patterns(data))}
    folders = sorted({f.split("/", 1)[0] for f in data if "/" in f})
    if len(folders) > 1 and not (set(folders) & {"data"}):
        for folder in folders:
            sub = _split_patterns(data, folder + "/")
            if sub:
                configs[folder] = ConfigLayout(folder, sub)
    return Layout(configs, DEFAULT_CONFIG)


def parse_card(readme: str) -> dict[str, Any]:
    """The YAML front matter of a README.md (empty when none or unparsable)."""
    if not readme.startswith("---"):
        return {}
    end = readme.find("\n---", 3)
    if end < 0:
        return {}
    try:
        data = yaml.safe_load(readme[3:end])
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class LocalFile:
    """A local data file with the same reading interface as RemoteFile."""

    abspath: Path
    path: str
    size: int
    meter: Meter | None = None

    def iter_range(self, start: int = 0, end: int | None = None, chunk: int = 1024 * 1024) -> Any:
        stop = self.size if end is None else min(end, self.size)
        with self.abspath.open("rb") as fh:
            fh.seek(start)
            pos = start
            while pos < stop:
                data = fh.read(min(chunk, stop - pos))
                if not data:
                    break
                pos += len(data)
                if self.meter is not None:
                    self.meter.add(len(data))
                yield data

    def read_range(self, start: int, length: int) -> bytes:
        return b"".join(self.iter_range(start, start + length))


@dataclass
class Source:
    """A resolved dataset source, pinned to one revision."""

    kind: SourceKind
    repo_id: str  # hub id or local path
    revision: str
    layout: Layout
    sizes: dict[str, int]
    card: dict[str, Any]
    description: str = ""
    gated: bool = False
    _opener: Callable[[str, Meter | None], SourceFile] | None = field(default=None, repr=False)

    def choose_config(self, config: str, *, required: bool = False) -> tuple[str, list[str]]:
        """The config to use and notes for the user; unknown names list the valid ones."""
        names = self.layout.names()
        if config:
            if config not in self.layout.configs:
                raise NotFound(f"config {config!r} not found in {self.repo_id}; available configs: "
                               f"{', '.join(names)}", field="config")
            return config, []
        if self.layout.default_config:
            return self.layout.default_config, []
        if required:
            raise InvalidArgument(
                f"{self.repo_id} has several configs ({', '.join(names)}) and no default: pass config "
                f"(or subset) to choose one", field="config")
        return names[0], [f"{self.repo_id} has several configs ({', '.join(names)}) and no default; "
                          f"showing {names[0]!r}. Pass config to choose another; imports must name one."]

    def split_files(self, config: str, split: str) -> list[str]:
        splits = self.layout.configs[config].splits
        if split not in splits:
            raise NotFound(f"split {split!r} not found in {self.repo_id} config {config!r}; available splits: "
                           f"{', '.join(splits) or '(none)'}", field="split")
        files = splits[split]
        if not files:
            raise FailedPrecondition(f"split {split!r} of {self.repo_id} config {config!r} has no data files")
        return files

    def first_split(self, config: str) -> str:
        splits = self.layout.configs[config].splits
        if not splits:
            raise FailedPrecondition(f"{self.repo_id} config {config!r} has no splits with data files")
        return "train" if "train" in splits else next(iter(splits))

    def open(self, path: str, meter: Meter | None = None) -> SourceFile:
        assert self._opener is not None
        return self._opener(path, meter)


# -- resolving a dataset name ------------------------------------------------------------------------------------

def is_local(name: str) -> bool:
    return name.startswith(("/", "./", "~", "file://"))


def resolve_hub(hub: HubClient, repo_id: str, revision: str, token: str | None) -> Source:
    check_repo_id(repo_id)
    meta = hub.repo_meta(repo_id, revision or None, token)
    sizes = {e.path: e.size for e in meta.files}
    card = dict(meta.card_data)
    if "configs" not in card and "README.md" in sizes:
        # Card data comes from the info call; read the README only if that lacks the configs.
        readme = hub.open_file(repo_id, meta.sha, "README.md", sizes["README.md"], token, None, meta.gated)
        text = readme.read_range(0, sizes["README.md"]).decode("utf-8", "replace")
        card.update({k: v for k, v in parse_card(text).items() if k not in card})
    layout = resolve_layout(list(sizes), card, repo_id.rsplit("/", 1)[-1])
    tok = token
    sha = meta.sha
    gated = meta.gated

    def opener(path: str, meter: Meter | None) -> SourceFile:
        f: RemoteFile = hub.open_file(repo_id, sha, path, sizes[path], tok, meter, gated)
        return f

    return Source(kind=SourceKind.HUB, repo_id=repo_id, revision=sha, layout=layout, sizes=sizes,
                  card=card, description=meta.description or str(card.get("pretty_name") or ""), gated=meta.gated,
                  _opener=opener)


def check_local_path(name: str, allowed_dirs: tuple[str, ...]) -> Path:
    if not allowed_dirs:
        raise PermissionDenied("local sources are disabled on this importer (FERRY_LOCAL_SOURCE_DIRS is empty)",
                               field="dataset_name")
    raw = name[len("file://"):] if name.startswith("file://") else name
    path = Path(os.path.expanduser(raw)).resolve()
    for d in allowed_dirs:
        root = Path(os.path.expanduser(d)).resolve()
        if path == root or root in path.parents:
            if not path.exists():
                raise NotFound(f"local source {raw!r} does not exist", field="dataset_name")
            return path
    raise PermissionDenied(f"local path {raw!r} is outside the directories this importer may read "
                           "(FERRY_LOCAL_SOURCE_DIRS)", field="dataset_name")


def _git_head(path: Path) -> str:
    if not (path / ".git").exists():
        return ""
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    sha = out.stdout.strip()
    return sha if re.fullmatch(r"[0-9a-f]{40}", sha) else ""


_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(4 * 1024 * 1024):
                h.update(chunk)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def content_hash(root: Path, files: list[str]) -> str:
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(rel.encode() + b"\0" + _file_sha256(root / rel).encode() + b"\n")
    return h.hexdigest()


def resolve_local(name: str, allowed_dirs: tuple[str, ...]) -> Source:
    path = check_local_path(name, allowed_dirs)
    if path.is_dir():
        files: dict[str, int] = {}
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for fn in filenames:
                full = Path(dirpath) / fn
                rel = full.relative_to(path).as_posix()
                files[rel] = full.stat().st_size
        card = parse_card((path / "README.md").read_text("utf-8", "replace")) if "README.md" in files else {}
        layout = resolve_layout(list(files), card, path.name)
        used = sorted({f for c in layout.configs.values() for fs in c.splits.values() for f in fs})
        if "README.md" in files:
            used.append("README.md")
        revision = _git_head(path) or content_hash(path, used)
        root = path
        kind = SourceKind.LOCAL_DIR
    else:
        fmt, _ = data_format(path.name)
        if not fmt:
            raise InvalidArgument(f"{path.name} is not a data file Ferry can read (Parquet, JSON/JSONL, CSV)",
                                  field="dataset_name")
        files = {path.name: path.stat().st_size}
        split = _split_patterns([path.name])
        layout = Layout({DEFAULT_CONFIG: ConfigLayout(DEFAULT_CONFIG, split or {"train": [path.name]})},
                        DEFAULT_CONFIG)
        revision = content_hash(path.parent, [path.name])
        root = path.parent
        card = {}
        kind = SourceKind.LOCAL_FILES

    def opener(rel: str, meter: Meter | None) -> SourceFile:
        return LocalFile(root / rel, rel, files[rel], meter)

    return Source(kind=kind, repo_id=str(path), revision=revision, layout=layout, sizes=files, card=card,
                  description=str(card.get("pretty_name") or ""), _opener=opener)


HUB_PREFIXES = ("https://huggingface.co/datasets/", "http://huggingface.co/datasets/", "hf://datasets/",
                "datasets/")


def normalize_name(name: str) -> str:
    """A repo id from what users paste: `owner/name`, `datasets/owner/name`, the Hub URL or an hf:// path."""
    name = (name or "").strip()
    for prefix in HUB_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):].strip("/")
    return name


def resolve(hub: HubClient, name: str, revision: str, token: str | None, allowed_dirs: tuple[str, ...]) -> Source:
    name = normalize_name(name)
    if is_local(name):
        return resolve_local(name, allowed_dirs)
    return resolve_hub(hub, name, revision, token)
