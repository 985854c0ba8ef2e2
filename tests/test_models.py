"""The model registry: every model trains every parameter, sizes match the published
networks, partitions cut where a hand computation says, and the GPT is causal and tied right."""

from __future__ import annotations

import copy
import math
from itertools import combinations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import interlock as il
from interlock import models
from interlock.measure.flops import profile_blocks
from interlock.heads.transformer import LMHead

TOKENS = dict(vocab_size=32, block_size=8, n_layer=3, n_head=2, n_embd=16)

# Small but complete configurations (tiny widths, 32x32 inputs) and the two K each is split into.
SMALL: dict[str, tuple[dict, tuple[int, int]]] = {
    "toy_cnn": ({}, (3, 4)),
    "toy_cnn_strided": ({}, (2, 4)),
    "dgl_cnn": ({"width": 1 / 32}, (2, 3)),
    "resnet20": ({"width": 0.25}, (2, 4)),
    "resnet32": ({"width": 0.25, "shortcut": "B"}, (2, 3)),
    "resnet56": ({"width": 0.25}, (3, 5)),
    "resnet110": ({"width": 0.25}, (2, 4)),
    "resnet18": ({"width": 0.125}, (2, 3)),
    "resnet34": ({"width": 0.125, "stem": "imagenet"}, (2, 4)),
    "resnet34_cifar_stages": ({"width": 0.125}, (2, 4)),
    "resnet50": ({"width": 0.125}, (2, 3)),
    "resnet101": ({"width": 0.0625}, (2, 3)),
    "resnet152": ({"width": 0.0625, "stem": "imagenet"}, (2, 3)),
    "vgg11_bn": ({"width": 0.125}, (2, 3)),
    "vgg13_bn": ({"width": 0.125, "classifier": "imagenet"}, (2, 3)),
    "vgg16_bn": ({"width": 0.125}, (2, 3)),
    "vgg19_bn": ({"width": 0.125}, (2, 3)),
    "gpt": (TOKENS, (2, 3)),
}


def lm_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())  # (B*T, V) vs (B*T,)


def batch(name: str, kw: dict, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    if name == "gpt":
        x = torch.randint(0, kw["vocab_size"], (2, kw["block_size"]), generator=g)
        y = torch.randint(0, kw["vocab_size"], (2, kw["block_size"]), generator=g)
        return x, y, lm_loss
    x = torch.randn(2, 3, 32, 32, generator=g)
    return x, torch.randint(0, 10, (2,), generator=g), F.cross_entropy


class RecordingSGD(torch.optim.SGD):
    """SGD that records, when the update happens, each parameter's largest |grad| (None: no gradient).

    The worker zeroes gradients right after ``step``, so this is the one place where every
    gradient the strategy produced can be seen.
    """

    def __init__(self, params, seen: dict[int, float | None]) -> None:
        super().__init__(params, lr=0.01)
        self.seen = seen

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                self.seen[id(p)] = None if p.grad is None else float(p.grad.abs().max())
        return super().step(closure)


def gradient_magnitudes(net: il.ComponentNet, strategy, x, y, loss_fn) -> tuple[dict[str, float | None], list[float]]:
    seen: dict[int, float | None] = {}
    engine = il.Engine(net, strategy, optimizer=lambda ps: RecordingSGD(ps, seen), loss_fn=loss_fn)
    losses = engine.step(x, y).losses
    return {name: seen.get(id(p)) for name, p in net.named_parameters()}, losses


def test_registry_lists_the_models_and_names_them_on_a_typo():
    wanted = {"toy_cnn", "dgl_cnn", "resnet20", "resnet32", "resnet56", "resnet110", "resnet18", "resnet34",
              "resnet50", "resnet101", "resnet152", "vgg13_bn", "vgg19_bn", "gpt"}
    assert wanted <= set(models.names())
    assert set(SMALL) == set(models.names()), "add new models to SMALL so the sweep covers them"
    with pytest.raises(ValueError, match=r"unknown model 'resnet21'; known models: .*resnet20"):
        models.create("resnet21", components=2)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_parameter_gets_a_gradient(name):
    kw, Ks = SMALL[name]
    x, y, loss_fn = batch(name, kw)
    for K in Ks:
        strategies = [il.Local(), il.EndToEnd()] if K == Ks[0] else [il.Local()]
        for strategy in strategies:
            # A fresh network per strategy: after one step, wide linear heads can fit a batch of two
            # so exactly that the loss (and every gradient) is 0.0 in float32.
            torch.manual_seed(K)
            net = models.create(name, components=K, **kw)
            assert net.num_components == K
            grads, losses = gradient_magnitudes(net, strategy, x, y, loss_fn)
            missing = [n for n, g in grads.items() if g is None or not g > 0 or not math.isfinite(g)]
            assert not missing, f"{name}, K={K}, {strategy.name}: no gradient for {missing}"
            assert all(math.isfinite(v) for v in losses)


# -- published sizes (counted on the meta device: nothing is allocated) ----------------------------


def count(name: str, components: int = 1, **kw) -> int:
    with torch.device("meta"):
        flat = models.build(name, components=components, **kw)
    return il.parameter_count(nn.ModuleList([*flat.blocks, flat.final_head]))  # shared parameters count once


def test_cifar_resnets_have_the_published_sizes():
    # He et al. 2016, Table 6: 0.27M, 0.46M, 0.85M, 1.7M.
    for name, millions in [("resnet20", 0.27), ("resnet32", 0.46), ("resnet56", 0.85), ("resnet110", 1.7)]:
        assert count(name) == pytest.approx(millions * 1e6, rel=0.02), name
    # By hand, option A (no shortcut parameters), no conv biases, 10 classes:
    # convs 432 + 6*2304 + (4608 + 5*9216) + (18432 + 5*36864) = 267,696; BatchNorm 2 * (7*16 + 6*32 + 6*64)
    # = 1,376; linear 64*10 + 10 = 650. (269,722: the 0.27M usually quoted.)
    assert count("resnet20") == 267_696 + 1_376 + 650
    assert count("resnet20", shortcut="B") > count("resnet20")  # projections cost parameters


@pytest.mark.parametrize(
    "name,published",  # torchvision's published parameter counts (ImageNet, 1000 classes)
    [("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032), ("resnet101", 44_549_160), ("resnet152", 60_192_808)],
)
def test_imagenet_resnets_have_the_published_sizes(name, published):
    assert count(name, num_classes=1000, stem="imagenet", image_size=224) == published


def test_vgg_sizes_match_the_published_networks_less_the_conv_biases():
    # CIFAR VGG-19-BN is the 20.04M-parameter network (20,040,522 with conv biases); ours drops the
    # 5,504 conv biases that BatchNorm makes redundant. torchvision's ImageNet vgg19_bn: 143,678,248.
    assert count("vgg19_bn") == 20_040_522 - 5_504
    assert count("vgg19_bn", classifier="imagenet", num_classes=1000, image_size=224) == 143_678_248 - 5_504
    assert count("vgg13_bn") == pytest.approx(9.4e6, rel=0.01)


def test_gpt2_small_has_the_published_size_and_unties_when_split():
    gpt2 = dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)
    assert count("gpt", **gpt2) == 124_439_808  # GPT-2 small (tied), as published with the HF checkpoint
    assert count("gpt", components=2, **gpt2) == 124_439_808 + 50257 * 768  # the output projection is a copy when K > 1


# -- structure ---------------------------------------------------------------------------------------


def block_shapes(name: str, **kw) -> list[tuple[int, ...]]:
    flat = models.build(name, **kw)
    return [p.out_shape for p in profile_blocks(flat.blocks, flat.sample_input)]


def test_toy_cnn_is_appendix_b1():
    # Paper B.1 with K = 4: conv32, conv32, conv64 + maxpool(2, stride 1), conv64 + maxpool(2, stride 1).
    net = models.create("toy_cnn", components=4)
    convs = [m for m in net.blocks.modules() if isinstance(m, nn.Conv2d)]
    assert [tuple(c.weight.shape) for c in convs] == [(32, 3, 3, 3), (32, 32, 3, 3), (64, 32, 3, 3), (64, 64, 3, 3)]
    assert all(c.stride == (1, 1) and c.padding == (1, 1) for c in convs)
    pools = [[(m.kernel_size, m.stride) for m in b.modules() if isinstance(m, nn.MaxPool2d)] for b in net.blocks]
    assert pools == [[], [], [(2, 1)], [(2, 1)]]
    assert [len(b) for b in net.blocks] == [1, 1, 1, 1]  # one conv layer per component
    assert block_shapes("toy_cnn", components=4) == [(32, 32, 32), (32, 32, 32), (64, 31, 31), (64, 30, 30)]
    # The final head: one linear layer on the flattened 64 x 30 x 30 output; every aux head a linear layer.
    final = [m for m in net.heads[-1].modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert [tuple(m.weight.shape) for m in final] == [(10, 57_600)]
    assert [[tuple(m.weight.shape) for m in h.modules() if isinstance(m, nn.Linear)] for h in net.heads[:-1]] == [
        [(10, 32 * 32 * 32)], [(10, 32 * 32 * 32)], [(10, 64 * 31 * 31)]]
    # Parameters by hand: 3x3 conv weights (no bias: BatchNorm follows) + BatchNorm scale and shift.
    blocks = (27 * 32 + 64) + (288 * 32 + 64) + (288 * 64 + 128) + (576 * 64 + 128)
    assert blocks == 928 + 9_280 + 18_560 + 36_992 == 65_760
    assert sum(p.numel() for p in net.blocks.parameters()) == blocks
    assert sum(p.numel() for p in net.heads[-1].parameters()) == 57_600 * 10 + 10
    assert [sum(p.numel() for p in h.parameters()) for h in net.heads[:-1]] == [327_690, 327_690, 615_050]
    # K components: component 1 and the next K-3 have 32 filters, the last two 64 (paper B.1).
    assert block_shapes("toy_cnn", components=6) == [(32, 32, 32)] * 4 + [(64, 31, 31), (64, 30, 30)]
    assert block_shapes("toy_cnn", components=3) == [(32, 32, 32), (64, 31, 31), (64, 30, 30)]
    assert block_shapes("toy_cnn", components=10)[-3:] == [(32, 32, 32), (64, 31, 31), (64, 30, 30)]
    with pytest.raises(ValueError, match=r"at least 3 conv layers .* set model.kwargs.depth >= 3"):
        models.create("toy_cnn", components=2)
    assert len(models.create("toy_cnn", components=2, depth=4).blocks[0]) == 2  # 4 layers in 2 components


def test_toy_cnn_strided_keeps_our_earlier_reading():
    assert block_shapes("toy_cnn_strided", depth=4) == [(32, 32, 32), (32, 32, 32), (64, 16, 16), (64, 8, 8)]
    assert block_shapes("toy_cnn_strided", depth=3) == [(32, 32, 32), (64, 16, 16), (64, 8, 8)]
    assert block_shapes("toy_cnn_strided", components=6) == [(32, 32, 32)] * 3 + [(64, 32, 32), (64, 16, 16), (64, 8, 8)]


def test_dgl_cnn_doubles_its_width_at_each_downsampling():
    with torch.device("meta"):
        assert block_shapes("dgl_cnn") == [(128, 32, 32), (256, 16, 16), (256, 16, 16), (512, 8, 8), (512, 8, 8), (512, 8, 8)]
        assert block_shapes("dgl_cnn", depth=4, downsample=[2]) == [(128, 32, 32), (128, 32, 32), (256, 16, 16), (256, 16, 16)]


def test_block_counts_are_the_networks_layers():
    with torch.device("meta"):
        expect = {"resnet20": 10, "resnet110": 55, "resnet18": 9, "resnet50": 17, "resnet152": 51, "vgg13_bn": 10, "vgg19_bn": 16}
        for name, n in expect.items():
            assert len(models.build(name).blocks) == n, name
        assert len(models.build("gpt", **TOKENS).blocks) == TOKENS["n_layer"]


def test_initialisation_is_deterministic_given_the_seed():
    def make():
        torch.manual_seed(0)
        return models.create("resnet20", components=3, heads="mlp_sr", width=0.25).state_dict()

    a, b = make(), make()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)



def test_shared_init_follows_torchvision_for_convs_batchnorm_and_vgg_linears():
    from interlock.models.init import init_weights

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(8, 64, 3), nn.BatchNorm2d(64), nn.Linear(256, 128))
    nn.init.constant_(net[1].weight, 3.0)
    default_linear = net[2].weight.detach().clone()
    init_weights(net)  # ResNet's call: linear layers keep PyTorch's default
    fan_out = 64 * 3 * 3
    assert abs(net[0].weight.std().item() - math.sqrt(2 / fan_out)) < 0.1 * math.sqrt(2 / fan_out)
    assert torch.equal(net[1].weight, torch.ones(64)) and torch.equal(net[1].bias, torch.zeros(64))
    assert torch.equal(net[2].weight, default_linear)
    init_weights(net, linear_std=0.01)  # VGG's call
    assert abs(net[2].weight.std().item() - 0.01) < 0.001 and torch.equal(net[2].bias, torch.zeros(128))

# -- partitions ----------------------------------------------------------------------------------------


def test_partitions_cut_where_the_hand_computation_says():
    # dgl_cnn at width 1/32 (channels 4, 8, 8, 16, 16, 16; max-pools entering blocks 1 and 3), on its sample
    # batch of 2: a 3x3 conv costs 2 * c_in * c_out * 9 * H * W FLOPs per sample; parameters are the
    # conv weights plus BatchNorm's 2 * c_out.
    flat = models.build("dgl_cnn", width=1 / 32)
    profile = profile_blocks(flat.blocks, flat.sample_input)
    layers = [(3, 4, 32), (4, 8, 16), (8, 8, 16), (8, 16, 8), (16, 16, 8), (16, 16, 8)]  # c_in, c_out, resolution
    flops = [2 * 2 * ci * co * 9 * s * s for ci, co, s in layers]
    params = [ci * co * 9 + 2 * co for ci, co, _ in layers]
    assert [p.flops for p in profile] == flops  # 442368, 294912, 589824, 294912, 589824, 589824
    assert [p.params for p in profile] == params  # 116, 304, 592, 1184, 2336, 2336

    assert models.choose_cuts("uniform", profile, 2) == (3,)
    assert models.choose_cuts("uniform", profile, 3) == (2, 4)
    # params, K=2: prefix sums 116, 420, 1012, 2196, 4532 of 6868: the cut after block 5 leaves max(4532, 2336).
    assert models.choose_cuts("params", profile, 2) == (5,)
    # params, K=3: blocks 4 and 5 (2336 each) must part; 116+304+592+1184 = 2196 fits beside them.
    assert models.choose_cuts("params", profile, 3) == (4, 5)
    # flops, K=2: cut 3 gives max(1327104, 1474560); cut 4 gives max(1622016, 1179648): cut 3.
    assert models.choose_cuts("flops", profile, 2) == (3,)
    # flops, K=3 has ties; the cut must reach the brute-force optimum.
    best = min(max(sum(flops[a:b]) for a, b in zip((0, *c), (*c, 6))) for c in combinations(range(1, 6), 2))
    cuts = models.choose_cuts("flops", profile, 3)
    assert max(sum(flops[a:b]) for a, b in zip((0, *cuts), (*cuts, 6))) == best == 1179648

    for partition, sizes in [("params", [4, 1, 1]), ([1, 5], [1, 4, 1]), ("uniform", [2, 2, 2])]:
        net = models.create("dgl_cnn", components=3, width=1 / 32, partition=partition)
        assert [len(b) for b in net.blocks] == sizes, partition


def test_bad_options_say_what_to_change():
    with pytest.raises(ValueError, match=r"has 10 blocks; components=11 exceeds them: use components <= 10"):
        models.create("resnet20", components=11)
    with pytest.raises(ValueError, match=r"components=3 needs 2 int cut indices"):
        models.create("resnet20", components=3, partition=[4])
    with pytest.raises(ValueError, match=r"cuts \(4, 4\) must be strictly increasing"):
        models.create("resnet20", components=3, partition=[4, 4])
    with pytest.raises(ValueError, match=r"partition='blocks'; choose one of uniform, params, flops"):
        models.create("resnet20", components=2, partition="blocks")
    with pytest.raises(ValueError, match=r"'resnet20' does not take option\(s\) stem; its options are: .*shortcut"):
        models.create("resnet20", components=2, stem="imagenet")
    with pytest.raises(ValueError, match=r"'resnet18': stem='tiny'; choose one of 'cifar', 'imagenet'"):
        models.create("resnet18", components=2, stem="tiny")
    with pytest.raises(ValueError, match=r"num_classes=0 must be a positive int"):
        models.create("toy_cnn", components=3, num_classes=0)
    with pytest.raises(ValueError, match=r"unknown head 'mpl'"):
        models.create("toy_cnn", components=1, depth=3, heads="mpl")
    with pytest.raises(ValueError, match=r"one head name \(or None\) per auxiliary component, 2 in all"):
        models.create("toy_cnn", components=3, heads=["mlp"])
    with pytest.raises(ValueError, match=r"head of component 1 .*head 'conv' does not take option\(s\) n_head"):
        models.create("toy_cnn", components=3, heads="conv", head_kw={"n_head": 2})


def test_heads_per_component_and_options():
    net = models.create("toy_cnn", components=3, heads=["mlp_sr", None], head_kw=[{"width": 12}, None])
    assert net.heads[1] is None
    hidden = [m.out_features for m in net.heads[0].modules() if isinstance(m, nn.Linear)]
    assert hidden == [12, 12, 12, 10]


# -- GPT -------------------------------------------------------------------------------------------------


def test_gpt_is_causal_and_predicts_every_position():
    torch.manual_seed(0)
    for K, head in [(1, "linear"), (3, "transformer")]:
        net = models.create("gpt", components=K, heads=head, **TOKENS).eval()
        x = torch.randint(0, 32, (2, 8))
        outs = net.heads_forward(x)
        assert all(o.shape == (2, 8, 32) for o in outs)
        for t in range(7):
            x2 = x.clone()
            x2[:, t + 1 :] = (x2[:, t + 1 :] + 1) % 32  # change every later token
            for a, b in zip(outs, net.heads_forward(x2)):
                torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1])
                assert not torch.allclose(a[:, t + 1], b[:, t + 1])


def test_gpt_heads_share_the_embedding_in_its_component_and_copy_it_elsewhere():
    one = models.create("gpt", components=1, **TOKENS)
    wte = one.blocks[0][0][0].wte.weight
    assert one.heads[-1].proj.weight is wte

    torch.manual_seed(0)
    net = models.create("gpt", components=3, heads="transformer", **TOKENS)
    wte = net.blocks[0][0][0].wte.weight
    projs = [head.proj if isinstance(head, LMHead) else head.lm.proj for head in net.heads]
    assert projs[0].weight is wte  # component 1 holds the embedding: its head's projection *is* it (paper B.3)
    for proj in projs[1:]:  # other components cannot share a parameter: a copy
        assert proj.weight is not wte and proj.weight.data_ptr() != wte.data_ptr()
        torch.testing.assert_close(proj.weight, wte, rtol=0, atol=0)
    # Paper B.3: 2 transformer blocks of 4 attention heads, whatever the model's own head count (2 here).
    assert len(net.heads[0].blocks) == 2 and all(b.attn.n_head == 4 for b in net.heads[0].blocks)
    assert models.create("gpt", components=3, heads="transformer", head_kw={"n_head": 8}, **TOKENS).heads[1].blocks[0].attn.n_head == 8
    net.check(torch.zeros(2, 8, dtype=torch.long))  # no parameter shared across components
    x, y, loss_fn = batch("gpt", TOKENS)
    engine = il.Engine(net, il.EndToEnd(), optimizer=lambda ps: torch.optim.SGD(ps, lr=0.5), loss_fn=loss_fn)
    engine.step(x, y)
    assert not torch.equal(net.heads[-1].proj.weight, wte)  # copies, so they train apart
    assert net.heads[0].lm.proj.weight is wte


def test_tied_embedding_gradient_is_the_sum_of_its_roles():
    """Under 2-wise, component 1's shared embedding gets dL_2/dW through its block plus dL_1/dW through its head."""
    torch.manual_seed(0)
    net = models.create("gpt", components=2, heads="transformer", **TOKENS)
    ref = copy.deepcopy(net)
    x, y, loss_fn = batch("gpt", TOKENS)
    seen: dict[int, torch.Tensor] = {}

    class Capture(torch.optim.SGD):
        def step(self, closure=None):
            for g in self.param_groups:
                for p in g["params"]:
                    if p.grad is not None:
                        seen[id(p)] = p.grad.clone()
            return super().step(closure)

    engine = il.Engine(net, il.Interlocking(2), optimizer=lambda ps: Capture(ps, lr=0.0), loss_fn=loss_fn)
    engine.step(x, y)
    wte = net.blocks[0][0][0].wte.weight
    # Brute force: L_1 with the block's output detached (the head's role), plus L_2 through everything.
    rwte = ref.blocks[0][0][0].wte.weight
    a1 = ref.blocks[0](x)
    l1 = loss_fn(ref.heads[0](a1.detach()), y)
    l2 = loss_fn(ref.heads[1](ref.blocks[1](a1)), y)
    (g_head,) = torch.autograd.grad(l1, rwte)
    (g_block,) = torch.autograd.grad(l2, rwte)
    torch.testing.assert_close(seen[id(wte)], g_head + g_block, rtol=1e-5, atol=1e-6)
    assert g_head.abs().max() > 0 and g_block.abs().max() > 0


def test_gpt_rejects_sequences_longer_than_block_size():
    net = models.create("gpt", components=2, **TOKENS)
    with pytest.raises(ValueError, match=r"sequence length 9 exceeds block_size=8"):
        net(torch.zeros(1, 9, dtype=torch.long))
