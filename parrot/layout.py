"""Where every image of a Parrot batch comes from: prompt × expansion × identifier × image.

Parrot's Algorithm 1 builds its batch as nested loops: for each original prompt c (index p),
the expander samples expansions ĉ (index e, ``E`` per prompt and identifier), each paired with
one reward identifier <k> (index k; a single "identifier" 0 when identifiers are off), and the
T2I model draws N images (index j) from "<k>, ĉ". A *group* is one (p, e, k): N images of one
conditioning text, "the same text prompt" over which the non-dominated set P is taken.

The global image index is i = ((p·E + e)·K_id + k)·N + j (prompt-major), so a process that holds
prompts p0 … p1 holds a contiguous slice of images and whole groups. Selection, identifier credit
and the expander's per-prompt baseline are all read off this one record.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["BatchLayout"]


@dataclass(frozen=True)
class BatchLayout:
    """Sizes of the nested batch: ``prompts`` c × ``expansions`` E × ``identifiers`` K_id × ``images`` N."""

    prompts: int
    expansions: int = 1
    identifiers: int = 1  # K when identifiers are on, 1 when off
    images: int = 1

    def __post_init__(self) -> None:
        for name in ("prompts", "expansions", "identifiers", "images"):
            if getattr(self, name) < 1:
                raise ValueError(f"BatchLayout.{name}={getattr(self, name)} must be >= 1")

    @property
    def groups_per_prompt(self) -> int:
        """Expansions sampled per original prompt: E·K_id."""
        return self.expansions * self.identifiers

    @property
    def num_groups(self) -> int:
        return self.prompts * self.groups_per_prompt

    @property
    def num_images(self) -> int:
        return self.num_groups * self.images

    # ----- per image (num_images,) ------------------------------------------------------------
    def image_group(self) -> torch.Tensor:
        """Group index g = (p·E + e)·K_id + k of every image."""
        return torch.arange(self.num_images) // self.images

    def image_prompt(self) -> torch.Tensor:
        """Prompt index p of every image."""
        return self.image_group() // self.groups_per_prompt

    def image_identifier(self) -> torch.Tensor:
        """Identifier (reward) index k of every image (0 when identifiers are off)."""
        return self.image_group() % self.identifiers

    def image_expansion(self) -> torch.Tensor:
        """Expansion index e (within its prompt and identifier) of every image."""
        return (self.image_group() // self.identifiers) % self.expansions

    # ----- per group (num_groups,) --------------------------------------------------------------
    def group_prompt(self) -> torch.Tensor:
        """Prompt index p of every group (= every sampled expansion ĉ)."""
        return torch.arange(self.num_groups) // self.groups_per_prompt

    def group_identifier(self) -> torch.Tensor:
        """Identifier index k of every group."""
        return torch.arange(self.num_groups) % self.identifiers

    def for_prompts(self, prompts: int) -> BatchLayout:
        """The same nesting over ``prompts`` original prompts (e.g. one process's share)."""
        return BatchLayout(prompts, self.expansions, self.identifiers, self.images)
