"""Weight decay off for norms' weights, biases and embeddings (as nanoGPT and torchtitan do).

Decay pulls a weight towards zero; for a norm's scale, a bias or an embedding that is a
bias towards a degenerate value, not a regulariser, so these go in a group with
``weight_decay=0``. The rule reads module types and names, not shapes, so it says why a
parameter is exempt.
"""

from __future__ import annotations

from torch import nn

__all__ = ["NO_DECAY_MODULES", "split_no_decay", "param_groups"]

# Modules whose weights are exempt from decay: every normalisation layer and embeddings.
NO_DECAY_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.RMSNorm, nn.Embedding,
)


def split_no_decay(modules: list[nn.Module]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decayed, exempt) trainable parameters of ``modules``, each once, in module order."""
    decay, exempt, seen = [], [], set()
    for module in modules:
        for sub in module.modules():
            for name, p in sub.named_parameters(recurse=False):
                if not p.requires_grad or id(p) in seen:
                    continue
                seen.add(id(p))
                (exempt if isinstance(sub, NO_DECAY_MODULES) or name.endswith("bias") else decay).append(p)
    return decay, exempt


def param_groups(modules: list[nn.Module], weight_decay: float) -> list[dict]:
    """Optimizer parameter groups: the decayed ones at ``weight_decay``, the exempt ones at 0."""
    decay, exempt = split_no_decay(modules)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]
