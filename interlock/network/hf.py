"""Hugging Face transformers adapters: a decoder-only language model as an interlock ComponentNet.

    from transformers import GPT2Config
    net = interlock.network.hf.adapt(GPT2Config(n_layer=4, n_embd=64, n_head=4), components=2, heads="lm")

``adapt`` takes a loaded ``*ForCausalLM`` model (GPT-2 or a Llama-style model: Llama, Mistral,
Qwen2 and others with ``model.embed_tokens / layers / norm / rotary_emb``) or a config to build
one from (random weights, nothing downloaded). The blocks are the model's own modules, trained
in place: block 0 is the embedding with the first decoder layer, every later decoder layer a
block of its own, and the final head is the final norm with the LM head. Each block makes what
the whole model's forward makes for its layers: positions 0..T-1 (GPT-2's learned position
embedding, Llama's rotary embedding from the model's own ``rotary_emb``) and the causal mask
from ``transformers.masking_utils.create_causal_mask`` with the model's config, so the split
model's logits are the unsplit model's (tested in float64). Inputs are (B, T) token ids without
padding (no attention mask, no cache): contiguous windows of text, as language-model training
feeds them.

Auxiliary heads (``heads=``): ``"lm"``, a copy of the model's final norm and LM head (a plain
LM head); a registered head for tokens, ``"transformer"`` (the interlocking paper's B.3: two
transformer blocks of 4 attention heads whose output projection is the embedding matrix) or
``"linear"``; the user's own modules; or None.

Tied embeddings (``tie_word_embeddings``, GPT-2's default): the embedding matrix is also the LM
head's projection. With K = 1 both stay one parameter. With K > 1 component 1 keeps the
embedding and the final head (component K) gets a copy; the copies form a tie group
(``net.ties``) whose gradients the engines sum every step (interlock.network.ties), so the tied model
trains unchanged. Auxiliary heads' projections join the group too ("lm", "linear" and
"transformer" heads: paper B.3's projection is the embedding matrix), except the head of
component 1, which shares the embedding's parameter itself. The user's model is left tied:
its LM head is still its embedding, which component 1 trains.

``transformers`` is an optional dependency (``pip install interlock[hf]``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from ..checks import count
from .net import ComponentNet, group_blocks

__all__ = ["adapt", "CausalLMHead", "GPT2Embedding", "LlamaEmbedding", "DecoderLayer"]


def _transformers():
    try:
        import transformers
    except ImportError as err:  # an optional extra
        raise ImportError("interlock.network.hf needs the transformers package: pip install 'interlock[hf]' "
                          "(or pip install transformers)") from err
    return transformers


def _causal_mask(config, h: torch.Tensor, pos: torch.Tensor):
    from transformers.masking_utils import create_causal_mask

    return create_causal_mask(config=config, inputs_embeds=h, attention_mask=None, cache=None, position_ids=pos)


def _positions(h: torch.Tensor) -> torch.Tensor:
    return torch.arange(h.shape[1], device=h.device).unsqueeze(0)  # (1, T): positions 0..T-1, no cache


class GPT2Embedding(nn.Module):
    """GPT-2's token + learned position embedding and dropout: (B, T) ids -> (B, T, C)."""

    def __init__(self, wte: nn.Embedding, wpe: nn.Embedding, drop: nn.Module) -> None:
        super().__init__()
        self.wte, self.wpe, self.drop = wte, wpe, drop

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] > self.wpe.num_embeddings:
            raise ValueError(f"sequence length {ids.shape[1]} exceeds the model's {self.wpe.num_embeddings} positions; "
                             f"use shorter windows (data.block_size)")
        h = self.wte(ids)
        return self.drop(h + self.wpe(_positions(h)))


class LlamaEmbedding(nn.Module):
    """A Llama-style token embedding: (B, T) ids -> (B, T, C) (positions enter each layer as rotary angles)."""

    def __init__(self, embed_tokens: nn.Embedding) -> None:
        super().__init__()
        self.embed_tokens = embed_tokens

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(ids)


class DecoderLayer(nn.Module):
    """One decoder layer called as the model's forward calls it, causal mask and positions included."""

    def __init__(self, layer: nn.Module, config, rotary: nn.Module | None = None) -> None:
        super().__init__()
        self.layer = layer
        self.config = config
        # Llama's rotary embedding has no parameters (only inv_freq): one module, referenced by every layer.
        self.__dict__["rotary"] = rotary  # not a child: its buffers are the model's, not this block's state

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        pos = _positions(h)
        mask = _causal_mask(self.config, h, pos)
        if self.rotary is None:  # GPT-2
            out = self.layer(h, attention_mask=mask, use_cache=False, position_ids=pos)
        else:
            out = self.layer(h, attention_mask=mask, position_ids=pos, use_cache=False,
                             position_embeddings=self.rotary(h, position_ids=pos))
        return out[0] if isinstance(out, tuple) else out  # (older transformers return a tuple)

    def _apply(self, fn, recurse=True):  # .to()/.double() also reach the rotary buffers
        if self.rotary is not None:
            self.rotary._apply(fn)
        return super()._apply(fn, recurse)


class CausalLMHead(nn.Module):
    """The final norm and the LM head: (B, T, C) -> (B, T, vocab)."""

    def __init__(self, norm: nn.Module, lm_head: nn.Linear) -> None:
        super().__init__()
        self.norm, self.lm_head = norm, lm_head

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(h))


def _parts(model):
    """(embedding block, decoder layers, final norm, lm_head, embedding weight) of a causal LM."""
    inner = getattr(model, "transformer", None)
    if inner is not None and hasattr(inner, "wte") and hasattr(inner, "h"):  # GPT-2
        layers = [DecoderLayer(layer, inner.config) for layer in inner.h]
        return GPT2Embedding(inner.wte, inner.wpe, inner.drop), layers, inner.ln_f, inner.wte.weight
    inner = getattr(model, "model", None)
    if inner is not None and all(hasattr(inner, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):  # Llama-style
        layers = [DecoderLayer(layer, inner.config, inner.rotary_emb) for layer in inner.layers]
        return LlamaEmbedding(inner.embed_tokens), layers, inner.norm, inner.embed_tokens.weight
    raise ValueError(
        f"interlock.network.hf.adapt knows GPT-2 (model.transformer.wte/h/ln_f) and Llama-style models "
        f"(model.model.embed_tokens/layers/norm/rotary_emb); {type(model).__name__} is neither: split it with "
        f"interlock.split(blocks=[...]) from your own wrappers"
    )


def adapt(
    model,
    *,
    components: int,
    heads: str | Sequence[nn.Module | None] | None = "lm",
    partition: str | Sequence[int] = "uniform",
    head_kw: dict | None = None,
    sample_length: int = 8,
) -> ComponentNet:
    """``model`` (a ``*ForCausalLM`` or a config to build one from) as ``components`` components.

    ``partition``: "uniform" (equal numbers of decoder layers), "flops" (balanced by forward
    FLOPs on a (2, ``sample_length``) batch) or K-1 cut indices into the blocks (block 0 is the
    embedding with layer 0, block i layer i). ``heads``: see the module docstring. ``head_kw``:
    options of registered heads (e.g. ``{"n_head": 4}``).
    """
    tf = _transformers()
    if isinstance(model, tf.PretrainedConfig):
        model = tf.AutoModelForCausalLM.from_config(model)
    if not isinstance(model, nn.Module):
        raise ValueError(f"adapt takes a transformers causal LM or its config, got {type(model).__name__}")
    embed, layers, norm, wte = _parts(model)
    lm_head = model.get_output_embeddings()
    if not layers:
        raise ValueError("the model has no decoder layers to split")
    tied = lm_head.weight is wte
    blocks: list[nn.Module] = [nn.Sequential(embed, layers[0]), *layers[1:]]
    K = components
    count(K, f"components={K!r}: the model has {len(blocks)} decoder layers; use 1 <= components <= {len(blocks)}", maximum=len(blocks))
    sample = torch.zeros(2, sample_length, dtype=torch.long, device=wte.device)
    if isinstance(partition, str):
        from .split import balanced_cuts, block_costs, uniform_cuts

        if partition == "uniform":
            cuts = uniform_cuts(blocks, K)
        elif partition == "flops":
            cuts = balanced_cuts(block_costs(blocks, sample, "flops"), K)
        else:
            raise ValueError(f"partition={partition!r}: use uniform, flops or a list of {K - 1} cut indices")
    else:
        cuts = tuple(partition)
    grouped = group_blocks(blocks, cuts)
    vocab, width = wte.shape
    ties: list[nn.Parameter] = [wte] if tied and K > 1 else []

    def tied_copy(linear: nn.Linear, k: int) -> None:
        """Make ``linear.weight`` the embedding (component 1: one parameter) or a tied copy of it."""
        if not tied:
            return
        if k == 0:
            linear.weight = wte
        else:
            linear.weight = nn.Parameter(wte.detach().clone())
            ties.append(linear.weight)

    final_lm = copy.deepcopy(lm_head) if K > 1 else lm_head
    if K > 1:
        tied_copy(final_lm, K - 1)
    final = CausalLMHead(norm, final_lm)
    aux: list[nn.Module | None] = []
    if heads is None:
        aux = [None] * (K - 1)
    elif isinstance(heads, str):
        for k in range(K - 1):
            if heads == "lm":
                head_lm = copy.deepcopy(lm_head)
                if tied:
                    tied_copy(head_lm, k)
                head = CausalLMHead(copy.deepcopy(norm), head_lm)
            else:
                from .. import heads as registry

                if heads not in registry.names():
                    raise ValueError(f"unknown head {heads!r}: use 'lm', a registered head ({', '.join(registry.names())}) or your own modules")
                opts = dict(head_kw or {})
                if tied:
                    opts.update(tie_to=wte, tie="share" if k == 0 else "copy")
                head = registry.create(heads, in_shape=(sample_length, width), num_classes=vocab, **opts)
                head.to(device=wte.device, dtype=wte.dtype)
                if tied and k > 0:
                    ties.append(_projection(head))
            aux.append(head)
    else:
        aux = list(heads)
        if len(aux) != K - 1:
            raise ValueError(f"heads has {len(aux)} modules; give one per auxiliary component ({K - 1}), None for none")
    net = ComponentNet(blocks=grouped, heads=[*aux, final], ties=[ties] if len(ties) > 1 else [])
    net.check(sample)
    return net


def _projection(head: nn.Module) -> nn.Parameter:
    """The (vocab, C) output projection of a registered token head (LMHead.proj)."""
    lm = getattr(head, "lm", head)
    return lm.proj.weight
