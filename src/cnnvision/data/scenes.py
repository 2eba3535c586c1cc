"""Detection data: images with any number of face boxes.

``frames`` letterboxes the 68-point frames (one face each, box = the extent of its points) into
squares. ``scenes`` makes training pictures that look more like ordinary photos: faces from those
frames at many scales, zero to three per picture, pasted with soft edges onto cluttered
backgrounds, and pictures with no face at all.
"""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from cnnvision import images as imgs
from cnnvision.boxes import box_iou, encode
from cnnvision.data.augment import (AugmentConfig, degrade, jitter_colour, jitter_intensity, random_transforms,
                                    to_float, warp)
from cnnvision.data.dataset import ImageSet, identities_from_names, identity_from_name
from cnnvision.data.faces68 import parse_points_csv
from cnnvision.data.photos import split_at_edge
from cnnvision.errors import InputError


@dataclass
class DetectionDataset(ImageSet):
    """images: uint8 (N, C, S, S); boxes: one (K, 4) float tensor per image, in its pixels."""
    images: torch.Tensor
    boxes: list[torch.Tensor]
    identities: list[str] | None = None
    stride: int = 8            # the detector's output cell, for the targets
    scale: float = 32.0        # the detector's offset unit, for the targets
    augment: AugmentConfig | None = field(default=None, repr=False)
    ignore: list[torch.Tensor] | None = None  # per image, (J, 4) regions neither face nor background

    def __post_init__(self):
        self.check_square()
        if len(self.boxes) != len(self):
            raise ValueError(f"{len(self.boxes)} box lists for {len(self)} images")

    def subset(self, idx) -> "DetectionDataset":
        idx = torch.as_tensor(idx, dtype=torch.long).tolist()
        return DetectionDataset(self.images[idx], [self.boxes[i] for i in idx],
                                [self.identities[i] for i in idx] if self.identities else None,
                                self.stride, self.scale, self.augment,
                                [self.ignore[i] for i in idx] if self.ignore else None)

    def to_face_boxes(self, style: str = "face") -> "DetectionDataset":
        """The same pictures with each box (the extent of a face's points) turned into a face box
        of a detector's ``box_style`` (``face`` or ``drawn``; data.photos.label_box)."""
        from cnnvision.data.photos import label_box
        self.boxes = [torch.from_numpy(label_box(b.numpy().reshape(-1, 2, 2), style)).float().reshape(-1, 4)
                      for b in self.boxes]
        return self

    def batch(self, idx: torch.Tensor, generator: torch.Generator | None = None):
        """float images (B, C, S, S) and targets (B, 5, S/stride, S/stride). Training turns,
        scales, shifts and mirrors each picture (``warped``), jitters brightness, contrast and
        colour, turns some grey, and blurs or adds noise as the augmentation asks."""
        x = to_float(self.images[idx])
        boxes = [self.boxes[i].clone() for i in idx.tolist()]
        ignore = [self.ignore[i].clone() for i in idx.tolist()] if self.ignore else [None] * len(boxes)
        if generator is not None and self.augment is not None:
            x, boxes, ignore = self.warped(x, boxes, ignore, generator)
            x = jitter_intensity(x, self.augment, generator)
            if x.shape[1] == 3:
                x = jitter_colour(x, generator)
            if self.augment.occlude or self.augment.blur or self.augment.noise:
                x = degrade(x, self.augment, generator)
        cells = -(-self.size // self.stride)
        target = torch.stack([encode(b, cells, cells, self.stride, self.scale, g) for b, g in zip(boxes, ignore)])
        return x, target

    def warped(self, x: torch.Tensor, boxes: list, ignore: list, generator: torch.Generator):
        """The pictures under one random similarity transform each (``augment``'s rotate, scale,
        shift and flip). A box moves with its centre and keeps its upright square shape, scaled: a
        face box is drawn upright around a turned face too. A box the move leaves mostly outside
        the picture becomes an ignore region, as a face cut by a crop's edge is."""
        A, t, mirror = random_transforms(len(x), self.augment, generator)
        x, _ = warp(x, None, A, t, mirror, None)
        zoom = torch.linalg.det(A).abs().sqrt()
        frame = (0.0, 0.0, float(self.size), float(self.size))
        moved_boxes, moved_ignore = [], []
        for i, (b, g) in enumerate(zip(boxes, ignore)):
            kept, cut = split_at_edge(self._moved(b, A[i], t[i], zoom[i]), frame, self.size)
            regions = [cut]
            if g is not None and len(g):
                regions += split_at_edge(self._moved(g, A[i], t[i], zoom[i]), frame, self.size)
            moved_boxes.append(torch.from_numpy(kept))
            moved_ignore.append(torch.from_numpy(np.concatenate(regions).astype(np.float32).reshape(-1, 4)))
        return x, moved_boxes, moved_ignore

    def _moved(self, boxes: torch.Tensor, A: torch.Tensor, t: torch.Tensor, zoom: torch.Tensor) -> np.ndarray:
        """Boxes (K, 4) in picture pixels (the picture spans 0 to size) under out = A @ p + t in
        unit coordinates (-1 to 1 across the picture)."""
        centre, half = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) / 2 * zoom
        unit = (centre * 2 / self.size - 1) @ A.T + t
        centre = (unit + 1) * self.size / 2
        return torch.cat([centre - half, centre + half], 1).numpy()


def _read(csv_path: Path, images_dir: Path):
    names, points = parse_points_csv(csv_path)
    if not images_dir.is_dir():
        raise InputError(f"{images_dir}: no such image folder (give it with --images DIR)")
    return names, points


def _frames_of(csv_path: Path, images_dir: Path, people: set[str] | None):
    """Names and points of a 68-point CSV, and the indices of the frames of ``people`` (all if None)."""
    names, points = _read(csv_path, images_dir)
    pool = [i for i, n in enumerate(names) if people is None or identity_from_name(n) in people]
    if not pool:
        raise InputError(f"{csv_path}: no frames of the people asked for")
    return names, points, pool


def frames(csv_path: str | Path, images_dir: str | Path, size: int = 160, channels: int = 3) -> DetectionDataset:
    """Each 68-point frame letterboxed (scaled to fit, padded) into size x size."""
    names, points = _read(Path(csv_path), Path(images_dir))
    pictures, boxes = [], []
    for name, pts in zip(names, points):
        im = imgs.open_image(Path(images_dir) / name, channels)
        side = max(im.size)
        box = (0.0, 0.0, float(side), float(side))
        pictures.append(_chw(imgs.crop_square(im, box, size)))
        tight = imgs.to_crop(np.concatenate([pts.min(0), pts.max(0)]).reshape(2, 2), box, size)
        boxes.append(torch.tensor(tight.reshape(1, 4), dtype=torch.float32))
    return DetectionDataset(torch.from_numpy(np.stack(pictures)), boxes, identities_from_names(names)[0])


def _chw(arr: np.ndarray) -> np.ndarray:
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def clutter(rng: np.random.Generator, size: int) -> Image.Image:
    """A background with no face: a colour gradient, shapes and noise, slightly blurred."""
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = np.linspace(0, 1, size)[:, None, None] if rng.random() < 0.5 else np.linspace(0, 1, size)[None, :, None]
    base = np.broadcast_to(a + (b - a) * t, (size, size, 3))
    im = Image.fromarray(np.clip(base + rng.normal(0, rng.uniform(2, 20), (size, size, 3)), 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    for _ in range(rng.integers(0, 12)):
        x0, y0 = rng.uniform(-size / 4, size, 2)
        w, h = rng.uniform(4, size / 2, 2)
        colour = tuple(int(v) for v in rng.uniform(0, 255, 3))
        shape = d.ellipse if rng.random() < 0.4 else d.rectangle
        shape([x0, y0, x0 + w, y0 + h], fill=colour)
    return im.filter(ImageFilter.GaussianBlur(rng.uniform(0, 2)))


def scenes(csv_path: str | Path, images_dir: str | Path, count: int, size: int = 160, channels: int = 3,
           people: set[str] | None = None, seed: int = 0) -> DetectionDataset:
    """``count`` pictures of 0-3 faces (taken only from ``people`` when given) on clutter."""
    names, points, pool = _frames_of(Path(csv_path), Path(images_dir), people)
    rng = np.random.default_rng(seed)
    pictures, boxes = [], []
    for _ in range(count):
        canvas = clutter(rng, size)
        placed: list[list[float]] = []
        for _ in range(rng.choice(4, p=[0.15, 0.45, 0.25, 0.15])):
            i = pool[rng.integers(len(pool))]
            pts = points[i]
            x0, y0 = pts.min(0)
            x1, y1 = pts.max(0)
            context = imgs.square_box(x0, y0, x1, y1, margin=rng.uniform(0.2, 0.45))
            face_side = float(np.exp(rng.uniform(np.log(14), np.log(size * 0.7))))  # the tight box's longer side
            crop_side = int(round(face_side * (context[2] - context[0]) / max(x1 - x0, y1 - y0)))
            if crop_side < 8:
                continue
            ox, oy = rng.uniform(-crop_side * 0.15, size - crop_side * 0.85, 2)
            src = imgs.open_image(Path(images_dir) / names[i], 3)
            patch = Image.fromarray(imgs.crop_square(src, context, crop_side))
            if rng.random() < 0.5:
                patch = patch.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                tight = imgs.to_crop(np.array([[x0, y0], [x1, y1]]), context, crop_side)
                tight[:, 0] = crop_side - 1 - tight[::-1, 0]
            else:
                tight = imgs.to_crop(np.array([[x0, y0], [x1, y1]]), context, crop_side)
            box = [float(ox + tight[0, 0]), float(oy + tight[0, 1]), float(ox + tight[1, 0]), float(oy + tight[1, 1])]
            if placed and box_iou(torch.tensor([box]), torch.tensor(placed)).max() > 0.1:
                continue
            mask = Image.new("L", patch.size, 0)
            ImageDraw.Draw(mask).ellipse([0, 0, crop_side - 1, crop_side - 1], fill=255)
            canvas.paste(patch, (int(round(ox)), int(round(oy))), mask.filter(ImageFilter.GaussianBlur(crop_side / 16)))
            # keep the part of the box inside the picture; drop faces mostly outside
            clipped = [max(box[0], 0), max(box[1], 0), min(box[2], size), min(box[3], size)]
            area = (box[2] - box[0]) * (box[3] - box[1])
            if (clipped[2] - clipped[0]) * (clipped[3] - clipped[1]) > 0.6 * area:
                placed.append(clipped)
        pictures.append(_chw(np.asarray(canvas.convert("L" if channels == 1 else "RGB"))))
        boxes.append(torch.tensor(placed, dtype=torch.float32).reshape(-1, 4))
    return DetectionDataset(torch.from_numpy(np.stack(pictures)), boxes)


def _crop_around(rng: np.random.Generator, im: Image.Image, pts: np.ndarray, size: int):
    """A random square crop of a frame that holds its whole face, from just around the face to the
    largest square the frame allows, resampled to size x size: (picture, (1, 4) box)."""
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    face = max(x1 - x0, y1 - y0)
    largest = max(min(im.size), face * 1.05)
    side = rng.uniform(min(face * 1.1, largest), largest)
    # the crop's corner, anywhere that keeps the face inside it (and the crop in the frame if it fits)
    lo_x, hi_x = x1 - side, x0
    lo_y, hi_y = y1 - side, y0
    if side <= min(im.size):
        lo_x, hi_x = max(lo_x, 0), min(hi_x, im.size[0] - side)
        lo_y, hi_y = max(lo_y, 0), min(hi_y, im.size[1] - side)
    cx = rng.uniform(min(lo_x, hi_x), max(lo_x, hi_x))
    cy = rng.uniform(min(lo_y, hi_y), max(lo_y, hi_y))
    box = (cx, cy, cx + side, cy + side)
    tight = imgs.to_crop(np.array([[x0, y0], [x1, y1]], dtype=np.float32), box, size)
    return imgs.crop_square(im, box, size), tight.reshape(1, 4).clip(0, size)


def _crop_inside(rng: np.random.Generator, im: Image.Image, pts: np.ndarray, size: int) -> np.ndarray:
    """A square from inside a face (an eye, a cheek, the mouth, half the face): a picture with no
    whole face in it, so the detector learns that a face's parts, seen close up, are not faces."""
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    face = max(x1 - x0, y1 - y0)
    side = face * rng.uniform(0.25, 0.7)
    cx, cy = rng.uniform(x0, max(x0, x1 - side)), rng.uniform(y0, max(y0, y1 - side))
    return imgs.crop_square(im, (cx, cy, cx + side, cy + side), size)


def frame_crops(csv_path: str | Path, images_dir: str | Path, count: int, size: int = 160, channels: int = 3,
                people: set[str] | None = None, seed: int = 0, inside: float = 0.0,
                tiles: tuple[int, ...] = (1,)) -> DetectionDataset:
    """``count`` real pictures made from the frames (of ``people``). Each is a grid of k x k tiles,
    k drawn from ``tiles``; a tile is a random square crop of a frame around its face or, with
    probability ``inside``, a square from inside a face (which holds no face)."""
    names, points, pool = _frames_of(Path(csv_path), Path(images_dir), people)
    rng = np.random.default_rng(seed)
    pictures, boxes = [], []
    for _ in range(count):
        k = int(rng.choice(tiles))
        tile = size // k
        canvas = np.zeros((size, size) if channels == 1 else (size, size, 3), np.uint8)
        found = []
        for r in range(k):
            for c in range(k):
                i = pool[rng.integers(len(pool))]
                im = imgs.open_image(Path(images_dir) / names[i], channels)
                if rng.random() < inside:
                    part, box = _crop_inside(rng, im, points[i], tile), np.zeros((0, 4), np.float32)
                else:
                    part, box = _crop_around(rng, im, points[i], tile)
                canvas[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = part
                found.append(box + np.array([c, r, c, r], np.float32) * tile)
        pictures.append(_chw(canvas))
        boxes.append(torch.tensor(np.concatenate(found), dtype=torch.float32).reshape(-1, 4))
    return DetectionDataset(torch.from_numpy(np.stack(pictures)), boxes)


def concat(parts: list[DetectionDataset]) -> DetectionDataset:
    ignore = [g for p in parts for g in (p.ignore or [torch.zeros(0, 4)] * len(p))]
    return DetectionDataset(torch.cat([p.images for p in parts]), [b for p in parts for b in p.boxes],
                            stride=parts[0].stride, scale=parts[0].scale, augment=parts[0].augment,
                            ignore=ignore if any(len(g) for g in ignore) else None)
