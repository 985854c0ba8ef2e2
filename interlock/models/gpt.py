"""'gpt': a GPT-2-style decoder-only Transformer language model (nanoGPT's layout) as blocks.

Input (B, T) int64 token ids, output (B, T, vocab_size) logits. Block 0 is the token +
position embedding together with the first transformer block, and every later
transformer block is a block of its own: so every component is a run of transformer
blocks and the embedding always lives in component 1. The final head is LayerNorm +
linear to the vocabulary (the 'linear' head on tokens).

Weight tying (the interlocking paper's B.3: every head's output projection is the embedding
matrix): a head that lives in component 1, beside the embedding, *shares* it: one
parameter, whose gradient is the sum of its two roles (the component's stream through the
embedding and the head's own loss through the projection). That is the final head when
K = 1 (nanoGPT) and the auxiliary head of component 1. A head in any other component cannot
share it (components own their parameters and run on different devices), so its projection
starts as a copy of the embedding and trains apart (vocab_size x n_embd more parameters per
head). This is our choice where the paper's single-device reference shares one matrix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from .. import heads
from ..checks import count, number
from ..heads.transformer import TransformerBlock, init_gpt_weights
from ._registry import Network, config, positive_int, register

__all__ = ["GPTConfig", "Embedding"]


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64
    block_size: int = 1024  # the longest sequence
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in linear layers and LayerNorms
    # > 0: n_layer = blocks_per_component x components, so the model grows with K (the interlocking
    # paper's sec. 4.3: every component is 6 transformer blocks); 0: n_layer blocks in total.
    blocks_per_component: int = 0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            positive_int(getattr(self, name), name)
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        count(self.blocks_per_component, f"blocks_per_component={self.blocks_per_component!r}: use 0 (n_layer in total) or a positive int",
              minimum=0)
        number(self.dropout, f"dropout={self.dropout!r} must be in [0, 1)", low=0.0, high=1.0, high_open=True)


class Embedding(nn.Module):
    """Token + learned position embedding: (B, T) int64 -> (B, T, n_embd)."""

    def __init__(self, *, vocab_size: int, block_size: int, n_embd: int, dropout: float) -> None:
        super().__init__()
        self.block_size = block_size
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        if T > self.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size={self.block_size}; pass shorter sequences or a larger block_size")
        pos = torch.arange(T, device=idx.device)  # (T,)
        return self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)


@register("gpt")
def gpt(*, components: int, **kw) -> Network:
    cfg = config(GPTConfig, "gpt", kw)
    if cfg.blocks_per_component:
        cfg = dataclasses.replace(cfg, n_layer=cfg.blocks_per_component * components)
    embedding = Embedding(vocab_size=cfg.vocab_size, block_size=cfg.block_size, n_embd=cfg.n_embd, dropout=cfg.dropout)
    layers = [TransformerBlock(n_embd=cfg.n_embd, n_head=cfg.n_head, dropout=cfg.dropout, bias=cfg.bias) for _ in range(cfg.n_layer)]
    blocks: list[nn.Module] = [nn.Sequential(embedding, layers[0]), *layers[1:]]
    for b in blocks:
        init_gpt_weights(b, n_layer=cfg.n_layer)
    wte = embedding.wte.weight  # (vocab, C)
    final = heads.create("linear", in_shape=(cfg.block_size, cfg.n_embd), num_classes=cfg.vocab_size, bias=cfg.bias, tie_to=wte)
    if components == 1:
        final.proj.weight = wte  # tied: one parameter, as in GPT-2
    return Network(
        blocks=blocks,
        final_head=final,
        sample_input=torch.zeros(2, cfg.block_size, dtype=torch.long),  # (B, T)
        num_classes=cfg.vocab_size,
        head_options={
            "linear": {"bias": cfg.bias, "tie_to": wte},
            # Paper B.3: 2 blocks of 4 attention heads (the head's own count, not the model's).
            "transformer": {"dropout": cfg.dropout, "bias": cfg.bias, "tie_to": wte},
        },
        tied_block=0,  # wte lives in block 0: heads of the component holding it share it
    )
