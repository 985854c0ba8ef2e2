"""Real data sets, read from their official file formats (no torchvision, no downloads).

Images: :func:`load_images` ("cifar10", "cifar100", "mnist", "digits") -> :class:`ImageDataset`;
:func:`iterate_batches` for resumable, augmented, normalised mini-batches.
Text: :func:`load_char_corpus` (tiny shakespeare), :func:`load_eval_text` (WikiText-2),
:class:`CharVocab`, and the (x, y) batch makers.
The data folder: :func:`find_data_root` (explicit path, $INTERLOCK_DATA, ../shared/data).
"""

from .augment import augment_batch, normalize, pad_crop, random_crop, random_flip, to_float
from .batches import batches_per_epoch, iterate_batches, iterate_labels
from .cifar import (
    CIFAR10_HOWTO,
    CifarLayout,
    detect_cifar,
    load_cifar,
    read_cifar10_binary,
    read_cifar10_pickle,
    read_cifar100_binary,
    read_cifar100_pickle,
)
from .digits import load_digits
from .images import IMAGE_DATASETS, ImageDataset, channel_stats, load_images, split_validation
from .mnist import load_mnist, read_idx, read_mnist_images, read_mnist_labels
from .paths import ENV_VAR, find_data_root
from .raw import RawSplits
from .seeding import derive_seed, make_generator
from .text import (
    IGNORE_INDEX,
    CharCorpus,
    CharVocab,
    EvalText,
    iterate_text_batches,
    load_char_corpus,
    load_eval_text,
    random_text_batch,
    sequential_text_batches,
)

__all__ = [
    "find_data_root",
    "ENV_VAR",
    # images
    "ImageDataset",
    "load_images",
    "IMAGE_DATASETS",
    "channel_stats",
    "split_validation",
    "RawSplits",
    "read_cifar10_binary",
    "read_cifar10_pickle",
    "read_cifar100_binary",
    "read_cifar100_pickle",
    "CifarLayout",
    "detect_cifar",
    "load_cifar",
    "CIFAR10_HOWTO",
    "read_idx",
    "read_mnist_images",
    "read_mnist_labels",
    "load_mnist",
    "load_digits",
    # batches and augmentation
    "iterate_batches",
    "iterate_labels",
    "batches_per_epoch",
    "augment_batch",
    "random_crop",
    "random_flip",
    "pad_crop",
    "normalize",
    "to_float",
    "derive_seed",
    "make_generator",
    # text
    "CharVocab",
    "CharCorpus",
    "EvalText",
    "load_char_corpus",
    "load_eval_text",
    "random_text_batch",
    "iterate_text_batches",
    "sequential_text_batches",
    "IGNORE_INDEX",
]
