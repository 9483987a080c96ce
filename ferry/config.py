"""Configuration: every environment variable a Ferry process reads, declared once.

Each process reads its settings once at start-up into a frozen pydantic-settings model
(`services/<svc>/config.py`, `gateway/config.py`, `ferry.stack.StackConfig`); a missing or malformed
value fails there with one line naming the variable (`read_or_exit`), not mid-request.

A variable is declared once, as a pydantic `Field` with `validation_alias=` its literal name, its default,
its validation (`ge=`, `le=`, a validated type) and a one-line `description=`:

* in the model that reads it (most variables), or in a group model several services share
  (`S3Config`, `GrpcConfig`, `LogConfig`) and nest;
* in a function below when several processes read it with their own default (`grpc_port(CATALOG_PORT)`),
  so the name, description and bounds still exist once.

`variables()` walks the processes' models (`PROCESSES`) and is the registry: `ENV_VARS` (name -> default)
and docs/configuration.md (`make config-docs`) are made from it; tests/test_config_vars.py fails when
the code reads a variable that is not declared, declares one twice, or the doc drifts.
"""

from __future__ import annotations

import importlib
import ipaddress
import logging
import os
import re
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    GetCoreSchemaHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, core_schema
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class ConfigError(RuntimeError):
    """A required variable is missing or a value does not parse."""


Env = Mapping[str, str]

# The services' gRPC ports; the addresses the others use to reach them by default.
CATALOG_PORT, IMPORTER_PORT, EXPORTER_PORT = 50051, 50052, 50053
CATALOG_ADDR = f"localhost:{CATALOG_PORT}"
IMPORTER_ADDR = f"localhost:{IMPORTER_PORT}"
EXPORTER_ADDR = f"localhost:{EXPORTER_PORT}"


class Secret(str):
    """A string whose repr never shows the value, so a logged config leaks nothing; `str(s)` is the value."""

    def __repr__(self) -> str:
        return "Secret('***')" if self else "Secret('')"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls, core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(lambda v: "***" if v else ""))


# -- value types (validation shared by several variables) --------------------------------------------------------


def _items(value: Any) -> Any:
    """Comma-separated text -> its non-empty items ("a, b,,c" -> a, b, c); a sequence passes through."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


def _flag(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _url(value: str) -> str:
    url = value.strip().rstrip("/")
    if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", url):
        raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
    return url


def _address(value: str) -> str:
    if not value.strip() or any(ch.isspace() for ch in value):
        raise ValueError(f"must be a gRPC target like host:port, got {value!r}")
    return value


_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def _grpc_host(raw: str) -> str:
    """An IPv4/IPv6 address (brackets optional) or a host name; IPv6 comes back in brackets, ready for host:port."""
    host = raw.strip()
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        addr = ipaddress.ip_address(bare)
    except ValueError:
        if _HOSTNAME.match(bare):
            return bare
        raise ValueError(f"must be an IP address or a host name, got {raw!r}") from None
    return f"[{addr}]" if addr.version == 6 else str(addr)


def origins(items: tuple[str, ...]) -> tuple[str, ...]:
    """Each origin is "*" or scheme://host[:port] exactly as browsers send it (no path, no trailing slash)."""
    for item in items:
        if item == "*":
            continue
        if not re.fullmatch(r"https?://[^/\s]+", item):
            raise ValueError(f"{item!r} is not an origin like http://localhost:5173 or *")
    if "*" in items and len(items) > 1:
        raise ValueError("'*' allows every origin; list origins or give '*' alone")
    return items


def _origins_text(text: str) -> str:
    origins(_items(text))
    return text


def _log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in logging.getLevelNamesMapping():
        raise ValueError(f"must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {value!r}")
    return level


@dataclass(frozen=True)
class Kind:
    """What a value must be, in words, for docs/configuration.md (pydantic ignores this metadata)."""

    text: str


Flag = Annotated[bool, BeforeValidator(_flag)]
Port = Annotated[int, Field(ge=0, le=65535)]
Url = Annotated[str, AfterValidator(_url), Kind("http(s) URL")]
Address = Annotated[str, AfterValidator(_address), Kind("gRPC target (`host:port`)")]
GrpcHost = Annotated[str, AfterValidator(_grpc_host), Kind("IP address or host name")]
Names = Annotated[tuple[str, ...], BeforeValidator(_items), Kind("comma-separated list")]
Secrets = Annotated[tuple[Secret, ...], BeforeValidator(_items), Kind("comma-separated secrets")]
Origins = Annotated[tuple[str, ...], BeforeValidator(_items), AfterValidator(origins), Kind("comma-separated origins")]
# The same, kept as the text (make run passes it on to the gateway).
OriginsText = Annotated[str, AfterValidator(_origins_text), Kind("comma-separated origins")]
LogLevel = Annotated[str, AfterValidator(_log_level), Kind("log level")]


# -- reading -----------------------------------------------------------------------------------------------------

_READING: ContextVar[Env | None] = ContextVar("ferry_config_env", default=None)
_MODELS: dict[str, type[Settings]] = {}
S = TypeVar("S", bound="Settings")
T = TypeVar("T")


class _EnvSource(PydanticBaseSettingsSource):
    """The variables a model declares (validation_alias), from one mapping; an empty value counts as unset."""

    def __init__(self, settings_cls: type[BaseSettings], env: Env) -> None:
        super().__init__(settings_cls)
        self.env = env

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        name = field.validation_alias
        value = self.env.get(name, "") if isinstance(name, str) else ""
        return (value or None), name if isinstance(name, str) else field_name, False

    def __call__(self) -> dict[str, Any]:
        found = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, field_name)
            if value is not None:
                found[key] = value
        return found


class Settings(BaseSettings):
    """Base of every settings model: frozen, built by field name in code or from the environment by `from_env`.

    Constructing a model directly (`GrpcConfig(host=...)`) reads no environment; `from_env` reads the declared
    variables of the model and of the groups it nests from `env` (default os.environ).
    """

    model_config = SettingsConfigDict(frozen=True, validate_by_name=True, validate_by_alias=True,
                                      validate_default=True, extra="forbid")
    # The section of docs/configuration.md listing the variables of this group (None: by who reads them).
    doc_section: ClassVar[str | None] = None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        _MODELS[cls.__name__] = cls

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        env = _READING.get()
        return (init_settings,) if env is None else (init_settings, _EnvSource(settings_cls, env))

    @classmethod
    def from_env(cls, env: Env | None = None, **overrides: Any) -> Self:
        """Read the settings from `env` (os.environ if None); `overrides` (by field name) win.

        Raises ConfigError with one line naming each variable that is missing or malformed.
        """
        env = os.environ if env is None else env
        problems = []
        for name, info in cls.model_fields.items():  # nested groups first, so every problem is reported at once
            nested = _nested_model(info.annotation)
            if nested is not None and name not in overrides:
                try:
                    overrides[name] = nested.from_env(env)
                except ConfigError as exc:
                    problems.append(str(exc))
                    overrides[name] = nested.model_construct()  # a stand-in, so the rest is still checked
        token = _READING.set(env)
        try:
            settings = cls(**overrides)
        except ValidationError as exc:
            problems.append(describe(exc))
        finally:
            _READING.reset(token)
        if problems:
            raise ConfigError("; ".join(problems))
        return settings

    @classmethod
    def _nested(cls) -> Self:
        return cls()

    @classmethod
    def declared(cls, field: str, **changes: Any) -> Any:
        """The declaration of `field` (its variable, description, validation) with `changes`, e.g. another
        default: for a model that reads the same variable with its own default."""
        return FieldInfo.merge_field_infos(cls.model_fields[field], **changes)

    @staticmethod
    def _raw(data: dict[str, Any], field_info: FieldInfo, field: str) -> Any:
        """A field's input in a before-validator's data, given by variable name or by field name."""
        alias = field_info.validation_alias
        return data.get(alias) if isinstance(alias, str) and alias in data else data.get(field)


def group(model: type[S]) -> Any:
    """A nested group (`s3: S3Config = group(S3Config)`): read from the same environment as its parent."""
    return Field(default_factory=model._nested)


# -- groups shared by several services ---------------------------------------------------------------------------


def _public_endpoint(url: str) -> str:
    url = url.strip().rstrip("/")
    if url and (not url.startswith(("http://", "https://")) or "/" in url.split("://", 1)[1]):
        raise ValueError(f"FERRY_S3_PUBLIC_ENDPOINT must be a scheme and host, like https://files.example.com "
                         f"(got {url!r})")
    return url


class S3Config(Settings):
    """Object storage settings shared by every service that touches the bucket."""

    doc_section: ClassVar[str | None] = "Object storage"

    endpoint: str = Field(
        validation_alias="FERRY_S3_ENDPOINT",
        description="`http://host:port` or `https://host` (`make run` starts a local SeaweedFS when unset)",
        json_schema_extra={"kind": "URL or `host:port`"})
    access_key: Secret = Field(validation_alias="FERRY_S3_ACCESS_KEY", description="access key")
    secret_key: Secret = Field(validation_alias="FERRY_S3_SECRET_KEY", description="secret key")
    bucket: str = Field("ferry", min_length=3, validation_alias="FERRY_S3_BUCKET",
                        description="bucket; created at start if missing")
    secure: Flag = Field(False, validation_alias="FERRY_S3_SECURE", description="TLS",
                         json_schema_extra={"doc_default": "`true` for `https://` endpoints, else `false`"})
    region: str = Field("us-east-1", validation_alias="FERRY_S3_REGION", description="region used for signing")
    # Where users outside the deployment reach the same store (https://files.example.com); presigned download
    # URLs are signed for it, since a signature is bound to the host. "" = sign for `endpoint`.
    public_endpoint: Annotated[str, AfterValidator(_public_endpoint)] = Field(
        "", validation_alias="FERRY_S3_PUBLIC_ENDPOINT",
        description="`https://host[:port]` under which users reach the same store; presigned download URLs are "
                    "signed for it (a signature covers the host); empty: sign for `FERRY_S3_ENDPOINT`",
        json_schema_extra={"kind": "`http(s)://host[:port]`"})

    @field_validator("endpoint")
    @classmethod
    def _bare_endpoint(cls, endpoint: str) -> str:
        """Without its scheme (the client takes host:port and `secure`)."""
        for scheme in ("http://", "https://"):
            if endpoint.startswith(scheme):
                endpoint = endpoint[len(scheme):]
        endpoint = endpoint.rstrip("/")
        if not endpoint:
            raise ValueError("must be http://host:port or https://host")
        return endpoint

    @model_validator(mode="before")
    @classmethod
    def _secure_follows_scheme(cls, data: Any) -> Any:
        """FERRY_S3_SECURE unset: TLS for an https:// endpoint."""
        if isinstance(data, dict) and cls._raw(data, cls.model_fields["secure"], "secure") is None:
            endpoint = cls._raw(data, cls.model_fields["endpoint"], "endpoint")
            if isinstance(endpoint, str):
                data = {**data, "secure": endpoint.startswith("https://")}
        return data


def grpc_host(default: str = "0.0.0.0") -> Any:
    return Field(default, validation_alias="FERRY_GRPC_HOST",
                 description="gRPC listen address: an IPv4 or IPv6 address (`::` or `[::]` for every IPv6 "
                             "interface) or a host name; `0.0.0.0` suits a pod, `127.0.0.1` keeps the ports "
                             "loopback-only")


class GrpcConfig(Settings):
    """How a gRPC service listens; the same two variables for catalog, importer and exporter.

    host: the address the server binds. `0.0.0.0` (every interface) suits a pod; `make run` sets 127.0.0.1
    so a dev machine's gRPC ports are loopback-only. reflection: whether grpc.reflection is served.
    """

    host: GrpcHost = grpc_host()
    reflection: Flag = Field(True, validation_alias="FERRY_GRPC_REFLECTION",
                             description="serve gRPC server reflection (`grpcurl` can list and describe the "
                                         "services without the protos); `false` turns it off")


class LogConfig(Settings):
    """Logging of every service (ferry/logs.py)."""

    level: LogLevel = Field("INFO", validation_alias="FERRY_LOG_LEVEL",
                            description="log level: `DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL`")


# -- variables several processes read, each with its own default ---------------------------------------------------


def grpc_port(default: int) -> Any:
    return Field(default, ge=0, le=65535, validation_alias="FERRY_GRPC_PORT", description="gRPC listen port")


def grpc_workers(default: int, minimum: int = 1) -> Any:
    return Field(default, ge=minimum, validation_alias="FERRY_GRPC_WORKERS",
                 description="threads running the gRPC calls (an open watch stream waits on the event loop and holds none)")


def shutdown_grace() -> Any:
    return Field(20.0, ge=0, allow_inf_nan=False, validation_alias="FERRY_SHUTDOWN_GRACE_SECONDS",
                 description="on SIGTERM: NOT_SERVING at once, in-flight calls get this long")


def catalog_addr() -> Any:
    return Field(CATALOG_ADDR, validation_alias="FERRY_CATALOG_ADDR", description="where the catalog is reached")


def importer_addr() -> Any:
    return Field(IMPORTER_ADDR, validation_alias="FERRY_IMPORTER_ADDR", description="where the importer is reached")


def exporter_addr() -> Any:
    return Field(EXPORTER_ADDR, validation_alias="FERRY_EXPORTER_ADDR", description="where the exporter is reached")


def data_dir(default: str | Path = ".ferry-data", doc_default: str | None = None) -> Any:
    return Field(Path(default), validation_alias="FERRY_DATA_DIR",
                 description="local state (also used by `make run` for the object store and logs)",
                 json_schema_extra={"doc_default": doc_default} if doc_default else None)


def gateway_port() -> Any:
    return Field(8000, ge=0, le=65535, validation_alias="FERRY_GATEWAY_PORT", description="gateway listen port")


def cors_origins(default: str | tuple[str, ...] = ()) -> Any:
    return Field(default, validation_alias="FERRY_CORS_ORIGINS",
                 description="comma-separated browser origins (`scheme://host[:port]`) allowed to call `/api/*`, "
                             "or `*` alone for any origin (then without credentials); empty: no CORS headers")


def token_key() -> Any:
    return Field(Secret(""), validation_alias="FERRY_TOKEN_KEY",
                 description="32 random bytes, base64; seals a request's `X-HF-Token` (AES-256-GCM, bound to the "
                             "job id) into its import job so another importer replica can resume it. Every importer "
                             "replica needs the same key; without one a resumed job falls back to `HF_TOKEN` "
                             "(`make run` makes one per data dir)")


# -- errors ------------------------------------------------------------------------------------------------------

_MESSAGES = {
    "int_parsing": "must be an integer", "int_type": "must be an integer", "int_from_float": "must be an integer",
    "float_parsing": "must be a number", "float_type": "must be a number", "finite_number": "must be a finite number",
    "bool_parsing": "must be a boolean (true/false)", "bool_type": "must be a boolean (true/false)",
    "greater_than_equal": "must be >= {ge}", "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}", "less_than": "must be < {lt}",
    "string_too_short": "must be at least {min_length} characters",
    "literal_error": "must be {expected}",
}


def _mentions_secret(annotation: Any) -> bool:
    return annotation is Secret or any(_mentions_secret(arg) for arg in get_args(annotation))


def _variable_of(model: type[Settings] | None, key: Any) -> tuple[str, bool]:
    """(variable name, is secret) of an error location's first key (a variable or a field name)."""
    for name, info in (model.model_fields.items() if model else ()):
        if key in (name, info.validation_alias):
            alias = info.validation_alias
            return (alias if isinstance(alias, str) else name), _mentions_secret(info.annotation)
    return str(key), True  # unknown: do not echo the value


def _number(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def describe(exc: ValidationError) -> str:
    """One line naming each variable in error; values of secrets are never shown."""
    model = _MODELS.get(exc.title)
    parts = []
    for err in exc.errors():
        if err["type"] == "default_factory_not_called":  # a default computed from a field in error
            continue
        var, secret = _variable_of(model, err["loc"][0]) if err["loc"] else ("configuration", True)
        ctx = err.get("ctx") or {}
        if err["type"] == "missing":
            parts.append(f"environment variable {var} is required")
            continue
        if err["type"] == "value_error":
            text = str(ctx.get("error", err["msg"]))
            parts.append(text if var in text else f"{var} {text}" if text.startswith(("must ", "is "))
                         else f"{var}: {text}")
            continue
        template = _MESSAGES.get(err["type"])
        if template:
            text = template.format(**{k: _number(v) for k, v in ctx.items()})
        else:  # pydantic's own words: "Input should be ..." -> "must be ..."
            text = re.sub(r"^\w+ should", "must", err["msg"])
        parts.append(f"{var} {text}" + ("" if secret else f", got {err['input']!r}"))
    return "; ".join(parts)


def read_or_exit(process: str, read: Callable[[], T]) -> T:
    """`read()` (a from_env), or exit 2 printing one line that names the variable: a config error is the operator's
    to fix, a traceback would only hide it."""
    try:
        return read()
    except ConfigError as exc:
        print(f"{process}: bad configuration: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


# -- the registry: which process reads which variable ------------------------------------------------------------

# Each process's settings model (module:class); they are imported by `variables()` only.
PROCESSES: dict[str, str] = {
    "catalog": "services.catalog.config:CatalogConfig",
    "importer": "services.importer.config:ImporterConfig",
    "exporter": "services.exporter.config:ExporterConfig",
    "gateway": "gateway.config:GatewayConfig",
    "make run": "ferry.stack:StackConfig",
}
DEPLOYED = ("catalog", "importer", "exporter", "gateway")


@dataclass(frozen=True)
class Variable:
    """One environment variable, as the processes that read it declare it."""

    name: str
    description: str
    readers: tuple[str, ...]  # processes, in PROCESSES order
    defaults: dict[str, str]  # process -> default as Markdown ("required", "empty", "`8000`")
    kinds: dict[str, str]  # process -> what the value must be ("integer 0-65535")
    secret: bool = False
    section: str | None = None  # a group's doc section, if declared in one
    read_by_library: bool = False

    @property
    def default(self) -> str:
        return merge(self.defaults)

    @property
    def kind(self) -> str:
        return merge(self.kinds)


# Set for libraries Ferry uses, not read by Ferry's code; listed so operators find them.
LIBRARY_VARIABLES = (
    Variable("HF_HOME", "Hub client cache", ("importer",),
             {"importer": "`~/.cache/huggingface`"}, {"importer": "path"}, read_by_library=True),
)


def merge(per_process: dict[str, str]) -> str:
    """{"catalog": "`64`", "importer": "`16`", "exporter": "`16`"} -> "`16` (catalog: `64`)"; make run's own
    value comes last, in parentheses."""
    services = {p: v for p, v in per_process.items() if p != "make run"} or dict(per_process)
    values = list(services.values())
    common = max(values, key=values.count)
    if len(values) > 1 and values.count(common) == 1:  # all different: say each
        head = ", ".join(f"{process} {value}" for process, value in services.items())
        others = {p: v for p, v in per_process.items() if p not in services}
    else:
        head, others = common, {p: v for p, v in per_process.items() if v != common}
    return head + (f" ({', '.join(f'{p}: {v}' for p, v in others.items())})" if others else "")


def _nested_model(annotation: Any) -> type[Settings] | None:
    if get_origin(annotation) in (Union, types.UnionType):
        found = [m for m in map(_nested_model, get_args(annotation)) if m is not None]
        return found[0] if found else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, Settings) else None


def declarations(model: type[Settings]) -> Iterator[tuple[type[Settings], str, FieldInfo]]:
    """(declaring model, field name, field) of every variable `model` reads, nested groups included."""
    for name, info in model.model_fields.items():
        nested = _nested_model(info.annotation)
        if nested is not None:
            yield from declarations(nested)
        elif isinstance(info.validation_alias, str):
            yield model, name, info


def _default_text(info: FieldInfo) -> str:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if extra.get("doc_default"):
        return str(extra["doc_default"])
    if info.default is PydanticUndefined:
        return "required"
    value = info.default
    if value in ("", (), None, {}):
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        value = ",".join(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def _kind_text(info: FieldInfo) -> str:
    annotation = info.annotation
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    bounds = {}
    for meta in info.metadata:
        for key in ("ge", "gt", "le", "lt", "min_length"):
            if getattr(meta, key, None) is not None:
                bounds[key] = _number(getattr(meta, key))
    kinds = [meta.text for meta in info.metadata if isinstance(meta, Kind)]
    if extra.get("kind"):
        base = str(extra["kind"])
    elif kinds:
        base = kinds[0]
    elif annotation is Secret:
        base = "secret"
    elif get_origin(annotation) is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in get_args(annotation))
    else:
        names: dict[Any, str] = {int: "integer", float: "number", bool: "boolean", Path: "path"}
        base = names.get(annotation, "text")
    if "min_length" in bounds and base == "text":
        return f"{base}, {bounds['min_length']}+ characters"
    if "ge" in bounds and "le" in bounds:
        return f"{base} {bounds['ge']}-{bounds['le']}"
    limits = [f"{op} {bounds[key]}" for key, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
              if key in bounds]
    return f"{base} {', '.join(limits)}" if limits else base


def process_models() -> dict[str, type[Settings]]:
    out = {}
    for process, where in PROCESSES.items():
        module, _, cls = where.partition(":")
        out[process] = getattr(importlib.import_module(module), cls)
    return out


def variables() -> dict[str, Variable]:
    """Every variable any Ferry process reads (plus LIBRARY_VARIABLES), in declaration order."""
    found: dict[str, dict[str, Any]] = {}
    for process, model in process_models().items():
        for owner, _, info in declarations(model):
            name = str(info.validation_alias)
            entry = found.setdefault(name, {"description": info.description or "", "readers": [], "defaults": {},
                                            "kinds": {}, "secret": False, "section": owner.doc_section})
            if process not in entry["readers"]:
                entry["readers"].append(process)
                entry["defaults"][process] = _default_text(info)
                entry["kinds"][process] = _kind_text(info)
            entry["secret"] = entry["secret"] or _mentions_secret(info.annotation)
            entry["section"] = entry["section"] or owner.doc_section
    out = {name: Variable(name, e["description"], tuple(e["readers"]), e["defaults"], e["kinds"], e["secret"],
                          e["section"]) for name, e in found.items()}
    for var in LIBRARY_VARIABLES:
        out[var.name] = var
    return out


def __getattr__(name: str) -> Any:
    # ENV_VARS: every variable with its default ("required", "empty", "`8000`"), made from the declarations on
    # first use (importing the services' config modules here would be circular).
    if name == "ENV_VARS":
        env_vars = {var.name: var.default for var in variables().values()}
        globals()["ENV_VARS"] = env_vars
        return env_vars
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
