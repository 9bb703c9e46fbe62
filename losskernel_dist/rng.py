"""Counter-based randomness: every random number is a function of (seed, chain, step, stream).

A chain's minibatch indices and Langevin noise at step t are derived from the
key (seed, chain, t) alone, never from a generator that has been advanced by
earlier work. Draws therefore do not depend on which chains share a process,
how chains are laid out over ranks or array tasks, or when checkpoints were
taken: resuming at step t needs nothing but t.
"""

from __future__ import annotations

import numpy as np
import torch

# Streams keep the independent uses of one (seed, chain, step) apart.
STREAM_MINIBATCH = 0
STREAM_NOISE = 1


def derive_seed(seed: int, chain: int, step: int, stream: int) -> int:
    """A 63-bit seed from the counter key, mixed by NumPy's SeedSequence hash."""
    state = np.random.SeedSequence([seed, chain, step, stream]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def minibatch_indices(seed: int, chain: int, step: int, n: int, batch_size: int) -> np.ndarray:
    """Indices of chain ``chain``'s minibatch at ``step``: ``batch_size`` distinct samples of n.

    When batch_size >= n the whole training set is used (in a keyed order).
    """
    gen = np.random.Generator(np.random.Philox(derive_seed(seed, chain, step, STREAM_MINIBATCH)))
    if batch_size >= n:
        return gen.permutation(n)
    return gen.choice(n, size=batch_size, replace=False, shuffle=True)


def noise_generator(seed: int, chain: int, step: int, device: torch.device) -> torch.Generator:
    """A torch generator on ``device`` for chain ``chain``'s Langevin noise at ``step``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, chain, step, STREAM_NOISE))
    return gen
