"""benchmarks/identifier_rounds.py: the prefix's shift of the text states by hand, the tower step, the refusals."""

import copy

import pytest
import torch

from benchmarks.identifier_rounds import main, prefix_length, prefix_state_shift, train_tower_shift
from parrot_base.cli import UsageError

TEXTS = ["a red circle", "a large blue square on a white background, sharp", "a small green triangle"]


def test_prefix_length_counts_the_prefix_and_its_comma(tiny_pipeline):
    tokenizer = tiny_pipeline.tokenizer  # byte-level, split at spaces as CLIP's: "l p, " is l, p and the comma
    assert prefix_length(tokenizer, "") == 0
    assert prefix_length(tokenizer, "l p") == 3


def test_shift_compares_the_states_after_the_prefix_with_the_plain_ones(tiny_pipeline):
    tower, tokenizer = tiny_pipeline.text_encoder, tiny_pipeline.tokenizer
    with torch.no_grad():
        assert prefix_state_shift(tower, tokenizer, TEXTS, "").tolist() == [0.0, 0.0, 0.0]  # no prefix: no shift
        shift = prefix_state_shift(tower, tokenizer, TEXTS, "l p")
        length, k = tokenizer.model_max_length, 3
        ids = [tokenizer(t, padding="max_length", max_length=length, return_tensors="pt").input_ids for t in TEXTS]
        prefixed = [tokenizer("l p, " + t, padding="max_length", max_length=length, return_tensors="pt").input_ids for t in TEXTS]
        for i in range(len(TEXTS)):
            plain, after = tower(ids[i]).last_hidden_state[0, 1 : length - k], tower(prefixed[i]).last_hidden_state[0, 1 + k :]
            assert shift[i].item() == pytest.approx(((after - plain) ** 2).sum().item() / (plain**2).sum().item(), rel=1e-5)
        assert (shift > 0).all()  # a causal tower: every later state reads the prefix
        # against other plain states: the same difference, measured from those
        other = torch.zeros(len(TEXTS), length, tower.config.hidden_size) + 1.0
        against = prefix_state_shift(tower, tokenizer, TEXTS, "l p", other)
        after = tower(torch.cat(prefixed)).last_hidden_state[:, 1 + k :]
        expected = ((after - 1.0) ** 2).sum((1, 2)) / (length - 1 - k) / tower.config.hidden_size
        assert against == pytest.approx(expected, rel=1e-5)


def _plain_drift(tower, start, tokenizer):
    ids = tokenizer(TEXTS, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    with torch.no_grad():
        moved, held = tower(ids).last_hidden_state, start(ids).last_hidden_state
    return (((moved - held) ** 2).sum((1, 2)) / (held**2).sum((1, 2))).mean().item()


def test_the_tower_step_lowers_the_shift_and_its_plain_term_holds_the_plain_states(tiny_pipeline):
    tokenizer, start = tiny_pipeline.tokenizer, tiny_pipeline.text_encoder
    captions = [f"a {c} {s}" for c in ("red", "blue", "yellow") for s in ("circle", "square")]
    with torch.no_grad():
        before = prefix_state_shift(start, tokenizer, TEXTS, "l p c s").mean().item()
    drifts = {}
    for weight in (10.0, 0.0):
        tower = copy.deepcopy(start)
        figures = train_tower_shift(tower, tokenizer, captions, steps=60, batch_size=4, plain_weight=weight, progress=False)
        assert set(figures) == {"tower_shift_start", "tower_shift_end"}
        assert figures["tower_shift_end"] < figures["tower_shift_start"]
        with torch.no_grad():
            assert prefix_state_shift(tower, tokenizer, TEXTS, "l p c s").mean().item() < before  # on texts it never saw too
        assert not any(p.requires_grad for p in tower.parameters()) and not tower.training  # handed back frozen
        drifts[weight] = _plain_drift(tower, start, tokenizer)
    assert drifts[10.0] < drifts[0.0]  # the plain term holds the plain states where they were


def test_mistakes_are_one_line_refusals(tmp_path):
    with pytest.raises(UsageError, match="nothing to do"):
        main(["--out", str(tmp_path / "copy"), "--round", "none"])
    with pytest.raises(UsageError, match="not a built shapes world"):
        main(["--world", str(tmp_path), "--out", str(tmp_path / "copy")])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(UsageError, match="not empty"):
        main(["--out", str(tmp_path / "full"), "--round_steps", "1"])
    with pytest.raises(UsageError, match="tower_steps must be"):
        main(["--out", str(tmp_path / "copy"), "--tower_steps", "-1"])
