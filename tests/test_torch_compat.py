"""The private PyTorch APIs interlock uses (interlock/_torch_compat.py): present and as called, in this torch.

If a torch release moves one of them, this test fails naming the function, before any run does.
"""

import types

import pytest
import torch

from interlock import _torch_compat as compat


def test_every_private_api_is_usable_in_this_torch():
    assert compat.check() == []


def test_zero_bubble_order_has_every_action_once():
    # ZB1P on 3 ranks, 6 micro-batches: each rank forwards, input-grads and weight-grads each micro-batch once.
    for rank in range(3):
        kinds = [(a.computation_type.name, a.microbatch_index) for a in compat.zero_bubble_rank_actions(3, 6, rank)
                 if a is not None]
        for kind in ("FORWARD", "BACKWARD_INPUT", "BACKWARD_WEIGHT"):
            assert sorted(i for k, i in kinds if k == kind) == list(range(6))


def test_will_engine_execute_node_answers_inside_a_backward():
    x = torch.ones(2, requires_grad=True)
    w = torch.ones(2, requires_grad=True)
    seen = []

    class Probe(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            return a.clone()

        @staticmethod
        def backward(ctx, g):
            seen.append(compat.will_engine_execute_node(ctx.next_functions[0][0]))
            return g

    y = Probe.apply(x * w)
    torch.autograd.grad(y.sum(), [w])  # the path to w runs through the probe's input
    assert seen == [True]


def test_a_missing_api_is_named_with_the_torch_version(monkeypatch):
    monkeypatch.setattr(torch._C, "_will_engine_execute_node", None, raising=False)
    problems = compat.check()
    assert len(problems) == 1 and "torch._C._will_engine_execute_node" in problems[0]
    assert torch.__version__ in problems[0]
    with pytest.raises(compat.TorchCompatError, match="_will_engine_execute_node"):
        compat.will_engine_execute_node(types.SimpleNamespace())


def test_a_changed_signature_is_named(monkeypatch):
    compat.pipelining_backward.cache_clear()
    from torch.distributed.pipelining import _backward

    monkeypatch.setattr(_backward, "stage_backward_weight", lambda params, groups: None)
    try:
        problems = compat.check()
    finally:
        compat.pipelining_backward.cache_clear()
    assert len(problems) == 1 and "stage_backward_weight" in problems[0] and "takes (params, groups)" in problems[0]
