"""MNIST: the idx file format, and a dataset of digit images with their class labels.

An idx file is a big-endian header (two zero bytes, a type byte, the number of dimensions, one
4-byte size per dimension) followed by the raw array; MNIST's are uint8, usually gzipped. The
folder layout is the one the files are distributed in: train-images-idx3-ubyte.gz and friends.
"""
import gzip
import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cnnvision.data.augment import AugmentConfig, augment, to_float
from cnnvision.data.dataset import ImageSet
from cnnvision.errors import InputError

IMAGES_MAGIC = 0x0803  # unsigned bytes, 3 dimensions: (N, rows, columns)
LABELS_MAGIC = 0x0801  # unsigned bytes, 1 dimension: (N,)
GZIP_MAGIC = b"\x1f\x8b"
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def digit_augment() -> AugmentConfig:
    """Light, label-preserving warps for digits: no mirror (a mirrored 2 is not a 2), a few
    degrees, pixels and per cent of zoom, no intensity changes."""
    return AugmentConfig(flip=False, rotate=10.0, scale=0.1, shift=0.08, brightness=0.0, contrast=0.0)


@dataclass
class ClassificationDataset(ImageSet):
    """Images and one class label each.

    images: uint8 (N, C, S, S); labels: int64 (N,) in [0, num_classes).
    """
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int = 10
    augment: AugmentConfig | None = field(default=None, repr=False)

    def __post_init__(self):
        self.check_square()
        n = len(self)
        if self.labels.shape != (n,):
            raise ValueError(f"labels {tuple(self.labels.shape)} do not match {n} images")

    def subset(self, idx) -> "ClassificationDataset":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return ClassificationDataset(self.images[idx], self.labels[idx], self.num_classes, self.augment)

    def batch(self, idx: torch.Tensor, generator: torch.Generator | None = None):
        """float images (B, C, S, S) in [0, 1] and labels (B,)."""
        images, labels = self.images[idx], self.labels[idx]
        if generator is not None and self.augment is not None:
            x, _ = augment(images, None, self.augment, None, generator)
            return x, labels
        return to_float(images), labels


# -- the idx format ------------------------------------------------------------------------------
def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array in an idx file, gzipped or not (told apart by the first two bytes)."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    raw = path.read_bytes()
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise InputError(f"{path}: truncated or corrupt gzip file ({e})") from None
    if len(raw) < 4:
        raise InputError(f"{path}: truncated: {len(raw)} bytes, not even an idx header")
    (found,) = struct.unpack(">I", raw[:4])
    if found != magic:
        raise InputError(f"{path}: magic number {found:#010x}, expected {magic:#010x} "
                         f"(an idx {'image' if magic == IMAGES_MAGIC else 'label'} file)")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InputError(f"{path}: truncated inside the header ({len(raw)} of {header} bytes)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    size = math.prod(shape)
    if len(raw) - header < size:
        raise InputError(f"{path}: truncated: the header promises {'x'.join(map(str, shape))} = {size:,} bytes "
                         f"of data, the file holds {len(raw) - header:,}")
    return np.frombuffer(raw, np.uint8, count=size, offset=header).reshape(shape)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an idx file, gzipped when the name ends in .gz (tests, small sets)."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    raw = struct.pack(f">I{array.ndim}I", 0x0800 | array.ndim, *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(raw, compresslevel=1) if path.name.endswith(".gz") else raw)


def find_file(folder: Path, stem: str) -> Path:
    """``stem`` or ``stem.gz`` in folder."""
    for name in (stem, stem + ".gz"):
        if (folder / name).exists():
            return folder / name
    raise InputError(f"{folder / stem}[.gz]: no such file (expected the four MNIST idx files in {folder})")


def load_mnist(folder: str | Path, split: str = "train") -> ClassificationDataset:
    """One split ('train' or 'test') of an MNIST-layout folder: images (N, 1, 28, 28), labels (N,)."""
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise InputError(f"{folder}: is a file, expected the folder holding the MNIST idx files")
    image_path, label_path = (find_file(folder, stem) for stem in FILES[split])
    images = read_idx(image_path, IMAGES_MAGIC)
    labels = read_idx(label_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise InputError(f"{image_path}: holds {len(images):,} images but {label_path.name} holds "
                         f"{len(labels):,} labels")
    if len(images) == 0:
        raise InputError(f"{image_path}: holds no images")
    if images.shape[1] != images.shape[2]:
        raise InputError(f"{image_path}: images are {images.shape[1]}x{images.shape[2]}, expected square digits")
    if labels.max() > 9:
        raise InputError(f"{label_path}: label {int(labels.max())} is not a digit 0-9")
    return ClassificationDataset(torch.from_numpy(images.copy())[:, None],   # (N, 1, 28, 28)
                                 torch.from_numpy(labels.astype(np.int64)))
