"""Peak memory per component: what autograd keeps for the backward pass, and what training state holds.

A component's memory is its training state (parameters, their gradients, the optimizer's state:
:func:`state_bytes`) plus the activations autograd saves for the backward pass, which rise with
each forward still waiting for its backward (micro-batches in flight, streams not yet applied)
and fall as backward passes free them. The second part is what the strategies differ in: a
1-wise component frees its graph as soon as its own head has been applied, an end-to-end one
holds it until the gradient has come back down from the top.

:class:`SavedTensorMeter` counts it exactly on any device: a ``saved_tensors_hooks`` pair sees
every tensor autograd saves; each storage is counted once however many ops save it, and leaves
the count when the last of its saved references is freed (when the graph is). Parameters saved by
an op (a linear layer keeps its weight) are training state, not activations, and are left out.
On a GPU the CUDA allocator's peak of the process is recorded as well (one component per rank).

The meters are per process, one per component, switched on with :func:`enable` (``track.memory``):
the worker wraps each action in its component's hooks while they are on. The hooks cost a Python
call per saved tensor; off, nothing is wrapped.
"""

from __future__ import annotations

import torch

__all__ = ["SavedTensorMeter", "enable", "enabled", "meter", "state_bytes", "reset"]

_METERS: dict[int, "SavedTensorMeter"] = {}
_ENABLED = False


class _Saved:
    """One saved reference; its storage leaves the meter when the last reference to it is freed."""

    __slots__ = ("tensor", "meter", "key")

    def __init__(self, tensor: torch.Tensor, meter: "SavedTensorMeter", key) -> None:
        self.tensor, self.meter, self.key = tensor, meter, key

    def __del__(self) -> None:
        self.meter._release(self.key)


class SavedTensorMeter:
    """Live and peak bytes of the tensors autograd saves while :meth:`hooks` is active."""

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0
        self._refs: dict[tuple, list[int]] = {}  # storage key -> [references, bytes]
        self._param_keys: set[tuple] = set()

    def exclude(self, params) -> None:
        """Storages of these tensors (the component's parameters) are training state, never counted here."""
        self._param_keys = {_key(p) for p in params}

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)

    def reset_peak(self) -> None:
        self.peak = self.live

    def _pack(self, t: torch.Tensor):
        key = _key(t)
        if key in self._param_keys or isinstance(t, torch.nn.Parameter):
            return t
        entry = self._refs.get(key)
        if entry is None:
            nbytes = t.untyped_storage().nbytes()
            self._refs[key] = [1, nbytes]
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        else:
            entry[0] += 1
        return _Saved(t, self, key)

    def _release(self, key) -> None:
        entry = self._refs.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self._refs[key]


def _unpack(saved):
    return saved.tensor if isinstance(saved, _Saved) else saved


def _key(t: torch.Tensor) -> tuple:
    storage = t.untyped_storage()
    return (t.device, storage.data_ptr(), storage.nbytes())


def enable(on: bool = True) -> None:
    """Switch the per-component meters of this process on (a run with ``track.memory``) or off."""
    global _ENABLED
    _ENABLED = on
    if not on:
        _METERS.clear()


def enabled() -> bool:
    return _ENABLED


def meter(k: int, params=()) -> SavedTensorMeter:
    """Component k's meter in this process, made on first use leaving out ``params`` (the component's)."""
    m = _METERS.get(k)
    if m is None:
        m = _METERS[k] = SavedTensorMeter()
        m.exclude(params)
    return m


def reset() -> None:
    """Forget every meter (a new run in the same process starts from zero)."""
    _METERS.clear()


def state_bytes(optimizer: torch.optim.Optimizer | None) -> int:
    """Bytes of the parameters ``optimizer`` trains (each counted once), their gradients and its state tensors."""
    if optimizer is None:
        return 0
    seen, total = set(), 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) in seen:
                continue
            seen.add(id(p))
            total += p.numel() * p.element_size()
            if p.grad is not None:
                total += p.grad.numel() * p.grad.element_size()
    for state in optimizer.state.values():
        total += sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor))
    return total
