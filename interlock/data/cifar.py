"""CIFAR-10 in the official binary format: records of 1 label byte + 3072 pixel bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["read_cifar10_binary", "RECORD_BYTES"]

RECORD_BYTES = 1 + 3 * 32 * 32


def read_cifar10_binary(path: str | Path, *, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from one ``data_batch_*.bin`` / ``test_batch.bin``.

    ``limit`` reads only the first ``limit`` records.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such CIFAR-10 binary batch (expected e.g. cifar-10-batches-bin/data_batch_1.bin)")
    size = path.stat().st_size
    if size == 0 or size % RECORD_BYTES:
        raise ValueError(
            f"{path}: {size} bytes is not a whole number of {RECORD_BYTES}-byte CIFAR-10 records; "
            f"the file is truncated or not the binary version"
        )
    count = size // RECORD_BYTES if limit is None else min(limit, size // RECORD_BYTES)
    raw = np.fromfile(path, dtype=np.uint8, count=count * RECORD_BYTES).reshape(count, RECORD_BYTES)
    labels = torch.from_numpy(raw[:, 0].astype(np.int64))
    if labels.numel() and int(labels.max()) > 9:
        raise ValueError(f"{path}: label {int(labels.max())} > 9; this is not a CIFAR-10 binary batch (CIFAR-100 has 2 label bytes)")
    images = torch.from_numpy(raw[:, 1:].copy()).view(count, 3, 32, 32)
    return images, labels
