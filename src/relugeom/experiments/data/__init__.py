"""Data sets of the papers, read from their standard on-disk formats (nothing is downloaded).

* ``digits``: scikit-learn's 8x8 digits (shipped inside scikit-learn; the embedded default). A
  fixed test split (every fifth sample, 360 images) is held out; the rest is the training set.
* ``cifar10`` / ``cifar100``: the python pickle batches (``cifar-10-batches-py/data_batch_1..5``,
  ``test_batch``; ``cifar-100-python/train``, ``test``), the folder itself or its parent.
* ``mnist``: the idx files (``train-images-idx3-ubyte`` ... ``t10k-labels-idx1-ubyte``, optionally
  ``.gz``), in the folder, its ``MNIST/raw`` or ``raw`` subfolder.

Pixels are scaled to [0, 1] and then normalised per channel (``normalize="standard"``: mean and
standard deviation of the training split), or mapped to [-1, 1] (``"pm1"``, the paper's default
pixel representation, Gamba et al. 2020 sec. A.7) or kept in [0, 1] (``"unit"``, CIFAR10/+ of fig. 21).
A seeded 10% validation split is taken from the training set (Gamba et al. 2020 sec. 3.1); its seed is
separate from the training seed so that runs with different seeds share one validation set.

Augmentation (Gamba et al. 2020 sec. A.1): shifts of up to 4 pixels in each direction (zero fill) and random
horizontal flips, applied per batch on tensors. Defaults: both for CIFAR, shifts only for MNIST
(a flipped digit is another symbol), none for digits.
"""

from __future__ import annotations

from .corruptions import corrupt, noisy_labels, pixel_permutation, shuffle_pixels
from .images import IMAGE_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD, FolderSplit, load_image_folder
from .load import DATASETS, NORMALIZATIONS, load_dataset
from .splits import Augment, Batches, DataSplits, Split, subset, validation_split

__all__ = [
    "DATASETS", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_SUFFIXES", "NORMALIZATIONS", "Augment", "Batches",
    "DataSplits", "FolderSplit", "Split", "corrupt", "load_dataset", "load_image_folder", "noisy_labels",
    "pixel_permutation", "shuffle_pixels", "subset", "validation_split",
]
