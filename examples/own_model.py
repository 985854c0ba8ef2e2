"""Your own nn.Module and Dataset, split automatically into 2 components, trained 2-wise (interlocking
backprop) in one process and then with one process per component; both runs give the same numbers.

    python examples/own_model.py            # about 20 s on 2 CPU cores

Nothing here is interlock-specific but the last lines: the model is a plain module (not an
nn.Sequential: interlock walks its children), the data a plain map-style Dataset.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from interlock.training.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from interlock import run


class Spirals(Dataset):
    """Three interleaved 2-D spirals (x: (2,), y: which spiral), fixed by ``seed``."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 3, (n,), generator=g)
        r = torch.rand(n, generator=g)
        angle = 4.0 * r + self.y * (2 * math.pi / 3) + 0.2 * torch.randn(n, generator=g)
        self.x = torch.stack([r * angle.cos(), r * angle.sin()], dim=1)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class MyNet(nn.Module):
    def __init__(self, width: int = 128) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(2, width), nn.ReLU())
        self.body = nn.Sequential(*(nn.Sequential(nn.Linear(width, width), nn.ReLU()) for _ in range(4)))
        self.out = nn.Linear(width, 3)

    def forward(self, x):
        return self.out(self.body(self.stem(x)))


def main() -> None:
    data = {"train": Spirals(4096, seed=0), "test": Spirals(1024, seed=1)}
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(
            model=ModelConfig(components=2, heads="linear", partition="flops"),  # cuts balanced by FLOPs
            data=DataConfig(batch_size=64, eval_batch_size=512),
            optim=OptimConfig(name="adam", lr=3e-3, weight_decay=0.0),
            strategy="2-wise", steps=200, log_every=100, threads=1, run_dir=str(Path(tmp) / "simulated"),
        )
        torch.manual_seed(0)
        simulated = run(config, model=MyNet(), data=data)
        torch.manual_seed(0)  # the same starting weights
        distributed = run(TrainConfig(**{**config.to_dict(), "engine": "distributed", "run_dir": str(Path(tmp) / "distributed")}),
                          model=MyNet(), data=data, on_progress=lambda row: print("distributed:", row["kind"], "step", row["step"]))
    for name, result in (("simulated", simulated), ("distributed", distributed)):
        f = result.final
        print(f"{name}: test accuracy of head 1 {f['test_acc_1']:.3f}, of the final head {f['test_final_acc']:.3f}")
    losses = lambda f: [round(f[f"test_loss_{k}"], 4) for k in (1, 2)]
    assert losses(simulated.final) == losses(distributed.final)
    print(f"final losses (test, heads 1 and 2): simulated {losses(simulated.final)}, distributed {losses(distributed.final)}")


if __name__ == "__main__":  # (the distributed run starts processes that import this file)
    main()
