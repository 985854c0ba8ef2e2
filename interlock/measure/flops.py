"""FLOP and parameter costing: dry runs that measure blocks and heads without moving their state.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on a forward pass:
matrix products, convolutions and attention (a multiply-add counts as 2 FLOPs);
element-wise ops, normalisation and pooling count as 0. The count is for the batch given.

Every dry run executes on the meta device (shapes only: no compute, no memory, so a full
ResNet-152 at 224x224 costs nothing) with meta copies of the module's parameters and
buffers, so BatchNorm running statistics never move. If an op has no meta kernel, the
run falls back to real tensors with cloned state, which still leaves the module untouched.
Modules run in eval mode (the same FLOPs and shapes, and BatchNorm then accepts a batch
of one); their training flags are restored afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..network.net import parameter_count

__all__ = ["BlockProfile", "dry_run", "forward_flops", "measure", "profile_blocks", "parameter_count"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlockProfile:
    """One block measured on a sample batch: output shape without the batch dimension, forward
    FLOPs for the whole sample batch, and its own (deduplicated) parameter count."""

    out_shape: tuple[int, ...]
    flops: int
    params: int


def measure(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(module(x), forward FLOPs)`` from one dry run; the output may be a meta tensor (shape and dtype only)."""
    return _run(module, x)


def dry_run(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` on the meta device (or on cloned state if an op has no meta kernel); the
    result has the real output's shape and dtype. ``module``'s own state is never changed."""
    return _run(module, x)[0]


def forward_flops(module: nn.Module, x: torch.Tensor) -> int:
    """Forward FLOPs of ``module(x)`` for the batch ``x`` (see the module docstring for what counts)."""
    return _run(module, x)[1]


def profile_blocks(blocks: Sequence[nn.Module], sample_input: torch.Tensor) -> list[BlockProfile]:
    """Run ``blocks`` in order on ``sample_input`` (B, ...) and measure each one."""
    out: list[BlockProfile] = []
    x = sample_input
    for i, block in enumerate(blocks):
        try:
            x, flops = _run(block, x)
        except Exception as err:
            raise ValueError(f"block {i} ({type(block).__name__}) failed on an input of shape {tuple(x.shape)}: {err}") from err
        out.append(BlockProfile(out_shape=tuple(x.shape[1:]), flops=flops, params=parameter_count(block)))
    return out


def _run(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    try:
        return _counted(module, x, meta=True)
    except Exception as err:  # an op without a meta kernel: measure for real on cloned state
        logger.debug("meta dry run of %s failed (%s); running on real tensors", type(module).__name__, err)
        return _counted(module, x, meta=False)


def _counted(module: nn.Module, x: torch.Tensor, *, meta: bool) -> tuple[torch.Tensor, int]:
    def fresh(t: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(t, device="meta") if meta else t.detach().clone()

    # functional_call with fresh tensors: the module's own parameters and buffers are not touched.
    state = {name: fresh(t) for name, t in chain(module.named_parameters(), module.named_buffers())}
    if meta or x.device.type != "meta":
        inp = fresh(x)
    else:  # the input came out of a meta run: stand in zeros of its shape on the module's device
        device = next(chain(module.parameters(), module.buffers()), torch.empty(0)).device
        inp = torch.zeros(x.shape, dtype=x.dtype, device=device)
    counter = FlopCounterMode(display=False)
    modes = [(m, m.training) for m in module.modules()]
    module.eval()  # same FLOPs and shapes; and BatchNorm then accepts a batch of one
    try:
        with counter, torch.no_grad():
            y = torch.func.functional_call(module, state, (inp,))
    finally:
        for m, training in modes:
            m.training = training
    return y, int(counter.get_total_flops())
