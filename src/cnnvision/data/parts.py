"""Face parts for segmentation, rasterised from the 68 iBUG points.

Classes: 0 background, 1 face skin (the jaw and brow outline, less the other parts), 2 eyes,
3 nose, 4 mouth. Both eyes are one class, so a mirrored face needs no label swap. The crops and
their points come from ``faces68.load_faces68``; this module only draws the masks.
"""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from cnnvision.data.augment import AugmentConfig, jitter_intensity, random_transforms, to_float, warp
from cnnvision.data.dataset import ImageSet
from cnnvision.data.layouts import IBUG68

CLASSES = ("background", "skin", "eyes", "nose", "mouth")
# Each part's outline as point indices, painted in this order (later parts cover earlier ones).
FACE = [*range(0, 17), *range(26, 16, -1)]  # jaw left to right, then the brows right to left
PARTS = (
    (1, FACE),
    (2, list(range(36, 42))),
    (2, list(range(42, 48))),
    (3, [27, 31, 32, 33, 34, 35]),
    (4, list(range(48, 60))),
)


def rasterise(points, size: int) -> np.ndarray:
    """The (size, size) uint8 class mask of one face from its (68, 2) points in crop pixels.

    Points use pixel-centre coordinates (pixel i's centre is at i); PIL's polygon vertices are
    continuous coordinates, so each vertex is the point plus half a pixel.
    """
    points = np.asarray(points, dtype=np.float64) + 0.5
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    for label, outline in PARTS:
        draw.polygon([tuple(points[i]) for i in outline], fill=label)
    return np.asarray(mask)


@dataclass
class SegmentationDataset(ImageSet):
    """Square images and their per-pixel classes.

    images: uint8 (N, C, S, S); masks: uint8 (N, S, S) of class indices; identities: the person
    of each sample, where known, for splitting by person; points: where the masks were drawn from
    68 points, those points (N, 68, 2) in crop pixels, so augmented masks can be drawn afresh.
    """
    images: torch.Tensor
    masks: torch.Tensor
    identities: list[str] | None = None
    names: list[str] | None = None
    augment: AugmentConfig | None = field(default=None, repr=False)
    num_classes: int = len(CLASSES)
    points: torch.Tensor | None = field(default=None, repr=False)
    with_points: bool = field(default=False, repr=False)  # training batches also give the moved points

    def __post_init__(self):
        self.check_square()
        n, _, h, w = self.images.shape
        if self.masks.shape != (n, h, w):
            raise ValueError(f"masks {tuple(self.masks.shape)} do not match {n} images of {h}x{w}")
        if self.points is not None and self.points.shape != (n, 68, 2):
            raise ValueError(f"points {tuple(self.points.shape)} do not match {n} faces of 68 points")

    def subset(self, idx) -> "SegmentationDataset":
        idx = torch.as_tensor(idx, dtype=torch.long)
        pick = (lambda seq: [seq[i] for i in idx.tolist()])
        return SegmentationDataset(self.images[idx], self.masks[idx],
                                   pick(self.identities) if self.identities else None,
                                   pick(self.names) if self.names else None, self.augment, self.num_classes,
                                   self.points[idx] if self.points is not None else None, self.with_points)

    def batch(self, idx: torch.Tensor, generator: torch.Generator | None = None):
        """float images (B, C, S, S) in [0, 1] and long masks (B, S, S). Training batches move the
        image and its mask by the same random transform.

        With points, the moved mask is drawn afresh from the moved points, exactly as the masks it
        will be measured against are drawn. Resampling the drawn mask instead (nearest-neighbour,
        the fallback without points) snaps its edges to the old pixel grid: up to half a pixel off,
        a quarter of the IoU of an eye 3-4 pixels tall (measured: 0.76 between the two ways)."""
        x, masks = to_float(self.images[idx]), self.masks[idx]
        points = self.points[idx].float() if self.points is not None else None
        if generator is not None and self.augment is not None:
            A, t, mirror = random_transforms(x.shape[0], self.augment, generator)
            x, points = warp(x, points, A, t, mirror, IBUG68.flip_permutation())  # a mirror swaps left and right
            if points is not None:
                masks = torch.from_numpy(np.stack([rasterise(p, x.shape[-1]) for p in points.numpy()]))
            else:
                m, _ = warp(masks[:, None].float(), None, A, t, mirror, None, mode="nearest")  # (B, 1, S, S)
                masks = m[:, 0].round()
            x = jitter_intensity(x, self.augment, generator)
        if generator is not None and self.with_points:  # a training batch for aux_points, augmented or not
            return x, (masks.long(), points)
        return x, masks.long()


def load_parts(csv_path: str | Path, images_dir: str | Path | None = None, size: int = 96, channels: int = 1,
               use_cache: bool = True) -> SegmentationDataset:
    """The faces of a 68-point CSV, cropped as ``load_faces68`` crops them, with their part masks."""
    from cnnvision.data.faces68 import load_faces68
    faces = load_faces68(csv_path, images_dir, size, channels, use_cache)
    masks = np.stack([rasterise(p, size) for p in faces.points.numpy()])  # (N, S, S)
    return SegmentationDataset(faces.images, torch.from_numpy(masks), faces.identities, faces.names,
                               points=faces.points)
