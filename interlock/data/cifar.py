"""CIFAR-10 and CIFAR-100 in both official formats: binary records and python pickles.

The folder layouts, as unpacked from the official archives
(https://www.cs.toronto.edu/~kriz/cifar.html):

    cifar-10-batches-bin/  data_batch_1.bin .. data_batch_5.bin, test_batch.bin, batches.meta.txt
    cifar-10-batches-py/   data_batch_1 .. data_batch_5, test_batch, batches.meta          (pickles)
    cifar-100-binary/      train.bin, test.bin, fine_label_names.txt, coarse_label_names.txt
    cifar-100-python/      train, test, meta                                                  (pickles)

Binary records: CIFAR-10 is 1 label byte + 3072 pixel bytes; CIFAR-100 is a coarse label
byte, a fine label byte, then 3072 pixel bytes. The pixels are 1024 red, 1024 green,
1024 blue, each plane 32x32 row-major: exactly a (3, 32, 32) array. The pickles hold the
same pixels as b"data", an (N, 3072) uint8 array, with b"labels" (CIFAR-10) or
b"fine_labels" and b"coarse_labels" (CIFAR-100) as lists.

A copy may hold fewer than the 5 CIFAR-10 training batches (the shared data has batches 1
and 2): whichever are present are read, and the log says which. Each file that is present
must hold its official number of images (:data:`OFFICIAL_COUNTS`): a file cut at a record
boundary reads as valid records, so only its count can show that images are missing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ._safe_pickle import load_data_pickle
from .raw import RawSplits

__all__ = [
    "read_cifar10_binary",
    "read_cifar100_binary",
    "read_cifar10_pickle",
    "read_cifar100_pickle",
    "CifarLayout",
    "detect_cifar",
    "load_cifar",
    "RECORD_BYTES",
    "CIFAR100_RECORD_BYTES",
    "CIFAR10_HOWTO",
    "OFFICIAL_COUNTS",
]

logger = logging.getLogger(__name__)

PIXEL_BYTES = 3 * 32 * 32
RECORD_BYTES = 1 + PIXEL_BYTES
CIFAR100_RECORD_BYTES = 2 + PIXEL_BYTES
_TRAIN_BATCHES = 5

# Images in each file of the official archives, by data set and file stem.
OFFICIAL_COUNTS = {
    "cifar10": {**{f"data_batch_{i}": 10000 for i in range(1, _TRAIN_BATCHES + 1)}, "test_batch": 10000},
    "cifar100": {"train": 50000, "test": 10000},
}

CIFAR10_HOWTO = (
    "get the binary version of CIFAR-10 (cifar-10-binary.tar.gz) from the CIFAR page of the "
    "University of Toronto, https://www.cs.toronto.edu/~kriz/cifar.html, and unpack it so that "
    "cifar-10-batches-bin/ sits in the data folder given by --data or $INTERLOCK_DATA "
    "(the python version, cifar-10-batches-py/, works too)"
)
_CIFAR100_HOWTO = (
    "get CIFAR-100 (binary or python version) from https://www.cs.toronto.edu/~kriz/cifar.html and unpack it "
    "so that cifar-100-binary/ or cifar-100-python/ sits in the data folder given by --data or $INTERLOCK_DATA"
)

# name -> (folder of the binary version, folder of the python version); binary is preferred
# when both exist (it reads without unpickling).
_FOLDERS = {
    "cifar10": ("cifar-10-batches-bin", "cifar-10-batches-py"),
    "cifar100": ("cifar-100-binary", "cifar-100-python"),
}


# ---------------------------------------------------------------------------- binary records


def _read_records(path: Path, *, record_bytes: int, what: str, limit: int | None) -> np.ndarray:
    """(N, record_bytes) uint8 from a file of fixed-size records."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what}")
    size = path.stat().st_size
    if size == 0 or size % record_bytes:
        raise ValueError(
            f"{path}: {size} bytes is not a whole number of {record_bytes}-byte records of a {what}; "
            f"the file is truncated or not the binary version"
        )
    if limit is not None and limit < 0:
        raise ValueError(f"limit={limit} must be >= 0 (or None for the whole file)")
    count = size // record_bytes if limit is None else min(limit, size // record_bytes)
    return np.fromfile(path, dtype=np.uint8, count=count * record_bytes).reshape(count, record_bytes)


def _labels(raw: np.ndarray, path: Path, *, num_classes: int, what: str, hint: str = "") -> torch.Tensor:
    labels = torch.from_numpy(np.asarray(raw).astype(np.int64))
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = int(labels.max()) if int(labels.max()) >= num_classes else int(labels.min())
        raise ValueError(f"{path}: {what} {bad} is out of range 0..{num_classes - 1}{hint}")
    return labels


def _images(pixels: np.ndarray) -> torch.Tensor:
    # (N, 3072) -> (N, 3, 32, 32): the planes are already channel-major, row-major.
    return torch.from_numpy(np.ascontiguousarray(pixels)).view(-1, 3, 32, 32)


def read_cifar10_binary(path: str | Path, *, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from one ``data_batch_*.bin`` / ``test_batch.bin``.

    ``limit`` reads only the first ``limit`` records.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such CIFAR-10 binary batch (expected e.g. cifar-10-batches-bin/data_batch_1.bin)")
    raw = _read_records(path, record_bytes=RECORD_BYTES, what="CIFAR-10 binary batch", limit=limit)
    labels = _labels(raw[:, 0], path, num_classes=10, what="label",
                     hint="; this is not a CIFAR-10 binary batch (CIFAR-100 records have 2 label bytes)")
    return _images(raw[:, 1:]), labels


def read_cifar100_binary(path: str | Path, *, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) uint8, fine labels (N,) and coarse labels (N,) int64 from
    ``cifar-100-binary/train.bin`` or ``test.bin`` (records: coarse byte, fine byte, 3072 pixels)."""
    path = Path(path)
    raw = _read_records(path, record_bytes=CIFAR100_RECORD_BYTES, what="CIFAR-100 binary file (expected cifar-100-binary/train.bin or test.bin)", limit=limit)
    coarse = _labels(raw[:, 0], path, num_classes=20, what="coarse label")
    fine = _labels(raw[:, 1], path, num_classes=100, what="fine label")
    return _images(raw[:, 2:]), fine, coarse


# ---------------------------------------------------------------------------- python pickles


def _check_count(path: Path, name: str, count: int) -> None:
    """Fail naming ``path`` unless it holds the official number of images of its data set."""
    expected = OFFICIAL_COUNTS[name].get(path.name.removesuffix(".bin"))
    if expected is not None and count != expected:
        raise ValueError(
            f"{path}: holds {count} images, but the official file holds {expected}; it is truncated or damaged: "
            f"unpack it again from the archive at https://www.cs.toronto.edu/~kriz/cifar.html"
        )


def _pickle_batch(path: Path, *, label_keys: tuple[bytes, ...], what: str) -> tuple[np.ndarray, list[np.ndarray]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what}")
    batch = load_data_pickle(path, what)
    if not isinstance(batch, dict) or not all(k in batch for k in (b"data", *label_keys)):
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        wanted = ", ".join(repr(k) for k in (b"data", *label_keys))
        raise ValueError(f"{path}: a {what} is a dict with keys {wanted}; this pickle has {keys}")
    data = batch[b"data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == PIXEL_BYTES):
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise ValueError(f"{path}: b'data' must be an (N, {PIXEL_BYTES}) uint8 array; got shape {shape}, dtype {dtype}")
    labels = []
    for key in label_keys:
        values = np.asarray(batch[key])
        if values.shape != (len(data),):
            raise ValueError(f"{path}: {key!r} has shape {values.shape} but b'data' holds {len(data)} images")
        labels.append(values)
    return data, labels


def read_cifar10_pickle(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from one python-version batch
    (``cifar-10-batches-py/data_batch_1`` .. ``test_batch``)."""
    path = Path(path)
    data, (labels,) = _pickle_batch(path, label_keys=(b"labels",), what="CIFAR-10 python batch")
    return _images(data), _labels(labels, path, num_classes=10, what="label")


def read_cifar100_pickle(path: str | Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) uint8, fine labels (N,) and coarse labels (N,) int64 from
    ``cifar-100-python/train`` or ``test``."""
    path = Path(path)
    data, (fine, coarse) = _pickle_batch(path, label_keys=(b"fine_labels", b"coarse_labels"), what="CIFAR-100 python file")
    return (
        _images(data),
        _labels(fine, path, num_classes=100, what="fine label"),
        _labels(coarse, path, num_classes=20, what="coarse label"),
    )


# ---------------------------------------------------------------------------- class names


def _names_txt(path: Path, count: int) -> tuple[str, ...] | None:
    if not path.is_file():
        return None
    names = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if len(names) != count:
        raise ValueError(f"{path}: lists {len(names)} class names; expected {count}, one per line in label order")
    return names


def _names_pickle(path: Path, key: bytes, count: int) -> tuple[str, ...] | None:
    if not path.is_file():
        return None
    meta = load_data_pickle(path, "CIFAR meta pickle")
    if not isinstance(meta, dict) or key not in meta:
        raise ValueError(f"{path}: expected a dict with key {key!r} listing the class names")
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[key])
    if len(names) != count:
        raise ValueError(f"{path}: {key!r} lists {len(names)} class names; expected {count}")
    return names


def _class_names(found: tuple[str, ...] | None, count: int, meta: Path) -> tuple[str, ...]:
    if found is not None:
        return found
    # The names only label reports; the labels themselves come from the batches.
    logger.warning("%s not found: class names will be class_0 .. class_%d", meta, count - 1)
    return tuple(f"class_{i}" for i in range(count))


# ---------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR data set lies: ``name`` "cifar10"/"cifar100", ``format`` "binary"/"python"."""

    name: str
    format: Literal["binary", "python"]
    folder: Path


def detect_cifar(root: str | Path | None, name: str = "cifar10") -> CifarLayout | None:
    """The layout of ``name`` under ``root`` (binary version preferred), or None when neither
    official folder exists there (so a caller can choose a fallback and say so)."""
    if name not in _FOLDERS:
        raise ValueError(f"unknown CIFAR data set {name!r}; use one of {sorted(_FOLDERS)}")
    if root is None:
        return None
    binary, python = (Path(root) / f for f in _FOLDERS[name])
    if binary.is_dir():
        if python.is_dir():
            logger.info("both %s and %s exist; reading the binary version", binary, python)
        return CifarLayout(name, "binary", binary)
    if python.is_dir():
        return CifarLayout(name, "python", python)
    return None


def load_cifar(root: str | Path, name: str = "cifar10", *, label: Literal["fine", "coarse"] = "fine") -> RawSplits:
    """The official train and test splits of CIFAR-10 or CIFAR-100 under ``root``, in whichever
    format is there. ``label`` picks CIFAR-100's fine (100) or coarse (20) classes."""
    if label not in ("fine", "coarse"):
        raise ValueError(f"label={label!r}; use 'fine' (100 classes) or 'coarse' (20 superclasses)")
    layout = detect_cifar(root, name)
    if layout is None:
        binary, python = _FOLDERS[name]
        howto = CIFAR10_HOWTO if name == "cifar10" else _CIFAR100_HOWTO
        raise FileNotFoundError(f"no {name} in {root}: expected {binary}/ or {python}/ there; {howto}")
    if name == "cifar10":
        return _load_cifar10(layout)
    return _load_cifar100(layout, label)


def _load_cifar10(layout: CifarLayout) -> RawSplits:
    binary = layout.format == "binary"
    ext = ".bin" if binary else ""
    read = read_cifar10_binary if binary else read_cifar10_pickle
    present = [i for i in range(1, _TRAIN_BATCHES + 1) if (layout.folder / f"data_batch_{i}{ext}").is_file()]
    if not present:
        raise FileNotFoundError(
            f"{layout.folder}: no training batch (expected data_batch_1{ext} .. data_batch_{_TRAIN_BATCHES}{ext}); {CIFAR10_HOWTO}"
        )
    test_path = layout.folder / f"test_batch{ext}"
    if not test_path.is_file():
        raise FileNotFoundError(f"{test_path}: missing the CIFAR-10 test batch; {CIFAR10_HOWTO}")
    parts = []
    for i in present:
        path = layout.folder / f"data_batch_{i}{ext}"
        parts.append(read(path))
        _check_count(path, "cifar10", len(parts[-1][1]))
    train_x = torch.cat([p[0] for p in parts])
    train_y = torch.cat([p[1] for p in parts])
    test_x, test_y = read(test_path)
    _check_count(test_path, "cifar10", len(test_y))
    if binary:
        meta = layout.folder / "batches.meta.txt"
        names = _class_names(_names_txt(meta, 10), 10, meta)
    else:
        meta = layout.folder / "batches.meta"
        names = _class_names(_names_pickle(meta, b"label_names", 10), 10, meta)
    batches = ", ".join(f"data_batch_{i}" for i in present)
    logger.info(
        "CIFAR-10 (%s version) from %s: training batches %s (%d of %d; %d images), test_batch (%d images)",
        layout.format, layout.folder, batches, len(present), _TRAIN_BATCHES, len(train_x), len(test_x),
    )
    source = f"{layout.folder} ({layout.format}): {batches}; test_batch"
    return RawSplits(train_x, train_y, test_x, test_y, names, source)


def _load_cifar100(layout: CifarLayout, label: str) -> RawSplits:
    binary = layout.format == "binary"
    ext = ".bin" if binary else ""
    read = read_cifar100_binary if binary else read_cifar100_pickle
    splits = []
    for split in ("train", "test"):
        path = layout.folder / f"{split}{ext}"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing the CIFAR-100 {split} file; {_CIFAR100_HOWTO}")
        images, fine, coarse = read(path)
        _check_count(path, "cifar100", len(fine))
        splits.append((images, fine if label == "fine" else coarse))
    count = 100 if label == "fine" else 20
    if binary:
        meta = layout.folder / f"{label}_label_names.txt"
        names = _class_names(_names_txt(meta, count), count, meta)
    else:
        meta = layout.folder / "meta"
        names = _class_names(_names_pickle(meta, f"{label}_label_names".encode(), count), count, meta)
    (train_x, train_y), (test_x, test_y) = splits
    logger.info(
        "CIFAR-100 (%s version, %s labels) from %s: train (%d images), test (%d images)",
        layout.format, label, layout.folder, len(train_x), len(test_x),
    )
    source = f"{layout.folder} ({layout.format}, {label} labels): train; test"
    return RawSplits(train_x, train_y, test_x, test_y, names, source)
