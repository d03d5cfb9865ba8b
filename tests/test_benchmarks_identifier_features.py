"""benchmarks/identifier_features.py: the identifier-distinctness shares against hand-computed values."""

import pytest
import torch

from benchmarks.identifier_features import identifier_shares


def test_shares_are_between_identifier_distances_over_the_prefix_effect_and_the_first_state_norm():
    # one caption, one position, two feature dimensions; H(c) = 0
    features = {"<a>": torch.tensor([[[1.0, 0.0]]]), "<b>": torch.tensor([[[0.0, 3.0]]])}
    plain = torch.zeros(1, 1, 2)
    first = {"<a>": torch.tensor([[2.0, 0.0]]), "<b>": torch.tensor([[2.0, 2.0]])}
    shares = identifier_shares(features, plain, first)
    # prefix effect: mean over identifiers of mean((1, 0)²) = 0.5 and mean((0, 3)²) = 4.5 → 2.5;
    # between: mean((1, −3)²) = 5 → 5 / 2.5 = 2
    assert shares["features_id_vs_id"] == pytest.approx(2.0)
    # first position: mean((0, −2)²) = 2 over the mean squared norm (mean(4, 0) = 2, mean(4, 4) = 4 → 3)
    assert shares["first_position_id_vs_id"] == pytest.approx(2 / 3)


def test_identical_identifiers_have_zero_shares():
    state = torch.tensor([[[1.0, 2.0]]])
    shares = identifier_shares({"x": state, "y": state.clone()}, torch.zeros(1, 1, 2), {"x": state[:, 0], "y": state[:, 0]})
    assert shares == {"features_id_vs_id": 0.0, "first_position_id_vs_id": 0.0}
