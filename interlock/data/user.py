"""Your own data as a training task: a ``Dataset``, a ``DataLoader`` or an iterable of batches.

``user_task(data, config, seed=...)`` makes the :class:`interlock.training.tasks.Task` the training
program needs from what a user has:

- a map-style ``torch.utils.data.Dataset`` (``__getitem__`` and ``__len__``, items ``(x, y)``):
  shuffled every epoch by a permutation seeded by (seed, epoch), ``data.batch_size`` examples
  per step, the last incomplete batch dropped (static shapes for the distributed engine);
- a ``DataLoader`` over such a dataset: its ``batch_size``, ``collate_fn`` and ``num_workers``,
  with the same seeded order in place of its sampler (a loader's own random sampler would not
  be resumable); a ``DataLoader`` over an iterable-style dataset is taken as an iterable;
- an iterable of ``(x, y)`` batches that starts again at each ``iter()`` (a list, or an object
  whose ``__iter__`` restarts): one epoch is one pass, in its own order;
- a dict ``{"train": ..., "val": ..., "test": ...}`` of any of these: "val" and "test" are
  evaluated (in order, unshuffled, every example); without them the first
  ``data.eval_batches`` training batches, in order, are scored as the split "train".

The batch of (epoch, step) never depends on what ran before, so a run resumed mid-epoch sees
exactly the batches the uninterrupted run saw (for a plain iterable, by skipping the batches
already taken). Each checkpoint records the position and the data's size; resuming on data of
another size is refused. Targets that are (B, T) integer tensors make a language-model task
(logits (B, T, V)); the number of classes is the size of the network's last output dimension.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, default_collate

from ..training.config import DataConfig
from ..training.tasks import Task

__all__ = ["UserTask", "user_task"]


def _is_map_style(d) -> bool:
    if isinstance(d, (IterableDataset, list, tuple)):  # a list is a list of batches
        return False
    return isinstance(d, Dataset) or (hasattr(d, "__getitem__") and hasattr(d, "__len__"))


class _Source:
    """One split: a way to make the batches of (epoch, step) and how many an epoch has."""

    def __init__(self, data, *, batch_size: int, seed: int, shuffle: bool, what: str) -> None:
        self.what, self.seed, self.shuffle = what, seed, shuffle
        self.collate, self.workers, self.dataset, self.batches = default_collate, 0, None, None
        self.batch_size = batch_size
        if isinstance(data, DataLoader):
            if not isinstance(data.dataset, IterableDataset):
                self.dataset, self.collate, self.workers = data.dataset, data.collate_fn, data.num_workers
                self.batch_size = data.batch_size or batch_size
            else:
                self.batches = data
        elif _is_map_style(data):
            self.dataset = data
        elif isinstance(data, Iterable):
            if iter(data) is data:
                raise ValueError(f"{what} is a one-pass iterator ({type(data).__name__}): it cannot be replayed for a "
                                 f"second epoch or a resume. Pass a Dataset, a DataLoader, a list of batches, or an "
                                 f"object whose __iter__ starts again")
            self.batches = data
        else:
            raise ValueError(f"{what} is a {type(data).__name__}; give a torch Dataset, a DataLoader or an iterable of (x, y) batches")
        if self.dataset is not None:
            self.size = len(self.dataset)
            if shuffle and self.size < self.batch_size:  # (evaluation takes a smaller last batch)
                raise ValueError(f"{what} has {self.size} examples, fewer than one batch of {self.batch_size}: lower data.batch_size")
            self.steps_per_epoch = self.size // self.batch_size if shuffle else -(-self.size // self.batch_size)
        else:
            self.steps_per_epoch = len(self.batches) if hasattr(self.batches, "__len__") else sum(1 for _ in self.batches)
            self.size = self.steps_per_epoch
            if self.steps_per_epoch == 0:
                raise ValueError(f"{what} yields no batches")

    def epoch_batches(self, epoch: int, start_step: int) -> Iterator[tuple]:
        if self.batches is not None:  # the user's order; a resume skips what was taken
            return (_pair(b, self.what) for b in itertools.islice(self.batches, start_step, None))
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)  # (seed, epoch) alone decide the order
            order = torch.randperm(self.size, generator=g).tolist()
            order = order[: self.steps_per_epoch * self.batch_size]  # the incomplete last batch is dropped
        else:
            order = list(range(self.size))
        chunks = [order[i : i + self.batch_size] for i in range(start_step * self.batch_size, len(order), self.batch_size)]
        if self.workers:
            loader = DataLoader(self.dataset, batch_sampler=chunks, collate_fn=self.collate, num_workers=self.workers)
            return (_pair(b, self.what) for b in loader)
        return (_pair(self.collate([self.dataset[i] for i in c]), self.what) for c in chunks)


def _pair(batch, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, Mapping) and {"input_ids", "labels"} <= set(batch):
        return batch["input_ids"], batch["labels"]
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise ValueError(f"a batch of {what} is a {type(batch).__name__}; interlock trains on (inputs, targets) pairs "
                     f"(or dicts with input_ids and labels)")


class _Replay:
    def __init__(self, make) -> None:
        self._make = make

    def __iter__(self):
        return iter(self._make())


class UserTask(Task):
    """A :class:`interlock.training.tasks.Task` over the user's data (see the module docstring)."""

    def __init__(self, data, config: DataConfig, *, seed: int) -> None:
        splits = dict(data) if isinstance(data, Mapping) and "train" in data else {"train": data}
        unknown = set(splits) - {"train", "val", "test"}
        if unknown:
            raise ValueError(f"data has splits {sorted(unknown)}; name them train, val and test")
        self.config = config
        self.train = _Source(splits["train"], batch_size=config.batch_size, seed=seed, shuffle=True, what="the training data")
        self.evals = {name: _Source(splits[name], batch_size=config.eval_batch_size, seed=seed, shuffle=False, what=f"the {name} data")
                      for name in ("val", "test") if splits.get(name) is not None}
        self.steps_per_epoch = self.train.steps_per_epoch
        self.model_kwargs: dict = {}
        self.inputs = True
        x, y = next(self.train.epoch_batches(0, 0))
        self.sample = (x, y)
        self.is_text = (not y.is_floating_point()) and y.dim() == 2
        self.num_classes: int | None = None  # set from the network's output (interlock.training.loop)

    def drop_inputs(self) -> None:
        self.inputs = False

    def _strip(self, it):
        return ((x if self.inputs else None, y) for x, y in it)

    def train_batches(self, *, epoch: int, start_step: int):
        return self._strip(self.train.epoch_batches(epoch, start_step))

    def eval_splits(self) -> dict:
        if not self.evals:
            limit = self.config.eval_batches
            return {"train": _Replay(lambda: self._strip(itertools.islice(self.train.epoch_batches(0, 0) if self.train.batches is not None
                                                                           else _Source.epoch_batches(_unshuffled(self.train), 0, 0), limit)))}
        return {name: _Replay(lambda s=s: self._strip(s.epoch_batches(0, 0))) for name, s in self.evals.items()}

    def position(self, step: int) -> dict:
        """Where the data stands after ``step`` steps: saved with each checkpoint."""
        epoch, batch = divmod(step, self.steps_per_epoch)
        return {"epoch": epoch, "batch": batch, "size": self.train.size, "steps_per_epoch": self.steps_per_epoch}

    def check_position(self, saved: dict | None) -> None:
        if saved and saved.get("size") not in (None, self.train.size):
            raise ValueError(f"the checkpoint was written training on data of {saved['size']} examples (batches); this data "
                             f"has {self.train.size}: resume with the data the run started with")


def _unshuffled(src: _Source) -> _Source:
    clone = object.__new__(_Source)
    clone.__dict__.update(src.__dict__, shuffle=False)
    return clone


def user_task(data, config: DataConfig, *, seed: int) -> UserTask:
    return UserTask(data, config, seed=seed)
