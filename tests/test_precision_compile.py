"""precision='bf16' and compile=True on the local runtime: they agree with fp32 eager, and refuse where not honoured.

(fp16: tests/test_fp16.py; the ranks runtime under bf16 and fp16: tests/test_precision_ranks.py.)"""

from __future__ import annotations

import pytest
import torch

import interlock as il
from interlock.engine.specs import STRATEGIES
from reference import PARTS

REFUSING = {"hogwild", "hogwild-stashed"}  # policies running their own passes: fp32 eager only for now
BF16_TOL = 5e-2  # bf16 keeps 8 mantissa bits: losses of a few steps agree with fp32 to a few percent
COMPILED_TOL = 1e-4  # compiled kernels fuse and reorder fp32 arithmetic: rounding-level differences only
HONOURING = [n for n in STRATEGIES._entries if n not in REFUSING]


@pytest.fixture(autouse=True)
def _fresh_compile_caches():
    # Every test builds new modules; a fresh cache keeps dynamo below its recompile limit, past which it would
    # run the blocks eagerly without saying so (and the compiled tests would compare eager with eager).
    torch.compiler.reset()
    yield
    torch.compiler.reset()


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


@pytest.mark.parametrize("name", HONOURING)
def test_bf16_agrees_with_fp32(name):
    _close(_losses(name, precision="bf16"), _losses(name), BF16_TOL)


@pytest.mark.parametrize("name", sorted(REFUSING))
def test_own_pass_policies_refuse(name):
    for kw in ({"precision": "bf16"}, {"precision": "fp16"}, {"compile": True}):
        with pytest.raises(ValueError, match="precision='fp32'"):
            _losses(name, **kw)


def test_bad_values_refused():
    # (fp16 was refused here until its gradient scalers came: tests/test_fp16.py)
    with pytest.raises(ValueError, match="precision='fp8': use 'fp32', 'bf16' or 'fp16'"):
        _losses("local", precision="fp8")
    with pytest.raises(ValueError, match="compile_mode"):
        _losses("local", compile=True, compile_mode="fast")


@pytest.mark.parametrize("name", HONOURING)
def test_compiled_agrees_with_eager(name):
    _close(_losses(name, compile=True, batch_streams=True), _losses(name), COMPILED_TOL)


def test_compiled_bf16_agrees_with_fp32():
    _close(_losses("<n>-wise", compile=True, precision="bf16"), _losses("<n>-wise"), BF16_TOL)


def test_compiled_split_backward():
    _close(_losses("<n>-wise", compile=True, split_backward=True), _losses("<n>-wise"), COMPILED_TOL)
