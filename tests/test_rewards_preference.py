"""Preference reward-model training (Bradley–Terry, ImageReward's method) and loading by name."""

from __future__ import annotations

import json
import math
import os

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from rewards import load_reward
from rewards.preference import PreferenceScorer, freeze_fraction_of_backbone
from rewards.tiny import build_tiny_clip, save_tiny_clip
from rewards.train_preference import (
    TrainPreferenceConfig,
    bradley_terry_loss,
    load_pairs,
    main,
    pairwise_accuracy,
    train_preference,
)

FEATURES = datasets.Features(
    {"prompt": datasets.Value("string"), "image_a": datasets.Image(), "image_b": datasets.Image(), "preferred": datasets.Value("string")}
)


def grey(level: float, rng: np.random.Generator) -> Image.Image:
    array = np.clip(level + rng.normal(0, 0.05, (32, 32, 3)), 0, 1)
    return Image.fromarray((array * 255).astype(np.uint8))


def separable_pairs(n: int, seed: int) -> datasets.Dataset:
    """The preferred image is the brighter one for "a bright scene", the darker one for "a dark scene"."""
    rng = np.random.default_rng(seed)
    rows = {"prompt": [], "image_a": [], "image_b": [], "preferred": []}
    for _ in range(n):
        la, lb = rng.uniform(0.1, 0.9, 2)
        while abs(la - lb) < 0.1:
            la, lb = rng.uniform(0.1, 0.9, 2)
        prompt = str(rng.choice(["a bright scene", "a dark scene"]))
        want_a = (la > lb) == (prompt == "a bright scene")
        rows["prompt"].append(prompt)
        rows["image_a"].append(grey(la, rng))
        rows["image_b"].append(grey(lb, rng))
        rows["preferred"].append("a" if want_a else "b")
    return datasets.Dataset.from_dict(rows, features=FEATURES)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return str(save_tiny_clip(tmp_path_factory.mktemp("tiny_clip")))


def test_bradley_terry_loss_and_accuracy_by_hand():
    r_w, r_l = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    expected = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(2.0))) / 2
    assert bradley_terry_loss(r_w, r_l).item() == pytest.approx(expected, rel=1e-6)
    assert pairwise_accuracy(r_w, r_l) == 0.5


def test_freeze_fraction_freezes_embeddings_and_the_first_layers():
    model = build_tiny_clip().model  # 2 layers per tower
    trainable = freeze_fraction_of_backbone(model, 0.5)
    for tower in (model.vision_model, model.text_model):
        assert not any(p.requires_grad for p in tower.embeddings.parameters())
        assert not any(p.requires_grad for p in tower.encoder.layers[0].parameters())
        assert all(p.requires_grad for p in tower.encoder.layers[1].parameters())
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    assert freeze_fraction_of_backbone(model, 1.0) == 0
    with pytest.raises(ValueError, match="freeze_fraction=1.5"):
        freeze_fraction_of_backbone(model, 1.5)


def test_bradley_terry_training_separates_held_out_pairs_and_loads_as_a_reward(clip_dir, tmp_path):
    config = TrainPreferenceConfig(
        backbone=clip_dir,
        output_dir=str(tmp_path / "scorer"),
        hidden_dims=[32, 8],
        dropouts=[0.0, 0.0],
        freeze_fraction=0.5,
        epochs=8,
        batch_size=32,
        learning_rate=1e-3,
        head_learning_rate=3e-3,
    )
    held_out = separable_pairs(64, seed=1)
    scorer, history = train_preference(config, separable_pairs(256, seed=0), held_out)
    assert [h["epoch"] for h in history] == list(range(1, 9))
    assert history[0]["eval_accuracy"] < 0.9 <= history[-1]["eval_accuracy"]
    frozen = scorer.backbone.model.vision_model.encoder.layers[0]
    assert not any(p.requires_grad for p in frozen.parameters())

    reward = load_reward("preference", path=str(tmp_path / "scorer"), batch_size=16)
    saved = json.loads((tmp_path / "scorer" / "training_history.json").read_text())
    assert saved["history"] == history
    # local paths recorded relative to the model's folder: no machine's path in a committed record
    assert saved["config"]["backbone"] == os.path.relpath(clip_dir, tmp_path / "scorer")
    assert saved["config"]["output_dir"] == "."
    rows = held_out[:]
    images_a = torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1) for im in rows["image_a"]])
    images_b = torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1) for im in rows["image_b"]])
    score_a, score_b = reward(images_a, rows["prompt"]), reward(images_b, rows["prompt"])
    with torch.no_grad():
        torch.testing.assert_close(score_a, scorer.eval()(images_a, rows["prompt"]), atol=1e-5, rtol=1e-5)
    prefers_a = torch.tensor([p == "a" for p in rows["preferred"]])
    agreement = ((score_a > score_b) == prefers_a).float().mean().item()
    assert agreement == pytest.approx(history[-1]["eval_accuracy"])


def write_jsonl_pairs(directory, n: int = 6) -> str:
    rng = np.random.default_rng(0)
    (directory / "images").mkdir()
    with open(directory / "pairs.jsonl", "w") as handle:
        for i in range(n):
            grey(0.8, rng).save(directory / "images" / f"{i}a.png")
            grey(0.2, rng).save(directory / "images" / f"{i}b.png")
            record = {"prompt": "a bright scene", "image_a": f"images/{i}a.png", "image_b": f"images/{i}b.png"}
            handle.write(json.dumps({**record, "preferred": "a" if i % 2 else 1}) + "\n")
    return str(directory / "pairs.jsonl")


def test_cli_trains_from_jsonl_with_yaml_config_and_overrides(clip_dir, tmp_path, capsys):
    data = write_jsonl_pairs(tmp_path)
    (tmp_path / "train.yaml").write_text(f"backbone: {clip_dir}\nepochs: 3\nhidden_dims: [8]\ndropouts: [0.0]\n")
    out = tmp_path / "out"
    history = main(
        ["--config", str(tmp_path / "train.yaml"), "--data", data, "--epochs", "1", "--eval_fraction", "0.34", "--output_dir", str(out)]
    )
    assert len(history) == 1 and 0.0 <= history[0]["eval_accuracy"] <= 1.0
    assert '"eval_accuracy"' in capsys.readouterr().out
    assert (out / "head.safetensors").is_file() and (out / "backbone" / "model.safetensors").is_file()
    scorer = PreferenceScorer.from_pretrained(out)
    assert scorer.head.config.hidden_dims == (8,) and scorer.head.config.input_dim == 3 * 16


def test_pair_loading_errors_name_the_problem(clip_dir, tmp_path):
    data = write_jsonl_pairs(tmp_path, n=2)
    pairs = load_pairs(data)
    assert isinstance(pairs.features["image_a"], datasets.Image) and pairs[0]["image_a"].size == (32, 32)
    (tmp_path / "images" / "0a.png").unlink()
    with pytest.raises(FileNotFoundError, match="images/0a.png"):
        load_pairs(data)
    (tmp_path / "bad.jsonl").write_text(json.dumps({"prompt": "p", "image_a": "x.png"}) + "\n")
    with pytest.raises(ValueError, match=r"line 1 lacks column\(s\) \['image_b', 'preferred'\]"):
        load_pairs(str(tmp_path / "bad.jsonl"))
    (tmp_path / "bad_choice.jsonl").write_text(
        json.dumps({"prompt": "p", "image_a": "images/1a.png", "image_b": "images/1b.png", "preferred": "c"}) + "\n"
    )
    with pytest.raises(ValueError, match="pair 0: preferred='c'; use 'a' or 'b'"):
        main(
            [
                "--data",
                str(tmp_path / "bad_choice.jsonl"),
                "--eval_data",
                str(tmp_path / "bad_choice.jsonl"),
                "--backbone",
                clip_dir,
                "--output_dir",
                str(tmp_path / "o"),
                "--epochs",
                "1",
            ]
        )
    with pytest.raises(FileNotFoundError, match="no pairs file"):
        load_pairs(str(tmp_path / "none.jsonl"))
    with pytest.raises(FileNotFoundError, match="not a preference scorer directory"):
        load_reward("preference", path=str(tmp_path))
