"""Strategies: pure descriptions of how each local loss's gradient flows.

A strategy knows nothing about processes, devices or transports. Given the number of
components K it produces a :class:`GradientPlan`: for every component k, the losses whose
gradient reaches its block parameters theta_k. Everything else (which gradient streams
exist, how far they travel, which heads must exist) is derived from that table, so that
the schedule, the workers and every engine share one source of truth.

Indices are 0-based in code (component 0 .. K-1) and 1-based in messages and docs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

__all__ = ["GradientPlan", "Strategy", "Interlocking", "Local", "EndToEnd"]

Mix = Literal["furthest", "sum"]
_MIXES = ("furthest", "sum")


@dataclass(frozen=True)
class GradientPlan:
    """Which loss trains which block, for K components.

    ``trains[k]`` is the sorted tuple of losses j (0-based) with dL_j/dtheta_k in
    grad theta_k. Head k is always trained on its own loss L_k when it exists.
    """

    trains: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        K = len(self.trains)
        if K < 1:
            raise ValueError("a gradient plan needs at least one component")
        for k, losses in enumerate(self.trains):
            for j in losses:
                if not k <= j < K:
                    # A loss can only train blocks at or below its own component.
                    raise ValueError(
                        f"component {k + 1} cannot be trained by loss L_{j + 1}: "
                        f"a loss trains only its own component and those below it"
                    )

    @property
    def num_components(self) -> int:
        return len(self.trains)

    @cached_property
    def reach(self) -> tuple[int | None, ...]:
        """reach[j]: the lowest component whose block loss L_j trains (None: L_j trains no block)."""
        low: list[int | None] = [None] * self.num_components
        for k in reversed(range(self.num_components)):
            for j in self.trains[k]:
                low[j] = k
        return tuple(low)

    @cached_property
    def width(self) -> int:
        """The interlock width n: one more than the most boundaries any stream crosses."""
        return 1 + max((j - r for j, r in enumerate(self.reach) if r is not None), default=0)

    def streams_at(self, k: int) -> tuple[int, ...]:
        """Losses whose gradient stream passes through component k (ascending)."""
        return tuple(j for j, r in enumerate(self.reach) if r is not None and r <= k <= j)

    def continuing(self, k: int) -> tuple[int, ...]:
        """Streams at k that go on to component k-1 (they need k's input gradient)."""
        return tuple(j for j in self.streams_at(k) if self.reach[j] < k)

    def hops_left(self, j: int, k: int) -> int:
        """Boundaries stream j still crosses below component k."""
        reach = self.reach[j]
        assert reach is not None and reach <= k <= j
        return k - reach

    def needs_head(self, j: int) -> bool:
        """Whether loss L_j trains any block, so head j must exist."""
        return self.reach[j] is not None


class Strategy(ABC):
    """How gradients flow; turned into a :class:`GradientPlan` for a given K."""

    @abstractmethod
    def plan(self, num_components: int) -> GradientPlan:
        """The gradient plan for ``num_components`` components (raises ValueError if K does not fit)."""

    @property
    def name(self) -> str:
        return repr(self)


@dataclass(frozen=True)
class Interlocking(Strategy):
    """n-wise interlocking backprop (Gomez et al. 2022).

    ``mix="furthest"``: grad theta_k = dL_{m(k)}/dtheta_k with m(k) = min(k+n-1, K)
    (the paper's wording and reference code). ``mix="sum"``: grad theta_k =
    sum over j = k..m(k) of dL_j/dtheta_k (the paper's section 3.1 reading).
    """

    n: int
    mix: Mix = "furthest"

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"Interlocking(n={self.n!r}): n must be an integer >= 1 (n=1 is local learning)")
        if self.mix not in _MIXES:
            raise ValueError(f"Interlocking(mix={self.mix!r}): mix must be one of {_MIXES}")

    def plan(self, num_components: int) -> GradientPlan:
        K = num_components
        if self.n > K:
            raise ValueError(f"n={self.n} exceeds the {K} components; use n <= {K}")
        trains = []
        for k in range(K):
            top = min(k + self.n - 1, K - 1)
            trains.append((top,) if self.mix == "furthest" else tuple(range(k, top + 1)))
        return GradientPlan(tuple(trains))

    @property
    def name(self) -> str:
        return f"{self.n}-wise" + ("" if self.mix == "furthest" else "-sum")


@dataclass(frozen=True)
class Local(Interlocking):
    """Local (greedy, 1-wise) learning: each block learns from its own head only (DGL)."""

    n: int = 1
    mix: Mix = "furthest"

    def __post_init__(self) -> None:
        if self.n != 1:
            raise ValueError("Local() is Interlocking(n=1); use Interlocking(n=...) for n > 1")
        super().__post_init__()

    @property
    def name(self) -> str:
        return "local"


@dataclass(frozen=True)
class EndToEnd(Strategy):
    """Ordinary backprop from the final loss; auxiliary heads, if any, only watch."""

    def plan(self, num_components: int) -> GradientPlan:
        return Interlocking(num_components, "furthest").plan(num_components)

    @property
    def name(self) -> str:
        return "end-to-end"
