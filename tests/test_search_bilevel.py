"""SEDONA's bilevel step: the meta-gradient through T = 1 and 2 differentiable SGD steps against central
finite differences of a brute-force reference (float64); the meta-loss sees validation batches only;
the weight memory's sampling and eviction."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from interlock.search import SearchSpace, gates
from interlock.search.bilevel import InnerSGD, meta_gradient, ordinary_step, snapshot_of
from interlock.search.memory import Snapshot, WeightMemory
from test_search_relax import CLASSES, D, L, M, reference_grads, tiny_space

OPT = InnerSGD(lr=0.4, momentum=0.9, weight_decay=1e-3, schedule=lambda step: 1.0 / (1 + step))
START = 2  # the snapshot's training step: the inner LRs are OPT.lr_at(2), OPT.lr_at(3)


def _batches(T: int):
    g = torch.Generator().manual_seed(7)
    train = [(torch.randn(6, D, generator=g, dtype=torch.float64), torch.randint(0, CLASSES, (6,), generator=g)) for _ in range(T)]
    val = [(torch.randn(8, D, generator=g, dtype=torch.float64), torch.randint(0, CLASSES, (8,), generator=g))]
    return train, val


def _snapshot(space: SearchSpace) -> Snapshot:
    snap = snapshot_of(space, step=START)
    g = torch.Generator().manual_seed(3)
    snap.momentum = {k: 0.1 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in snap.params.items()}
    return snap


def reference_meta_loss(alpha, beta, T: int) -> float:
    """Plain unrolled SGD with brute-force (Eq. 4, written out) gradients, then the final head's val loss."""
    space = tiny_space()
    snap = _snapshot(space)
    train, val = _batches(T)
    signal, head_weights = gates(alpha, beta)
    params = dict(space.named_parameters())
    buf = {k: v.clone() for k, v in snap.momentum.items()}
    for t, (x, y) in enumerate(train):
        grads = reference_grads(space, x, y, signal, head_weights)
        with torch.no_grad():
            for k, p in params.items():
                buf[k] = 0.9 * buf[k] + grads[k] + 1e-3 * p
                p -= OPT.lr_at(START + t) * buf[k]
    with torch.no_grad():
        (xv, yv), = val
        return float(F.cross_entropy(space(xv), yv))


@pytest.mark.parametrize("T", [1, 2])
def test_meta_gradient_matches_finite_differences(T):
    g = torch.Generator().manual_seed(11)
    alpha = torch.randn(L - 1, 2, generator=g, dtype=torch.float64)
    beta = torch.randn(L - 1, M, generator=g, dtype=torch.float64)
    space = tiny_space()
    train, val = _batches(T)
    result = meta_gradient(space, _snapshot(space), alpha, beta, train, val, OPT, F.cross_entropy)
    assert result.loss == pytest.approx(reference_meta_loss(alpha, beta, T), rel=1e-12)
    eps = 1e-6
    for var, got in ((alpha, result.grad_alpha), (beta, result.grad_beta)):
        fd = torch.zeros_like(var)
        for i in range(var.numel()):
            for sign in (1, -1):
                v = var.clone()
                v.view(-1)[i] += sign * eps
                a, b = (v, beta) if var is alpha else (alpha, v)
                fd.view(-1)[i] += sign * reference_meta_loss(a, b, T) / (2 * eps)
        torch.testing.assert_close(got, fd, rtol=1e-5, atol=1e-9)
    assert result.grad_alpha.abs().sum() > 0 and result.grad_beta.abs().sum() > 0


class _Recording(SearchSpace):
    """Records which batches (by the marker in x[:, 0]) each kind of forward pass saw."""

    seen: list

    def forward(self, x, y=None, **kw):
        self.seen.append(("meta" if y is None else "inner", float(x[0, 0])))
        return super().forward(x, y, **kw)


def test_meta_loss_sees_validation_batches_only():
    base = tiny_space()
    space = _Recording(blocks=base.blocks, candidates=base.candidates, final_head=base.final_head, head_names=base.head_names)
    space.seen = []
    train, val = _batches(2)
    for t, (x, _) in enumerate(train):
        x[:, 0] = 100.0 + t  # training batches carry 100, 101
    val[0][0][:, 0] = -7.0  # the validation batch carries -7
    alpha, beta = torch.zeros(L - 1, 2, dtype=torch.float64), torch.zeros(L - 1, M, dtype=torch.float64)
    meta_gradient(space, snapshot_of(space), alpha, beta, train, val, OPT, F.cross_entropy)
    assert space.seen == [("inner", 100.0), ("inner", 101.0), ("meta", -7.0)]
    # Changing the training batches changes the meta-loss only through the weights; the
    # validation batch's labels enter it directly.
    flipped = [(val[0][0], (val[0][1] + 1) % CLASSES)]
    r1 = meta_gradient(base, snapshot_of(base), alpha, beta, train, val, OPT, F.cross_entropy)
    r2 = meta_gradient(base, snapshot_of(base), alpha, beta, train, flipped, OPT, F.cross_entropy)
    assert r1.loss != r2.loss


def test_ordinary_step_is_one_sgd_step_with_the_mixed_gradients():
    space = tiny_space()
    snap = _snapshot(space)
    (x, y), = _batches(1)[0]
    alpha = torch.randn(L - 1, 2, dtype=torch.float64)
    beta = torch.randn(L - 1, M, dtype=torch.float64)
    new, losses = ordinary_step(space, snap, alpha, beta, (x, y), OPT, F.cross_entropy)
    grads = reference_grads(space, x, y, *gates(alpha, beta))
    for k, p in space.named_parameters():
        buf = 0.9 * snap.momentum[k] + grads[k] + 1e-3 * p.detach()
        torch.testing.assert_close(new.params[k], p.detach() - OPT.lr_at(START) * buf, rtol=1e-12, atol=1e-14)
    assert new.step == START + 1 and losses.shape == (L,)


def _snap(step: int, err: float) -> Snapshot:
    return Snapshot(step=step, params={}, buffers={}, val_error=err)


def test_memory_keeps_the_best_when_pretraining_and_evicts_the_oldest_when_searching():
    mem = WeightMemory(3)
    for step, err in [(0, 0.9), (1, 0.5), (2, 0.7), (3, 0.6), (4, 0.95)]:
        mem.put(_snap(step, err), evict="worst")
    assert sorted(s.step for s in mem.entries) == [1, 2, 3]  # 0.9 evicted by 0.6; 0.95 never enters
    mem.put(_snap(5, 0.99), evict="oldest")  # the oldest (step 1, put second) goes, however good
    assert sorted(s.step for s in mem.entries) == [2, 3, 5]
    gen = torch.Generator().manual_seed(0)
    taken = mem.take(gen)
    assert len(mem) == 2 and taken.step not in [s.step for s in mem.entries]
    mem.put(taken, evict="oldest")  # take-then-put keeps the size: nothing evicted
    assert len(mem) == 3
    restored = WeightMemory(1)
    restored.load_state_dict(mem.state_dict())
    assert [(s.step, s.order) for s in restored.entries] == [(s.step, s.order) for s in mem.entries]
    with pytest.raises(ValueError, match="empty"):
        WeightMemory(2).take(gen)


def test_memory_samples_uniformly():
    mem = WeightMemory(4)
    for step in range(4):
        mem.put(_snap(step, 0.5))
    gen = torch.Generator().manual_seed(0)
    counts = [0] * 4
    for _ in range(4000):
        s = mem.take(gen)
        counts[s.step] += 1
        mem.put(s)
    assert all(900 < c < 1100 for c in counts), counts
