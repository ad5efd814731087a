"""Training data order and augmentation as a function of (seed, epoch), and the RNG states a
checkpoint keeps.

Epoch e's shuffle, and every random crop and flip in it, depend on the seed and e alone: not
on how many epochs this process has run, nor on DataLoader workers (persistent or not), so a
resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed % 2**64, epoch]).generate_state(1, np.uint64)[0] >> 1)


class EpochSampler(Sampler):
    """Shuffled indices for the epoch set by `set_epoch`, each with the seed for its sample's
    augmentation: yields `(index, seed)`, which `SeededSamples` understands."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.n, generator=g).tolist()
        seeds = torch.randint(0, 2**62, (self.n,), generator=g).tolist()
        return iter(zip(order, seeds))


class SeededSamples(Dataset):
    """`dataset[index]` with torch's, numpy's and Python's global RNGs seeded for that sample
    (transforms draw from them), and put back afterwards: in the main process they also drive
    dropout, whose stream must not depend on data loading."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        saved = (torch.default_generator.get_state(), np.random.get_state(), random.getstate())
        # The CPU generator only: torch.manual_seed would also reseed CUDA's, which dropout uses.
        torch.default_generator.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            return self.dataset[index]
        finally:
            torch.default_generator.set_state(saved[0])
            np.random.set_state(saved[1])
            random.setstate(saved[2])


def rng_states(loader_generator: torch.Generator) -> dict:
    """Every RNG a run draws from, as tensors and plain values (checkpoints load weights_only)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
        "loader": loader_generator.get_state(),
    }


def set_rng_states(states: dict, loader_generator: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    n = states["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    loader_generator.set_state(states["loader"])
