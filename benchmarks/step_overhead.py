"""Cost of one simulated-engine training step per strategy, next to a plain PyTorch loop.

Same network (a CIFAR convnet cut into K components with a small head each), same real
CIFAR-10 batch, same optimiser. Variants are measured interleaved, round after round, in
one run, so machine noise hits them alike; each prints one JSON line with its median
step time and its ratio to the plain loop (end-to-end on the unsplit nn.Sequential).

    python benchmarks/step_overhead.py            # defaults: K=4, batch 128, 8 rounds
    python benchmarks/step_overhead.py --baseline a247243   # also the engine of that git revision, side by side

``--baseline REV`` extracts ``interlock/`` of git revision REV into a temporary folder as the
package ``interlock_baseline`` (its modules import each other relatively, so it loads under
another name) and measures its end-to-end engine in the same rounds: the ratio of the current
code to the previous one without the machine's noise between two runs.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import io
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F

import interlock as il
from interlock.data import find_data_root, read_cifar10_binary


def build(K: int, width: int, seed: int):
    torch.manual_seed(seed)
    blocks, heads, c = [], [], 3
    for k in range(K):
        out = width * (2 if k >= K // 2 else 1)
        layers = [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
        layers += [nn.Conv2d(out, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
        if k in (K // 2 - 1, K - 1):
            layers.append(nn.MaxPool2d(2))
        blocks.append(nn.Sequential(*layers))
        heads.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(out, 10)))
        c = out
    return blocks, heads


def sgd(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)


def plain_stepper(blocks, heads):
    seq = nn.Sequential(*copy.deepcopy(blocks), copy.deepcopy(heads[-1]))
    opt = sgd(seq.parameters())

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(seq(x), y).backward()
        opt.step()

    return step


def engine_stepper(blocks, heads, strategy, **kw):
    net = il.ComponentNet(blocks=copy.deepcopy(blocks), heads=[None if h is None else copy.deepcopy(h) for h in heads])
    engine = il.Engine(net, strategy, optimizer=sgd, loss_fn=F.cross_entropy, record=False, **kw)
    return lambda x, y: engine.step(x, y)


def load_baseline(rev: str):
    """interlock as it was at git revision ``rev``, imported as ``interlock_baseline``."""
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(repo), "archive", rev, "interlock"], check=True, capture_output=True).stdout
    folder = Path(tempfile.mkdtemp(prefix="interlock-baseline-"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    (folder / "interlock").rename(folder / "interlock_baseline")
    sys.path.insert(0, str(folder))
    return importlib.import_module("interlock_baseline")


def baseline_stepper(base, blocks, heads):
    """End-to-end on the baseline's engine (its one-process engine class, whatever its name was)."""
    net = base.ComponentNet(blocks=copy.deepcopy(blocks), heads=[copy.deepcopy(h) for h in heads])
    cls = getattr(base, "Engine", None) or base.SimulatedEngine
    engine = cls(net, base.EndToEnd(), optimizer=sgd, loss_fn=F.cross_entropy, record=False)
    return lambda x, y: engine.step(x, y)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--components", type=int, default=4)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="steps per variant per round")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--data", default=None, help="data folder (default: $INTERLOCK_DATA or ../shared/data)")
    p.add_argument("--baseline", default=None, help="a git revision whose engine runs side by side (end-to-end)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    root = find_data_root(args.data)
    if root is None or not (root / "cifar-10-batches-bin" / "data_batch_1.bin").is_file():
        sys.exit("CIFAR-10 not found: pass --data DIR (a folder holding cifar-10-batches-bin/) or set $INTERLOCK_DATA")
    images, labels = read_cifar10_binary(root / "cifar-10-batches-bin" / "data_batch_1.bin", limit=args.batch)
    x = (images.float() / 255 - 0.5) / 0.25  # (B, 3, 32, 32)
    y = labels

    K = args.components
    blocks, heads = build(K, args.width, seed=0)
    variants = {"plain": plain_stepper(blocks, heads), "end-to-end": engine_stepper(blocks, heads, il.EndToEnd())}
    if args.baseline:
        variants[f"end-to-end@{args.baseline}"] = baseline_stepper(load_baseline(args.baseline), blocks, heads)
    # The plain loop has no auxiliary heads; end-to-end through the engine trains them on their own
    # losses (to watch them). Without them the engine does the plain loop's work: its own cost alone.
    variants["end-to-end-final-head-only"] = engine_stepper(blocks, [None] * (K - 1) + [heads[-1]], il.EndToEnd())
    # The distributed engines' default: input gradient first, weight pass later (two kernel calls per layer).
    variants["end-to-end-split"] = engine_stepper(blocks, heads, il.EndToEnd(), split_backward=True)
    variants["local"] = engine_stepper(blocks, heads, il.Local())
    for n in (2, 3):
        if n <= K:
            variants[f"{n}-wise"] = engine_stepper(blocks, heads, il.Interlocking(n))
            variants[f"{n}-wise-sum"] = engine_stepper(blocks, heads, il.Interlocking(n, "sum"))
    if 3 <= K:
        variants["3-wise-sum-batched"] = engine_stepper(blocks, heads, il.Interlocking(3, "sum"), batch_streams=True)

    for step in variants.values():  # warm-up: allocator, optimizer state, first-step shape check
        step(x, y)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, step in variants.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(x, y)
            times[name].append((time.perf_counter() - t0) / args.steps)

    plain = statistics.median(times["plain"])
    e2e = statistics.median(times["end-to-end"])
    common = {"bench": "step_overhead", "components": K, "batch": args.batch, "width": args.width,
              "threads": args.threads, "rounds": args.rounds, "torch": torch.__version__}
    for name, ts in times.items():
        med = statistics.median(ts)
        print(json.dumps({**common, "variant": name, "step_time_s": round(med, 5),
                          "ratio_to_plain": round(med / plain, 3), "ratio_to_end_to_end": round(med / e2e, 3)}))


if __name__ == "__main__":
    main()
