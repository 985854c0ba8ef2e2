"""Transformer pieces (GPT-2 style, pre-LN) and the token heads built from them.

The layers live here rather than in ``models.gpt`` because both the GPT model (its blocks)
and the heads (paper B.3's transformer head) use them, and models depend on heads, not
the other way round.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import number
from ._registry import positive_int, register, token_shape

__all__ = ["CausalSelfAttention", "MLP", "TransformerBlock", "LMHead", "TransformerHead", "init_gpt_weights"]


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention through ``F.scaled_dot_product_attention``."""

    def __init__(self, *, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} is not divisible by n_head={n_head}; pick n_head dividing n_embd")
        self.n_head = n_head
        self.dropout = dropout
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, C // n_head)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, *, n_embd: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class TransformerBlock(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x)). (B, T, C) -> (B, T, C)."""

    def __init__(self, *, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd=n_embd, n_head=n_head, dropout=dropout, bias=bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd=n_embd, dropout=dropout, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class LMHead(nn.Module):
    """LayerNorm + linear projection to the vocabulary: (B, T, C) -> (B, T, V).

    The pre-LN residual stream is not normalised, so the projection normalises first, as
    GPT-2's final head does. ``proj.weight`` (V, C) may be tied to (K = 1) or copied from
    the token embedding by the caller.
    """

    def __init__(self, *, n_embd: int, vocab_size: int, bias: bool = True) -> None:
        super().__init__()
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, vocab_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.ln_f(x))


class TransformerHead(nn.Module):
    """Paper B.3's auxiliary head: ``n_blocks`` transformer blocks, then an :class:`LMHead`."""

    def __init__(self, *, n_embd: int, vocab_size: int, n_head: int, n_blocks: int = 2, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(TransformerBlock(n_embd=n_embd, n_head=n_head, dropout=dropout, bias=bias) for _ in range(n_blocks)))
        self.lm = LMHead(n_embd=n_embd, vocab_size=vocab_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm(self.blocks(x))


def init_gpt_weights(module: nn.Module, *, n_layer: int) -> None:
    """GPT-2 initialisation: N(0, 0.02) for linear and embedding weights, zero biases, and
    N(0, 0.02 / sqrt(2 n_layer)) for the projections that write into the residual stream
    (they are summed n_layer times on the way up)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
    for name, p in module.named_parameters():
        if name.endswith("c_proj.weight"):
            nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))


TIES = ("copy", "share")


def tie_weight_(proj: nn.Linear, tie_to: torch.Tensor | None, tie: str, head: str) -> None:
    """Make ``proj.weight`` (V, C) the token embedding ``tie_to``: the same parameter (``tie="share"``)
    or a trainable copy of it (``tie="copy"``).

    Sharing is possible only when the head lives in the component that holds the embedding
    (component 1): a parameter in two components would be updated by two optimizers.
    ``models.create`` picks "share" there and "copy" elsewhere (see ``models/gpt.py``).
    """
    if tie not in TIES:
        raise ValueError(f"head {head!r}: tie={tie!r}; choose one of {', '.join(map(repr, TIES))}")
    if tie_to is None:
        return
    if tuple(tie_to.shape) != tuple(proj.weight.shape):
        raise ValueError(
            f"head {head!r}: tie_to has shape {tuple(tie_to.shape)}; the projection needs (vocab, C) = {tuple(proj.weight.shape)}"
        )
    if tie == "share":
        if not isinstance(tie_to, nn.Parameter):
            raise ValueError(f"head {head!r}: tie='share' needs tie_to to be an nn.Parameter (the embedding's weight)")
        proj.weight = tie_to
        return
    with torch.no_grad():
        proj.weight.copy_(tie_to.detach())


@register("transformer")
def transformer(
    *,
    in_shape: tuple[int, ...],
    num_classes: int,
    n_head: int = 4,
    n_blocks: int = 2,
    dropout: float = 0.0,
    bias: bool = True,
    tie_to: torch.Tensor | None = None,
    tie: str = "copy",
    vocab_size: int | None = None,
) -> nn.Module:
    """Paper B.3: ``n_blocks`` (2) transformer blocks with ``n_head`` (4) attention heads, then
    LayerNorm + the output projection, which is the token embedding matrix.

    ``num_classes`` is the vocabulary size (``vocab_size``, if given, must agree); ``n_head``
    must divide C. ``tie_to``: the (vocab, C) token-embedding weight; ``tie``: "share" makes
    the projection that very parameter, "copy" a trainable copy (see :func:`tie_weight_`).
    """
    _, C = token_shape(in_shape, "transformer")
    positive_int(n_head, "n_head", "head 'transformer'")
    if C % n_head:
        raise ValueError(f"head 'transformer': n_head={n_head} does not divide the embedding width C={C}; pass head_kw={{'n_head': ...}} with a divisor of {C}")
    positive_int(n_blocks, "n_blocks", "head 'transformer'")
    _check_vocab(vocab_size, num_classes, "transformer")
    _check_dropout(dropout, "transformer")
    head = TransformerHead(n_embd=C, vocab_size=num_classes, n_head=n_head, n_blocks=n_blocks, dropout=dropout, bias=bias)
    init_gpt_weights(head, n_layer=n_blocks)
    tie_weight_(head.lm.proj, tie_to, tie, "transformer")
    return head


def token_linear(*, C: int, num_classes: int, bias: bool, tie_to: torch.Tensor | None, tie: str, vocab_size: int | None) -> LMHead:
    """The 'linear' head on tokens (see ``linear.py``): LayerNorm + projection, GPT-2 initialised."""
    _check_vocab(vocab_size, num_classes, "linear")
    head = LMHead(n_embd=C, vocab_size=num_classes, bias=bias)
    nn.init.normal_(head.proj.weight, mean=0.0, std=0.02)
    tie_weight_(head.proj, tie_to, tie, "linear")
    return head


def _check_vocab(vocab_size: int | None, num_classes: int, head: str) -> None:
    if vocab_size is not None and vocab_size != num_classes:
        raise ValueError(f"head {head!r}: vocab_size={vocab_size} disagrees with num_classes={num_classes}; for tokens they are the same")


def _check_dropout(p: float, head: str) -> None:
    number(p, f"head {head!r}: dropout={p!r} must be in [0, 1)", low=0.0, high=1.0, high_open=True)
