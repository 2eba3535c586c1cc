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
    sources: torch.Tensor | None = field(default=None, repr=False)  # (N,) which source file each face came from
    shares: tuple[float, ...] | None = field(default=None, repr=False)  # each source's share of a training batch
    # (N,) int8 where a reader fixes the split itself: 1 validation, 0 training, -1 by identity
    fixed_split: torch.Tensor | None = field(default=None, repr=False)

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
                               pick(self.names) if self.names else None, self.augment,
                               self.sources[idx] if self.sources is not None else None, self.shares,
                               self.fixed_split[idx] if self.fixed_split is not None else None)

    def source(self, k: int) -> "KeypointDataset":
        """The faces of the k-th source alone."""
        return self.subset(torch.nonzero(self.sources == k).flatten())

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        """The sample indices of one training epoch: a shuffle of all of them, or, where the set
        joins several sources with ``shares``, about ``len(self)`` indices drawn so that each
        source fills its share of every batch (a small source repeats, a large one is sampled)."""
        if self.shares is None or self.sources is None:
            return torch.randperm(len(self), generator=generator)
        n, picked = len(self), []
        for k, share in enumerate(self.shares):
            members = torch.nonzero(self.sources == k).flatten()
            want = int(round(n * share))
            if want == 0 or len(members) == 0:
                continue
            reps = -(-want // len(members))
            draws = torch.cat([members[torch.randperm(len(members), generator=generator)] for _ in range(reps)])
            picked.append(draws[:want])
        order = torch.cat(picked)
        return order[torch.randperm(len(order), generator=generator)]

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


def identities_from_names(names: list[str]) -> tuple[list[str], str]:
    """Who each file shows, and by what a validation split should go: ``"identity"`` where the
    file names carry a person (YouTube-Faces' ``Person_Name_NN.jpg``: several frames a person,
    none holding more than 50 files or 5% of them), else ``"photo"``, each photo its own group:
    faces-300w's ``lfpw_image_0001.jpg`` or ``afw_<id>.jpg`` name a collection, not a person,
    and ``helen_<id>_1.jpg`` a single photo, so every face of a photo stays on one side and no
    collection lands whole in validation."""
    people = [identity_from_name(n) for n in names]
    files: dict[str, set[str]] = {}
    for person, name in zip(people, names):
        files.setdefault(person, set()).add(name)
    sizes = [len(f) for f in files.values()]
    collections = max(sizes, default=0) > max(50, 0.05 * len(set(names)))
    singletons = sum(s == 1 for s in sizes) > len(sizes) / 2
    if collections or singletons:
        return list(names), "photo"
    return people, "identity"


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


def split_source(fixed: torch.Tensor | None, identities: list[str] | None, n: int, val_fraction: float):
    """One source's train and validation indices: its reader's own split where it fixed one for
    every face (``fixed_split``), else ``split_by_identity``."""
    if fixed is not None and bool((fixed >= 0).all()):
        return torch.nonzero(fixed == 0).flatten(), torch.nonzero(fixed == 1).flatten()
    return split_by_identity(identities, n, val_fraction)


def hold_out_people(dataset, val_fraction: float, source) -> tuple:
    """(train, validation) subsets of a dataset with identities, no person (or photo, where there
    are no identities) on both sides, as ``train`` makes them and ``evaluate --split`` remakes
    them. A set joined from several sources is split source by source, so each source's
    held-out faces are the ones it would have alone."""
    sources = getattr(dataset, "sources", None)
    fixed = getattr(dataset, "fixed_split", None)
    if sources is not None and int(sources.max()) > 0:
        train_idx, val_idx = [], []
        for k in range(int(sources.max()) + 1):
            members = torch.nonzero(sources == k).flatten()
            names = source[k] if isinstance(source, (list, tuple)) else source
            tr, va = split_source(None if fixed is None else fixed[members],
                                  [dataset.identities[i] for i in members.tolist()] if dataset.identities else None,
                                  len(members), val_fraction)
            if len(tr) < 2 or len(va) < 1:
                raise InputError(f"{names}: too few faces ({len(members)}) to hold out a validation set")
            train_idx.append(members[tr])
            val_idx.append(members[va])
        return dataset.subset(torch.cat(train_idx)), dataset.subset(torch.cat(val_idx))
    train_idx, val_idx = split_source(fixed, dataset.identities, len(dataset), val_fraction)
    if len(train_idx) < 2 or len(val_idx) < 1:
        raise InputError(f"{source}: too few faces ({len(dataset)}) to hold out a validation set")
    return dataset.subset(train_idx), dataset.subset(val_idx)


def join(parts: list["KeypointDataset"], shares: tuple[float, ...] | None = None) -> "KeypointDataset":
    """One set of faces from several sources of one layout and crop size, each face remembering
    its source (``sources``); identities are prefixed with the source's number so two files'
    people never merge. ``shares``: each source's share of a training batch (default: in
    proportion to its size)."""
    first = parts[0]
    for p in parts[1:]:
        if p.layout != first.layout or p.images.shape[1:] != first.images.shape[1:]:
            raise InputError("the data sources differ in layout or crop size and cannot be trained on together")
    named = lambda seq, k, n: [f"{k}:{x}" for x in seq] if seq else [f"{k}:{i}" for i in range(n)]  # noqa: E731
    return KeypointDataset(
        torch.cat([p.images for p in parts]), torch.cat([p.points for p in parts]), first.layout,
        torch.cat([p.boxes for p in parts]),
        [x for k, p in enumerate(parts) for x in named(p.identities, k, len(p))],
        [x for p in parts for x in (p.names or [""] * len(p))], first.augment,
        torch.cat([torch.full((len(p),), k, dtype=torch.long) for k, p in enumerate(parts)]), shares,
        torch.cat([p.fixed_split if p.fixed_split is not None else torch.full((len(p),), -1, dtype=torch.int8)
                   for p in parts]) if any(p.fixed_split is not None for p in parts) else None)


def split_record(train_set, val_set) -> dict:
    """The split's sizes as config.json records them."""
    return {"train_count": len(train_set), "val_count": len(val_set),
            "val_people": len(set(val_set.identities)) if val_set.identities else None}


def split_summary(train_set, val_set) -> str:
    """'N training and M validation faces (P held-out people)', for the log."""
    people = len(set(val_set.identities)) if val_set.identities else None
    return f"{len(train_set)} training and {len(val_set)} validation faces" + (
        f" ({people} held-out people)" if people else "")
