"""Load the CIFAR python-version pickles without letting a file run code.

``pickle.load`` calls whatever a file names; a data file from the internet should only be
able to build numpy arrays, dicts, lists, strings and numbers. This unpickler allows the
few globals those need and refuses everything else.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["load_data_pickle"]

# (module, name) pairs a numpy-array pickle needs; numpy 2 renamed numpy.core to numpy._core
# (old files name the former, files written today the latter).
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol 5 (Python 3.8+'s default)
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: a data pickle holds only numpy arrays, lists and dicts")
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core") :]
        return super().find_class(module, name)


def load_data_pickle(path: Path, what: str) -> Any:
    """Unpickle ``path`` (bytes keys, as the official files were written by Python 2).

    Raises ValueError naming the file when it is not a readable data pickle (truncated,
    another format, or it names a global other than numpy's array constructors).
    """
    try:
        with open(path, "rb") as f:
            return _ArraysOnly(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
        raise ValueError(f"{path}: not a readable {what} ({type(e).__name__}: {e}); the file is truncated or not the python version") from e
