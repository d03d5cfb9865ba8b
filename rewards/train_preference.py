"""Train a preference reward model from pairwise comparisons (ImageReward's method).

    python -m rewards.train_preference --data pairs.jsonl --backbone openai/clip-vit-base-patch32 \
        --output_dir runs/preference --epochs 4 --freeze_fraction 0.7

``--data`` is a JSONL file of ``{"prompt", "image_a", "image_b", "preferred"}`` records
(image paths relative to the file; ``preferred`` is ``"a"``/``"b"`` or 0/1), a directory
saved with ``datasets.Dataset.save_to_disk``, or a hub dataset id (with ``--split``) with the
same columns (images as ``datasets.Image`` or paths). Settings can also come from a YAML file
given as ``--config file.yaml``; command-line flags override it.

Loss (Bradley–Terry, ImageReward eq. 2): L(θ) = −E log σ(r_θ(x_w, c) − r_θ(x_l, c)). The
held-out pairwise accuracy P[r_θ(x_w, c) > r_θ(x_l, c)] is reported after every epoch.

TRL's ``RewardTrainer`` is not used: it trains text-only sequence classifiers on
chosen/rejected token sequences, while this scorer takes an image and a prompt.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from parrot_base.cli import run_cli
from parrot_base.config import parse_config
from rewards.base import as_image_tensor
from rewards.preference import PreferenceScorer, PreferenceScorerConfig, freeze_fraction_of_backbone

__all__ = ["TrainPreferenceConfig", "load_pairs", "bradley_terry_loss", "pairwise_accuracy", "train_preference", "main"]

logger = logging.getLogger(__name__)

PAIR_COLUMNS = ("prompt", "image_a", "image_b", "preferred")


@dataclass
class TrainPreferenceConfig:
    data: str = field(default="", metadata={"help": "JSONL of pairs, a save_to_disk directory, or a hub dataset id"})
    split: str = field(default="train", metadata={"help": "split of a hub dataset"})
    eval_data: str = field(default="", metadata={"help": "held-out pairs (same formats); empty = split off eval_fraction"})
    eval_fraction: float = field(default=0.1, metadata={"help": "fraction of --data held out when --eval_data is empty"})
    backbone: str = field(default="openai/clip-vit-large-patch14", metadata={"help": "CLIPModel hub id or local dir"})
    init_from: str = field(default="", metadata={"help": "continue from a trained scorer directory instead of --backbone"})
    output_dir: str = field(default="runs/preference", metadata={"help": "where the trained scorer is saved"})
    hidden_dims: list[int] = field(default_factory=lambda: [1024, 128, 64, 16], metadata={"help": "MLP head widths"})
    dropouts: list[float] = field(default_factory=lambda: [0.2, 0.2, 0.1, 0.0], metadata={"help": "head dropouts"})
    freeze_fraction: float = field(default=0.7, metadata={"help": "fraction of each CLIP tower's layers kept frozen"})
    epochs: int = field(default=4, metadata={"help": "passes over the training pairs"})
    batch_size: int = field(default=32, metadata={"help": "pairs per optimiser step"})
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate of the backbone"})
    head_learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate of the head"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    seed: int = field(default=0, metadata={"help": "seed of the split, shuffling and head initialisation"})
    device: str = field(default="cpu", metadata={"help": "torch device"})
    progress: bool = field(default=True, metadata={"help": "show a bar over each epoch's steps"})

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs={self.epochs} and batch_size={self.batch_size} must be >= 1")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction={self.eval_fraction} must lie strictly between 0 and 1")
        if not 0.0 <= self.freeze_fraction <= 1.0:
            raise ValueError(f"freeze_fraction={self.freeze_fraction} must lie in [0, 1]")


def _preferred_is_a(value: object, row: int) -> bool:
    text = str(value).strip().lower()
    if text in {"a", "0", "image_a"}:
        return True
    if text in {"b", "1", "image_b"}:
        return False
    raise ValueError(f"pair {row}: preferred={value!r}; use 'a' or 'b' (or 0 for image_a, 1 for image_b)")


def _check_columns(dataset: datasets.Dataset, source: str) -> datasets.Dataset:
    missing = [c for c in PAIR_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{source!r} lacks column(s) {missing}; pairs need {list(PAIR_COLUMNS)}")
    if len(dataset) == 0:
        raise ValueError(f"{source!r} holds no pairs")
    return dataset


def _read_jsonl_pairs(path: Path) -> list[dict]:
    """Records of a JSONL pairs file, image paths made absolute (relative to the file) and checked."""
    if not path.is_file():
        raise FileNotFoundError(f"no pairs file at {str(path)!r}")
    records = []
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{str(path)!r} line {line_number} is not JSON: {err}") from err
        missing = [c for c in PAIR_COLUMNS if c not in record]
        if missing:
            raise ValueError(f"{str(path)!r} line {line_number} lacks column(s) {missing}; pairs need {list(PAIR_COLUMNS)}")
        for column in ("image_a", "image_b"):
            image = path.resolve().parent / record[column]
            if not image.is_file():
                raise FileNotFoundError(f"{str(path)!r} line {line_number}: image {record[column]!r} not found ({image})")
            record[column] = str(image)
        records.append({**record, "preferred": str(record["preferred"])})
    return records


def load_pairs(source: str, split: str = "train") -> datasets.Dataset:
    """Pairs as a ``datasets.Dataset`` with PIL ``image_a``/``image_b`` columns."""
    path = Path(source).expanduser()
    if path.suffix in {".jsonl", ".json"}:
        dataset = _check_columns(datasets.Dataset.from_list(_read_jsonl_pairs(path)), source)
    elif path.is_dir():
        dataset = _check_columns(datasets.load_from_disk(str(path)), source)
    else:
        dataset = _check_columns(datasets.load_dataset(source, split=split), source)
    for column in ("image_a", "image_b"):
        if not isinstance(dataset.features[column], datasets.Image):
            dataset = dataset.cast_column(column, datasets.Image())
    return dataset


def _winner_loser(batch: dict, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(x_w, x_l, c) of a batch of pairs, images resized to the scorer's input size."""
    winners, losers = [], []
    for row, (a, b, preferred) in enumerate(zip(batch["image_a"], batch["image_b"], batch["preferred"])):
        first, second = (a, b) if _preferred_is_a(preferred, row) else (b, a)
        winners.append(first.convert("RGB").resize(size[::-1], Image.BICUBIC))
        losers.append(second.convert("RGB").resize(size[::-1], Image.BICUBIC))
    return as_image_tensor(winners), as_image_tensor(losers), list(batch["prompt"])


def bradley_terry_loss(r_w: torch.Tensor, r_l: torch.Tensor) -> torch.Tensor:
    """−mean log σ(r_w − r_l)."""
    return -F.logsigmoid(r_w - r_l).mean()


def pairwise_accuracy(r_w: torch.Tensor, r_l: torch.Tensor) -> float:
    return (r_w > r_l).float().mean().item()


def _score_pairs(scorer: PreferenceScorer, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    x_w, x_l, prompts = _winner_loser(batch, scorer.backbone.preprocess.crop)
    scores = scorer(torch.cat([x_w, x_l]), prompts + prompts)
    return scores.chunk(2)


@torch.no_grad()
def evaluate(scorer: PreferenceScorer, pairs: datasets.Dataset, batch_size: int) -> dict[str, float]:
    scorer.eval()
    winners, losers = [], []
    for start in range(0, len(pairs), batch_size):
        r_w, r_l = _score_pairs(scorer, pairs[start : start + batch_size])
        winners.append(r_w)
        losers.append(r_l)
    r_w, r_l = torch.cat(winners), torch.cat(losers)
    return {"loss": bradley_terry_loss(r_w, r_l).item(), "accuracy": pairwise_accuracy(r_w, r_l)}


def train_preference(
    config: TrainPreferenceConfig,
    train_pairs: datasets.Dataset | None = None,
    eval_pairs: datasets.Dataset | None = None,
) -> tuple[PreferenceScorer, list[dict[str, float]]]:
    """Train, report held-out accuracy each epoch, save to ``config.output_dir``; returns (scorer, history)."""
    torch.manual_seed(config.seed)
    if train_pairs is None:
        if not config.data:
            raise ValueError("no training pairs: set --data (JSONL, save_to_disk directory or hub dataset id)")
        train_pairs = load_pairs(config.data, config.split)
    if eval_pairs is None:
        if config.eval_data:
            eval_pairs = load_pairs(config.eval_data, config.split)
        else:
            split = train_pairs.train_test_split(test_size=config.eval_fraction, seed=config.seed)
            train_pairs, eval_pairs = split["train"], split["test"]
    if config.init_from:
        scorer = PreferenceScorer.from_pretrained(config.init_from, device=config.device)
    else:
        scorer_config = PreferenceScorerConfig(hidden_dims=tuple(config.hidden_dims), dropouts=tuple(config.dropouts))
        scorer = PreferenceScorer.from_backbone(config.backbone, scorer_config, device=config.device)
    trainable = freeze_fraction_of_backbone(scorer.backbone.model, config.freeze_fraction)
    logger.info("%d train / %d held-out pairs; %d trainable backbone parameters", len(train_pairs), len(eval_pairs), trainable)
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in scorer.backbone.parameters() if p.requires_grad], "lr": config.learning_rate},
            {"params": list(scorer.head.parameters()), "lr": config.head_learning_rate},
        ],
        weight_decay=config.weight_decay,
    )
    history = []
    for epoch in range(1, config.epochs + 1):
        scorer.train()
        shuffled = train_pairs.shuffle(seed=config.seed + epoch)
        total, count = 0.0, 0
        for start in tqdm(range(0, len(shuffled), config.batch_size), desc=f"epoch {epoch}", leave=False, disable=not config.progress):
            r_w, r_l = _score_pairs(scorer, shuffled[start : start + config.batch_size])
            loss = bradley_terry_loss(r_w, r_l)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(r_w)
            count += len(r_w)
        held_out = evaluate(scorer, eval_pairs, config.batch_size)
        record = {"epoch": epoch, "train_loss": total / count, "eval_loss": held_out["loss"], "eval_accuracy": held_out["accuracy"]}
        history.append(record)
        logger.info("epoch %d: train loss %.4f, held-out loss %.4f, held-out pairwise accuracy %.3f", *record.values())
    scorer.eval()
    output = scorer.save_pretrained(config.output_dir)
    record = {"config": portable_config(asdict(config), output), "history": history}
    (output / "training_history.json").write_text(json.dumps(record, indent=2))
    return scorer, history


def portable_config(config: dict, output: Path) -> dict:
    """The config as recorded beside the model: local paths relative to ``output`` (the record travels with the
    model, and a build in a temporary directory leaves no machine's path in it); hub ids and empty fields as given."""
    paths = ("data", "eval_data", "backbone", "init_from", "output_dir")
    return {k: os.path.relpath(v, output) if k in paths and v and os.path.exists(v) else v for k, v in config.items()}


def main(argv: Sequence[str] | None = None) -> list[dict[str, float]]:
    config = parse_config(TrainPreferenceConfig, argv, description="Train a preference reward model (Bradley–Terry)")
    _, history = train_preference(config)
    for record in history:
        print(json.dumps(record))
    print(f"saved preference scorer to {os.fspath(config.output_dir)} (load with load_reward('preference', path=...))")
    return history


if __name__ == "__main__":
    run_cli(main)
