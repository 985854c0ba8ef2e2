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


def test_config_factory_wires_no_decay_into_every_component():
    import torch
    from interlock import Engine, EndToEnd
    from interlock.training.config import OptimConfig
    from interlock.training.loop import _no_decay_ids, make_optimizer_factory

    net = models.create("resnet32", components=2)
    exempt = _no_decay_ids(net)
    factory = make_optimizer_factory(OptimConfig(weight_decay=0.1, no_decay=True), exempt)
    engine = Engine(net, EndToEnd(), optimizer=factory, loss_fn=nn.functional.cross_entropy)
    for k, w in engine._workers.items():
        wd = {id(p): g["weight_decay"] for g in w.optimizer.param_groups for p in g["params"]}
        mine = {id(p) for p in net.component_parameters(k)}
        assert set(wd) == mine
        assert {i for i, d in wd.items() if d == 0.0} == exempt & mine
        assert {i for i, d in wd.items() if d == 0.1} == mine - exempt
        assert all(n.startswith(("block.", "head.")) for g in w.optimizer.param_groups for n in g["param_names"])
    # A plain factory still gets the plain parameter list.
    seen = []
    Engine(models.create("resnet32", components=2), EndToEnd(), loss_fn=nn.functional.cross_entropy,
           optimizer=lambda ps: seen.append(ps) or torch.optim.SGD(ps, lr=0.1))
    assert all(isinstance(p, nn.Parameter) for ps in seen for p in ps)
    with pytest.raises(ValueError, match="optim.no_decay"):
        OptimConfig(no_decay="yes")
