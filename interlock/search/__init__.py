"""SEDONA (Pyeon et al. 2021): a differentiable, bilevel search for where to cut a network and which
auxiliary head each component gets; its output is an ordinary interlock config.

    relax.py       the relaxed search space: gated gradients (Eq. 4), mixed heads (Eq. 3)
    bilevel.py     inner differentiable SGD steps, the meta-gradient, one outer step (Alg. 1)
    memory.py      the weight memory of pretrained snapshots
    discretise.py  alpha, beta -> K-1 cuts and a head per cut -> a TrainConfig
    run.py         the whole search with checkpoints (``interlock search``)
"""

from .relax import CANDIDATES, Relaxed, SearchSpace, gates, mixed_gradients

__all__ = ["SearchSpace", "Relaxed", "gates", "mixed_gradients", "CANDIDATES"]
