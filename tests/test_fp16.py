"""precision='fp16': a gradient scaler per component (interlock.core.amp), skipped updates counted,
the scaler's state in checkpoints, fp32 master weights; on the local runtime.

(The ranks runtime: tests/test_precision_ranks.py; through the training program: tests/test_precision_train.py.)"""

from __future__ import annotations

import copy
import io

import pytest
import torch

import interlock as il
from interlock.engine.specs import STRATEGIES
from reference import PARTS
from tie_helpers import tied_net

REFUSING = {"hogwild", "hogwild-stashed"}
HONOURING = [n for n in STRATEGIES._entries if n not in REFUSING]
FP16_TOL = 2e-2  # fp16 keeps 11 mantissa bits; losses of a few steps agree with fp32 to about a percent
INIT_SCALE = 2.0 ** 16  # torch.amp.GradScaler's default initial scale


def sgd(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


def _engine(name: str, *, seed: int = 0, **kw) -> il.Engine:
    blocks, heads, _, _, loss_fn = PARTS["bn"](6 if name == "local-double" else 3, seed=seed)
    return il.Engine(il.ComponentNet(blocks=blocks, heads=heads), STRATEGIES.get(name).example(), optimizer=sgd,
                     loss_fn=loss_fn, rng_seed=7, total_steps=6, **kw)


def _batch():
    _, _, x, y, _ = PARTS["bn"](3, seed=0)
    return x, y


def _losses(engine, steps: int) -> list[list[float]]:
    x, y = _batch()
    return [list(engine.step(x, y).losses) for _ in range(steps)]


def _scale(engine, k: int) -> float:
    return engine.worker(k).loss_scaling.scaler.get_scale()


@pytest.mark.parametrize("name", HONOURING)
def test_fp16_agrees_with_fp32(name):
    half, full = _engine(name, precision="fp16"), _engine(name)
    got, want = _losses(half, 3), _losses(full, 3)
    assert half.skipped_steps() == {k: 0 for k in range(half.num_components)}  # nothing overflowed: all updates made
    for ra, rb in zip(got, want):
        for u, v in zip(ra, rb):
            assert (u != u and v != v) or abs(u - v) <= FP16_TOL * max(1.0, abs(v)), (got, want)
    # Master weights stay fp32; the scale is untouched by three finite steps.
    assert all(p.dtype is torch.float32 for p in half.net.parameters())
    assert all(_scale(half, k) == INIT_SCALE for k in range(half.num_components))
    assert full.skipped_steps() == {}  # fp32: no scalers, nothing to report


def test_an_overflow_skips_the_update_and_halves_that_components_scale():
    # Loss weights of 1e4 make every scaled gradient overflow fp16 (65504) at the initial scale 2^16: each
    # component skips updates, halving its scale each time, until its gradients fit; then it trains.
    engine = _engine("local", precision="fp16", loss_weights=[1e4] * 3)
    before = [p.detach().clone() for p in engine.net.parameters()]
    x, y = _batch()
    engine.step(x, y)
    assert engine.skipped_steps() == {0: 1, 1: 1, 2: 1}
    assert all(torch.equal(p, q) for p, q in zip(engine.net.parameters(), before))  # a skipped update moves nothing
    assert all(_scale(engine, k) == INIT_SCALE / 2 for k in range(3))
    for _ in range(25):
        engine.step(x, y)
    skipped = engine.skipped_steps()
    for k, n in skipped.items():
        assert 1 < n < 26, skipped  # it skipped several, and then trained
        assert _scale(engine, k) == INIT_SCALE / 2 ** n  # one halving per skipped update, no growth yet (2000 steps)
    assert any(not torch.equal(p, q) for p, q in zip(engine.net.parameters(), before))


def test_an_overflowing_stream_skips_the_update_below_too():
    # end-to-end: only the last component has a loss; its scaled gradients overflow, so the stream it sends down
    # is inf, and component 2's update (and component 1's) is skipped with it: a corrupt step moves nothing.
    engine = _engine("end-to-end", precision="fp16", loss_weights=[1.0, 1.0, 1e4])
    x, y = _batch()
    engine.step(x, y)
    assert engine.skipped_steps() == {0: 1, 1: 1, 2: 1}


@pytest.mark.parametrize("name", ["local", "<n>-wise", "end-to-end"])
def test_resume_equals_uninterrupted_with_the_scalers_state(name):
    kw = dict(precision="fp16", loss_weights=[1e4] * 3)  # scales well below the initial one by the checkpoint
    full = _engine(name, **kw)
    want = _losses(full, 12)
    first = _engine(name, **kw)
    got = _losses(first, 7)
    buffer = io.BytesIO()
    torch.save({k: copy.deepcopy(first.component_state(k)) for k in range(3)}, buffer)
    assert first.component_state(0)["loss_scaling"]["scaler"]["scale"] < INIT_SCALE
    resumed = _engine(name, seed=99, **kw)  # other weights, fresh scalers: the load must overwrite both
    buffer.seek(0)
    for k, state in torch.load(buffer, weights_only=False).items():
        resumed.load_component_state(k, state)
    got += _losses(resumed, 5)
    assert got == want
    assert resumed.skipped_steps() == full.skipped_steps() and sum(full.skipped_steps().values()) > 0
    assert all(_scale(resumed, k) == _scale(full, k) for k in range(3))
    assert all(torch.equal(p, q) for p, q in zip(resumed.net.parameters(), full.net.parameters()))


def test_checkpoints_without_a_scaler_load_either_way():
    x, y = _batch()
    plain = _engine("local")
    plain.step(x, y)
    state = plain.component_state(0)
    assert state["loss_scaling"] is None
    half = _engine("local", precision="fp16")
    half.load_component_state(0, copy.deepcopy(state))  # an fp32 checkpoint: the scaler starts fresh
    assert _scale(half, 0) == INIT_SCALE and half.skipped_steps()[0] == 0
    plain.load_component_state(0, copy.deepcopy(half.component_state(0)))  # an fp16 one into fp32: weights only


def test_fp16_refuses_parameters_tied_across_components():
    net, _ = tied_net()
    with pytest.raises(ValueError, match="ties parameters across components.*precision='bf16' or 'fp32'"):
        il.Engine(net, il.Local(), optimizer=sgd, loss_fn=lambda out, y: out.sum(), precision="fp16")
