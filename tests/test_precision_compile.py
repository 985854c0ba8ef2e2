"""precision='bf16' and compile=True on the local runtime: they agree with fp32 eager, and refuse where not honoured."""

from __future__ import annotations

import pytest
import torch

import interlock as il
from interlock.engine.specs import STRATEGIES
from reference import PARTS

REFUSING = {"hogwild", "hogwild-stashed"}  # policies running their own passes: fp32 eager only for now
BF16_TOL = 5e-2  # bf16 keeps 8 mantissa bits: losses of a few steps agree with fp32 to a few percent


def sgd(params):
    return torch.optim.SGD(params, lr=0.05)


def _losses(name: str, **kw) -> list[list[float]]:
    blocks, heads, x, y, loss_fn = PARTS["bn"](6 if name == "local-double" else 3, seed=0)
    engine = il.Engine(il.ComponentNet(blocks=blocks, heads=heads), STRATEGIES.get(name).example(), optimizer=sgd,
                       loss_fn=loss_fn, rng_seed=7, total_steps=3, **kw)
    return [[v for v in engine.step(x, y).losses] for _ in range(3)]


def _close(a, b, tol):
    for ra, rb in zip(a, b):
        for u, v in zip(ra, rb):
            assert (u != u and v != v) or abs(u - v) <= tol * max(1.0, abs(v)), (a, b)


@pytest.mark.parametrize("name", [n for n in STRATEGIES._entries if n not in REFUSING])
def test_bf16_agrees_with_fp32(name):
    _close(_losses(name, precision="bf16"), _losses(name), BF16_TOL)


@pytest.mark.parametrize("name", sorted(REFUSING))
def test_own_pass_policies_refuse(name):
    with pytest.raises(ValueError, match="precision='fp32'"):
        _losses(name, precision="bf16")


def test_fp16_refused_and_bad_values():
    with pytest.raises(ValueError, match="fp16"):
        _losses("local", precision="fp16")
    with pytest.raises(ValueError, match="compile_mode"):
        _losses("local", compile=True, compile_mode="fast")


@pytest.mark.parametrize("name", ["end-to-end", "<n>-wise"])
def test_compiled_agrees_with_eager(name):
    _close(_losses(name, compile=True, batch_streams=True), _losses(name), 1e-4)


def test_compiled_split_backward():
    _close(_losses("<n>-wise", compile=True, split_backward=True), _losses("<n>-wise"), 1e-4)
