"""ferry.canonical: the training type a field mapping's targets imply (TrainingType.infer)."""

from __future__ import annotations

import pytest

from ferry.canonical import TrainingType
from ferry.errors import InvalidArgument

SL, DPO, CHAT = TrainingType.SL, TrainingType.DPO, TrainingType.CHAT


@pytest.mark.parametrize(("targets", "expected"), [
    (["chosen"], DPO),
    (["rejected"], DPO),
    (["prompt", "chosen", "rejected"], DPO),
    (["messages", "chosen"], DPO),  # chosen/rejected decide before messages
    (["prompt", "completion", "rejected"], DPO),
    (["messages"], CHAT),
    (["messages", "prompt", "completion"], CHAT),  # messages decides before prompt/completion
    (["messages", "system"], CHAT),
    (["prompt", "completion"], SL),
    (["prompt"], SL),
    (["completion", "system", "history"], SL),
    (("prompt", "completion"), SL),
])
def test_each_rule(targets: list[str], expected: TrainingType) -> None:
    assert TrainingType.infer(targets) is expected


def test_a_mappings_blank_targets_do_not_count() -> None:
    assert TrainingType.infer({"prompt": "q", "completion": "a", "chosen": "", "rejected": "  "}) is SL
    assert TrainingType.infer({"messages": "conversations", "prompt": "\t"}) is CHAT
    assert TrainingType.infer({"prompt": "q", "rejected": "r"}) is DPO
    with pytest.raises(InvalidArgument) as exc:
        TrainingType.infer({"prompt": " ", "system": "sys"})
    assert "given: 'system')" in exc.value.message


def test_nothing_to_decide_by_is_an_invalid_training_type() -> None:
    with pytest.raises(InvalidArgument) as exc:
        TrainingType.infer(["system", "history", "answer"])
    err = exc.value
    assert err.field == "training_type"
    assert err.message.startswith("training_type could not be inferred from the field_mappings targets "
                                  "(given: 'system', 'history', 'answer')")
    for need in ("prompt+completion for SL", "prompt+chosen+rejected for DPO", "messages for CHAT"):
        assert need in err.message
    with pytest.raises(InvalidArgument, match=r"given: none") as empty:
        TrainingType.infer([])
    assert empty.value.field == "training_type"
