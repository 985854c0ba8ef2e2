"""SEDONA's Aux 1-4 heads: the authors' layer structure, shapes and parameter counts by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import interlock as il
from interlock import heads
from interlock.measure.flops import dry_run
from interlock.heads.sedona import InvertedResidual

C, S, CLASSES, FINAL = 16, 8, 10, 32  # width 0.25: planes = 4, channels grow by planes // 2 = 2

# Hand count for in_shape (16, 8, 8), width 0.25, final_width 32, 10 classes. A conv k x k from a
# to b channels (groups g) has a*b*k*k/g weights; BatchNorm(c) has 2c.
SEP = (16 * 4 + 8) + (4 * 9 + 8)  # 1x1 conv 16->4 + BN, depth-wise 3x3 on 4 + BN: (4, 4, 4)
IR_4_4 = (4 * 16 + 32) + (16 * 9 + 32) + (16 * 4 + 8)  # expand 4 -> 16, dw, project -> 4 (stride 1, residual)
IR_4_6 = (4 * 16 + 32) + (16 * 9 + 32) + (16 * 6 + 12)  # stride 2, grows 4 -> 6: (6, 2, 2)
IR_6_6 = (6 * 24 + 48) + (24 * 9 + 48) + (24 * 6 + 12)  # stride 1 again (block 2 is even), residual
TOP = lambda c: (c * FINAL + 2 * FINAL) + (FINAL * CLASSES + CLASSES)  # 1x1 conv c->32 + BN, linear 32->10
PARAMS = {
    1: SEP + TOP(4),
    2: SEP + IR_4_4 + TOP(4),
    3: SEP + IR_4_4 + IR_4_6 + TOP(6),
    4: SEP + IR_4_4 + IR_4_6 + IR_6_6 + TOP(6),
}


def _create(L: int, **kw) -> nn.Sequential:
    return heads.create(f"aux{L}", in_shape=(C, S, S), num_classes=CLASSES, final_width=FINAL, **kw)


@pytest.mark.parametrize("L", [1, 2, 3, 4])
def test_aux_parameter_counts_match_the_hand_count(L):
    assert PARAMS == {1: 638, 2: 982, 3: 1426, 4: 2038}  # the sums above, written out once
    head = _create(L)
    assert il.parameter_count(head) == PARAMS[L]
    assert head(torch.randn(3, C, S, S)).shape == (3, CLASSES)


def test_aux_layer_structure_is_the_authors_light_decoder():
    head = _create(4)
    x = torch.zeros(1, C, S, S)
    convs = [m for m in head[:6] if isinstance(m, nn.Conv2d)]
    # Separable stride-2 conv first: pointwise to planes, then depth-wise 3x3 stride 2.
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.groups) for m in convs] == [
        (16, 4, (1, 1), (1, 1), 1), (4, 4, (3, 3), (2, 2), 4)]
    assert tuple(dry_run(head[:6], x).shape) == (1, 4, 4, 4)
    blocks = [m for m in head if isinstance(m, InvertedResidual)]
    assert [(b.residual, b.conv[3].stride) for b in blocks] == [(True, (1, 1)), (False, (2, 2)), (True, (1, 1))]
    assert tuple(dry_run(head[: 6 + 3], x).shape) == (1, 6, 2, 2)  # after the three blocks
    assert isinstance(head[-1], nn.Linear) and head[-1].in_features == FINAL
    assert all(m.bias is None for m in head.modules() if isinstance(m, nn.Conv2d))
    assert [len([m for m in _create(L) if isinstance(m, InvertedResidual)]) for L in (1, 2, 3, 4)] == [0, 1, 2, 3]


def test_aux_defaults_are_the_papers_cifar_width_and_512_final_channels():
    head = heads.create("aux1", in_shape=(64, 32, 32), num_classes=10)
    assert head[0].out_channels == 16 and head[-1].in_features == 512
    with pytest.raises(ValueError, match="width=0 must be a positive channel multiplier"):
        heads.create("aux2", in_shape=(64, 32, 32), num_classes=10, width=0)
    with pytest.raises(ValueError, match=r"needs an image input"):
        heads.create("aux1", in_shape=(64,), num_classes=10)


def test_cli_heads_reports_aux_heads(capsys):
    from interlock.app.cli import main

    assert main(["heads", "dgl_cnn", "width=0.125", "--components", "3", "--heads", "aux2"]) == 0
    out = capsys.readouterr().out
    assert "heads: aux2" in out and out.count("| ") >= 3
