"""SEDONA's outer step (T differentiable inner steps, the meta-gradient, Adam, one ordinary step):
wall time and peak memory against T, one JSON line per T.

The graph of all T inner steps is kept until the meta-gradient is taken, so memory grows about
linearly in T; so does time (each inner step is a forward pass, L + L-1 vector-Jacobian products,
and their share of the final backward pass). Random inputs stand in for data: the cost does not
depend on the values.

    python benchmarks/search_step.py                                 # dgl_cnn width 0.125, 32x32, batch 32
    python benchmarks/search_step.py --model resnet20 --batch-size 128 --device cuda

Peak memory: on CUDA, torch.cuda.max_memory_allocated during the step; on CPU, the peak resident
set size above the one before the step, sampled every 2 ms from /proc/self/statm (Linux).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time

import torch
import torch.nn.functional as F

from interlock.search import SearchSpace
from interlock.search.bilevel import InnerSGD, meta_gradient, ordinary_step, snapshot_of


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _PeakRSS:
    """Samples the resident set size in a thread; ``peak - start`` is the step's extra memory."""

    def __enter__(self):
        self.start = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def outer_step(space, snap, alpha, beta, meta_opt, batches, val, opt):
    T = len(batches) - 1
    result = meta_gradient(space, snap, alpha, beta, batches[:T], val, opt, F.cross_entropy)
    meta_opt.zero_grad()
    alpha.grad, beta.grad = result.grad_alpha, result.grad_beta
    meta_opt.step()
    return ordinary_step(space, snap, alpha, beta, batches[T], opt, F.cross_entropy)[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="dgl_cnn")
    p.add_argument("--model-kw", default='{"width": 0.125}', help="JSON options of the model")
    p.add_argument("--heads", default="aux1,aux2,aux3,aux4")
    p.add_argument("--head-kw", default='{"width": 0.25, "final_width": 64}', help="JSON options of every candidate head")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--val-batch-size", type=int, default=64)
    p.add_argument("--steps", default="1,2,3,4,5", help="the values of T")
    p.add_argument("--repeats", type=int, default=3, help="timed outer steps per T (after one warm-up); the median is reported")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    kw = {**json.loads(args.model_kw), "image_size": args.image_size, "num_classes": 10}
    space = SearchSpace.from_model(args.model, heads=args.heads.split(","), head_kw=json.loads(args.head_kw), **kw).to(args.device)
    L, M = space.num_blocks, space.num_heads
    opt = InnerSGD(lr=0.1, momentum=0.9, weight_decay=1e-4)
    cuda = args.device.startswith("cuda")
    batch = lambda n: (torch.randn(n, 3, args.image_size, args.image_size, device=args.device),
                       torch.randint(0, 10, (n,), device=args.device))
    for T in [int(t) for t in args.steps.split(",")]:
        alpha = torch.zeros(L - 1, 2, device=args.device, requires_grad=True)
        beta = torch.zeros(L - 1, M, device=args.device, requires_grad=True)
        meta_opt = torch.optim.Adam([alpha, beta], lr=0.01, betas=(0.5, 0.999), weight_decay=1e-6)
        times, peaks = [], []
        for r in range(args.repeats + 1):
            snap = snapshot_of(space)
            batches, val = [batch(args.batch_size) for _ in range(T + 1)], [batch(args.val_batch_size)]
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            with _PeakRSS() as rss:
                t0 = time.perf_counter()
                outer_step(space, snap, alpha, beta, meta_opt, batches, val, opt)
                if cuda:
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - t0
            if r == 0:
                continue  # warm-up
            times.append(elapsed)
            peaks.append((torch.cuda.max_memory_allocated() - base) if cuda else (rss.peak - rss.start))
        print(json.dumps({"benchmark": "search_step", "model": args.model, "blocks": L, "heads": M, "T": T,
                          "batch_size": args.batch_size, "device": args.device, "outer_step_time_s": statistics.median(times),
                          "peak_memory_mb": max(peaks) / 2**20, "memory_kind": "cuda_allocated" if cuda else "rss_above_start",
                          "repeats": args.repeats}), flush=True)


if __name__ == "__main__":
    main()
