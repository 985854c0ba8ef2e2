"""The configured device, checked before anything is built on it."""

from __future__ import annotations

import torch

__all__ = ["check_device"]


def check_device(device: str) -> None:
    """A CUDA device on a torch without CUDA (or a machine without a GPU) is a config error, said as one."""
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        why = "this torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise ValueError(f"device={device}: {why}; use device=cpu (or install a CUDA build of torch on a machine with a GPU)")
