"""Derived seeds: every random draw of a run comes from a generator seeded by a tuple of integers.

A draw of iteration n is seeded by (seed, n, purpose, global image or process index), so a
resumed run repeats exactly the draws of an uninterrupted one, and a 1-process run with batch 2B
draws the same images as 2 processes with batch B each. The purposes below keep the streams apart.
"""

from __future__ import annotations

import numpy as np

__all__ = ["derived_seed", "PROMPTS", "IMAGES", "STEPS", "EXPANDER", "EVAL", "NOISE"]

# purposes of derived seeds (their values are part of the determinism contract: never renumber)
PROMPTS, IMAGES, STEPS, EXPANDER, EVAL, NOISE = range(6)


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence hashing: independent streams per tuple)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))
