"""Hugging Face adapters (interlock.network.hf): the split model is the unsplit one, trains as it does, and
trains bit for bit alike on the distributed engine. Skipped without transformers (an optional extra)."""

from __future__ import annotations

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers")

import interlock as il
from interlock.network.hf import adapt
from interlock.runtime.launch import run_local
import tie_helpers as T


def tiny_llama(seed: int = 0, *, tie: bool = True):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(num_hidden_layers=3, hidden_size=16, intermediate_size=32, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=40, max_position_embeddings=16, tie_word_embeddings=tie,
                                   bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return transformers.AutoModelForCausalLM.from_config(cfg).double()


MODELS = {"gpt2": lambda: T.tiny_gpt2(layers=3), "llama": tiny_llama, "llama-untied": lambda: tiny_llama(tie=False)}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("K", [1, 2, 3])
def test_adapted_logits_equal_the_unsplit_model(name, K):
    model = MODELS[name]().eval()
    x = torch.randint(0, 40, (2, 11), generator=torch.Generator().manual_seed(1))
    want = model(x).logits
    for heads in ("lm", "transformer"):
        net = adapt(model, components=K, heads=heads, head_kw={"n_head": 4} if heads == "transformer" else None).eval()
        torch.testing.assert_close(net(x), want, rtol=0, atol=1e-10)
        tied = model.config.tie_word_embeddings and K > 1
        assert len(net.ties) == int(tied)
        if tied:  # the embedding, the final head's copy and the copies of the heads of components 2..K-1
            assert len(net.ties[0]) == 1 + 1 + max(0, K - 2)
        for k, out in enumerate(net.heads_forward(x)):
            assert out.shape == (2, 11, 40), (heads, k)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_three_end_to_end_steps_equal_a_plain_loop_on_the_unsplit_tied_model(name):
    model = MODELS[name]().train()
    plain = copy.deepcopy(model)
    assert plain.get_output_embeddings().weight is plain.get_input_embeddings().weight  # tied
    net = adapt(model, components=3, heads=None)
    engine = il.Engine(net, il.EndToEnd(), optimizer=T.sgd, loss_fn=T.token_loss)
    opt = T.sgd(plain.parameters())
    for x, y in T.token_batches():
        engine.step(x, y)
        opt.zero_grad()
        T.token_loss(plain(x).logits, y).backward()
        opt.step()
    got = dict(model.named_parameters())  # the user's model, trained in place by the components
    for key, p in plain.named_parameters():
        torch.testing.assert_close(got[key], p, rtol=0, atol=1e-10, msg=key)
    # The final head's tied copy equals the embedding the user's model still ties its LM head to.
    assert torch.equal(net.heads[-1].lm_head.weight, model.get_input_embeddings().weight)


def test_interlocking_with_paper_heads_keeps_every_tied_copy_equal():
    model = T.tiny_gpt2(layers=3)
    net = adapt(model, components=3, heads="transformer", head_kw={"n_head": 4})
    engine = il.Engine(net, il.Interlocking(2), optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2), loss_fn=T.token_loss)
    for x, y in T.token_batches():
        engine.step(x, y)
    wte = model.get_input_embeddings().weight
    assert net.heads[0].lm.proj.weight is wte  # component 1's head shares the embedding itself
    assert all(torch.equal(p, wte) for p in net.ties[0])
    assert not torch.equal(wte, T.tiny_gpt2(layers=3).get_input_embeddings().weight)  # it did train


def test_adapt_refuses_what_it_cannot_split():
    model = T.tiny_gpt2(layers=2)
    with pytest.raises(ValueError, match="components"):
        adapt(model, components=3)
    with pytest.raises(ValueError, match="neither"):
        adapt(torch.nn.Linear(2, 2), components=1)


def test_distributed_equals_simulated_on_an_adapted_gpt2():
    ranks = run_local(T.rank_main, 2, 2, timeout_s=180)
    net = adapt(T.tiny_gpt2(), components=2, heads="lm")
    engine = il.Engine(net, il.Interlocking(2), optimizer=T.sgd, loss_fn=T.token_loss)
    for x, y in T.token_batches():
        engine.step(x, y)
    want = T.states(net)
    for k in range(2):
        got = ranks[k]["hf-gpt2"]
        assert got and all(key.startswith((f"blocks.{k}.", f"heads.{k}.")) for key in got)
        for key, v in got.items():
            assert torch.equal(v, want[key]), f"rank {k}: {key}"


def test_a_tied_adapted_model_in_the_training_program_resumes_as_uninterrupted(tmp_path):
    from interlock.training.config import load_config
    from interlock.training.loop import run

    data = {"train": T.token_batches(steps=6), "test": T.token_batches(steps=2, seed=9)}
    cfg = lambda d: load_config(None, ["model.components=2", "strategy=2-wise", "steps=6", "checkpoint_every=3", "log_every=3",
                                       "optim.name=adam", "optim.lr=0.01", "threads=1", f"run_dir={tmp_path / d}"])
    model = lambda: adapt(T.tiny_gpt2(), components=2, heads="lm")
    whole = run(cfg("whole"), model=model(), data=data)
    run(cfg("cut"), model=model(), data=data, stop_after=4)
    net = model()
    resumed = run(cfg("cut"), model=net, data=data, resume=True)
    assert resumed.final == whole.final and resumed.steps == 6
    assert not torch.equal(net.ties[0][0], T.tiny_gpt2().get_input_embeddings().weight)  # it trained
    assert all(torch.equal(p, net.ties[0][0]) for p in net.ties[0])  # the copies, restored and trained, still equal
