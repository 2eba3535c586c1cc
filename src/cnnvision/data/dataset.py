"""In-memory datasets: every sample lives in one uint8 tensor, so a batch is one index.

A dataset yields ``(input, target)`` batches through ``batch(idx, generator)``; given a generator
(training) it augments, without one (evaluation) it only converts to float.
"""
import re
from dataclasses import dataclass, field

import torch

from cnnvision.data.augment import AugmentConfig, augment, to_float
from cnnvision.data.layouts import Layout
from cnnvision.errors import InputError


class ImageSet:
    """What every in-memory dataset shares: ``images``, uint8 (N, C, S, S), square."""
    images: torch.Tensor

    def check_square(self) -> None:
        h, w = self.images.shape[-2:]
        if h != w:
            raise ValueError(f"images must be square, got {h}x{w}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def size(self) -> int:
        return self.images.shape[-1]

    @property
    def channels(self) -> int:
        return self.images.shape[1]


@dataclass
class KeypointDataset(ImageSet):
    """Square face crops and their points.

    images: uint8 (N, C, S, S); points: float32 (N, K, 2) in crop pixels, NaN where unlabelled;
    boxes: float32 (N, 4), the crop's x0, y0, x1, y1 in the source image's pixels, so errors can
    be reported in source pixels; identities: the person of each sample, where known.
    """
    images: torch.Tensor
    points: torch.Tensor
    layout: Layout
    boxes: torch.Tensor | None = None
    identities: list[str] | None = None
    names: list[str] | None = None
    augment: AugmentConfig | None = field(default=None, repr=False)

    def __post_init__(self):
        self.check_square()
        n, _, h, w = self.images.shape
        if self.points.shape != (n, self.layout.num_points, 2):
            raise ValueError(f"points {tuple(self.points.shape)} do not match {n} images of layout {self.layout.name}")
        if self.boxes is None:
            self.boxes = torch.tensor([[0.0, 0.0, w, h]]).repeat(n, 1)

    def subset(self, idx) -> "KeypointDataset":
        idx = torch.as_tensor(idx, dtype=torch.long)
        pick = (lambda seq: [seq[i] for i in idx.tolist()])
        return KeypointDataset(self.images[idx], self.points[idx], self.layout, self.boxes[idx],
                               pick(self.identities) if self.identities else None,
                               pick(self.names) if self.names else None, self.augment)

    def batch(self, idx: torch.Tensor, generator: torch.Generator | None = None):
        """float images (B, C, S, S) in [0, 1] and points (B, K, 2) in crop pixels."""
        images, points = self.images[idx], self.points[idx]
        if generator is not None and self.augment is not None:
            return augment(images, points, self.augment, self.layout.flip_permutation(), generator)
        return to_float(images), points


def identity_from_name(name: str) -> str:
    """'Luis_Fonsi_21.jpg' -> 'Luis_Fonsi': the frame number is dropped."""
    stem = re.sub(r"\.[A-Za-z0-9]+$", "", name.rsplit("/", 1)[-1])
    return re.sub(r"_\d+$", "", stem)


def split_by_identity(identities: list[str] | None, n: int, val_fraction: float, seed: int = 0):
    """Train and validation indices with no person on both sides (random rows where identities
    are unknown). About ``val_fraction`` of the samples go to validation."""
    g = torch.Generator().manual_seed(seed)
    if not identities:
        perm = torch.randperm(n, generator=g)
        cut = int(round(n * val_fraction))
        return perm[cut:].sort().values, perm[:cut].sort().values
    people = sorted(set(identities))
    order = torch.randperm(len(people), generator=g).tolist()
    counts: dict[str, int] = {}
    for person in identities:
        counts[person] = counts.get(person, 0) + 1
    val_people, taken = set(), 0
    for i in order:
        if taken >= val_fraction * n:
            break
        val_people.add(people[i])
        taken += counts[people[i]]
    is_val = torch.tensor([p in val_people for p in identities])
    return torch.nonzero(~is_val).flatten(), torch.nonzero(is_val).flatten()


def hold_out_people(dataset, val_fraction: float, source) -> tuple:
    """(train, validation) subsets of a dataset with identities, no person on both sides, as
    ``train`` makes them and ``evaluate --split`` remakes them."""
    train_idx, val_idx = split_by_identity(dataset.identities, len(dataset), val_fraction)
    if len(train_idx) < 2 or len(val_idx) < 1:
        raise InputError(f"{source}: too few faces ({len(dataset)}) to hold out a validation set")
    return dataset.subset(train_idx), dataset.subset(val_idx)


def split_summary(train_set, val_set) -> str:
    """'N training and M validation faces (P held-out people)', for the log."""
    people = len(set(val_set.identities)) if val_set.identities else None
    return f"{len(train_set)} training and {len(val_set)} validation faces" + (
        f" ({people} held-out people)" if people else "")
