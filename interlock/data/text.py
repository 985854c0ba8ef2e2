"""Character-level text: a vocabulary, the corpora in the data folder, and (x, y) batches.

Corpora (under the data folder):

    text/tinyshakespeare/input.txt     training corpus; split 90/10 into train/val (as nanoGPT)
    text/wikitext-2-raw/wiki.valid.raw evaluation only (no training split here): encoded
    text/wikitext-2-raw/wiki.test.raw  with the TRAINING corpus's vocabulary

The vocabulary is built from the training split. Characters it has never seen (WikiText-2
has many that Shakespeare lacks: digits' neighbours, accents, CJK...) map to one extra
``<unk>`` id, ``vocab.unk_id == len(vocab.chars)``; the model's vocabulary size is then
``vocab.size`` (= distinct training characters + 1). The <unk> id never occurs in the
training tokens, so predicting an unseen character costs whatever probability the model
leaves on <unk>: the loss stays finite and comparable across models sharing the vocabulary.

Batches: (x, y) = (tokens[i:i+T], tokens[i+1:i+T+1]), int64 (B, T). Training draws random
offsets i; evaluation covers the text sequentially, every target exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checks import count, number
from .paths import ENV_VAR, find_data_root
from .seeding import make_generator

__all__ = [
    "CharVocab",
    "CharCorpus",
    "EvalText",
    "load_char_corpus",
    "load_eval_text",
    "random_text_batch",
    "iterate_text_batches",
    "sequential_text_batches",
    "IGNORE_INDEX",
    "UNK_CHAR",
    "TEXT_CORPORA",
    "EVAL_TEXTS",
]

logger = logging.getLogger(__name__)

UNK_CHAR = "\ufffd"  # what <unk> decodes to: Unicode's replacement character
IGNORE_INDEX = -100  # F.cross_entropy's default ignore_index: targets already scored elsewhere

TEXT_CORPORA = {"tinyshakespeare": Path("text/tinyshakespeare/input.txt")}
EVAL_TEXTS = {
    "wikitext2": {"val": Path("text/wikitext-2-raw/wiki.valid.raw"), "test": Path("text/wikitext-2-raw/wiki.test.raw")},
}


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")  # (L,), one per character


@dataclass(frozen=True)
class CharVocab:
    """Characters <-> ids. ``chars[i]`` has id i (sorted by code point); with ``with_unk``,
    id ``len(chars)`` is <unk>, which every character outside ``chars`` encodes to."""

    chars: tuple[str, ...]
    with_unk: bool = True

    def __post_init__(self) -> None:
        if not self.chars:
            raise ValueError("a vocabulary needs at least one character")
        if any(len(c) != 1 for c in self.chars):
            raise ValueError("every entry of chars must be a single character")
        if list(self.chars) != sorted(set(self.chars)):
            raise ValueError("chars must be distinct and sorted by code point (use CharVocab.from_text)")

    @classmethod
    def from_text(cls, text: str, *, with_unk: bool = True) -> CharVocab:
        return cls(chars=tuple(sorted(set(text))), with_unk=with_unk)

    @property
    def size(self) -> int:
        """Number of ids, <unk> included: the model's vocabulary size."""
        return len(self.chars) + int(self.with_unk)

    @property
    def unk_id(self) -> int | None:
        return len(self.chars) if self.with_unk else None

    def __len__(self) -> int:
        return self.size

    def unknown(self, text: str) -> set[str]:
        """The characters of ``text`` outside the vocabulary."""
        return set(text) - set(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """(L,) int64 ids of ``text``; unseen characters -> <unk> (ValueError without <unk>)."""
        table = _code_points("".join(self.chars))  # sorted, since chars are
        points = _code_points(text)
        ids = np.searchsorted(table, points)  # position of each code point in the table
        known = table[np.minimum(ids, len(table) - 1)] == points
        if not known.all():
            if not self.with_unk:
                missing = sorted(self.unknown(text))
                raise ValueError(
                    f"text has {len(missing)} characters outside the vocabulary (e.g. {missing[:10]!r}); "
                    f"build it with with_unk=True to map them to <unk>"
                )
            ids[~known] = self.unk_id
        return torch.from_numpy(ids.astype(np.int64))

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """The text of ``ids``; <unk> decodes to U+FFFD."""
        ids = torch.as_tensor(ids).flatten().tolist()
        table = self.chars + ((UNK_CHAR,) if self.with_unk else ())
        bad = [i for i in ids if not 0 <= i < len(table)]
        if bad:
            raise ValueError(f"ids {bad[:10]} are outside 0..{len(table) - 1}")
        return "".join(table[i] for i in ids)


@dataclass(frozen=True, eq=False)
class CharCorpus:
    """A training corpus: the vocabulary of its training split, and train/val tokens (L,) int64."""

    name: str
    vocab: CharVocab
    train: torch.Tensor
    val: torch.Tensor
    source: str = ""

    @classmethod
    def from_text(cls, text: str, *, name: str = "text", val_fraction: float = 0.1, source: str = "") -> CharCorpus:
        """The first 1 - ``val_fraction`` of ``text`` for training, the rest for validation."""
        number(val_fraction, f"val_fraction={val_fraction} must be in [0, 1)", low=0.0, high=1.0, high_open=True)
        cut = int(len(text) * (1.0 - val_fraction))
        if cut < 2:
            raise ValueError(f"{name}: {len(text)} characters leave no training text with val_fraction={val_fraction}")
        vocab = CharVocab.from_text(text[:cut])
        return cls(name=name, vocab=vocab, train=vocab.encode(text[:cut]), val=vocab.encode(text[cut:]), source=source)


@dataclass(frozen=True, eq=False)
class EvalText:
    """Evaluation-only text encoded with a training vocabulary. ``unknown_*``: how many
    characters of each split became <unk>."""

    name: str
    val: torch.Tensor
    test: torch.Tensor
    unknown_val: int
    unknown_test: int


def _read_text(root: Path | None, rel: Path, what: str) -> tuple[str, Path]:
    if root is None:
        raise FileNotFoundError(f"no data folder for {what}: pass one (--data / root=...) or set ${ENV_VAR}; it must hold {rel}")
    path = root / rel
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing {what} (expected {rel} as UTF-8 text inside the data folder {root})")
    try:
        return path.read_text(encoding="utf-8"), path
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from e


def load_char_corpus(name: str = "tinyshakespeare", root: str | Path | None = None, *, val_fraction: float = 0.1) -> CharCorpus:
    """A training corpus from the data folder, split (1 - val_fraction) / val_fraction in order."""
    if name not in TEXT_CORPORA:
        raise ValueError(f"unknown text corpus {name!r}; use one of {sorted(TEXT_CORPORA)}")
    text, path = _read_text(find_data_root(root), TEXT_CORPORA[name], f"the {name} corpus")
    corpus = CharCorpus.from_text(text, name=name, val_fraction=val_fraction, source=str(path))
    logger.info(
        "%s from %s: %d characters, %d distinct in train (+<unk>), %d train / %d val tokens",
        name, path, len(text), len(corpus.vocab.chars), len(corpus.train), len(corpus.val),
    )
    return corpus


def load_eval_text(name: str, vocab: CharVocab, root: str | Path | None = None) -> EvalText:
    """An evaluation text's val and test splits, encoded with ``vocab`` (unseen chars -> <unk>)."""
    if name not in EVAL_TEXTS:
        raise ValueError(f"unknown evaluation text {name!r}; use one of {sorted(EVAL_TEXTS)}")
    folder = find_data_root(root)
    tokens, unknown = {}, {}
    for split, rel in EVAL_TEXTS[name].items():
        text, path = _read_text(folder, rel, f"{name} {split} split")
        tokens[split] = vocab.encode(text)
        unknown[split] = int((tokens[split] == vocab.unk_id).sum()) if vocab.with_unk else 0
        logger.info(
            "%s %s from %s: %d characters, %d (%.2f%%) outside the training vocabulary -> <unk>",
            name, split, path, len(text), unknown[split], 100.0 * unknown[split] / max(len(text), 1),
        )
    return EvalText(name, tokens["val"], tokens["test"], unknown["val"], unknown["test"])


def _check_sizes(tokens: torch.Tensor, batch_size: int, block_size: int) -> None:
    if tokens.dim() != 1:
        raise ValueError(f"tokens must be 1-D (L,); got shape {tuple(tokens.shape)}")
    for label, v in (("batch_size", batch_size), ("block_size", block_size)):
        count(v, f"{label}={v!r} must be an integer >= 1")
    if len(tokens) < block_size + 1:
        raise ValueError(f"{len(tokens)} tokens are too few for block_size={block_size}; use block_size <= {len(tokens) - 1}")


def _windows(tokens: torch.Tensor, starts: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = (starts[:, None] + torch.arange(block_size + 1)).to(tokens.device)  # (B, T+1)
    w = tokens[idx].to(torch.int64)
    # Separate copies: x and y as views of one window would share memory (an in-place
    # edit of y, like the IGNORE_INDEX mask below, would change x).
    return w[:, :-1].clone(), w[:, 1:].clone()  # (B, T), (B, T)


def random_text_batch(
    tokens: torch.Tensor, *, batch_size: int, block_size: int, generator: torch.Generator, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y), int64 (B, T), at B random offsets drawn from ``generator``."""
    _check_sizes(tokens, batch_size, block_size)
    starts = torch.randint(0, len(tokens) - block_size, (batch_size,), generator=generator)  # i + T + 1 <= L
    x, y = _windows(tokens, starts, block_size)
    return (x, y) if device is None else (x.to(device), y.to(device))


def iterate_text_batches(
    tokens: torch.Tensor,
    *,
    batch_size: int,
    block_size: int,
    seed: int,
    start_step: int = 0,
    num_steps: int | None = None,
    device: torch.device | str | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches for steps start_step, start_step + 1, ... (forever unless ``num_steps``).

    Step s draws its offsets from a generator seeded with (seed, s): resuming at step s
    gives exactly the batches an uninterrupted run gives there.
    """
    _check_sizes(tokens, batch_size, block_size)
    count(start_step, f"start_step={start_step!r} must be an integer >= 0", minimum=0)
    make_generator(seed, "text", start_step)  # a bad seed fails here, not at the first batch
    stop = None if num_steps is None else start_step + num_steps

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        step = start_step
        while stop is None or step < stop:
            gen = make_generator(seed, "text", step)
            yield random_text_batch(tokens, batch_size=batch_size, block_size=block_size, generator=gen, device=device)
            step += 1

    return batches()


def sequential_text_batches(
    tokens: torch.Tensor, *, batch_size: int, block_size: int, device: torch.device | str | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Evaluation batches that score every target tokens[1:] exactly once, in order.

    Windows start at 0, T, 2T, ...; when (L - 1) is not a multiple of T, one last window
    ends at the final token and its targets already scored by the previous window are set
    to :data:`IGNORE_INDEX` (which ``F.cross_entropy`` skips). Sum the per-token losses
    and divide by the number of targets != IGNORE_INDEX. The last batch may be smaller.
    """
    _check_sizes(tokens, batch_size, block_size)
    L, T = len(tokens), block_size
    full = (L - 1) // T  # windows that fit without overlap
    tail = (L - 1) - full * T  # targets left after them (< T)
    starts = [i * T for i in range(full)] + ([L - 1 - T] if tail else [])

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for lo in range(0, len(starts), batch_size):
            chunk = torch.tensor(starts[lo : lo + batch_size], dtype=torch.int64)
            x, y = _windows(tokens, chunk, T)
            if tail and lo + batch_size >= len(starts):
                y[-1, : T - tail] = IGNORE_INDEX  # scored by the window before
            yield (x, y) if device is None else (x.to(device), y.to(device))

    return batches()
