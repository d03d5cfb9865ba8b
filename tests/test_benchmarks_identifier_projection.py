"""identifier_projection.py's split of the prefix's residual along the conditional signal, on hand-made tensors."""

import pytest
import torch

from benchmarks.identifier_projection import along_signal


def test_along_signal_splits_the_residual_by_hand():
    signal = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # ‖s‖² = 5
    residual = torch.tensor([[0.5, 1.0], [3.0, 1.0]])  # ⟨r, s⟩ = 2.5, ‖r‖² = 11.25; r − 0.5·s = [[0, 1], [3, 0]]
    assert along_signal(residual, signal) == pytest.approx({"beta": 0.5, "residual": 2.25, "across": 2.0})


def test_a_weaker_prompt_is_a_negative_beta_with_nothing_across():
    signal = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    figures = along_signal(-0.04 * signal, signal)  # ε("<p>, c") = ε(c) − 0.04·s: CFG w acting as 0.96·w
    assert figures["beta"] == pytest.approx(-0.04)
    assert figures["residual"] == pytest.approx(0.0016)
    assert figures["across"] == pytest.approx(0.0, abs=1e-12)
