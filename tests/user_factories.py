"""A user's own model and data, as importable factories (tests/test_user_data.py names them in configs)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset


class Blobs(Dataset):
    """n points in 2-D around ``classes`` centres: (x (4,), y) items, fixed by ``seed``."""

    def __init__(self, n: int = 96, classes: int = 3, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, classes, (n,), generator=g)
        centres = torch.randn(classes, 4, generator=g) * 3
        self.x = centres[self.y] + torch.randn(n, 4, generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class MyNet(nn.Module):
    """Not a Sequential: a chain of named children that interlock.network.split cuts by walking it."""

    def __init__(self, width: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Linear(4, width)
        self.act = nn.ReLU()
        self.body = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.out = nn.Linear(width, classes)

    def forward(self, x):
        return self.out(self.body(self.act(self.stem(x))))


def build(width: int = 16):
    return MyNet(width)


def make(n: int = 96):
    return {"train": Blobs(n, seed=0), "test": Blobs(48, seed=1)}
