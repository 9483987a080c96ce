"""Unit tests for the OpenAI fine-tuning validation report (services/exporter/openai_report.py)."""

from __future__ import annotations

import json
import math

import bpe_openai
import pytest

from ferry.config import ConfigError
from ferry.errors import InvalidArgument
from services.exporter.openai_report import (
    Distribution,
    OpenAIReport,
    check_model,
    default_epochs,
    encoding_for,
    render_text,
)


def ex(*turns: tuple[str, str], **extra) -> str:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in turns], **extra})


def good(i: int = 0) -> str:
    return ex(("system", "You are terse."), ("user", f"What is {i} + {i}?"), ("assistant", f"It is {2 * i}."))


def report_of(lines, model="gpt-4o-mini", split="train", **kw):
    r = OpenAIReport(model=model, **kw)
    for line in lines:
        r.add_line(line, split)
    return r.finish()


def numpy_quantile(values: list[float], q: float) -> float:
    """numpy.quantile's default ('linear') method, written out."""
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


# --- format checks -------------------------------------------------------------------------------

def test_valid_file_has_no_errors():
    rep = report_of([good(i) for i in range(12)] + [good(1).encode(), good(2).encode() + b"\r\n", good(3) + "\n"])
    assert rep["is_valid"] is True
    assert rep["format_errors"] == {}
    assert rep["splits"]["train"]["examples"] == 15
    assert rep["splits"]["train"]["invalid_lines"] == 0
    assert not any("OpenAI requires" in w for w in rep["warnings"])


@pytest.mark.parametrize(
    "line, kind",
    [
        ('{"messages": [', "invalid_json"),
        (b'{"messages": "\xff"}', "invalid_json"),
        ("[" * 100_000, "invalid_json"),
        ("[1, 2]", "data_type"),
        ('"just a string"', "data_type"),
        ('{"prompt": "hi"}', "missing_messages_list"),
        ('{"messages": []}', "missing_messages_list"),
        ('{"messages": "hello"}', "missing_messages_list"),
        ('{"messages": ["hi", {"role": "assistant", "content": "x"}]}', "message_not_object"),
        ('{"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]}', "message_missing_key"),
        ('{"messages": [{"content": "hi"}, {"role": "assistant", "content": "x"}]}', "message_missing_key"),
        ('{"messages": [{"role": "user", "content": "hi", "score": 1}, {"role": "assistant", "content": "x"}]}',
         "message_unrecognized_key"),
        ('{"messages": [{"role": "human", "content": "hi"}, {"role": "assistant", "content": "x"}]}',
         "unrecognized_role"),
        ('{"messages": [{"role": ["user"], "content": "hi"}, {"role": "assistant", "content": "x"}]}',
         "unrecognized_role"),
        ('{"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "x"}]}',
         "missing_content"),
        ('{"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]}',
         "missing_content"),
        ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": null}]}',
         "missing_content"),
        ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x", "weight": 2}]}',
         "invalid_weight"),
        ('{"messages": [{"role": "user", "content": "hi", "weight": 1}, {"role": "assistant", "content": "x"}]}',
         "invalid_weight"),
        ('{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]}',
         "example_missing_assistant_message"),
    ],
)
def test_each_format_error_is_detected(line, kind):
    lines = [good(1), good(2), line, good(3)]
    rep = report_of(lines)
    assert rep["is_valid"] is False
    assert rep["format_errors"].get(kind) == 1, rep["format_errors"]
    split = rep["splits"]["train"]
    assert split["format_error_lines"][kind] == [3]
    assert split["invalid_lines"] == 1
    text = render_text(rep)
    assert text.startswith("INVALID")
    assert kind in text


def test_tool_call_turn_without_content_is_valid():
    line = json.dumps({"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                               "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "assistant", "content": "Sunny.", "weight": 1},
    ]})
    rep = report_of([line])
    assert rep["format_errors"] == {}


def test_errors_counted_per_line_with_bounded_samples_and_split_line_numbers():
    r = OpenAIReport()
    for i in range(50):
        r.add_line("not json" if i % 2 else good(i), "train")
    r.add_line(good(1), "validation")
    r.add_line("[]", "validation")
    rep = r.finish()
    assert rep["format_errors"] == {"invalid_json": 25, "data_type": 1}
    train = rep["splits"]["train"]
    assert train["format_errors"] == {"invalid_json": 25}
    assert train["format_error_lines"]["invalid_json"] == list(range(2, 41, 2))  # first 20 only
    assert rep["splits"]["validation"]["format_error_lines"]["data_type"] == [2]


def test_blank_lines_are_skipped_with_a_warning():
    rep = report_of([good(1), "", "  \n", good(2)])
    assert rep["is_valid"] is True
    assert rep["splits"]["train"]["examples"] == 2
    assert rep["splits"]["train"]["blank_lines"] == 2
    assert any("blank lines" in w for w in rep["warnings"])


# --- token counting ------------------------------------------------------------------------------

def expected_tokens(messages: list[dict], encoding: str) -> tuple[int, int]:
    """The cookbook's num_tokens_from_messages with the tokenizer's own encode()."""
    enc = bpe_openai.get_encoding(encoding)
    total = 0
    for m in messages:
        total += 3
        for key, value in m.items():
            total += len(enc.encode(value))
            if key == "name":
                total += 1
    total += 3
    assistant = sum(len(enc.encode(m["content"])) for m in messages if m["role"] == "assistant")
    return total, assistant


EXAMPLES = [
    [{"role": "system", "content": "You are a happy assistant that puts a positive spin on everything."},
     {"role": "user", "content": "I fell off my bike today."},
     {"role": "assistant", "content": "It's great that you're getting exercise outdoors!"}],
    [{"role": "user", "content": "日本語のテキストを要約してください。", "name": "kenji"},
     {"role": "assistant", "content": "はい、承知しました。 " * 20}],
    [{"role": "system", "content": "def f(x):\n    return x ** 2  # square\n"},
     {"role": "user", "content": "antidisestablishmentarianism " * 30},
     {"role": "assistant", "content": "A" * 500}],
]


@pytest.mark.parametrize("model, encoding", [("gpt-4o-mini", "o200k_base"), ("gpt-3.5-turbo", "cl100k_base")])
def test_token_counts_match_the_tokenizer(model, encoding):
    rep = report_of([json.dumps({"messages": m}) for m in EXAMPLES], model=model)
    assert rep["encoding"] == encoding
    want = [expected_tokens(m, encoding) for m in EXAMPLES]
    split = rep["splits"]["train"]
    assert split["total_tokens"] == sum(t for t, _ in want)
    assert split["assistant_tokens"] == sum(a for _, a in want)
    assert split["tokens_per_example"]["min"] == min(t for t, _ in want)
    assert split["tokens_per_example"]["max"] == max(t for t, _ in want)


def test_long_system_prompts_repeated_or_alternating_are_counted_exactly():
    """A 64 KiB system_message is on every line of an export; counted once, the figures are the tokenizer's."""
    big_a = "Règle « stricte » numéro 1. " * 2400  # ~67 KB, past the report's text cache
    big_b = big_a[:-1] + "!"
    convs = [[{"role": "system", "content": s}, {"role": "user", "content": f"q{i}"},
              {"role": "assistant", "content": f"a{i}"}]
             for i, s in enumerate([big_a, big_a, big_b, big_a, big_b, big_b, big_a])]
    rep = report_of([json.dumps({"messages": m}) for m in convs])
    want = [expected_tokens(m, "o200k_base") for m in convs]
    split = rep["splits"]["train"]
    assert split["total_tokens"] == sum(t for t, _ in want)
    assert split["tokens_per_example"]["max"] == max(t for t, _ in want)
    assert expected_tokens(convs[0], "o200k_base") != expected_tokens(convs[2], "o200k_base")


def test_cl100k_and_o200k_differ_where_they_should():
    line = json.dumps({"messages": EXAMPLES[1]})
    o200k = report_of([line], model="gpt-4o")["splits"]["train"]["total_tokens"]
    cl100k = report_of([line], model="gpt-3.5-turbo")["splits"]["train"]["total_tokens"]
    assert o200k == expected_tokens(EXAMPLES[1], "o200k_base")[0]
    assert cl100k == expected_tokens(EXAMPLES[1], "cl100k_base")[0]
    assert o200k < cl100k  # o200k has far more CJK merges


def test_extra_keys_follow_the_cookbook_rule():
    plain = [{"role": "user", "content": "Tell me a joke."}, {"role": "assistant", "content": "No."}]
    weighted = [{"role": "user", "content": "Tell me a joke.", "name": "bob"},
                {"role": "assistant", "content": "No.", "weight": 0}]
    a = report_of([json.dumps({"messages": plain})])["splits"]["train"]
    b = report_of([json.dumps({"messages": weighted})])["splits"]["train"]
    enc = bpe_openai.get_encoding("o200k_base")
    # weight is not text; a name costs its own tokens + 1.
    assert b["total_tokens"] == a["total_tokens"] + len(enc.encode("bob")) + 1
    assert a["total_tokens"] == expected_tokens(plain, "o200k_base")[0]
    assert b["assistant_tokens"] == a["assistant_tokens"] == len(enc.encode("No."))


def test_default_context_limit_of_gpt35_is_enforced():
    huge = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "word " * 17000}]
    tokens = expected_tokens(huge, "cl100k_base")[0]
    assert tokens > 16385
    rep = report_of([good(1), json.dumps({"messages": huge})], model="gpt-3.5-turbo")
    split = rep["splits"]["train"]
    assert split["over_context_limit"] == 1 and split["over_context_limit_lines"] == [2]
    assert split["tokens_per_example"]["max"] == tokens
    assert split["tokens_capped_at_context_limit"] == 16385 + expected_tokens(json.loads(good(1))["messages"],
                                                                              "cl100k_base")[0]
    assert report_of([json.dumps({"messages": huge})])["splits"]["train"]["over_context_limit"] == 0  # 65,536


def test_lone_surrogate_is_counted_not_crashing():
    line = '{"messages": [{"role": "user", "content": "bad \\ud800 text"}, {"role": "assistant", "content": "ok"}]}'
    rep = report_of([line])
    assert rep["splits"]["train"]["examples"] == 1
    assert rep["splits"]["train"]["total_tokens"] > 0


def test_distributions_match_numpy_quantiles():
    msgs = [[{"role": "user", "content": "word " * k}, {"role": "assistant", "content": "ok " * (k % 7 + 1)}]
            + [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}] * (k % 3)
            for k in range(1, 40)]
    rep = report_of([json.dumps({"messages": m}) for m in msgs])
    split = rep["splits"]["train"]
    totals = [expected_tokens(m, "o200k_base")[0] for m in msgs]
    assistants = [expected_tokens(m, "o200k_base")[1] for m in msgs]
    counts = [len(m) for m in msgs]
    for key, values in (("tokens_per_example", totals), ("assistant_tokens_per_example", assistants),
                        ("messages_per_example", counts)):
        d = split[key]
        assert d["exact"] is True
        assert d["min"] == min(values) and d["max"] == max(values)
        assert d["mean"] == pytest.approx(sum(values) / len(values), abs=1e-3)
        assert d["median"] == pytest.approx(numpy_quantile(values, 0.5), abs=1e-3)
        assert d["p5"] == pytest.approx(numpy_quantile(values, 0.05), abs=1e-3)
        assert d["p95"] == pytest.approx(numpy_quantile(values, 0.95), abs=1e-3)
    assert split["missing_system"] == len(msgs)
    assert any("no system message" in w for w in rep["warnings"])


def test_distribution_is_bounded_and_approximate_for_huge_values():
    d = Distribution()
    values = [Distribution.EXACT_LIMIT + 7 * i for i in range(5000)]
    for v in values:
        d.add(v)
    assert len(d.counts) < 200  # bucketed, not one key per value
    s = d.summary()
    assert s["exact"] is False
    assert s["min"] == min(values) and s["max"] == max(values)
    assert s["median"] == pytest.approx(numpy_quantile(values, 0.5), rel=0.005)
    assert s["p95"] == pytest.approx(numpy_quantile(values, 0.95), rel=0.005)


# --- context limit, epochs, billing, cost --------------------------------------------------------

def test_context_limit_overflow_is_counted_and_capped_in_billing():
    long_msg = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "word " * 200}]
    long_tokens = expected_tokens(long_msg, "o200k_base")[0]
    short_tokens = expected_tokens(json.loads(good(1))["messages"], "o200k_base")[0]
    limit = 100
    assert short_tokens < limit < long_tokens
    lines = [good(1)] * 10 + [json.dumps({"messages": long_msg})] * 2
    rep = report_of(lines, context_limit=limit)
    split = rep["splits"]["train"]
    assert split["over_context_limit"] == 2
    assert split["over_context_limit_lines"] == [11, 12]
    assert split["tokens_capped_at_context_limit"] == 10 * short_tokens + 2 * limit
    assert rep["epochs"]["n_epochs"] == 8  # 100 // 12
    assert rep["billing"]["billed_tokens"] == 8 * (10 * short_tokens + 2 * limit)
    assert any("truncated" in w for w in rep["warnings"])


def test_model_context_limits():
    assert OpenAIReport("gpt-4o-mini").context_limit == 65536
    assert OpenAIReport("gpt-3.5-turbo").context_limit == 16385


@pytest.mark.parametrize("n, epochs", [(1, 25), (3, 25), (4, 25), (5, 20), (10, 10), (20, 5), (30, 3), (33, 3),
                                       (34, 3), (40, 3), (8333, 3), (8334, 2), (10000, 2), (12500, 2),
                                       (12501, 1), (30000, 1), (0, 0)])
def test_default_epochs_rule(n, epochs):
    assert default_epochs(n) == epochs


def test_billing_and_cost_default_and_overridden_prices(monkeypatch):
    monkeypatch.delenv("FERRY_OPENAI_PRICES_JSON", raising=False)
    lines = [good(i) for i in range(20)]
    per_example = [expected_tokens(json.loads(line)["messages"], "o200k_base")[0] for line in lines]
    val_lines = [good(i) for i in range(5)]

    r = OpenAIReport()
    for line in lines:
        r.add_line(line)
    for line in val_lines:
        r.add_line(line, "validation")
    rep = r.finish()
    billed = sum(per_example) * 5  # 20 examples -> 5 epochs
    assert rep["epochs"] == {"n_epochs": 5, "source": "default rule", "default_rule_epochs": 5, "train_examples": 20}
    assert rep["billing"]["billed_tokens"] == billed  # validation lines not billed
    assert rep["splits"]["validation"]["billed"] is False
    assert rep["splits"]["validation"]["examples"] == 5
    assert rep["cost"]["usd_per_1m_training_tokens"] == 3.00
    assert rep["cost"]["estimated_usd"] == pytest.approx(billed * 3.00 / 1e6, abs=1e-4)
    assert "OpenAI pricing page" in rep["cost"]["price_source"]

    rep = report_of(lines, prices={"gpt-4o-mini": 4.5}, n_epochs=2)
    assert rep["epochs"]["n_epochs"] == 2 and rep["epochs"]["source"] == "requested"
    assert rep["billing"]["billed_tokens"] == sum(per_example) * 2
    assert rep["cost"]["usd_per_1m_training_tokens"] == 4.5
    assert rep["cost"]["price_source"] == "request override"
    assert rep["cost"]["estimated_usd"] == pytest.approx(sum(per_example) * 2 * 4.5 / 1e6, abs=1e-4)

    monkeypatch.setenv("FERRY_OPENAI_PRICES_JSON", '{"gpt-4o-mini-2024-07-18": 1.25}')
    rep = report_of(lines)
    assert rep["cost"]["usd_per_1m_training_tokens"] == 1.25
    assert rep["cost"]["price_source"] == "FERRY_OPENAI_PRICES_JSON"
    rep = report_of(lines, model="gpt-3.5-turbo")
    assert rep["cost"]["usd_per_1m_training_tokens"] == 8.00


def test_bad_price_overrides(monkeypatch):
    with pytest.raises(InvalidArgument) as err:
        OpenAIReport(prices={"gpt-4o-mini": -1})
    assert err.value.field == "prices"
    with pytest.raises(InvalidArgument):
        OpenAIReport(prices={"gpt-9": 1.0})
    monkeypatch.setenv("FERRY_OPENAI_PRICES_JSON", "{not json")
    with pytest.raises(ConfigError, match="FERRY_OPENAI_PRICES_JSON"):
        OpenAIReport()


# --- models --------------------------------------------------------------------------------------

def test_check_model_normalises_and_rejects_unknown():
    assert check_model(" GPT-4o-mini ") == "gpt-4o-mini-2024-07-18"
    assert check_model("gpt-3.5-turbo") == "gpt-3.5-turbo-0125"
    assert check_model("gpt-4.1-nano-2025-04-14") == "gpt-4.1-nano-2025-04-14"
    assert check_model("ft:gpt-4o-mini-2024-07-18:acme::abc123") == "gpt-4o-mini-2024-07-18"
    for bad in ("llama-3", "", "gpt-4o-mini-2099-01-01"):
        with pytest.raises(InvalidArgument) as err:
            check_model(bad)
        assert err.value.field == "additional_params.model"
        assert "gpt-4o-mini" in str(err.value)
    with pytest.raises(InvalidArgument) as err:
        OpenAIReport(model="claude")
    assert err.value.field == "additional_params.model"


def test_encoding_for():
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4o-2024-08-06", "gpt-4.1-mini", "o1", "o3-mini", "o4-mini"):
        assert encoding_for(model) == "o200k_base", model
    for model in ("gpt-4", "gpt-4-0613", "gpt-3.5-turbo", "gpt-3.5-turbo-0125"):
        assert encoding_for(model) == "cl100k_base", model
    with pytest.raises(InvalidArgument):
        encoding_for("bert-base")


def test_bad_n_epochs_and_context_limit():
    with pytest.raises(InvalidArgument) as err:
        OpenAIReport(n_epochs=0)
    assert err.value.field == "additional_params.n_epochs"
    with pytest.raises(InvalidArgument):
        OpenAIReport(context_limit=-5)


# --- text ----------------------------------------------------------------------------------------

def test_render_text_has_the_key_figures():
    lines = [good(i) for i in range(10)]
    rep = report_of(lines)
    text = render_text(rep)
    assert text.startswith("VALID")
    assert f"{rep['billing']['billed_tokens']:,}" in text
    assert f"${rep['cost']['estimated_usd']:,.2f}" in text
    assert "$3.00 per 1M" in text
    assert "Epochs: 10" in text
    assert "OpenAI pricing page" in text
    assert "tokens per example: min" in text
    assert "o200k_base" in text
    json.dumps(rep)  # the report is JSON-serialisable


def test_too_few_examples_warns():
    rep = report_of([good(1)] * 3)
    assert any("at least 10" in w for w in rep["warnings"])
    assert "Warnings:" in render_text(rep)


# --- the report spread over processes ------------------------------------------------------------

def _mixed_lines(n: int) -> list[str]:
    """Valid examples of varied sizes with every kind of problem sprinkled in, more of some than the samples keep."""
    out = []
    for i in range(n):
        if i % 7 == 3:
            out.append("not json")
        elif i % 11 == 5:
            out.append("")
        elif i % 13 == 6:
            out.append(ex(("user", f"question {i}")))  # no assistant turn
        elif i % 17 == 8:
            out.append(ex(("assistant", "only an answer " * (i % 5))))  # no user, no system
        else:
            out.append(ex(("user", f"what is {i} squared? " * (1 + i % 9)), ("assistant", f"{i * i} " * (1 + i % 4)))
                       if i % 2 else good(i))
    return out


@pytest.mark.parametrize("processes", [1, 2, 3])
def test_a_report_spread_over_processes_equals_one_read_in_order(processes: int) -> None:
    from services.exporter.report_worker import ReportPool

    train, validation = _mixed_lines(2_000), _mixed_lines(300)
    single = OpenAIReport(n_epochs=2)
    for line in train:
        single.add_line(line, "train")
    for line in validation:
        single.add_line(line, "validation")
    pool = ReportPool("gpt-4o-mini", 2, processes)
    try:
        # Uneven batches, both splits interleaved, as the exporter's conversion hands them over.
        i = j = 0
        sizes = [1, 37, 200, 5, 400, 63]
        k = 0
        while i < len(train) or j < len(validation):
            size = sizes[k % len(sizes)]
            k += 1
            if i < len(train):
                pool.put("\n".join(train[i:i + size]).encode(), "train")
                i += size
            if j < len(validation) and k % 3 == 0:
                pool.put("\n".join(validation[j:j + size]).encode(), "validation")
                j += size
        got = pool.result()
    finally:
        pool.stop()
    want = single.finish()
    assert got == want
    assert want["splits"]["train"]["format_errors"]["invalid_json"] > 20  # sample lists were truncated
    assert pool.peak_rss_mb > 0


def test_stopping_the_pool_kills_a_child_that_does_not_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    # A cancelled export stops its report children: one that does not exit within the grace (here frozen with
    # SIGSTOP, as a runaway or swapping child would be) is killed, the others end at their next read. This is the
    # behaviour a ProcessPoolExecutor could not keep (report_worker's docstring).
    import os
    import signal

    from services.exporter import report_worker

    monkeypatch.setattr(report_worker, "STOP_GRACE_S", 0.5)
    pool = report_worker.ReportPool("gpt-4o-mini", None, 2)
    try:
        for _ in range(4):
            pool.put("\n".join(_mixed_lines(50)).encode(), "train")
        frozen = pool.workers[0].proc
        os.kill(frozen.pid, signal.SIGSTOP)
    finally:
        pool.stop()
    assert frozen.returncode == -signal.SIGKILL
    assert all(w.proc.returncode is not None for w in pool.workers)
