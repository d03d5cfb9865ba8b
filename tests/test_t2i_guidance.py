"""Guidance: the 3-way Parrot combination, its reduction to CFG, and one UNet call per step."""

import math

import pytest
import torch
from conftest import make_generator

from t2i import Guidance, combine_noise_predictions


def test_three_way_combination_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    eps_null, eps_c, eps_hat = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(3))
    w1, w2 = 5.0, 3.0
    expected = w1 * eps_c + (1 - w1 - w2) * eps_null + w2 * eps_hat
    got = combine_noise_predictions(eps_null, [eps_c, eps_hat], (w1, w2))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-6)


def test_scalar_example_by_hand():
    # w1=2, w2=3: 2*1 + (1-5)*10 + 3*100 = 262
    got = combine_noise_predictions(torch.tensor([10.0]), [torch.tensor([1.0]), torch.tensor([100.0])], (2.0, 3.0))
    assert got.item() == 262.0


def test_w1_zero_keeps_only_the_expanded_condition():
    guidance = Guidance.prompt_centred(0.0, 7.5)
    assert guidance.active == (1,)
    assert guidance.needs_unconditional


def test_prompt_centred_with_w1_zero_is_cfg_on_the_expansion(policy):
    expanded = ["a red circle, large, centred", "a blue square on white"]
    original = ["a red circle", "a blue square"]
    kwargs = dict(num_inference_steps=5, eta=1.0)
    parrot = policy.sample(
        expanded, original_prompts=original, guidance=Guidance.prompt_centred(0.0, 7.5), generator=make_generator(2), **kwargs
    )
    cfg = policy.sample(expanded, guidance=Guidance.cfg(7.5), generator=make_generator(2), **kwargs)
    torch.testing.assert_close(parrot.images, cfg.images, atol=1e-6, rtol=0)
    torch.testing.assert_close(parrot.log_probs, cfg.log_probs, atol=1e-6, rtol=0)
    centred = policy.sample(
        expanded, original_prompts=original, guidance=Guidance.prompt_centred(5.0, 5.0), generator=make_generator(2), **kwargs
    )
    assert (centred.images - cfg.images).abs().max() > 1e-3


def test_one_batched_unet_call_per_step_for_all_conditions(policy):
    batches = []
    handle = policy.unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    try:
        policy.sample(
            ["a", "b"],
            original_prompts=["c", "d"],
            guidance=Guidance.prompt_centred(5.0, 5.0),
            num_inference_steps=4,
            generator=make_generator(),
        )
        assert batches == [6, 6, 6, 6]  # ∅, c, ĉ for 2 prompts, once per step
        batches.clear()
        policy.sample(["a", "b"], guidance=Guidance.cfg(1.0), num_inference_steps=3, generator=make_generator())
        assert batches == [2, 2, 2]  # scale 1: no unconditional pass, as in diffusers
    finally:
        handle.remove()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "5", True])
def test_non_finite_guidance_weights_are_refused_by_value(bad):
    with pytest.raises(ValueError, match=f"guidance weight {bad!r}".replace("(", r"\(").replace(")", r"\)")):
        Guidance.prompt_centred(5.0, bad)


def test_combination_checks_weight_count():
    with pytest.raises(ValueError, match="2 conditional predictions but 1 weights"):
        combine_noise_predictions(torch.zeros(1), [torch.zeros(1), torch.zeros(1)], (1.0,))


def test_the_guidance_alone_decides_what_its_weights_apply_to():
    cfg, centred = Guidance.cfg(3.0), Guidance.prompt_centred(2.0, 4.0)
    assert (cfg.is_prompt_centred, centred.is_prompt_centred) == (False, True)
    assert cfg.conditions(["c-hat"], ["c"]) == [["c-hat"]] == cfg.conditions(["c-hat"])  # CFG leaves c unused
    assert centred.conditions(["c-hat"], ["c"]) == [["c"], ["c-hat"]]  # w1 on c first, w2 on ĉ second
    with pytest.raises(ValueError, match="needs original_prompts"):
        centred.conditions(["c-hat"])
    with pytest.raises(ValueError, match="original_prompts has 2 prompts but prompts has 1"):
        centred.conditions(["c-hat"], ["c", "d"])
    assert cfg.prompt_centred_weights == (0.0, 3.0) and centred.prompt_centred_weights == (2.0, 4.0)
    with pytest.raises(ValueError, match="3 weights"):
        Guidance((1.0, 2.0, 3.0)).conditions(["a"], ["b"])


def test_cfg_sampling_ignores_original_prompts(policy):
    kwargs = dict(guidance=Guidance.cfg(4.0), num_inference_steps=3, eta=1.0)
    with_c = policy.sample(["a red circle, large"], original_prompts=["a red circle"], generator=make_generator(4), **kwargs)
    without = policy.sample(["a red circle, large"], generator=make_generator(4), **kwargs)
    torch.testing.assert_close(with_c.images, without.images, atol=0, rtol=0)
    assert with_c.original_prompts is None and with_c.conditioning.weights == (4.0,)
    centred = policy.sample(
        ["a red circle, large"],
        original_prompts=["a red circle"],
        guidance=Guidance.prompt_centred(2.0, 2.0),
        num_inference_steps=3,
        generator=make_generator(4),
    )
    assert centred.original_prompts == ["a red circle"]


def test_choose_is_the_one_place_a_setting_becomes_a_guidance():
    assert Guidance.choose(True, 1.5, 4.0, 7.0).weights == (1.5, 4.0)
    assert Guidance.choose(True, 1.5, 4.0, 7.0).is_prompt_centred
    assert Guidance.choose(False, 1.5, 4.0, 7.0).weights == (7.0,)
    assert Guidance.choose(False, 1.5, 4.0, 7.0).prompt_centred_weights == (0.0, 7.0)
