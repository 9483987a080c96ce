"""The one registry of export formats: ListFormats reads it and the exporter dispatches on it.

Everything a request can get wrong is checked here, before a job is queued:
format name, training type, output_filename, train_split and additional_params.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from ferry.canonical import TrainingType
from ferry.errors import InvalidArgument
from ferry.limits import MAX_ENTRIES, MAX_KEY, MAX_SPEC, MAX_TEXT, short
from services.exporter.convert import LANGCHAIN_EXPORT_TYPES

ALL_TYPES = (TrainingType.SL, TrainingType.DPO, TrainingType.CHAT)
MAX_FILENAME = 128
DEFAULT_SEED = 42
# Bounds on the free values of a request (characters), as the gateway's (gateway/limits.py) for gRPC callers.
# The engine's memory does not depend on them (it sizes batches by rows x system_message), but a job record,
# a status message or a dataset card has no use for more.
MAX_SYSTEM_MESSAGE, MAX_PARAMS, MAX_PARAM_KEY, MAX_PARAM_VALUE = MAX_TEXT, MAX_ENTRIES, MAX_KEY, MAX_SPEC
# How much of a bad value an error message quotes.
@dataclass(frozen=True)
class Param:
    name: str
    description: str
    default: str = ""
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    # ".jsonl" / ".json" / ".csv", or "/" for a folder.
    file_extension: str
    features: tuple[str, ...]
    use_cases: tuple[str, ...]
    training_types: tuple[TrainingType, ...] = ALL_TYPES
    params: tuple[Param, ...] = ()
    # Why a training type cannot be exported to this format.
    refusals: dict[TrainingType, str] = field(default_factory=dict)
    # How the records of a file are framed: "jsonl", "json_array", "csv".
    framing: str = "jsonl"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "file_extension": self.file_extension,
            "features": list(self.features), "use_cases": list(self.use_cases),
            "training_types": [t.value for t in self.training_types],
            "params": [{"name": p.name, "description": p.description, "default": p.default,
                        "choices": list(p.choices)} for p in self.params],
        }


SEED = Param("seed", "Seed of the train/validation shuffle (with train_split < 1)", str(DEFAULT_SEED))
SPLIT = Param("split", "Export only this split of the dataset (default: every split)")

FORMATS: dict[str, Format] = {f.name: f for f in (
    Format(
        "huggingface", "HuggingFace dataset folder: one JSONL per split, dataset_info.json, a dataset card "
        "whose YAML lets datasets.load_dataset(folder) load every split, and push_to_hub.py",
        "/",
        ("one {split}.jsonl per split", "dataset_info.json with features and split sizes",
         "README.md dataset card with configs/dataset_info YAML", "push_to_hub.py (huggingface_hub, HF_TOKEN)"),
        ("Publish to the HuggingFace Hub", "TRL / datasets.load_dataset", "Share a versioned dataset"),
        params=(SEED, SPLIT,
                Param("dataset_name", "Pretty name in the dataset card (default: output_filename)"),
                Param("license", "License id for the dataset card", "other"),
                Param("description", "Description for the dataset card"))),
    Format(
        "openai", "OpenAI chat fine-tuning JSONL ({\"messages\": [...]}) with a validation report "
        "(format checks, real token counts, epochs and cost)",
        ".jsonl",
        ("system, user and assistant turns for every training type", "seeded train/validation split",
         "validation report NAME.validation.json and NAME.validation.txt"),
        ("OpenAI supervised fine-tuning", "Azure OpenAI fine-tuning"),
        params=(SEED, SPLIT, Param("model", "Model the report counts tokens and cost for", "gpt-4o-mini"),
                Param("n_epochs", "Epochs for the cost estimate (default: OpenAI's rule)"))),
    Format(
        "openai_dpo", "OpenAI preference fine-tuning JSONL ({input, preferred_output, non_preferred_output})",
        ".jsonl",
        ("system and history kept in input.messages", "seeded train/validation split"),
        ("OpenAI DPO fine-tuning",),
        training_types=(TrainingType.DPO,),
        params=(SEED, SPLIT),
        refusals={
            TrainingType.SL: "openai_dpo needs preference pairs (chosen and rejected); this dataset is SL "
                             "(prompt/completion). Export it as openai, or import it as DPO",
            TrainingType.CHAT: "openai_dpo needs preference pairs (chosen and rejected); this dataset is CHAT "
                               "(messages). Export it as openai, or import it as DPO",
        }),
    Format(
        "alpaca", "Alpaca JSON array ({instruction, input, output, system?, history?}) as LLaMA-Factory reads it; "
        "DPO rows as {instruction, input, chosen, rejected}",
        ".json",
        ("system and history ([[user, assistant], ...]) kept", "LLaMA-Factory preference shape for DPO",
         "CHAT: last user turn = instruction, last assistant turn = output"),
        ("LLaMA-Factory SFT / DPO", "Stanford Alpaca style trainers"),
        params=(SEED, SPLIT), framing="json_array"),
    Format(
        "sharegpt", "ShareGPT JSON array ({\"conversations\": [{from, value}]}) as LLaMA-Factory reads it; "
        "DPO rows add chosen/rejected",
        ".json",
        ("system as the first conversation turn (from: system)", "human/gpt turns strictly alternate",
         "LLaMA-Factory preference shape for DPO"),
        ("LLaMA-Factory SFT / DPO", "FastChat", "Axolotl sharegpt"),
        params=(SEED, SPLIT), framing="json_array"),
    Format(
        "langchain", "LangChain JSONL: documents (page_content, metadata), chat (typed messages) or qa_pairs",
        ".jsonl",
        ("documents for retrieval", "chat messages typed human/ai/system", "question/answer pairs"),
        ("RAG indexes", "LangChain evaluation sets", "Few-shot example stores"),
        params=(SEED, SPLIT, Param("export_type", "Shape of each row", "documents", LANGCHAIN_EXPORT_TYPES))),
    Format(
        "csv", "CSV (RFC 4180, UTF-8 with BOM, CRLF), full text never truncated",
        ".csv",
        ("SL: prompt, completion, system, history (JSON)", "DPO: prompt, chosen, rejected, system, history",
         "CHAT: messages (JSON), num_turns"),
        ("Spreadsheets", "pandas", "Labelling tools"),
        params=(SEED, SPLIT), framing="csv"),
)}

_SAFE_SPLIT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def get_format(name: str) -> Format:
    fmt = FORMATS.get(str(name or "").strip().lower())
    if fmt is None:
        raise InvalidArgument(f"format {short(name)} is not supported; supported formats: {', '.join(FORMATS)}",
                              field="format")
    return fmt


def check_output_filename(name: str) -> str:
    """A base name that cannot escape the export's folder or confuse a download."""
    field_name = "output_filename"
    if not name or not name.strip():
        raise InvalidArgument("output_filename is required", field=field_name)
    if len(name) > MAX_FILENAME:
        raise InvalidArgument(f"output_filename is longer than {MAX_FILENAME} characters", field=field_name)
    if "/" in name or "\\" in name:
        raise InvalidArgument("output_filename must not contain path separators ('/' or '\\')", field=field_name)
    if ".." in name:
        raise InvalidArgument("output_filename must not contain '..'", field=field_name)
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        raise InvalidArgument("output_filename must not contain control characters", field=field_name)
    if name != name.strip() or name.startswith("."):
        raise InvalidArgument("output_filename must not start with '.' or start/end with spaces", field=field_name)
    if '"' in name:
        raise InvalidArgument("output_filename must not contain '\"'", field=field_name)
    return name


@dataclass(frozen=True)
class ExportRequest:
    """A validated export request; `to_json()` is what the job record keeps."""

    dataset_id: int
    format: str
    output_filename: str
    system_message: str | None
    train_split: float
    additional_params: dict[str, str]

    @property
    def seed(self) -> int:
        return int(self.additional_params.get("seed", DEFAULT_SEED))

    def to_json(self) -> dict[str, Any]:
        return {"dataset_id": self.dataset_id, "format": self.format, "output_filename": self.output_filename,
                "system_message": self.system_message, "train_split": self.train_split,
                "additional_params": self.additional_params}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ExportRequest:
        return cls(int(d["dataset_id"]), d["format"], d["output_filename"], d.get("system_message"),
                   float(d.get("train_split", 1.0)), dict(d.get("additional_params") or {}))


def check_params_size(params: dict[str, str]) -> None:
    """At most MAX_PARAMS additional_params, names of MAX_PARAM_KEY and values of MAX_PARAM_VALUE characters."""
    if len(params) > MAX_PARAMS:
        raise InvalidArgument(f"additional_params has {len(params)} entries; at most {MAX_PARAMS}",
                              field="additional_params")
    for key, value in params.items():
        if len(str(key)) > MAX_PARAM_KEY:
            raise InvalidArgument(f"additional_params name {short(key)} is longer than {MAX_PARAM_KEY} characters",
                                  field="additional_params")
        text = str(value)  # text on gRPC; a Python caller may pass a number
        if len(text) > MAX_PARAM_VALUE:
            raise InvalidArgument(f"additional_params.{key} is longer than {MAX_PARAM_VALUE} characters "
                                  f"({len(text)}: {short(text)})", field=f"additional_params.{key}")


def check_request(dataset_id: int, format_name: str, output_filename: str, system_message: str | None,
                  train_split: float | None, params: dict[str, str]) -> ExportRequest:
    """Everything about a request that does not need the dataset."""
    if dataset_id <= 0:
        raise InvalidArgument("dataset_id must be a positive integer", field="dataset_id")
    fmt = get_format(format_name)
    check_output_filename(output_filename)
    if train_split is None:
        train_split = 1.0
    if not (0.0 < train_split <= 1.0):
        raise InvalidArgument(f"train_split must be > 0 and <= 1, got {train_split}", field="train_split")
    if system_message is not None and len(system_message) > MAX_SYSTEM_MESSAGE:
        raise InvalidArgument(f"system_message is longer than {MAX_SYSTEM_MESSAGE} characters "
                              f"({len(system_message)}: {short(system_message)})", field="system_message")
    if system_message is not None and not system_message.strip():
        system_message = None
    check_params_size(params)
    known = {p.name: p for p in fmt.params}
    for key, value in params.items():
        if key not in known:
            raise InvalidArgument(
                f"additional_params.{key} is not a parameter of format {fmt.name}; known: "
                f"{', '.join(known) or 'none'}", field=f"additional_params.{key}")
        p = known[key]
        if p.choices and value not in p.choices:
            raise InvalidArgument(f"additional_params.{key} must be one of {', '.join(p.choices)}, got {short(value)}",
                                  field=f"additional_params.{key}")
    if "seed" in params:
        try:
            int(params["seed"])
        except ValueError:
            raise InvalidArgument(f"additional_params.seed must be an integer, got {short(params['seed'])}",
                                  field="additional_params.seed") from None
    if fmt.name == "openai":
        from services.exporter import openai_report

        model = params.get("model", "gpt-4o-mini")
        n_epochs = params.get("n_epochs")
        try:
            epochs = int(n_epochs) if n_epochs else None
        except ValueError:
            raise InvalidArgument(f"additional_params.n_epochs must be an integer, got {short(n_epochs)}",
                                  field="additional_params.n_epochs") from None
        if epochs is not None and not 1 <= epochs <= openai_report.MAX_EPOCHS:
            raise InvalidArgument(f"additional_params.n_epochs must be between 1 and {openai_report.MAX_EPOCHS}, "
                                  f"got {epochs}", field="additional_params.n_epochs")
        try:
            # Checks the model and its tokenizer name without loading the tokenizer.
            openai_report.encoding_for(openai_report.check_model(model))
        except InvalidArgument as exc:
            msg = exc.message if not exc.field or exc.field in exc.message else f"{exc.field}: {exc.message}"
            raise InvalidArgument(msg, field=exc.field) from None
    return ExportRequest(dataset_id, fmt.name, output_filename, system_message, float(train_split), dict(params))


def check_dataset(fmt: Format, training_type: TrainingType, split_names: list[str], params: dict[str, str]) -> None:
    """What the dataset itself must satisfy for this export."""
    if training_type not in fmt.training_types:
        reason = fmt.refusals.get(training_type) or f"{fmt.name} cannot export {training_type.value} datasets"
        raise InvalidArgument(reason, field="format")
    wanted = params.get("split")
    if wanted is not None and wanted not in split_names:
        raise InvalidArgument(f"additional_params.split {wanted!r} is not a split of this dataset; it has: "
                              f"{', '.join(split_names)}", field="additional_params.split")
    for name in split_names:
        if not _SAFE_SPLIT.match(name):
            raise InvalidArgument(f"split name {name!r} cannot be used as a file name", field="dataset_id")
