"""MNIST in the official IDX format, gzip-compressed (``.gz``) or raw.

IDX: a 4-byte magic (0, 0, element type, number of dimensions), one big-endian int32 per
dimension, then the elements, row-major. MNIST images are type 0x08 (uint8) with 3
dimensions (magic 2051 = 0x00000803), labels uint8 with 1 dimension (magic 2049).
The files sit in ``mnist/`` under the data folder:

    train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]   60000 images
    t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]    10000 images
"""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

import numpy as np
import torch

from .raw import RawSplits

__all__ = ["read_idx", "read_mnist_images", "read_mnist_labels", "load_mnist", "IMAGES_MAGIC", "LABELS_MAGIC"]

logger = logging.getLogger(__name__)

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
_HOWTO = (
    "get the four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
    "t10k-labels-idx1-ubyte.gz) from the MNIST page of Yann LeCun and put them, compressed or not, in mnist/ "
    "inside the data folder given by --data or $INTERLOCK_DATA"
)

# IDX element type byte -> big-endian numpy dtype
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such IDX file")
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: not a readable gzip file ({e}); the download is truncated or damaged") from e


def read_idx(path: str | Path, *, magic: int | None = None) -> np.ndarray:
    """The array in one IDX file (``.gz`` decompressed on the fly). ``magic``, if given, is the
    magic number the file must have (e.g. :data:`IMAGES_MAGIC`)."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: {len(raw)} bytes is too short for an IDX header")
    zero1, zero2, type_code, ndim = raw[:4]
    found = int.from_bytes(raw[:4], "big")
    if zero1 or zero2 or type_code not in _IDX_TYPES or ndim == 0:
        raise ValueError(f"{path}: bad IDX magic 0x{found:08x}; expected 0x0000TTDD (TT an IDX type code, DD the dimensions)")
    if magic is not None and found != magic:
        raise ValueError(f"{path}: IDX magic 0x{found:08x}, expected 0x{magic:08x}; is this the right file (images vs labels)?")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: {len(raw)} bytes is too short for an IDX header of {ndim} dimensions")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[type_code])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path}: {len(raw)} bytes, but the header announces shape {dims} of {dtype.name} ({expected} bytes); "
            f"the file is truncated or damaged"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_mnist_images(path: str | Path) -> torch.Tensor:
    """(N, 1, 28, 28) uint8 from an MNIST images IDX file."""
    array = read_idx(path, magic=IMAGES_MAGIC)
    if array.shape[1:] != (28, 28):
        raise ValueError(f"{path}: images of shape {array.shape[1:]}; MNIST images are 28x28")
    return torch.from_numpy(array.copy()).unsqueeze(1)


def read_mnist_labels(path: str | Path) -> torch.Tensor:
    """(N,) int64 from an MNIST labels IDX file (labels 0..9)."""
    labels = torch.from_numpy(read_idx(path, magic=LABELS_MAGIC).astype(np.int64))
    if labels.numel() and int(labels.max()) > 9:
        raise ValueError(f"{path}: label {int(labels.max())} is out of range 0..9")
    return labels


def _find(folder: Path, base: str) -> Path:
    for name in (f"{base}.gz", base):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder / base}.gz (or uncompressed {base}): missing MNIST file; {_HOWTO}")


def load_mnist(root: str | Path) -> RawSplits:
    """The official 60000/10000 MNIST splits from ``root/mnist``."""
    folder = Path(root) / "mnist"
    if not folder.is_dir():
        raise FileNotFoundError(f"no mnist/ folder in {root}; {_HOWTO}")
    splits = []
    for split in ("train", "t10k"):
        images_path = _find(folder, f"{split}-images-idx3-ubyte")
        labels_path = _find(folder, f"{split}-labels-idx1-ubyte")
        images, labels = read_mnist_images(images_path), read_mnist_labels(labels_path)
        if len(images) != len(labels):
            raise ValueError(f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels")
        splits.append((images, labels))
    (train_x, train_y), (test_x, test_y) = splits
    logger.info("MNIST from %s: %d training and %d test images", folder, len(train_x), len(test_x))
    return RawSplits(train_x, train_y, test_x, test_y, tuple(str(d) for d in range(10)), f"{folder} (IDX)")
