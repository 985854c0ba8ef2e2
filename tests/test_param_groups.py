"""The no-decay group holds exactly norms' weights, biases and embeddings (registered models)."""

import pytest
from torch import nn

from interlock import models
from interlock.training.param_groups import param_groups, split_no_decay


def _expected_exempt(net: nn.Module) -> set[int]:
    out = set()
    for sub in net.modules():
        for name, p in sub.named_parameters(recurse=False):
            norm = isinstance(sub, (nn.BatchNorm2d, nn.BatchNorm1d, nn.LayerNorm, nn.GroupNorm, nn.Embedding))
            if norm or name == "bias":
                out.add(id(p))
    return out


@pytest.mark.parametrize("name,kw", [("resnet32", {}), ("gpt", {"vocab_size": 50, "block_size": 16})])
def test_no_decay_group_is_exact(name, kw):
    try:
        net = models.create(name, components=2, **kw)
    except TypeError:
        net = models.create(name, components=2)
    decay, exempt = split_no_decay([net])
    params = [p for p in net.parameters() if p.requires_grad]
    assert len(decay) + len(exempt) == len(params)  # each parameter once
    assert {id(p) for p in exempt} == _expected_exempt(net)
    assert exempt and decay
    assert all(p.dim() >= 2 for p in decay)  # only matrices and kernels are decayed
    groups = param_groups([net], 0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
