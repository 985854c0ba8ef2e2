"""Every private PyTorch API interlock uses, in one place, each checked against the running torch.

PyTorch offers three things interlock needs only through private names:

- the graph analysis and weight pass behind the zero-bubble split of a backward pass
  (``torch.distributed.pipelining._backward``), which :mod:`interlock.core.backward` builds on;
- the zero-bubble schedule's order of actions on one rank
  (``ScheduleInterleavedZeroBubble._calculate_single_rank_operations``), which the pipeline
  clock replays instead of re-deriving PyTorch's schedule;
- whether the autograd engine will execute a graph node in the backward pass now running
  (``torch._C._will_engine_execute_node``), with which an emulated block sleeps only for the
  gradients a pass asks for;
- the ``isend`` that ``torch.distributed.pipelining``'s schedules call (``torch.distributed.isend``,
  which ``torch.distributed.distributed_c10d`` also holds), replaced for the duration of
  :func:`slow_isend_for_pipelining` only: an emulated slow link under the pipeline engine.

- ``torch._functorch.config.donated_buffer``, turned off while a compiled block or head traces its
  graph (:func:`no_donated_buffers`): a graph compiled with donated buffers frees saved tensors in
  its first backward, which refuses ``retain_graph=True``, and a component backpropagates several
  streams through one graph. torch.compile offers no public option for it (its ``options`` are
  inductor's; donation is AOTAutograd's).

Nothing else in interlock touches a private torch name. :func:`check` looks each one up and
reports the ones missing or changed, naming the function and the torch version;
``tests/test_torch_compat.py`` runs it, so a torch release that moves one fails there, loudly,
rather than somewhere deep in a run.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import types
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .runtime.links import SlowLink

__all__ = ["TorchCompatError", "check", "pipelining_backward", "zero_bubble_rank_actions", "will_engine_execute_node",
           "slow_isend_for_pipelining", "no_donated_buffers"]


class TorchCompatError(RuntimeError):
    """A private PyTorch API interlock relies on is missing or changed in this torch."""


def _fail(name: str, why: str) -> TorchCompatError:
    return TorchCompatError(
        f"{name}: {why} in torch {torch.__version__}. interlock uses this private PyTorch API "
        "(interlock/_torch_compat.py); install a torch it was tested with (2.4 to 2.13) or adapt that module.")


_BACKWARD_NAMES = ("_get_grad_fn_or_grad_acc", "construct_reverse_graph", "get_param_groups", "stage_backward_weight")


@functools.cache
def pipelining_backward() -> types.SimpleNamespace:
    """The zero-bubble split's helpers: ``_get_grad_fn_or_grad_acc``, ``construct_reverse_graph``,
    ``get_param_groups``, ``stage_backward_weight`` (torch.distributed.pipelining._backward)."""
    try:
        from torch.distributed.pipelining import _backward
    except ImportError as e:  # pragma: no cover - depends on the torch build
        raise _fail("torch.distributed.pipelining._backward", f"cannot be imported ({e})") from e
    missing = [n for n in _BACKWARD_NAMES if not callable(getattr(_backward, n, None))]
    if missing:
        raise _fail(f"torch.distributed.pipelining._backward.{missing[0]}", "is missing")
    return types.SimpleNamespace(**{n.lstrip("_"): getattr(_backward, n) for n in _BACKWARD_NAMES})


def zero_bubble_rank_actions(ranks: int, microbatches: int, rank: int) -> list:
    """PyTorch's ZB1P order of actions on ``rank`` (one stage per rank), as its schedule builds it.

    ``_calculate_single_rank_operations`` is a method that reads four attributes of the
    schedule; a stand-in object holding just those avoids building a real schedule (which
    needs a process group and stages).
    """
    from torch.distributed.pipelining import schedules

    fn = getattr(schedules.ScheduleInterleavedZeroBubble, "_calculate_single_rank_operations", None)
    if not callable(fn):
        raise _fail("ScheduleInterleavedZeroBubble._calculate_single_rank_operations", "is missing")
    rounds = max(1, microbatches // ranks)
    state = types.SimpleNamespace(n_local_stages=1, microbatches_per_round=microbatches // rounds,
                                  pp_group_size=ranks, _n_microbatches=microbatches)
    try:
        return list(fn(state, rank))
    except AttributeError as e:  # the method now reads an attribute the stand-in lacks
        raise _fail("ScheduleInterleavedZeroBubble._calculate_single_rank_operations",
                    f"reads schedule state interlock does not provide ({e})") from e


def will_engine_execute_node(node) -> bool:
    """Whether the backward pass now running will execute ``node`` (torch._C._will_engine_execute_node)."""
    fn: Callable | None = getattr(torch._C, "_will_engine_execute_node", None)
    if fn is None:
        raise _fail("torch._C._will_engine_execute_node", "is missing")
    return bool(fn(node))


@contextlib.contextmanager
def slow_isend_for_pipelining(link: SlowLink):
    """Within the block, every ``torch.distributed.isend`` of this process crosses the emulated ``link``
    (:mod:`interlock.runtime.links`).

    Why a patch: ``torch.distributed.pipelining``'s schedules build their sends as
    ``P2POp(dist.isend, ...)`` and run them themselves; PyTorch offers no hook to put a link in
    between. So for the pipeline engine alone ``isend`` is replaced, in both modules that hold it
    (``P2POp`` and ``batch_isend_irecv`` compare ops against ``distributed_c10d.isend``).
    Interlock's own transports never need this: they take the link where they send
    (``TorchDistributedTransport(link=...)``); do not give them a link as well inside this block,
    or their messages are held twice.
    """
    import torch.distributed as dist
    import torch.distributed.distributed_c10d as c10d

    from .runtime.links import LinkSender, SlowLink

    if not isinstance(link, SlowLink):
        raise TypeError(f"link={link!r}: give an interlock.runtime.links.SlowLink")
    if c10d.isend is not dist.isend:
        raise _fail("torch.distributed.distributed_c10d.isend", "is not torch.distributed.isend (already patched?)")
    real = c10d.isend
    sender = LinkSender(link)

    def isend(tensor: torch.Tensor, dst=None, group=None, tag=0, group_dst=None):
        (sent,) = sender.submit((dst, group_dst, id(group)), tensor.numel() * tensor.element_size(),
                                [lambda: real(tensor, dst=dst, group=group, tag=tag, group_dst=group_dst)])
        return sent

    c10d.isend = dist.isend = isend
    try:
        yield
    finally:
        c10d.isend = dist.isend = real


def no_donated_buffers():
    """torch.compile builds graphs whose backward may run with ``retain_graph=True`` from now on, in this process.

    Process-wide, not a context: AOTAutograd reads the flag when it builds the backward, which may be
    after the forward call that traced the graph returned."""
    import torch._functorch.config as functorch_config

    if hasattr(functorch_config, "donated_buffer"):  # (a torch without buffer donation: nothing to turn off)
        functorch_config.donated_buffer = False
    return contextlib.nullcontext()


def check() -> list[str]:
    """One line per private API that is missing or changed in this torch; empty when all are usable."""
    problems = []

    def probe(fn):
        try:
            return fn()
        except TorchCompatError as e:
            problems.append(str(e))

    backward = probe(pipelining_backward)
    if backward is not None:
        params = list(inspect.signature(backward.stage_backward_weight).parameters)
        if params[:3] != ["weights", "param_groups", "retain_graph"]:
            problems.append(str(_fail("torch.distributed.pipelining._backward.stage_backward_weight",
                                      f"takes ({', '.join(params)}), not (weights, param_groups, retain_graph)")))
    actions = probe(lambda: zero_bubble_rank_actions(2, 2, 0))
    if actions is not None and not all(hasattr(a, "computation_type") and hasattr(a, "microbatch_index")
                                       for a in actions if a is not None):
        problems.append(str(_fail("ScheduleInterleavedZeroBubble._calculate_single_rank_operations",
                                  "returns actions without computation_type and microbatch_index")))
    if not callable(getattr(torch._C, "_will_engine_execute_node", None)):
        problems.append(str(_fail("torch._C._will_engine_execute_node", "is missing")))
    import torch.distributed as dist

    if dist.is_available():
        import torch.distributed.distributed_c10d as c10d

        isend_params = list(inspect.signature(c10d.isend).parameters)
        if c10d.isend is not dist.isend or isend_params[:5] != ["tensor", "dst", "group", "tag", "group_dst"]:
            problems.append(str(_fail("torch.distributed.distributed_c10d.isend",
                                      f"is not torch.distributed.isend(tensor, dst, group, tag, group_dst) (takes "
                                      f"{', '.join(isend_params)})")))
    return problems
