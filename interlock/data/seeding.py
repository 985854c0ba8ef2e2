"""Seeds derived from (seed, purpose, counters...): the root of resumable, reproducible data order.

Every random draw in the data pipeline (the epoch's permutation, one step's augmentation,
one step's text offsets, the validation split) gets its own generator, seeded from the
run's seed, a purpose and the counters that locate it (epoch, step). Nothing carries
state from one step to the next, so a run resumed at (epoch, step) draws exactly what
an uninterrupted run draws there.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

__all__ = ["derive_seed", "make_generator"]


def derive_seed(seed: int, purpose: str, *counters: int) -> int:
    """A 64-bit seed mixed from ``seed``, ``purpose`` and ``counters`` (all ints >= 0).

    numpy's SeedSequence does the mixing (well-tested hashing, identical on every platform).
    The number of counters is mixed in too: SeedSequence alone gives [a, b] and [a, b, 0]
    the same state.
    """
    parts = (seed, *counters)
    if any(isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 0 for p in parts):
        raise ValueError(f"seed and counters must be integers >= 0; got seed={seed!r}, counters={counters!r}")
    entropy = [int(seed), zlib.crc32(purpose.encode()), len(counters), *map(int, counters)]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


def make_generator(seed: int, purpose: str, *counters: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` (draw on CPU, move to the batch's
    device: the same seed then gives the same numbers on every device)."""
    return torch.Generator().manual_seed(derive_seed(seed, purpose, *counters))
