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
from typing import TYPE_CHECKING, Literal

from ..checks import count, number

if TYPE_CHECKING:
    from ..network.net import ComponentNet

__all__ = [
    "GradientPlan", "Strategy", "Interlocking", "Local", "EndToEnd",
    "AsyncLocal", "Sequential", "LocalDouble", "Hogwild", "HogwildStashed",
]

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
    """How gradients flow; turned into a :class:`GradientPlan` for a given K.

    What runs a strategy's steps, and on which runtimes, is its registered spec
    (:mod:`interlock.engine.specs`), not the strategy's.
    """

    @abstractmethod
    def plan(self, num_components: int) -> GradientPlan:
        """The gradient plan for ``num_components`` components (raises ValueError if K does not fit)."""

    def prepare(self, net: "ComponentNet") -> "ComponentNet":
        """The network the engine trains: ``net`` itself, unless the strategy regroups its components."""
        return net

    def updates_per_component(self, num_components: int, total_steps: int) -> list[int] | None:
        """How many updates each component makes in a run of ``total_steps`` steps (sizes the LR
        schedules); None: every component updates at every step."""
        return None

    @property
    def couples_components(self) -> bool:
        """Whether a step's gradients of all components come from one coupled backward (a loss's gradient
        crosses the boundaries), so that one norm over all of them means something (global clipping)."""
        return False

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
        count(self.n, f"Interlocking(n={self.n!r}): n must be an integer >= 1 (n=1 is local learning)")
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

    @property
    def couples_components(self) -> bool:
        return self.n >= 2


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
    def couples_components(self) -> bool:
        return True

    @property
    def name(self) -> str:
        return "end-to-end"


# -- strategies whose steps are their own (interlock.engine.policies: replay, sequential, stashed, hogwild) ----------


_SCHEDULES = ("random", "round_robin")


def check_async_local(*, buffer_size, slowdown, slow_component, schedule, seed, max_reuse=0, prefix: str = "") -> None:
    """Raise a ValueError naming the first bad :class:`AsyncLocal` parameter as ``prefix + name``
    (the config's ``replay.`` section passes ``prefix="replay."``; there ``seed`` may be None)."""
    count(buffer_size, f"{prefix}buffer_size={buffer_size!r}: use an integer M >= 1 (batches each replay buffer holds)")
    number(slowdown, f"{prefix}slowdown={slowdown!r}: use a finite S > 0 (1 is no slow-down; 4 makes one component 4x slower)",
           low=0, low_open=True)
    count(slow_component, f"{prefix}slow_component={slow_component!r}: use a component number 1..K")
    if schedule not in _SCHEDULES:
        raise ValueError(f"{prefix}schedule={schedule!r}: use one of {', '.join(_SCHEDULES)}")
    count(seed, f"{prefix}seed={seed!r}: use an integer", minimum=None)
    count(max_reuse, f"{prefix}max_reuse={max_reuse!r}: use an integer r >= 1 (reads of one buffer entry at most), or 0 for no bound",
          minimum=0)


@dataclass(frozen=True)
class AsyncLocal(Strategy):
    """Asynchronous DGL with replay buffers (Belilovsky et al. 2020, Alg. 2).

    The gradient flow is local learning's; what differs is *when* each component trains. Each
    iteration draws one component j from a pmf (uniform, except ``slow_component`` whose
    probability is divided by ``slowdown`` S, then renormalised); component 1 reads a fresh
    batch, component j > 1 reads its input from the replay buffer B_{j-1} of ``buffer_size`` M
    batches written by component j-1. ``schedule="round_robin"`` draws 1, 2, ..., K in turn
    instead (with M = 1 that is synchronous ``Local()``, bit for bit). ``seed`` seeds the draws.
    Run by :class:`interlock.engine.policies.replay.ReplayDrawn` in one process (which documents the buffer
    policy and quotas) and by :class:`~interlock.engine.policies.replay.ReplayRanks` with one process per
    component, where each rank trains at its own real pace and S slows one rank down for real.
    """

    buffer_size: int = 1
    slowdown: float = 1.0
    slow_component: int = 1
    schedule: Literal["random", "round_robin"] = "random"
    seed: int = 0
    max_reuse: int = 0  # reads of one buffer entry at most (0: no bound, as the reference code's default)


    def __post_init__(self) -> None:
        check_async_local(buffer_size=self.buffer_size, slowdown=self.slowdown, slow_component=self.slow_component,
                          schedule=self.schedule, seed=self.seed, max_reuse=self.max_reuse)

    def plan(self, num_components: int) -> GradientPlan:
        if self.slow_component > num_components:
            raise ValueError(
                f"slow_component={self.slow_component} is out of range for {num_components} components; "
                f"use 1..{num_components}"
            )
        return Local().plan(num_components)

    def pmf(self, num_components: int) -> tuple[float, ...]:
        """p_k: uniform, except the slow component's weight divided by S; renormalised."""
        self.plan(num_components)  # range check
        w = [1.0] * num_components
        w[self.slow_component - 1] /= float(self.slowdown)
        total = sum(w)
        return tuple(v / total for v in w)

    @property
    def name(self) -> str:
        return "async-local"


@dataclass(frozen=True)
class Sequential(Strategy):
    """Sequential greedy training (Belilovsky et al. 2019; DGL's Fig. 3 baseline).

    Component 1 trains with its head for the first 1/K of the run's steps, is frozen, then
    component 2 trains on component 1's outputs, and so on: stage k gets ``total_steps / K``
    steps (earlier stages take the remainder). A frozen component runs in eval mode without
    autograd: its parameters and BatchNorm statistics never move again. Run by
    :class:`interlock.engine.policies.sequential.SequentialPolicy`.
    """


    def plan(self, num_components: int) -> GradientPlan:
        return Local().plan(num_components)

    def updates_per_component(self, num_components: int, total_steps: int) -> list[int]:
        return stage_lengths(total_steps, num_components)

    @property
    def name(self) -> str:
        return "sequential"


def stage_lengths(total_steps: int, num_components: int) -> list[int]:
    """Steps of each sequential stage: as equal as possible, earlier stages take the remainder."""
    if total_steps < num_components:
        raise ValueError(
            f"sequential training of {num_components} components needs at least {num_components} steps "
            f"(one stage each); got {total_steps}: raise steps or epochs"
        )
    base, extra = divmod(total_steps, num_components)
    return [base + (1 if k < extra else 0) for k in range(num_components)]


@dataclass(frozen=True)
class LocalDouble(Strategy):
    """1-wise double size (interlocking paper, Fig. 4 right): local learning with adjacent pairs merged.

    Components (1, 2), (3, 4), ... become one component each (K -> ceil(K/2); an odd K leaves the
    last component alone); a merged pair keeps the head of its upper member, the lower member's
    head is dropped. The modules are the network's own, so training the merged network trains
    them in place.
    """


    def plan(self, num_components: int) -> GradientPlan:
        return Local().plan(num_components)

    def prepare(self, net: "ComponentNet") -> "ComponentNet":
        from ..network.net import merge_adjacent

        return merge_adjacent(net, 2)

    @property
    def name(self) -> str:
        return "local-double"


@dataclass(frozen=True)
class Hogwild(Strategy):
    """The interlocking paper's Hogwild baseline (sec. 2, Fig. 3, Table 4): a pipeline that never waits
    and stashes no weights.

    Every component runs the forward of each batch as soon as it can and applies each gradient as
    soon as it arrives. The backward of batch t on component k uses the weights component k holds
    *when the backward reaches it*, on the activation its forward computed with older weights:
    :func:`mismatch` gives how many of its own updates lie between the two, 2(K - k) (Fig. 3: the
    fourth batch's forward on component 1 of 3 at theta_0, its backward at theta_3). Run by
    :class:`interlock.engine.policies.hogwild.HogwildPolicy`, in one process only.
    """


    def plan(self, num_components: int) -> GradientPlan:
        return EndToEnd().plan(num_components)

    @property
    def name(self) -> str:
        return "hogwild"


@dataclass(frozen=True)
class HogwildStashed(Strategy):
    """Stale end-to-end gradients with weight stashing (PipeDream), not the paper's Hogwild.

    Component k of K applies the gradient of batch t at step t + (K - k), to weights that moved
    since batch t's forward pass, but the gradient itself is computed at the weights that forward
    used (stashed); :func:`staleness` derives the delay. Run by
    :class:`~interlock.engine.policies.stashed.StashedLocal` in one process and :class:`~interlock.engine.policies.stashed.StashedRanks`
    with one process per component (a real pipeline with weight stashing).
    """


    def plan(self, num_components: int) -> GradientPlan:
        return EndToEnd().plan(num_components)

    @property
    def name(self) -> str:
        return "hogwild-stashed"


def staleness(num_components: int) -> tuple[int, ...]:
    """d_k = K - k: how many steps late component k (1-based) applies a batch's gradient (``HogwildStashed``).

    The pipeline that never waits, with the paper's time model (a forward and a backward each
    take one time unit on a device; a device does one at a time): batch t enters component 1 at
    time 2t, so its forward runs on component k at 2t + k - 1 and reaches the top at
    2t + K - 1; the top computes its loss and backward at 2t + K; the gradient reaches component
    k at 2t + 2K - k. Forwards on k fall at times of parity k - 1 and backwards at parity k, so
    each device alternates forward and backward without waiting. By the time component k
    applies batch t's gradient (2t + 2K - k) it has run the forwards of batches up to
    t + K - k, and applied the gradients of batches up to t - 1; batch t + (K - k) is the next
    forward, so the gradient of batch t lands at step t + (K - k): a delay of K - k updates.
    The top component (k = K) is never late. (This pipeline admits one batch every two time
    units; Fig. 3's pipeline forwards as far ahead as it can, see :func:`mismatch`.)
    """
    return tuple(num_components - 1 - k for k in range(num_components))


def mismatch(num_components: int) -> tuple[int, ...]:
    """D_k = 2(K - k): the updates component k (1-based) makes between a batch's forward and its backward
    in the paper's Hogwild (Fig. 3), in the steady state.

    Fig. 3's pipeline: a forward or a backward takes one slot on a device; a device runs a
    backward whenever one has arrived, else the next forward (it never idles, so it forwards as
    far ahead as the batches allow). Batch 1 reaches the top at slot K - 1 and its backward
    reaches component k at slot 2K - k, so before its first backward component k has run the
    forwards of batches 1 .. 2(K - k) + 1; from then on it alternates backward and forward, one
    update per backward. Batch b's backward comes at slot 2K - k + 2(b - 1) and its forward after
    b - 2(K - k) - 1 updates (the first 2(K - k) + 1 forwards at theta_0): 2(K - k) updates apart,
    fewer only in the warm-up (batch b <= 2(K - k) at theta_0 and theta_{b-1}). For K = 3 this
    gives the figure's rows of weight versions (tests/test_hogwild.py) and its caption's example,
    the fourth batch's forward on component 1 at theta_0 and its backward at theta_3.
    """
    return tuple(2 * (num_components - 1 - k) for k in range(num_components))
