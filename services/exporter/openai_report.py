"""OpenAI chat fine-tuning validation report, built while an export streams.

It replaces an estimate of characters/4 at a hard-coded price that always said
"valid": every line gets OpenAI's published format checks (cookbook "Data
preparation and analysis for chat model fine-tuning"), tokens are counted with
the model's real BPE (offline, `bpe-openai`), and epochs / billed tokens / cost
follow the cookbook's rules. Memory stays bounded for any number of lines
(docs/openai-report.md). Pure: no grpc, no network.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from orjson import loads as _fast_loads

from ferry.config import Env
from ferry.errors import InvalidArgument

MODEL_FIELD = "additional_params.model"

# The cookbook's default-epochs rule.
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25
# OpenAI accepts n_epochs 1..50 as a hyperparameter.
MAX_EPOCHS = 50
# OpenAI refuses a training file with fewer examples than this.
MIN_TRAIN_EXAMPLES = 10

# The cookbook's num_tokens_from_messages constants.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_REPLY_PRIMING = 3

# Keys and roles OpenAI's chat fine-tuning format knows (cookbook + tools era).
ALLOWED_MESSAGE_KEYS = frozenset({"role", "content", "name", "function_call", "weight", "tool_calls", "tool_call_id"})
ALLOWED_ROLES = frozenset({"system", "user", "assistant", "function", "tool"})

# Error types in the order they are reported.
ERROR_TYPES = (
    "invalid_json",
    "data_type",
    "missing_messages_list",
    "message_not_object",
    "message_missing_key",
    "message_unrecognized_key",
    "unrecognized_role",
    "missing_content",
    "invalid_weight",
    "example_missing_assistant_message",
)
ERROR_DESCRIPTIONS = {
    "invalid_json": "line is not valid JSON (or not UTF-8)",
    "data_type": "line is JSON but not an object",
    "missing_messages_list": "no non-empty 'messages' list",
    "message_not_object": "a message is not a JSON object",
    "message_missing_key": "a message lacks 'role' or 'content'",
    "message_unrecognized_key": "a message has a key other than " + ", ".join(sorted(ALLOWED_MESSAGE_KEYS)),
    "unrecognized_role": "a message role is not one of " + ", ".join(sorted(ALLOWED_ROLES)),
    "missing_content": "a message content is missing, empty or not a string",
    "invalid_weight": "'weight' is not 0 or 1, or is set on a non-assistant message",
    "example_missing_assistant_message": "example has no assistant message",
}

SAMPLE_LINES = 20  # line numbers kept per error type / warning, per split

# Fine-tunable snapshots: tokenizer and the longest training example OpenAI keeps
# (longer examples are truncated). Aliases map to the snapshot OpenAI fine-tunes.
MODELS: dict[str, dict[str, Any]] = {
    "gpt-4o-mini-2024-07-18": {"encoding": "o200k_base", "context_limit": 65536},
    "gpt-4o-2024-08-06": {"encoding": "o200k_base", "context_limit": 65536},
    "gpt-4.1-2025-04-14": {"encoding": "o200k_base", "context_limit": 65536},
    "gpt-4.1-mini-2025-04-14": {"encoding": "o200k_base", "context_limit": 65536},
    "gpt-4.1-nano-2025-04-14": {"encoding": "o200k_base", "context_limit": 65536},
    "gpt-3.5-turbo-0125": {"encoding": "cl100k_base", "context_limit": 16385},
    "gpt-3.5-turbo-1106": {"encoding": "cl100k_base", "context_limit": 16385},
}
ALIASES = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
}

PRICES_FILE = Path(__file__).with_name("prices.json")


def _model_key(model: Any) -> str:
    key = str(model or "").strip().lower()
    if key.startswith("ft:"):  # continuing a fine-tuned model: "ft:<base>:<org>:<suffix>:<id>"
        key = key.split(":")[1] if key.count(":") >= 1 else ""
    return key


def check_model(model: str) -> str:
    """The snapshot name OpenAI fine-tunes for `model`; unknown models are a request error."""
    key = _model_key(model)
    key = ALIASES.get(key, key)
    if key not in MODELS:
        known = ", ".join(sorted(set(MODELS) | set(ALIASES)))
        shown = str(model) if len(str(model)) <= 40 else str(model)[:40] + "..."  # a bad value, quoted briefly
        raise InvalidArgument(
            f"unknown OpenAI fine-tuning model {shown!r}; known models: {known}", field=MODEL_FIELD
        )
    return key


def encoding_for(model: str) -> str:
    """The BPE encoding a model family uses (tiktoken's model -> encoding mapping)."""
    key = _model_key(model)
    if key.startswith(("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4")):
        return "o200k_base"
    if key.startswith(("gpt-4", "gpt-3.5", "gpt-35")):
        return "cl100k_base"
    raise InvalidArgument(f"no known tokenizer for model {model!r}", field=MODEL_FIELD)


@cache
def _tokenizer(encoding: str) -> Any:
    # The Rust binding's `count` counts without building a token list; the
    # tiktoken-style wrapper would also load the whole vocabulary in Python.
    from bpe_openai import _bindings

    return _bindings.tokenizer_for_encoding(encoding)


def tokenizer_count(encoding: str) -> Callable[[str], int]:
    """`count(text) -> int` for an encoding (exposed so tests and callers share one tokenizer)."""
    return _tokenizer(encoding).count


def _safe_text(text: str) -> str:
    # Lone surrogates (legal in JSON "\ud800") cannot cross into Rust as UTF-8.
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


# ---------------------------------------------------------------------------
# Prices
# ---------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _builtin_price_file() -> dict[str, Any]:
    return json.loads(PRICES_FILE.read_text(encoding="utf-8"))


def builtin_prices() -> dict[str, float]:
    return {k: float(v) for k, v in _builtin_price_file()["usd_per_1m_training_tokens"].items()}


def builtin_price_source() -> str:
    return str(_builtin_price_file()["source"])


def _parse_prices(raw: Any, where: str, error: Callable[[str], Exception]) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise error(f"{where} must be a JSON object {{model: USD per 1M training tokens}}")
    out: dict[str, float] = {}
    for model, price in raw.items():
        key = ALIASES.get(_model_key(model), _model_key(model))
        if key not in MODELS:
            raise error(f"{where}: unknown model {model!r}; known models: {', '.join(sorted(MODELS))}")
        if isinstance(price, bool) or not isinstance(price, int | float) or not math.isfinite(price) or price < 0:
            raise error(f"{where}: price for {model!r} must be a non-negative number, got {price!r}")
        out[key] = float(price)
    return out


def prices_from_env(env: Env | None = None) -> dict[str, float]:
    """Overrides from FERRY_OPENAI_PRICES_JSON (empty when unset); bad JSON fails at start-up (ConfigError)."""
    from services.exporter.config import OpenAIPrices  # declared there (that module imports this one)

    return dict(OpenAIPrices.from_env(env).prices)


# ---------------------------------------------------------------------------
# Bounded-memory distribution
# ---------------------------------------------------------------------------


class Distribution:
    """Counts of integer values: exact below EXACT_LIMIT, ~0.2% buckets above.

    Per-example token counts repeat a lot, so a value -> count map stays small
    and gives exact quantiles (numpy's default linear interpolation) however
    many lines there are. Values >= EXACT_LIMIT keep their top 10 bits only,
    which bounds the map to EXACT_LIMIT + 512 keys per power of two.
    """

    EXACT_LIMIT = 1 << 17
    _KEEP_BITS = 10

    __slots__ = ("counts", "n", "total", "min", "max", "exact")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.total = 0
        self.min: int | None = None
        self.max: int | None = None
        self.exact = True

    def add(self, value: int) -> None:
        self.n += 1
        self.total += value
        if self.min is None or value < self.min:
            self.min = value
        if self.max is None or value > self.max:
            self.max = value
        if value >= self.EXACT_LIMIT:
            self.exact = False
            shift = value.bit_length() - self._KEEP_BITS
            value = ((value >> shift) << shift) + (1 << (shift - 1))
        counts = self.counts
        counts[value] = counts.get(value, 0) + 1

    def merge(self, other: Distribution) -> None:
        """Add another distribution's values (from a report of other lines)."""
        self.n += other.n
        self.total += other.total
        if other.min is not None and (self.min is None or other.min < self.min):
            self.min = other.min
        if other.max is not None and (self.max is None or other.max > self.max):
            self.max = other.max
        self.exact = self.exact and other.exact
        counts = self.counts
        for value, n in other.counts.items():
            counts[value] = counts.get(value, 0) + n

    def _order_stats(self, ranks: list[int]) -> dict[int, int]:
        """Values at the given 0-based ranks of the sorted data."""
        wanted = sorted(set(ranks))
        out: dict[int, int] = {}
        seen = 0
        i = 0
        for value in sorted(self.counts):
            seen += self.counts[value]
            while i < len(wanted) and wanted[i] < seen:
                out[wanted[i]] = value
                i += 1
            if i == len(wanted):
                break
        return out

    def quantiles(self, qs: tuple[float, ...]) -> list[float]:
        """numpy.quantile(values, q) (method 'linear') for each q."""
        if not self.n:
            return [0.0 for _ in qs]
        positions = [(self.n - 1) * q for q in qs]
        ranks = [r for p in positions for r in (math.floor(p), min(math.floor(p) + 1, self.n - 1))]
        stats = self._order_stats(ranks)
        out = []
        for p in positions:
            lo = math.floor(p)
            hi = min(lo + 1, self.n - 1)
            out.append(stats[lo] + (p - lo) * (stats[hi] - stats[lo]))
        return out

    def summary(self) -> dict[str, Any]:
        p5, median, p95 = self.quantiles((0.05, 0.5, 0.95))
        return {
            "count": self.n,
            "min": self.min or 0,
            "max": self.max or 0,
            "mean": round(self.total / self.n, 3) if self.n else 0.0,
            "median": round(median, 3),
            "p5": round(p5, 3),
            "p95": round(p95, 3),
            "exact": self.exact,
        }


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------


class _Split:
    __slots__ = (
        "lines", "blank", "examples", "error_counts", "error_samples", "tokens", "assistant_tokens",
        "messages", "over_limit", "over_limit_samples", "capped_tokens", "missing_system", "missing_user",
        "missing_system_samples", "missing_user_samples", "blank_samples", "invalid_lines",
    )

    def __init__(self) -> None:
        self.lines = 0
        self.blank = 0
        self.blank_samples: list[int] = []
        self.examples = 0  # lines with a messages list (token-counted)
        self.invalid_lines = 0  # lines with at least one format error
        self.error_counts: dict[str, int] = {}
        self.error_samples: dict[str, list[int]] = {}
        self.tokens = Distribution()
        self.assistant_tokens = Distribution()
        self.messages = Distribution()
        self.over_limit = 0
        self.over_limit_samples: list[int] = []
        self.capped_tokens = 0  # sum of min(context_limit, tokens)
        self.missing_system = 0
        self.missing_system_samples: list[int] = []
        self.missing_user = 0
        self.missing_user_samples: list[int] = []


    def merge(self, other: _Split) -> None:
        """Fold in the state of other lines of the same split (line numbers are already global)."""
        self.lines = max(self.lines, other.lines)
        for name in ("blank", "examples", "invalid_lines", "over_limit", "capped_tokens", "missing_system",
                     "missing_user"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("blank_samples", "over_limit_samples", "missing_system_samples", "missing_user_samples"):
            setattr(self, name, _first_lines(getattr(self, name), getattr(other, name)))
        for kind, n in other.error_counts.items():
            self.error_counts[kind] = self.error_counts.get(kind, 0) + n
        for kind, lines in other.error_samples.items():
            self.error_samples[kind] = _first_lines(self.error_samples.get(kind, []), lines)
        self.tokens.merge(other.tokens)
        self.assistant_tokens.merge(other.assistant_tokens)
        self.messages.merge(other.messages)


def _first_lines(a: list[int], b: list[int]) -> list[int]:
    """The lowest SAMPLE_LINES line numbers of two sample lists, as one report reading in order keeps."""
    return sorted(set(a) | set(b))[:SAMPLE_LINES]


def _sample(samples: list[int], lineno: int) -> None:
    if len(samples) < SAMPLE_LINES:
        samples.append(lineno)


def _plain_content(m: dict, role: Any) -> str | None:
    """The content of a valid {"role": ..., "content": ...} message (most are), read without the checks; else None."""
    if len(m) == 2:
        content = m.get("content")
        if type(content) is str and content and type(role) is str and role in ALLOWED_ROLES:
            return content
    return None


def _message_errors(m: dict, role: Any) -> set[str]:
    """The format errors of one message (any message not read by the plain fast path)."""
    errors: set[str] = set()
    content = m.get("content")
    calls = m.get("tool_calls") or m.get("function_call")
    if not ALLOWED_MESSAGE_KEYS.issuperset(m):
        errors.add("message_unrecognized_key")
    if "role" not in m or ("content" not in m and not calls):
        errors.add("message_missing_key")
    # An assistant turn that only calls a tool/function may have no content.
    if (not content and not calls) if type(content) is str else not (calls and content is None):
        errors.add("missing_content")
    if type(role) is not str or role not in ALLOWED_ROLES:
        errors.add("unrecognized_role")
    if "weight" in m and (role != "assistant" or m["weight"] not in (0, 1) or type(m["weight"]) is bool):
        errors.add("invalid_weight")
    return errors


def default_epochs(n_examples: int) -> int:
    """The default n_epochs OpenAI picks for a training file of n_examples (as in its cookbook)."""
    if n_examples <= 0:
        return 0
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


class _Reparse(Exception):
    """A message needs json.loads's exact values (raised before the split's counters change)."""


class OpenAIReport:
    """Feed every exported line with add_line(), then finish() for the JSON report."""

    def __init__(
        self,
        model: str = "gpt-4o-mini",
        prices: dict | None = None,
        n_epochs: int | None = None,
        context_limit: int | None = None,
        env: Env | None = None,
    ) -> None:
        self.model = check_model(model)
        self.requested_model = str(model)
        self.encoding = encoding_for(self.model)
        if n_epochs is not None and (
            isinstance(n_epochs, bool) or not isinstance(n_epochs, int) or not 1 <= n_epochs <= MAX_EPOCHS
        ):
            raise InvalidArgument(
                f"n_epochs must be an integer between 1 and {MAX_EPOCHS}, got {n_epochs!r}",
                field="additional_params.n_epochs",
            )
        self.n_epochs = n_epochs
        if context_limit is not None and (
            isinstance(context_limit, bool) or not isinstance(context_limit, int) or context_limit < 1
        ):
            raise InvalidArgument(
                f"context_limit must be a positive integer, got {context_limit!r}",
                field="additional_params.context_limit",
            )
        self.context_limit = context_limit or int(MODELS[self.model]["context_limit"])

        self.price_table = builtin_prices()
        self.price_sources = dict.fromkeys(self.price_table, builtin_price_source())
        for model_key, price in prices_from_env(env).items():
            self.price_table[model_key] = price
            self.price_sources[model_key] = "FERRY_OPENAI_PRICES_JSON"
        if prices is not None:
            for model_key, price in _parse_prices(prices, "prices", _invalid_prices).items():
                self.price_table[model_key] = price
                self.price_sources[model_key] = "request override"

        # Loaded on the first count: a report that only merges other processes' states never needs the ~120 MB
        # vocabulary.
        self._count: Callable[[str], int] = self._load_count
        self._cache: dict[str, int] = {}
        # The last long system text and its count: a request's system_message (up to 64 KiB) is on every line.
        self._last_system: tuple[str, int] = ("", 0)
        self._splits: dict[str, _Split] = {}

    # -- per line -----------------------------------------------------------

    def _load_count(self, text: str) -> int:
        self._count = tokenizer_count(self.encoding)
        return self._count(text)

    # -- state across processes ---------------------------------------------

    def start_at(self, split: str, lineno: int) -> None:
        """The next line added to `split` is line `lineno` (a process given every other batch numbers globally)."""
        self._split(split).lines = lineno - 1

    def state(self) -> dict[str, _Split]:
        """What merge() needs from this report (picklable)."""
        return self._splits

    def merge(self, state: dict[str, _Split]) -> None:
        """Fold in another report's state, as if its lines had been added here."""
        for name, other in state.items():
            self._split(name).merge(other)

    def _split(self, split: str) -> _Split:
        st = self._splits.get(split)
        if st is None:
            st = self._splits[split] = _Split()
        return st

    def add_line(self, line: bytes | str, split: str = "train") -> None:
        """Check and count one exported line (1-based line numbers per split)."""
        st = self._splits.get(split) or self._split(split)
        st.lines += 1
        lineno = st.lines
        # orjson is ~2x faster; what it refuses (NaN, 1e400, lone surrogates, bad lines) json.loads decides.
        # It turns integers beyond 64 bits into floats, so a message whose non-text values count (tool calls,
        # weights, ...) is re-read with json.loads (_Reparse): the report is exactly json.loads's.
        exact = False
        try:
            ex = _fast_loads(line)
        except ValueError:
            exact = True
            try:
                ex = json.loads(line)
            except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, absurd nesting
                if not line.strip():
                    st.blank += 1
                    if len(st.blank_samples) < SAMPLE_LINES:
                        st.blank_samples.append(lineno)
                    return
                self._errors(st, lineno, ("invalid_json",))
                return
        if type(ex) is not dict:
            self._errors(st, lineno, ("data_type",))
            return
        messages = ex.get("messages")
        if not messages or type(messages) is not list:
            self._errors(st, lineno, ("missing_messages_list",))
            return

        try:
            errors = self._check_and_count(st, lineno, messages, self._count, exact)
        except _Reparse:
            messages = json.loads(line)["messages"]
            try:
                errors = self._check_and_count(st, lineno, messages, self._count, True)
            except UnicodeEncodeError:
                errors = self._check_and_count(st, lineno, messages, self._safe_count, True)
        except UnicodeEncodeError:
            errors = self._check_and_count(st, lineno, messages, self._safe_count, True)
        if errors:
            self._errors(st, lineno, errors)

    def _safe_count(self, text: str) -> int:
        return self._count(_safe_text(text))

    def _check_and_count(self, st: _Split, lineno: int, messages: list, count: Any, exact: bool = True
                         ) -> set[str] | None:
        """Check and count one example; `st` changes only after every message is read (see _Reparse)."""
        errors, total, assistant, roles = self._read_messages(messages, count, exact)
        if "assistant" not in roles:
            errors = errors or set()
            errors.add("example_missing_assistant_message")
        self._record(st, lineno, len(messages), total + TOKENS_REPLY_PRIMING, assistant, roles)
        return errors

    def _read_messages(self, messages: list, count: Any, exact: bool
                       ) -> tuple[set[str] | None, int, int, set[str]]:
        """(format errors or None, tokens, assistant tokens, known roles present) of an example's messages."""
        errors: set[str] | None = None
        total = assistant = 0
        roles: set[str] = set()
        tokens, cache = self._tokens, self._cache
        for m in messages:
            if type(m) is not dict:
                errors = errors or set()
                errors.add("message_not_object")
                continue
            role: Any = m.get("role")
            content = _plain_content(m, role)
            if content is not None:  # the common case: the checks below would find nothing
                n = tokens(content, role, count)
                total += TOKENS_PER_MESSAGE + (cache.get(role) or tokens(role, role, count)) + n
                roles.add(role)
                if role == "assistant":
                    assistant += n
                continue
            if not exact:
                raise _Reparse
            found = _message_errors(m, role)
            if found:
                errors = found if errors is None else errors | found
            if type(role) is str and role in ALLOWED_ROLES:
                roles.add(role)
            n, n_assistant = self._message_tokens(m, role, count)
            total += n
            assistant += n_assistant
        return errors, total, assistant, roles

    def _message_tokens(self, m: dict, role: Any, count: Any) -> tuple[int, int]:
        """num_tokens_from_messages for one message (3 + every value + 1 per name), and the assistant's part."""
        total = TOKENS_PER_MESSAGE
        assistant = 0
        for key, value in m.items():
            if type(value) is str:
                n = self._tokens(value, role, count)
            elif value is None or key == "weight":
                continue
            else:  # tool_calls / function_call / non-text content: their compact JSON
                n = count(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
            total += n
            if key == "name":
                total += TOKENS_PER_NAME
            if role == "assistant" and key in ("content", "tool_calls", "function_call"):
                assistant += n
        return total, assistant

    def _tokens(self, text: str, role: Any, count: Any) -> int:
        # Short texts and system prompts repeat across examples; long ones rarely do.
        if len(text) <= 64 or (role == "system" and len(text) <= 8192):
            cache = self._cache
            n = cache.get(text)
            if n is None:
                n = count(text)
                if len(cache) >= 1024:
                    cache.clear()
                cache[text] = n
            return int(n)
        if role == "system":
            last_text, last_n = self._last_system
            if text == last_text:
                return last_n
            n = int(count(text))
            self._last_system = (text, n)
            return n
        return int(count(text))

    def _record(self, st: _Split, lineno: int, n_messages: int, total: int, assistant: int, roles: set[str]
                ) -> None:
        """Add one example's counts to its split."""
        st.examples += 1
        st.tokens.add(total)
        st.assistant_tokens.add(assistant)
        st.messages.add(n_messages)
        limit = self.context_limit
        if total > limit:
            st.over_limit += 1
            _sample(st.over_limit_samples, lineno)
            st.capped_tokens += limit
        else:
            st.capped_tokens += total
        if "system" not in roles:
            st.missing_system += 1
            _sample(st.missing_system_samples, lineno)
        if "user" not in roles:
            st.missing_user += 1
            _sample(st.missing_user_samples, lineno)

    @staticmethod
    def _errors(st: _Split, lineno: int, errors: Any) -> None:
        st.invalid_lines += 1
        for kind in errors:
            st.error_counts[kind] = st.error_counts.get(kind, 0) + 1
            samples = st.error_samples.setdefault(kind, [])
            if len(samples) < SAMPLE_LINES:
                samples.append(lineno)

    # -- report -------------------------------------------------------------

    def finish(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (may be called more than once)."""
        train = self._splits.get("train") or _Split()
        ordered = sorted(self._splits.items(), key=lambda item: (item[0] != "train", item[0] != "validation"))
        splits = {name: _split_report(name, st) for name, st in ordered}
        format_errors = _total_errors(st for _, st in ordered)
        auto_epochs = default_epochs(train.examples)
        n_epochs = self.n_epochs if self.n_epochs is not None else auto_epochs
        billed_tokens = train.capped_tokens * n_epochs
        warnings = self._warnings(train, splits, n_epochs, auto_epochs)
        return {
            "format": "openai-chat",
            "model": self.model,
            "requested_model": self.requested_model,
            "encoding": self.encoding,
            "context_limit": self.context_limit,
            "is_valid": not format_errors,
            "format_errors": format_errors,
            "lines": sum(st.lines for st in self._splits.values()),
            "examples": sum(st.examples for st in self._splits.values()),
            "splits": splits,
            "epochs": {
                "n_epochs": n_epochs,
                "source": "requested" if self.n_epochs is not None else "default rule",
                "default_rule_epochs": auto_epochs,
                "train_examples": train.examples,
            },
            "billing": {
                "train_tokens_capped": train.capped_tokens,
                "n_epochs": n_epochs,
                "billed_tokens": billed_tokens,
                "note": "sum over train examples of min(context_limit, tokens) x n_epochs; validation not billed",
            },
            "cost": self._cost(billed_tokens),
            "token_counting": {
                "tokenizer": f"{self.encoding} (bpe-openai)",
                "rule": "cookbook num_tokens_from_messages: 3 per message + tokens of every value "
                        "+ 1 per name + 3 reply priming",
            },
            "warnings": warnings,
        }

    def _cost(self, billed_tokens: int) -> dict[str, Any]:
        """The estimated training cost of `billed_tokens` at the model's price (None when no price is known)."""
        price = self.price_table.get(self.model)
        return {
            "currency": "USD",
            "usd_per_1m_training_tokens": price,
            "price_model": self.model,
            "price_source": self.price_sources.get(self.model, "no price known"),
            "estimated_usd": round(billed_tokens * price / 1_000_000, 4) if price is not None else None,
        }

    def _warnings(self, train: _Split, splits: dict[str, Any], n_epochs: int, auto_epochs: int) -> list[str]:
        out: list[str] = []
        if train.examples < MIN_TRAIN_EXAMPLES:
            out.append(f"train has {train.examples} examples; OpenAI requires at least {MIN_TRAIN_EXAMPLES}")
        if self.n_epochs is None and auto_epochs not in (0, TARGET_EPOCHS):
            out.append(f"default n_epochs adjusted from {TARGET_EPOCHS} to {auto_epochs} for "
                       f"{train.examples} training examples")
        for name, s in splits.items():
            if s["over_context_limit"]:
                out.append(f"{name}: {s['over_context_limit']} examples exceed the {self.context_limit:,}-token "
                           f"limit and will be truncated (lines {_lines(s['over_context_limit_lines'])})")
            if s["missing_system"]:
                out.append(f"{name}: {s['missing_system']} examples have no system message "
                           f"(lines {_lines(s['missing_system_lines'])})")
            if s["missing_user"]:
                out.append(f"{name}: {s['missing_user']} examples have no user message "
                           f"(lines {_lines(s['missing_user_lines'])})")
            if s["blank_lines"]:
                out.append(f"{name}: {s['blank_lines']} blank lines (skipped)")
        if self.price_table.get(self.model) is None:
            out.append(f"no training price known for {self.model}; cost not estimated")
        return out


def _invalid_prices(message: str) -> InvalidArgument:
    return InvalidArgument(message, field="prices")


def _lines(lines: list[int]) -> str:
    return ", ".join(str(n) for n in lines) + (", ..." if len(lines) >= SAMPLE_LINES else "")


def _split_report(name: str, st: _Split) -> dict[str, Any]:
    """One split's part of the report."""
    return {
        "lines": st.lines,
        "examples": st.examples,
        "blank_lines": st.blank,
        "invalid_lines": st.invalid_lines,
        "format_errors": {k: st.error_counts[k] for k in ERROR_TYPES if k in st.error_counts},
        "format_error_lines": {k: list(st.error_samples[k]) for k in ERROR_TYPES if k in st.error_samples},
        "total_tokens": st.tokens.total,
        "assistant_tokens": st.assistant_tokens.total,
        "tokens_per_example": st.tokens.summary(),
        "assistant_tokens_per_example": st.assistant_tokens.summary(),
        "messages_per_example": st.messages.summary(),
        "over_context_limit": st.over_limit,
        "over_context_limit_lines": list(st.over_limit_samples),
        "tokens_capped_at_context_limit": st.capped_tokens,
        "missing_system": st.missing_system,
        "missing_system_lines": list(st.missing_system_samples),
        "missing_user": st.missing_user,
        "missing_user_lines": list(st.missing_user_samples),
        "billed": name == "train",
    }


def _total_errors(splits: Iterable[_Split]) -> dict[str, int]:
    """Format error counts over every split, in ERROR_TYPES order."""
    totals: dict[str, int] = {}
    for st in splits:
        for kind, n in st.error_counts.items():
            totals[kind] = totals.get(kind, 0) + n
    return {k: totals[k] for k in ERROR_TYPES if k in totals}


# ---------------------------------------------------------------------------
# Text rendering
# ---------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def render_text(report: dict) -> str:
    """The report as the readable `.validation.txt` written next to the export."""
    out = _text_verdict(report)
    out.append("")
    if report["format_errors"]:
        out.extend(_text_format_errors(report))
        out.append("")
    for name, s in report["splits"].items():
        out.extend(_text_split(name, s, report["context_limit"]))
    out.append("")
    out.extend(_text_billing(report))
    if report["warnings"]:
        out.append("")
        out.append("Warnings:")
        out.extend(f"  - {w}" for w in report["warnings"])
    return "\n".join(out) + "\n"


def _text_verdict(report: dict) -> list[str]:
    """VALID / INVALID and the model."""
    if report["is_valid"]:
        verdict = f"VALID: {report['examples']:,} examples passed OpenAI's chat fine-tuning format checks."
    else:
        bad = sum(s["invalid_lines"] for s in report["splits"].values())
        verdict = f"INVALID: {bad:,} of {report['lines']:,} lines have format errors; OpenAI will reject this file."
    return [
        verdict,
        f"Model: {report['model']} (tokenizer {report['encoding']}, context limit {report['context_limit']:,})",
    ]


def _text_format_errors(report: dict) -> list[str]:
    """Every split's format errors with their first line numbers."""
    out = ["Format errors (lines with the error; first line numbers):"]
    for name, s in report["splits"].items():
        for kind, n in s["format_errors"].items():
            desc = ERROR_DESCRIPTIONS.get(kind, "")
            out.append(f"  {name}: {kind}: {n:,}  - {desc}; lines {_lines(s['format_error_lines'][kind])}")
    return out


_TEXT_DISTRIBUTIONS = (
    ("tokens per example", "tokens_per_example"),
    ("assistant tokens per example", "assistant_tokens_per_example"),
    ("messages per example", "messages_per_example"),
)


def _text_split(name: str, s: dict, context_limit: int) -> list[str]:
    """One split's counts and distributions."""
    out = [f"[{name}] {s['lines']:,} lines, {s['examples']:,} examples, {s['total_tokens']:,} tokens "
           f"({s['assistant_tokens']:,} in assistant messages){'' if s['billed'] else ' - not billed'}"]
    for label, key in _TEXT_DISTRIBUTIONS:
        d = s[key]
        if not d["count"]:
            continue
        out.append(f"  {label}: min {_fmt(d['min'])} / max {_fmt(d['max'])}; mean {_fmt(d['mean'])} / "
                   f"median {_fmt(d['median'])}; p5 {_fmt(d['p5'])} / p95 {_fmt(d['p95'])}")
    out.append(f"  over the {context_limit:,}-token limit (truncated): {s['over_context_limit']:,}")
    out.append(f"  missing system message: {s['missing_system']:,}; missing user message: {s['missing_user']:,}")
    return out


def _text_billing(report: dict) -> list[str]:
    """Epochs, billed tokens, cost and how tokens were counted."""
    ep = report["epochs"]
    bill = report["billing"]
    cost = report["cost"]
    out = [
        f"Epochs: {ep['n_epochs']} ({ep['source']}; {ep['train_examples']:,} training examples)",
        f"Billed training tokens: {bill['train_tokens_capped']:,} x {bill['n_epochs']} epochs = "
        f"{bill['billed_tokens']:,} (validation not billed)",
    ]
    if cost["estimated_usd"] is None:
        out.append(f"Estimated cost: unknown (no price for {cost['price_model']})")
    else:
        out.append(f"Estimated cost: ${cost['estimated_usd']:,.2f} at ${cost['usd_per_1m_training_tokens']:,.2f} per 1M "
                   f"training tokens for {cost['price_model']} (price source: {cost['price_source']})")
    out.append(f"Token counts: {report['token_counting']['tokenizer']}; {report['token_counting']['rule']}.")
    return out
