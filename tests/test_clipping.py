"""Gradient clipping by norm (per component and global) and the EMA of weights, against plain torch."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import interlock as il

from clip_helpers import K, MAX_NORM, STEPS, sgd, train
from clip_helpers import parts as _parts


def _reference(blocks, heads, batches, mode):
    """The unsplit model: full gradient, torch's clip_grad_norm_ (global) or one per component, SGD."""
    blocks, heads = copy.deepcopy(blocks), copy.deepcopy(heads)
    model = nn.Sequential(*blocks, heads[-1])
    groups = [list(b.parameters()) + (list(h.parameters()) if h is not None else []) for b, h in zip(blocks, heads)]
    opt = sgd(model.parameters())
    norms = []
    for x, y in batches:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        norms.append([torch.nn.utils.get_total_norm([p.grad for p in g]).item() for g in groups])
        if mode == "global":
            torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
        else:
            for g in groups:
                torch.nn.utils.clip_grad_norm_(g, MAX_NORM)
        opt.step()
    return model, norms


@pytest.mark.parametrize("mode", ["global", "component"])
def test_end_to_end_clipping_equals_torch_on_the_unsplit_model(mode):
    blocks, heads, batches = _parts()
    ref, ref_norms = _reference(blocks, heads, batches, mode)
    net = il.ComponentNet(blocks=copy.deepcopy(blocks), heads=copy.deepcopy(heads))
    engine = il.Engine(net, il.EndToEnd(), optimizer=sgd, loss_fn=nn.functional.cross_entropy,
                       clip_norm=MAX_NORM, clip_mode=mode)
    norms = [list(engine.step(x, y).grad_norms) for x, y in batches]
    assert max(max(n) for n in ref_norms) > 2 * MAX_NORM  # the clip acted
    torch.testing.assert_close(torch.tensor(norms), torch.tensor(ref_norms), rtol=1e-5, atol=1e-7)
    mine = [p for k in range(K) for p in net.component_parameters(k)]
    for a, b in zip(mine, ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    if mode == "global":  # the rules differ, so the test can tell them apart
        other, _ = _reference(blocks, heads, batches, "component")
        assert any((a - b).abs().max() > 1e-4 for a, b in zip(mine, other.parameters()))


def test_no_clip_reports_no_norms_and_bad_options_are_refused():
    blocks, heads, batches = _parts()
    engine = il.Engine(il.ComponentNet(blocks=blocks, heads=heads), il.EndToEnd(), optimizer=sgd,
                       loss_fn=nn.functional.cross_entropy)
    assert engine.step(*batches[0]).grad_norms is None
    full = [nn.Linear(8, 4), nn.Linear(8, 4), heads[-1]]
    with pytest.raises(ValueError, match="clip_mode='component'"):
        il.Engine(il.ComponentNet(blocks=blocks, heads=full), il.Local(), optimizer=sgd,
                  loss_fn=nn.functional.cross_entropy, clip_norm=1.0, clip_mode="global")
    with pytest.raises(ValueError, match="clip_norm"):
        il.Engine(il.ComponentNet(blocks=blocks, heads=heads), il.EndToEnd(), optimizer=sgd,
                  loss_fn=nn.functional.cross_entropy, clip_norm=-1.0)
    with pytest.raises(ValueError, match="clip_mode"):
        il.Engine(il.ComponentNet(blocks=blocks, heads=heads), il.EndToEnd(), optimizer=sgd,
                  loss_fn=nn.functional.cross_entropy, clip_norm=1.0, clip_mode="layer")
    with pytest.raises(ValueError, match="ema_decay"):
        il.Engine(il.ComponentNet(blocks=blocks, heads=heads), il.EndToEnd(), optimizer=sgd,
                  loss_fn=nn.functional.cross_entropy, ema_decay=1.0)


def _ema_engine(blocks, heads):
    net = il.ComponentNet(blocks=copy.deepcopy(blocks), heads=copy.deepcopy(heads))
    return net, il.Engine(net, il.EndToEnd(), optimizer=sgd, loss_fn=nn.functional.cross_entropy, ema_decay=0.8)


def test_ema_follows_the_weights_swaps_for_evaluation_and_resumes():
    blocks, heads, batches = _parts(1)
    net, engine = _ema_engine(blocks, heads)
    params = [p for k in range(K) for p in net.component_parameters(k)]
    expect = [p.detach().clone() for p in params]
    for x, y in batches:
        engine.step(x, y)
        expect = [0.8 * e + 0.2 * p.detach() for e, p in zip(expect, params)]
    live = [p.detach().clone() for p in params]
    with engine.ema_weights() as on:
        assert on
        for p, e in zip(params, expect):
            torch.testing.assert_close(p.detach(), e)
    for p, v in zip(params, live):
        assert torch.equal(p.detach(), v)  # the live weights are back
    # Resume after 2 steps == uninterrupted 3 steps (the EMA is in the checkpoint).
    net2, first = _ema_engine(blocks, heads)
    for x, y in batches[:2]:
        first.step(x, y)
    states = [copy.deepcopy(first.component_state(k)) for k in range(K)]
    assert all("ema" in s for s in states)
    net3, resumed = _ema_engine(blocks, heads)
    for k in range(K):
        resumed.load_component_state(k, states[k])
    resumed.step(*batches[2])
    for a, b in zip(resumed.workers, engine.workers):
        for s, t in zip(a.ema.shadow, b.ema.shadow):
            torch.testing.assert_close(s, t)
    no_ema = il.Engine(il.ComponentNet(blocks=copy.deepcopy(blocks), heads=copy.deepcopy(heads)), il.EndToEnd(),
                       optimizer=sgd, loss_fn=nn.functional.cross_entropy)
    with no_ema.ema_weights() as on:
        assert not on
    with pytest.raises(ValueError, match="ema_decay=0"):
        resumed.load_component_state(0, no_ema.component_state(0))


def test_training_program_records_norms_and_resumes_with_clip_and_ema(tmp_path):
    pytest.importorskip("sklearn", reason="the bundled digits data set needs scikit-learn")
    from test_train import assert_states_equal, component_states, config, latest_checkpoint, without_timing
    from interlock.training.loop import run
    from interlock.training.metrics import read_metrics

    extra = ["steps=10", "strategy=2-wise", "checkpoint_every=3", "clip.norm=0.5", "clip.mode=global",
             "ema.decay=0.9", "optim.no_decay=true", "optim.weight_decay=0.01"]
    full = run(config(tmp_path / "a", *extra))
    interrupted = config(tmp_path / "b", *extra)
    run(interrupted, stop_after=7)
    resumed = run(interrupted, resume=True)
    assert resumed.final == full.final
    states = component_states(tmp_path / "a" / "run")
    assert all("ema" in s for s in states.values())
    assert_states_equal(component_states(tmp_path / "b" / "run"), states)
    for name, s in component_states(tmp_path / "b" / "run").items():
        for u, v in zip(s["ema"]["shadow"], states[name]["ema"]["shadow"]):
            assert torch.equal(u, v)
    rows = read_metrics(tmp_path / "a" / "run")
    train = [r for r in rows if r.get("kind") == "train"]
    assert train and all(r[f"grad_norm_{k}"] > 0 for r in train for k in (1, 2, 3))
    assert without_timing(read_metrics(tmp_path / "b" / "run")) == without_timing(rows)


@pytest.mark.parametrize("overrides,match", [
    (["strategy=local", "clip.norm=1", "clip.mode=global"], "clip.mode=component"),
    (["clip.norm=-1"], "clip.norm"),
    (["clip.mode=layer"], "clip.mode"),
    (["ema.decay=1.5"], "ema.decay"),
])
def test_bad_clip_and_ema_options_name_the_option(tmp_path, overrides, match):
    from test_train import config

    with pytest.raises(ValueError, match=match):
        config(tmp_path, "steps=2", *overrides)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this PyTorch build has no torch.distributed")
def test_ranks_clip_and_ema_equal_the_local_runtime():
    """One launch of K processes: global (one all-reduce of a scalar) and per-component clipping, with an EMA."""
    from interlock.runtime.launch import run_local
    import clip_helpers

    ranks = run_local(clip_helpers.rank_main, K, timeout_s=240)
    for mode in ("global", "component"):
        local, local_norms = train("local", mode)
        for k, result in enumerate(ranks):
            got, norms = result[mode]
            for part in ("params", "ema"):
                for a, b in zip(got[k][part], local[k][part]):
                    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(torch.tensor([n[k] for n in norms]), torch.tensor([n[k] for n in local_norms]))


def test_stale_policies_clip_per_component_and_refuse_a_global_norm():
    import torch.nn.functional as F
    from test_hogwild import scalar_net, weights
    from test_hogwild import sgd as hog_sgd

    # Hogwild by hand (test_hogwild): step 1's top gradient is 1.0, clipped to 0.1 -> w2 = 0.5 - 0.1 * 0.1.
    net = scalar_net([1.0, 0.5])
    engine = il.Engine(net, il.Hogwild(), optimizer=hog_sgd(0.1), loss_fn=F.mse_loss, total_steps=3, clip_norm=0.1)
    result = engine.step(torch.ones(1, 1), torch.zeros(1, 1))
    assert weights(net) == pytest.approx([1.0, 0.49], abs=1e-6)
    assert result.grad_norms[1] == pytest.approx(1.0)
    for strategy in (il.Hogwild(), il.HogwildStashed()):
        with pytest.raises(ValueError, match="clip_mode='component'"):
            il.Engine(scalar_net([1.0, 0.5]), strategy, optimizer=hog_sgd(0.1), loss_fn=F.mse_loss, total_steps=3,
                      clip_norm=0.1, clip_mode="global")


def test_fp16_clips_the_unscaled_gradient():
    """The order of an update is unscale, clip, step: the norm clipped and recorded is the true one, not the
    loss-scaled one (65536 times larger)."""
    blocks, heads, batches = _parts()
    norms = {}
    for precision in ("fp32", "fp16"):
        net = il.ComponentNet(blocks=copy.deepcopy(blocks), heads=copy.deepcopy(heads))
        engine = il.Engine(net, il.EndToEnd(), optimizer=sgd, loss_fn=nn.functional.cross_entropy,
                           clip_norm=MAX_NORM, clip_mode="global", precision=precision, ema_decay=0.5)
        norms[precision] = torch.tensor(list(engine.step(*batches[0]).grad_norms))
    torch.testing.assert_close(norms["fp16"], norms["fp32"], rtol=2e-2, atol=1e-4)


@pytest.mark.parametrize("options, match", [
    ({"clip_norm": 1.0}, "pipeline='gpipe' updates through its own optimizer step"),
    ({"ema_decay": 0.9}, "pipeline='gpipe' updates through its own optimizer step"),
    ({"precision": "bf16"}, "pipeline='gpipe' runs its own forward and backward"),
    ({"compile": True}, "pipeline='gpipe' runs its own forward and backward"),
])
def test_the_torch_pipeline_refuses_what_its_own_passes_and_updates_ignore(options, match):
    # Refused at construction, before the ranks runtime joins a process group (so one process can check it).
    blocks, heads, _ = _parts()
    with pytest.raises(ValueError, match=match):
        il.Engine(il.ComponentNet(blocks=blocks, heads=heads), il.EndToEnd(), runtime="ranks", pipeline="gpipe",
                  optimizer=sgd, loss_fn=nn.functional.cross_entropy, **options)
