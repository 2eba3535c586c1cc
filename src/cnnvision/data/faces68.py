"""The 68-point layout of the YouTube-Faces keypoint frames: a CSV whose first column names an
image in ``--images DIR`` and whose next 136 columns are x0, y0, ..., x67, y67 in that image's
pixels.

Each face is cropped to a square around its points with a margin and resized, so the net sees
faces framed the same way the box of a detector (or of the true points, as 300-W evaluates)
frames them.
"""
from pathlib import Path

import numpy as np
import torch

from cnnvision import images as imgs
from cnnvision.data import cache
from cnnvision.data.dataset import KeypointDataset, identities_from_names
from cnnvision.data.kaggle import read_rows
from cnnvision.data.layouts import IBUG68
from cnnvision.errors import InputError

MARGIN = 0.15  # extra on each side of the tight box, as a fraction of its longer side


def face_box(points: np.ndarray, margin: float = MARGIN):
    """The square crop for a face, from its (68, 2) points."""
    x0, y0 = points.min(0)
    x1, y1 = points.max(0)
    return imgs.square_box(x0, y0, x1, y1, margin)


def parse_points_csv(path: Path) -> tuple[list[str], np.ndarray]:
    rows = read_rows(path)
    _, header = next(rows)
    if len(header) != 137:
        raise InputError(f"{path}: has {len(header)} columns, expected 137 (file name, then x0,y0..x67,y67)")
    names, points = [], []
    for line, row in rows:
        if not row:
            continue
        if len(row) != 137:
            raise InputError(f"{path}: row {line}: has {len(row)} fields, expected 137")
        try:
            pts = np.array(row[1:], dtype=np.float32).reshape(68, 2)
        except ValueError:
            raise InputError(f"{path}: row {line}: non-numeric keypoint value") from None
        if not np.isfinite(pts).all():
            raise InputError(f"{path}: row {line}: missing keypoint value")
        names.append(row[0])
        points.append(pts)
    if not names:
        raise InputError(f"{path}: no rows")
    return names, np.stack(points)


def load_faces68(csv_path: str | Path, images_dir: str | Path | None = None, size: int = 96,
                 channels: int = 1, use_cache: bool = True) -> KeypointDataset:
    """Crops of the faces named in a 68-point CSV (one row per labelled face; a photo with several
    has several rows). ``images_dir`` defaults to a folder beside the CSV named after it without
    ``_frames_keypoints.csv`` (the course's layout). Photos of any size are read once: the crops
    go to the cache. Each face's group for validation splits is its person where the file names
    carry one, else its photo (``identities_from_names``)."""
    csv_path = Path(csv_path)
    if not csv_path.exists():
        raise InputError(f"{csv_path}: no such file")
    if images_dir is None:
        images_dir = csv_path.with_name(csv_path.name.replace("_frames_keypoints.csv", ""))
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise InputError(f"{images_dir}: no such image folder (give it with --images DIR)")
    key = cache.cache_key(csv_path, "faces68", str(images_dir.resolve()), size, channels, MARGIN)
    arrays = cache.load(key) if use_cache else None
    if arrays is None:
        names, points = parse_points_csv(csv_path)
        crops, boxes = [], []
        for name, pts in zip(names, points):
            im = imgs.open_image(images_dir / name, channels)
            box = face_box(pts)
            crop = imgs.crop_square(im, box, size)
            crops.append(crop[None] if channels == 1 else crop.transpose(2, 0, 1))
            boxes.append(box)
        arrays = {"images": np.stack(crops), "points": points, "boxes": np.asarray(boxes, np.float32),
                  "names": np.asarray(names)}
        if use_cache:
            cache.save(key, arrays)
    boxes = torch.from_numpy(arrays["boxes"])  # (N, 4) in source pixels
    scale = (boxes[:, 2] - boxes[:, 0]) / size  # source pixels per crop pixel
    crop_points = (torch.from_numpy(arrays["points"]) + 0.5 - boxes[:, None, :2]) / scale[:, None, None] - 0.5
    names = [str(s) for s in arrays["names"]]
    return KeypointDataset(torch.from_numpy(arrays["images"]), crop_points.float(), IBUG68, boxes,
                           identities_from_names(names)[0], names)
