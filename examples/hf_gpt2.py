"""A tiny random-initialised Hugging Face GPT-2 (built from a config: nothing is downloaded), with
its tied embedding, cut into 2 components and trained 2-wise on tiny shakespeare (characters).

    pip install 'interlock[hf]'
    python examples/hf_gpt2.py [--data DATA_DIR] [--steps N]   # about 30 s on 2 CPU cores

The data folder is --data, $INTERLOCK_DATA or ../shared/data beside the checkout; it must hold
text/tinyshakespeare/input.txt.
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from interlock.training.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from interlock.data import find_data_root, load_char_corpus
from interlock.network.hf import adapt
from interlock import run


def train_tiny(make_model, *, name: str, doc: str | None = None, argv=None) -> None:
    p = argparse.ArgumentParser(description=doc or __doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="the data folder (default: $INTERLOCK_DATA or ../shared/data)")
    p.add_argument("--steps", type=int, default=60)
    args = p.parse_args(argv)
    root = find_data_root(args.data)
    vocab = len(load_char_corpus("tinyshakespeare", root, val_fraction=0.1).vocab)  # characters: the model's vocabulary
    torch.manual_seed(0)
    model = make_model(vocab)  # random weights from a config
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    # Block 0 is the embedding with the first decoder layer; heads: the paper's B.3 (2 transformer
    # blocks whose output projection is the embedding matrix, a tied copy).
    net = adapt(model, components=2, heads="transformer", head_kw={"n_head": 4})
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(
            model=ModelConfig(components=2),
            data=DataConfig(name="shakespeare", root=None if root is None else str(root), batch_size=16, block_size=64,
                            eval_batch_size=32, eval_batches=4),
            optim=OptimConfig(name="adamw", lr=3e-3, weight_decay=0.0),
            strategy="2-wise", steps=args.steps, log_every=20, threads=1, run_dir=tmp,
        )
        result = run(config, model=net, on_progress=lambda r: r["kind"] == "train" and print(
            f"step {r['step']}: train losses {r['loss_1']:.3f} {r['loss_2']:.3f}"))
    copies = net.ties[0] if net.ties else []
    same = all(torch.equal(c, copies[0]) for c in copies)
    print(f"{name}: tied embedding {tied}, {len(copies)} tied copies, equal after training: {same}")
    f = result.final
    print(f"final losses (held-out text, heads 1 and 2): {f['test_loss_1']:.4f} {f['test_loss_2']:.4f}")


def gpt2(vocab: int):
    from transformers import AutoModelForCausalLM, GPT2Config

    config = GPT2Config(vocab_size=vocab, n_positions=64, n_embd=64, n_layer=4, n_head=4, bos_token_id=0, eos_token_id=0)
    return AutoModelForCausalLM.from_config(config)  # tie_word_embeddings=True, GPT-2's default


if __name__ == "__main__":
    train_tiny(gpt2, name="GPT-2")
