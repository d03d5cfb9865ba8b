"""Reward interface, registry, evaluator, JPEG, CLIP-based rewards and the LAION head."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import rewards
from rewards import AestheticHead, AestheticHeadConfig, MultiRewardEvaluator, Reward, load_reward, mask_nonfinite
from rewards.aesthetic import convert_head_checkpoint
from rewards.clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from rewards.clip_rewards import fit_linear_probe, save_linear_probe
from rewards.registry import register_reward, unregister_reward
from rewards.tiny import TinyClipConfig, save_tiny_clip


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return str(save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"), TinyClipConfig(image_size=32)))


def flat_and_noise(size: int = 64) -> torch.Tensor:
    flat = torch.empty(3, size, size)
    flat[0], flat[1], flat[2] = 128 / 255, 64 / 255, 32 / 255
    noise = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))
    return torch.stack([flat, noise])


def hand_jpeg_kb(array: np.ndarray) -> float:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    return len(buffer.getvalue()) / 1000


class Constant(Reward):
    """A reward returning fixed values (for evaluator tests)."""

    needs_prompts = False

    def __init__(self, name, values):
        super().__init__()
        self.name = name
        self.values = torch.tensor(values, dtype=torch.float32)

    def score_batch(self, images, prompts, metadata):
        return self.values[: images.shape[0]]


# ----- JPEG -------------------------------------------------------------------------------
def test_jpeg_rewards_order_flat_and_noise_and_match_hand_computation():
    images = flat_and_noise()
    compress = load_reward("jpeg_compressibility")
    incompress = load_reward("jpeg_incompressibility")
    c, i = compress(images), incompress(images)
    assert c[0] > c[1], "a flat image must be more compressible than noise"
    assert i[1] > i[0], "noise must be more incompressible than a flat image"
    flat = np.full((64, 64, 3), (128, 64, 32), dtype=np.uint8)
    noise = (images[1].permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    expected = torch.tensor([hand_jpeg_kb(flat), hand_jpeg_kb(noise)])
    torch.testing.assert_close(i, expected)
    torch.testing.assert_close(c, -expected)
    assert compress.name == "jpeg_compressibility" and compress.higher_is_better


def test_reward_accepts_pil_images_like_tensors():
    images = flat_and_noise(32)
    pil = [Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for x in images]
    reward = load_reward("jpeg_incompressibility")
    torch.testing.assert_close(reward(pil), reward(images))


# ----- interface errors ------------------------------------------------------------------
def test_registry_refuses_unknown_names_listing_known_ones():
    with pytest.raises(ValueError) as err:  # a ValueError: the CLIs answer it in one line
        load_reward("aesthetics_v3")
    message = str(err.value)
    assert message.startswith("unknown reward 'aesthetics_v3'; known rewards: ")
    for name in ("jpeg_compressibility", "clip_score", "laion_aesthetic", "preference"):
        assert name in message
    with pytest.raises(ValueError, match="no setting.*'modle'.*batch_size"):
        load_reward("clip_score", modle="x")


def test_mismatched_images_and_prompts_say_so(clip_dir):
    reward = load_reward("clip_score", model=clip_dir)
    with pytest.raises(ValueError, match="3 images but 2 prompts"):
        reward(torch.rand(3, 3, 32, 32), ["a", "b"])
    with pytest.raises(ValueError, match=r"prompts \[1\] are empty"):
        reward(torch.rand(2, 3, 32, 32), ["a", "  "])
    with pytest.raises(ValueError, match="pass the original prompts"):
        reward(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*\(x \+ 1\) / 2"):
        reward(torch.rand(2, 3, 32, 32) * 2 - 1, ["a", "b"])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        reward(torch.rand(3, 32, 32), ["a", "b", "c"])
    with pytest.raises(ValueError, match="2 metadata"):
        load_reward("jpeg_compressibility")(torch.rand(3, 3, 8, 8), None, [{}, {}])


# ----- evaluator ---------------------------------------------------------------------------
def test_evaluator_masks_counts_and_reports_nonfinite_scores(caplog):
    nan, inf = float("nan"), float("inf")
    evaluator = MultiRewardEvaluator([Constant("a", [1.0, nan, inf, -2.0]), Constant("b", [0.5, 0.25, 0.0, 1.0])])
    images = torch.rand(4, 3, 8, 8)
    with caplog.at_level("WARNING"):
        result = evaluator(images, ["p"] * 4)
    assert result.names == ["a", "b"] and result.scores.shape == (4, 2)
    assert torch.isfinite(result.scores).all()
    torch.testing.assert_close(result["a"], torch.tensor([1.0, -2.0, -2.0, -2.0]))  # worst finite fills
    torch.testing.assert_close(result["b"], torch.tensor([0.5, 0.25, 0.0, 1.0]))
    assert result.valid[:, 0].tolist() == [True, False, False, True]
    assert result.nonfinite_counts == {"a": 2, "b": 0}
    assert "non-finite" in caplog.text
    evaluator(images, ["p"] * 4)
    assert evaluator.total_nonfinite == {"a": 4, "b": 0}
    evaluator.close()


def test_nan_image_gives_a_masked_jpeg_score():
    images = flat_and_noise(16)
    images[1, 0, 0, 0] = float("nan")
    raw = load_reward("jpeg_incompressibility")(images)
    assert torch.isfinite(raw[0]) and torch.isnan(raw[1])
    with MultiRewardEvaluator.from_names(["jpeg_incompressibility", "jpeg_compressibility"]) as evaluator:
        result = evaluator(images, ["a", "b"])
    assert result.nonfinite_counts == {"jpeg_incompressibility": 1, "jpeg_compressibility": 1}
    torch.testing.assert_close(result.scores[1], result.scores[0])  # the only finite score is the worst


def test_mask_nonfinite_with_no_finite_value_uses_zero():
    scores, valid = mask_nonfinite(torch.tensor([[float("nan")], [float("-inf")]]))
    assert scores.tolist() == [[0.0], [0.0]] and not valid.any()


def test_evaluator_submit_overlaps_scoring_with_the_caller():
    started, release = threading.Event(), threading.Event()

    class Blocking(Constant):
        def score_batch(self, images, prompts, metadata):
            started.set()
            assert release.wait(timeout=10), "the caller never continued while scoring ran"
            return super().score_batch(images, prompts, metadata)

    with MultiRewardEvaluator([Blocking("slow", [3.0, 4.0])]) as evaluator:
        future = evaluator.submit(torch.rand(2, 3, 8, 8), ["p", "q"])
        assert started.wait(timeout=10)
        assert not future.done()  # scoring is in progress while this thread goes on ("sampling")
        release.set()
        assert future.result(timeout=10).scores[:, 0].tolist() == [3.0, 4.0]


def test_evaluator_refuses_duplicate_names():
    with pytest.raises(ValueError, match="repeated.*'a'"):
        MultiRewardEvaluator([Constant("a", [1.0]), Constant("a", [2.0])])


# ----- CLIP-based rewards ----------------------------------------------------------------------
def hand_pixels(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def test_clip_score_equals_hand_computed_cosine_after_save_and_reload(clip_dir):
    from transformers import AutoTokenizer, CLIPModel

    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    prompts = ["a red circle", "two blue squares on grey", "x"]
    reward = load_reward("clip_score", model=clip_dir, batch_size=2)  # two chunks
    model, tokenizer = CLIPModel.from_pretrained(clip_dir).eval(), AutoTokenizer.from_pretrained(clip_dir)
    with torch.no_grad():
        expected = []
        for image, prompt in zip(images, prompts):  # one at a time: no padding involved
            tokens = tokenizer([prompt], return_tensors="pt")
            out = model(input_ids=tokens.input_ids, pixel_values=hand_pixels(image[None]))
            expected.append(out.logits_per_image[0, 0] / model.logit_scale.exp())
    torch.testing.assert_close(reward(images, prompts), torch.stack(expected), atol=1e-5, rtol=1e-5)


def test_clip_score_resizes_and_crops_non_square_images(clip_dir):
    reward = load_reward("clip_score", model=clip_dir)
    wide = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(2))
    centre = wide[..., 8:40]  # shortest side already 32: resize is a no-op, the crop takes the centre
    torch.testing.assert_close(reward(wide, ["a"]), reward(centre, ["a"]))


def test_pickscore_is_temperature_times_cosine(clip_dir):
    images, prompts = torch.rand(2, 3, 32, 32), ["a cat", "a dog"]
    cos = load_reward("clip_score", model=clip_dir)(images, prompts)
    pick = load_reward("pickscore", model=clip_dir, processor=clip_dir)
    torch.testing.assert_close(pick(images, prompts), cos * pick.backbone.temperature.item(), atol=1e-4, rtol=1e-5)


def test_sentiment_zero_shot_probability_matches_hand_softmax(clip_dir):
    reward = load_reward("sentiment", model=clip_dir, positive_texts=("happy", "joy"), negative_texts=("sad",))
    images = torch.rand(4, 3, 32, 32)
    p = reward(images, None)
    backbone = reward.backbone
    with torch.no_grad():
        e_x = backbone.image_embeds(images)
        pos = F.normalize(backbone.text_embeds(["happy", "joy"]).mean(0), dim=-1)
        neg = backbone.text_embeds(["sad"])[0]
        tau = backbone.temperature
        expected = torch.sigmoid(tau * (e_x @ pos - e_x @ neg))
    torch.testing.assert_close(p, expected, atol=1e-5, rtol=1e-5)
    assert ((p >= 0) & (p <= 1)).all()


def test_sentiment_linear_probe(clip_dir, tmp_path):
    weight = torch.linspace(-1, 1, 16)
    save_linear_probe(tmp_path / "probe.safetensors", weight, 0.3)
    reward = load_reward("sentiment", model=clip_dir, probe_path=str(tmp_path / "probe.safetensors"))
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = torch.sigmoid(reward.backbone.image_embeds(images) @ weight + 0.3)
    torch.testing.assert_close(reward(images), expected)
    save_linear_probe(tmp_path / "bad.safetensors", torch.ones(5), 0.0)
    with pytest.raises(ValueError, match="5 weights but the CLIP embedding has 16"):
        load_reward("sentiment", model=clip_dir, probe_path=str(tmp_path / "bad.safetensors"))


def test_fit_linear_probe_separates_two_classes_and_drives_the_sentiment_reward(clip_dir, tmp_path):
    reward = load_reward("sentiment", model=clip_dir)
    generator = torch.Generator().manual_seed(0)
    bright = 0.7 + 0.3 * torch.rand(16, 3, 32, 32, generator=generator)
    dark = 0.3 * torch.rand(16, 3, 32, 32, generator=generator)
    with torch.no_grad():
        embeds = reward.backbone.image_features(torch.cat([bright, dark]))
    labels = torch.cat([torch.ones(16), torch.zeros(16)])
    weight, bias = fit_linear_probe(embeds, labels)
    save_linear_probe(tmp_path / "probe.safetensors", weight, bias)
    probe = load_reward("sentiment", model=clip_dir, probe_path=str(tmp_path / "probe.safetensors"))
    p = probe(torch.cat([bright, dark]))
    assert ((p > 0.5).float() == labels).all()
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        fit_linear_probe(embeds, labels * 2)


# ----- LAION aesthetic head ----------------------------------------------------------------
def test_laion_head_has_the_public_layout_and_shape():
    head = AestheticHead()
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items() if k.endswith("weight")}
    assert shapes == {
        "layers.0.weight": (1024, 768),
        "layers.2.weight": (128, 1024),
        "layers.4.weight": (64, 128),
        "layers.6.weight": (16, 64),
        "layers.7.weight": (1, 16),
    }
    assert head(torch.randn(5, 768)).shape == (5,)
    with pytest.raises(ValueError, match=r"\(B, 768\)"):
        head(torch.randn(5, 512))


def test_laion_aesthetic_scores_l2_normalised_embeddings(clip_dir, tmp_path):
    from transformers import CLIPModel

    torch.manual_seed(0)
    head = AestheticHead(AestheticHeadConfig(input_dim=16, hidden_dims=(32, 8), dropouts=(0.2, 0.0)))
    head.save(tmp_path / "head.safetensors")
    reward = load_reward("laion_aesthetic", clip_model=clip_dir, head_path=str(tmp_path / "head.safetensors"))
    images = torch.rand(3, 3, 32, 32)
    model = CLIPModel.from_pretrained(clip_dir).eval()
    with torch.no_grad():
        raw = model.visual_projection(model.vision_model(pixel_values=hand_pixels(images)).pooler_output)
        expected = head.eval()(raw / raw.norm(dim=-1, keepdim=True))
        unnormalised = head(raw)
    scores = reward(images)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(scores, unnormalised, atol=1e-3)
    with pytest.raises(ValueError, match="needs head_path"):
        load_reward("laion_aesthetic", clip_model=clip_dir)
    wrong = AestheticHead()
    wrong.save(tmp_path / "wrong.safetensors")
    with pytest.raises(ValueError, match="768-d embeddings but the CLIP model gives 16-d"):
        load_reward("laion_aesthetic", clip_model=clip_dir, head_path=str(tmp_path / "wrong.safetensors"))


def test_public_pth_head_loads_tensors_only_and_converts(tmp_path):
    head = AestheticHead()
    torch.save(head.state_dict(), tmp_path / "public.pth")  # the public file is a plain state dict
    loaded = AestheticHead.load(tmp_path / "public.pth")
    converted = AestheticHead.load(convert_head_checkpoint(tmp_path / "public.pth", tmp_path / "head.safetensors"))
    x = torch.randn(4, 768)
    head.eval()
    torch.testing.assert_close(loaded(x), head(x))
    torch.testing.assert_close(converted(x), head(x))

    torch.save({"layers.0.weight": torch.zeros(1), "extra": threading.Lock}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="refusing to unpickle"):
        AestheticHead.load(tmp_path / "evil.pth")
    with pytest.raises(FileNotFoundError, match="no aesthetic head file"):
        AestheticHead.load(tmp_path / "missing.pth")


def test_every_builtin_reward_is_registered():
    assert set(rewards.reward_names()) >= {
        "jpeg_compressibility",
        "jpeg_incompressibility",
        "laion_aesthetic",
        "clip_score",
        "pickscore",
        "hpsv2",
        "imagereward",
        "sentiment",
        "caption_alignment",
        "preference",
    }


def test_optional_extra_loaders_explain_the_missing_package():
    # the package is absent here by design: it needs torchvision
    with pytest.raises(ImportError, match="provides 'ImageReward'.*pip install image-reward"):
        load_reward("imagereward")


def test_custom_rewards_register_and_unregister():
    @register_reward("brightness_test")
    def brightness(config):
        return Constant("brightness_test", [1.0])

    try:
        assert "brightness_test" in rewards.reward_names()
        with pytest.raises(ValueError, match="already registered"):
            register_reward("brightness_test")(lambda config: None)
    finally:
        unregister_reward("brightness_test")
    assert "brightness_test" not in rewards.reward_names()


def test_laion_head_from_a_hub_file_is_read_through_the_cache_offline(tmp_path, monkeypatch):
    import huggingface_hub

    from rewards.aesthetic import resolve_head_file

    head = AestheticHead()
    repo = tmp_path / "models--trl-lib--ddpo-aesthetic-predictor"
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    torch.save(head.state_dict(), repo / "snapshots" / "abc123" / "aesthetic-model.pth")  # the public file: a plain state dict
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    path = resolve_head_file("trl-lib/ddpo-aesthetic-predictor/aesthetic-model.pth")
    assert path == str(repo / "snapshots" / "abc123" / "aesthetic-model.pth")
    x = torch.randn(2, 768)
    torch.testing.assert_close(AestheticHead.load(path)(x), head.eval()(x))
    local = tmp_path / "head.safetensors"
    head.save(local)
    assert resolve_head_file(str(local)) == str(local)  # a local file is used as is
    with pytest.raises(FileNotFoundError, match="the hub file could not be read"):
        resolve_head_file("trl-lib/ddpo-aesthetic-predictor/other.pth")
    with pytest.raises(FileNotFoundError, match="give a local file or a hub file OWNER/REPO/FILE"):
        resolve_head_file("missing.pth")


def test_fit_aesthetic_head_learns_a_rating_and_is_silent_without_progress(capfd):
    from rewards.aesthetic import fit_aesthetic_head

    torch.manual_seed(0)
    embeds = torch.randn(64, 16)
    ratings = 5.0 + 2.0 * F.normalize(embeds, dim=-1)[:, 0]  # a rating the head can read off one direction
    head = AestheticHead(AestheticHeadConfig(input_dim=16, hidden_dims=(32, 8), dropouts=(0.0, 0.0)))
    capfd.readouterr()
    losses = fit_aesthetic_head(head, embeds, ratings, epochs=60, lr=1e-2, batch_size=16, progress=False)
    assert capfd.readouterr().err == ""
    assert len(losses) == 60 and losses[-1] < 0.05 * losses[0]
