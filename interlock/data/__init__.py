"""Real data sets, read from their official file formats (no torchvision, no downloads)."""

from .cifar import read_cifar10_binary
from .paths import find_data_root

__all__ = ["read_cifar10_binary", "find_data_root"]
