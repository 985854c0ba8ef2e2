"""The whole SEDONA search from a TrainConfig: pretraining into the weight memory, the outer steps,
atomic checkpoints (resume equals uninterrupted), and the outputs.

A run directory holds::

    config.json           the search's config
    metrics.jsonl         one row per logged step: kind pretrain | meta (losses, errors, step_time_s)
    search.json           alpha, beta and their softmaxes per block (written at every checkpoint)
    search.png            softmax(alpha_l)_1 per block, the cuts chosen for each requested K marked
    config-K<K>.json      the discretised config for each requested K (``interlock train`` runs it)
    checkpoints/search_state.pt   everything needed to continue (replaced atomically)
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..training.config import TrainConfig
from ..training.metrics import MetricsWriter, atomic_write_text
from .bilevel import InnerSGD, meta_gradient, ordinary_step, snapshot_of
from .discretise import Decision, config_values, decide, discretised_config
from .layers import stem_blocks
from .memory import Snapshot, WeightMemory
from .relax import SearchSpace

__all__ = ["Search", "run_search", "write_outputs"]

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


class _Stream:
    """Batch n of a deterministic sequence, epoch after epoch; restartable at any n (for resume)."""

    def __init__(self, make: Callable[[int, int], Iterator[Batch]], per_epoch: int, device: str) -> None:
        self.make, self.per_epoch, self.device = make, per_epoch, device
        self.n, self._it = 0, None

    def next(self) -> Batch:
        if self._it is None:
            self._it = self.make(self.n // self.per_epoch, self.n % self.per_epoch)
        try:
            x, y = next(self._it)
        except StopIteration:
            self._it = None
            self.n = (self.n // self.per_epoch + 1) * self.per_epoch
            return self.next()
        self.n += 1
        if self.n % self.per_epoch == 0:
            self._it = None
        return x.to(self.device), y.to(self.device)

    def seek(self, n: int) -> None:
        self.n, self._it = n, None


class Search:
    """SEDONA's state and its two phases. ``train``/``val`` are :class:`_Stream`-like (``next()``,
    ``n``, ``seek``); ``rank_batches`` the validation batches (the whole split) that rank pretraining snapshots."""

    def __init__(self, config: TrainConfig, space: SearchSpace, *, train, val, rank_batches: Sequence[Batch],
                 loss_fn: Callable, device: str = "cpu") -> None:
        s, o = config.search, config.optim
        if o.name != "sgd" or o.nesterov:
            raise ValueError(f"the search's inner steps are SGD with heavy-ball momentum (as the paper's); set optim.name=sgd "
                             f"and optim.nesterov=false (got optim.name={o.name}, nesterov={o.nesterov})")
        from ..training.loop import lr_multiplier

        self.config, self.space, self.device = config, space.to(device).train(), device
        self.train, self.val, self.rank_batches, self.loss_fn = train, val, list(rank_batches), loss_fn
        self.opt = InnerSGD(lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                            schedule=lr_multiplier(config.lr, s.pretrain_steps))
        L, M = space.num_blocks, space.num_heads
        dtype = next(space.parameters()).dtype
        self.alpha = torch.zeros(L - 1, 2, device=device, dtype=dtype, requires_grad=True)
        self.beta = torch.zeros(L - 1, M, device=device, dtype=dtype, requires_grad=True)
        self.meta_opt = torch.optim.Adam([self.alpha, self.beta], lr=s.meta_lr, betas=s.meta_betas, weight_decay=s.meta_weight_decay)
        self.memory = WeightMemory(s.memory_size)
        self.generator = torch.Generator().manual_seed(config.seed)  # draws snapshots from the memory
        self.live: Snapshot | None = snapshot_of(self.space)  # the pretraining run's weights
        self.pretrained = 0  # pretraining steps done
        self.meta_done = 0  # outer steps done

    # -- phases ---------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        s = self.config.search
        return self.pretrained >= s.pretrain_steps and self.meta_done >= s.meta_steps

    def pretrain_step(self) -> dict:
        """One weight update with alpha = beta = 0; every snapshot_every steps a ranked snapshot."""
        t0 = time.perf_counter()
        self.live, losses = ordinary_step(self.space, self.live, torch.zeros_like(self.alpha), torch.zeros_like(self.beta),
                                          self.train.next(), self.opt, self.loss_fn)
        self.pretrained += 1
        row = {"kind": "pretrain", "step": self.pretrained, "loss_final": float(losses[-1]),
               "lr": self.opt.lr_at(self.live.step - 1)}
        if self.pretrained % self.config.search.snapshot_interval == 0:
            self.live.val_error = self.rank(self.live)
            kept = Snapshot(step=self.live.step, params=self.live.params,
                            buffers={k: v.clone() for k, v in self.live.buffers.items()},  # the live run moves them on
                            momentum=self.live.momentum, val_error=self.live.val_error)
            self.memory.put(kept, evict="worst")
            row["val_error"] = self.live.val_error
        row["step_time_s"] = time.perf_counter() - t0
        return row

    def meta_step(self) -> dict:
        """Alg. 1: draw a snapshot, T differentiable steps, Adam on (alpha, beta), one ordinary step, write back."""
        t0 = time.perf_counter()
        s = self.config.search
        snap = self.memory.take(self.generator)
        train = [self.train.next() for _ in range(s.inner_steps)]
        val = [self.val.next() for _ in range(s.val_batches)]
        result = meta_gradient(self.space, snap, self.alpha, self.beta, train, val, self.opt, self.loss_fn)
        self.meta_opt.zero_grad()
        self.alpha.grad, self.beta.grad = result.grad_alpha.detach(), result.grad_beta.detach()
        self.meta_opt.step()
        new, losses = ordinary_step(self.space, snap, self.alpha, self.beta, self.train.next(), self.opt, self.loss_fn)
        new.val_error = result.val_error
        self.memory.put(new, evict="oldest")
        self.meta_done += 1
        local = torch.softmax(self.alpha.detach(), -1)[:, 0]
        return {"kind": "meta", "step": self.pretrained + self.meta_done, "meta_step": self.meta_done, "meta_loss": result.loss,
                "val_error": result.val_error, "snapshot_step": snap.step, "loss_final": float(losses[-1]),
                "local_weight_mean": float(local.mean()), "step_time_s": time.perf_counter() - t0}

    def rank(self, snap: Snapshot) -> float:
        """Top-1 error of the final classifier on the ranking batches, BatchNorm on running statistics."""
        self.space.eval()
        try:
            wrong = count = 0
            with torch.no_grad():
                for x, y in self.rank_batches:
                    logits = functional_call(self.space, {**snap.params, **snap.buffers}, (x,))
                    wrong += int((logits.argmax(-1) != y).sum())
                    count += len(y)
            return wrong / max(1, count)
        finally:
            self.space.train()

    def step(self) -> dict:
        return self.pretrain_step() if self.pretrained < self.config.search.pretrain_steps else self.meta_step()

    # -- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"alpha": self.alpha.detach().cpu(), "beta": self.beta.detach().cpu(), "meta_opt": self.meta_opt.state_dict(),
                "memory": self.memory.state_dict(), "generator": self.generator.get_state(),
                "live": None if self.live is None else self.live.to_dict(), "pretrained": self.pretrained,
                "meta_done": self.meta_done, "train_n": self.train.n, "val_n": self.val.n}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.alpha.copy_(state["alpha"])
            self.beta.copy_(state["beta"])
        self.meta_opt.load_state_dict(state["meta_opt"])
        self.memory.load_state_dict(_to(state["memory"], self.device))
        self.generator.set_state(state["generator"])
        self.live = None if state["live"] is None else Snapshot(**_to(state["live"], self.device))
        self.pretrained, self.meta_done = int(state["pretrained"]), int(state["meta_done"])
        self.train.seek(int(state["train_n"]))
        self.val.seek(int(state["val_n"]))

    def result(self) -> dict:
        """alpha, beta and their softmaxes per block (JSON-ready): what search.json holds."""
        alpha, beta = self.alpha.detach().cpu().double(), self.beta.detach().cpu().double()
        return {"model": self.config.model.name, "blocks": self.space.num_blocks, "heads": list(self.space.head_names),
                "pretrain_steps_done": self.pretrained, "meta_steps_done": self.meta_done,
                "alpha": alpha.tolist(), "beta": beta.tolist(),
                "local_weight": torch.softmax(alpha, -1)[:, 0].tolist(), "head_probs": torch.softmax(beta, -1).tolist()}


def _to(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to(v, device) for v in obj]
    return obj


# -- from a config ------------------------------------------------------------------------


def _image_streams(config: TrainConfig):
    """(task, train stream, val stream, ranking batches) with search.val_fraction of the training split held out."""
    from ..data import iterate_batches
    from ..data.images import load_images
    from ..training.tasks import build_task, resolve_data

    data = resolve_data(config.data, seed=config.seed)
    if data.is_text:
        raise ValueError(f"the search needs an image data set (its candidate heads are convolutional); data.name={data.name}")
    n = len(load_images(data.name, data.root, val_size=0, seed=config.seed).train_x)
    val_size = int(round(config.search.val_fraction * n))
    task = build_task(replace(data, val_size=val_size), seed=config.seed)
    d, s = task.data, config.search
    if len(d.val_x) < s.val_batch_size:
        raise ValueError(f"search.val_batch_size={s.val_batch_size} exceeds the {len(d.val_x)} validation images "
                         f"(search.val_fraction={s.val_fraction} of {n}); lower it")
    train = _Stream(lambda epoch, start: iter(task.train_batches(epoch=epoch, start_step=start)), task.steps_per_epoch, config.device)
    per_val_epoch = len(d.val_x) // s.val_batch_size

    def val_batches(epoch, start):
        return iterate_batches(d.val_x, d.val_y, s.val_batch_size, shuffle=True, seed=config.seed + 1, epoch=epoch,
                               start_step=start, drop_last=True, mean=d.mean, std=d.std)

    val = _Stream(val_batches, per_val_epoch, config.device)
    # Snapshots are ranked on the whole validation split, as appendix E.1 evaluates them (every 80
    # pretraining iterations, on the validation set), not on the meta-loss's few batches.
    ranking = iterate_batches(d.val_x, d.val_y, s.val_batch_size, drop_last=False, mean=d.mean, std=d.std)
    rank_batches = [(x.to(config.device), y.to(config.device)) for x, y in ranking]
    return task, train, val, rank_batches


def build_search(config: TrainConfig) -> Search:
    task, train, val, rank_batches = _image_streams(config)
    torch.manual_seed(config.seed)
    space = SearchSpace.from_model(config.model.name, heads=config.search.heads, head_kw=config.model.head_kw,
                                   **{**task.model_kwargs, **config.model.kwargs})
    smoothing = config.label_smoothing
    return Search(config, space, train=train, val=val, rank_batches=rank_batches,
                  loss_fn=lambda logits, y: F.cross_entropy(logits, y, label_smoothing=smoothing), device=config.device)


def _checkpoint(run_dir: Path, search: Search) -> None:
    from ..training.rundir import explain_write_error

    folder = run_dir / "checkpoints"
    tmp = folder / f".search_state.pt.tmp{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(search.state_dict(), tmp)
        os.replace(tmp, folder / "search_state.pt")
    except Exception as err:  # a full disk or a read-only folder: no temporary left, and say which
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise explain_write_error(err, folder / "search_state.pt") from err
    atomic_write_text(run_dir / "search.json", json.dumps(search.result(), indent=2) + "\n")


def run_search(config: TrainConfig, *, components: Sequence[int] = (), resume: bool = False,
               on_row: Callable[[dict], None] | None = None, stop_after: int | None = None) -> dict:
    """The search in ``config.run_dir``; returns search.json's contents (and writes the outputs).

    ``resume``: continue from checkpoints/search_state.pt (the config must be the one saved).
    ``stop_after``: stop after this many steps in all (pretraining and meta) without final outputs
    (tests interrupt a run with it).
    """
    if config.threads:  # as train.run does: threads=1 keeps a loaded CPU from oversubscribing
        torch.set_num_threads(config.threads)
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    search = build_search(config)
    L = search.space.num_blocks
    wrong = [K for K in components if not 1 <= K <= L]
    if wrong:  # refused now, not after the whole search
        raise ValueError(f"--components {','.join(map(str, wrong))}: the searched network {config.model.name} has {L} blocks; "
                         f"use K in 1..{L}")
    state_path = run_dir / "checkpoints" / "search_state.pt"
    saved = run_dir / "config.json"
    if resume:
        if not state_path.exists():
            raise FileNotFoundError(f"--resume: {state_path} does not exist; start the search without --resume")
        # (run_dir aside: a search is continued where its folder is, also in a copy)
        same = lambda d: {k: v for k, v in d.items() if k != "run_dir"}
        if saved.exists() and same(json.loads(saved.read_text())) != same(json.loads(json.dumps(config.to_dict()))):
            raise ValueError(f"--resume: {saved} holds another config; resume with the same one, or choose another --run-dir")
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated (PytorchStreamReader), overwritten (UnpicklingError), empty (EOFError)
            raise ValueError(f"--resume: {state_path} is damaged ({type(err).__name__}) and cannot be resumed; start the "
                             f"search anew (without --resume) in another --run-dir") from None
        search.load_state_dict(state)
        log.info("resumed the search at pretraining step %d, meta step %d", search.pretrained, search.meta_done)
    elif state_path.exists():
        raise FileExistsError(f"{run_dir} already holds a search; continue it with --resume or choose another --run-dir")
    atomic_write_text(saved, json.dumps(config.to_dict(), indent=2) + "\n")
    metrics = MetricsWriter(run_dir, keep_until_step=search.pretrained + search.meta_done if resume else None)
    s = config.search
    try:
        while not search.done:
            row = search.step()
            meta = row["kind"] == "meta"
            count = search.meta_done if meta else search.pretrained
            end = count == (s.meta_steps if meta else s.pretrain_steps)
            if end or count % (s.log_every if meta else max(s.log_every, s.snapshot_interval)) == 0 or "val_error" in row:
                metrics.write(row)
                if on_row is not None:
                    on_row({**row, "total": s.pretrain_steps + s.meta_steps})
            if end or (s.checkpoint_every and count % s.checkpoint_every == 0):
                _checkpoint(run_dir, search)
            if stop_after is not None and search.pretrained + search.meta_done >= stop_after:
                return search.result()
    finally:
        metrics.close()
    _checkpoint(run_dir, search)
    return write_outputs(config, search.result(), components)


def write_outputs(config: TrainConfig, result: dict, components: Sequence[int]) -> dict:
    """search.json, the plot, and config-K<K>.json for every K in ``components``."""
    run_dir = Path(config.run_dir)
    decisions: dict[int, Decision] = {}
    for K in components:
        decisions[K] = decide(torch.tensor(result["alpha"]), torch.tensor(result["beta"]), result["heads"], K,
                              offset=stem_blocks(config.model.name))  # cuts as model.partition indices
        trained = discretised_config(config, decisions[K], run_dir=str(run_dir / f"train-K{K}"))
        atomic_write_text(run_dir / f"config-K{K}.json", json.dumps(config_values(trained), indent=2) + "\n")
    result = {**result, "decisions": {str(K): {"cuts": list(d.cuts), "heads": list(d.heads)} for K, d in decisions.items()}}
    atomic_write_text(run_dir / "search.json", json.dumps(result, indent=2) + "\n")
    from .plots import search_png

    search_png(result, run_dir / "search.png")
    return result
