"""The 68-point layout of the YouTube-Faces keypoint frames: a CSV whose first column names an
image in ``--images DIR`` and whose next 136 columns are x0, y0, ..., x67, y67 in that image's
pixels, counted from 1 as iBUG's .pts files count them (``POINTS_ORIGIN``).

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
from cnnvision.data.kaggle import check_points, read_rows
from cnnvision.data.layouts import IBUG68
from cnnvision.errors import InputError

MARGIN = 0.15  # extra on each side of the tight box, as a fraction of its longer side

# The 68-point CSVs number pixels from 1, as the iBUG .pts files of 300-W do: the first pixel's
# centre is (1, 1). They are read into this package's convention (pixel centres at 0, 1, ...) by
# subtracting this. Measured, since flip augmentation cannot learn a sideways offset of the labels
# (a mirrored face's labels are offset the other way): the landmark net trained on them as
# 0-based placed the points of held-out faces 1.42 source px to the left of their labels on
# average on faces-300w and 1.15 on the TV frames, at every face size, while up and down (which
# no flip mirrors) it had learnt the offset: +1.00 px. dlib, trained on the 300-W photos, fits
# their labels best read from 1 (benchmarks/label_origin.py). The web-faces points (AFLW) show
# no such offset (0.1-0.2 px) and are read as they are.
POINTS_ORIGIN = 1.0


def face_box(points: np.ndarray, margin: float = MARGIN):
    """The square crop for a face, from its (68, 2) points."""
    x0, y0 = points.min(0)
    x1, y1 = points.max(0)
    return imgs.square_box(x0, y0, x1, y1, margin)


def parse_points_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """A 68-point CSV's file names and (N, 68, 2) points, in pixels counted from 0."""
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
        points.append(pts - POINTS_ORIGIN)
    if not names:
        raise InputError(f"{path}: no rows")
    return names, np.stack(points)


def load_faces68(csv_path: str | Path, images_dir: str | Path | None = None, size: int = 96,
                 channels: int = 1, use_cache: bool = True, margin: float = MARGIN) -> KeypointDataset:
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
    key = cache.cache_key(csv_path, "faces68", str(images_dir.resolve()), size, channels, margin, POINTS_ORIGIN)

    def crop_faces() -> dict:
        names, points = parse_points_csv(csv_path)
        crops, boxes = [], []
        for row, (name, pts) in enumerate(zip(names, points), start=2):
            im = imgs.open_image(images_dir / name, channels)
            try:  # the values as the file gives them, so the message quotes it
                check_points(pts[:, 0] + POINTS_ORIGIN, im.width)
                check_points(pts[:, 1] + POINTS_ORIGIN, im.height)
            except ValueError as e:
                raise InputError(f"{csv_path}: row {row} ({name}): {e}") from None
            box = face_box(pts, margin)
            crop = imgs.crop_square(im, box, size)
            crops.append(crop[None] if channels == 1 else crop.transpose(2, 0, 1))
            boxes.append(box)
        return {"images": np.stack(crops), "points": points, "boxes": np.asarray(boxes, np.float32),
                "names": np.asarray(names)}
    arrays = cache.cached(key, crop_faces, use_cache)
    boxes, crop_points = in_crops(arrays, size)
    names = [str(s) for s in arrays["names"]]
    return KeypointDataset(torch.from_numpy(arrays["images"]), crop_points, IBUG68, boxes,
                           identities_from_names(names)[0], names)


def in_crops(arrays: dict, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The crops' boxes (N, 4) in source pixels and the cached source-pixel points in crop pixels."""
    boxes = torch.from_numpy(arrays["boxes"])
    scale = (boxes[:, 2] - boxes[:, 0]) / size  # source pixels per crop pixel
    crop_points = (torch.from_numpy(arrays["points"]) + 0.5 - boxes[:, None, :2]) / scale[:, None, None] - 0.5
    return boxes, crop_points.float()


WEB_MIN_FACE = 64  # web-faces boxes smaller than this (px) are left out of landmark training


def load_web68(csv_path: str | Path, images_dir: str | Path, size: int = 96, channels: int = 1,
               use_cache: bool = True, margin: float = MARGIN, val_fraction: float = 0.15) -> KeypointDataset:
    """The web-faces photos as partly labelled 68-point faces: the 16 of their 21 points that
    are iBUG points (``WEB21_TO_68``), NaN for the other 52, which the loss skips. Each face is
    framed as the other sources' faces are, around its 68 points' extent (which ``drawn_extent``
    finds from the drawn box), then the margin; boxes under ``WEB_MIN_FACE`` px
    are left out (the photos are at most 640 px: smaller faces would be mostly blur). The
    validation photos are the detector's (``split_photos``, seed 0, ``val_fraction``), so no
    landmark net trains on the photos the detector is measured on."""
    from cnnvision.data.layouts import WEB21_TO_68
    from cnnvision.data.photos import drawn_extent, read_web_faces, split_photos
    csv_path, images_dir = Path(csv_path), Path(images_dir)
    if not images_dir.is_dir():
        raise InputError(f"{images_dir}: no such image folder (give it with --images DIR)")
    names, boxes, points21 = read_web_faces(csv_path)
    photos = list(dict.fromkeys(names))
    _, val_photos = split_photos(photos, val_fraction)
    held_out = {photos[i] for i in val_photos}
    key = cache.cache_key(csv_path, "web68", str(images_dir.resolve()), size, channels, margin, WEB_MIN_FACE,
                          "drawn_extent")

    def crop_faces() -> dict:
        crops, squares, points, kept = [], [], [], []
        opened = {}
        for name, box, pts in zip(names, boxes, points21):
            if box[2] - box[0] < WEB_MIN_FACE:
                continue
            if name not in opened:
                opened = {name: imgs.open_image(images_dir / name, channels)}
            square = imgs.square_box(*drawn_extent(box), margin)
            crop = imgs.crop_square(opened[name], square, size)
            crops.append(crop[None] if channels == 1 else crop.transpose(2, 0, 1))
            full = np.full((68, 2), np.nan, np.float32)
            for a, b in WEB21_TO_68.items():
                full[b] = pts[a]
            squares.append(square)
            points.append(full)
            kept.append(name)
        if not kept:
            raise InputError(f"{csv_path}: no face of {WEB_MIN_FACE} px or more to train landmarks on")
        return {"images": np.stack(crops), "points": np.stack(points), "boxes": np.asarray(squares, np.float32),
                "names": np.asarray(kept)}
    arrays = cache.cached(key, crop_faces, use_cache)
    squares, crop_points = in_crops(arrays, size)
    kept = [str(s) for s in arrays["names"]]
    fixed = torch.tensor([int(n in held_out) for n in kept], dtype=torch.int8)
    return KeypointDataset(torch.from_numpy(arrays["images"]), crop_points, IBUG68, squares, kept, kept,
                           fixed_split=fixed)


# How the Kaggle faces (and the proxy built like them) are framed in their 96 x 96 crops, measured
# on the proxy's 3,519 faces: the midpoint of the eye centres at (48.3, 37.8) px (each +-2.0),
# the eye centres 36.3 px apart (+-3.5), the crop not rotated.
KAGGLE_EYES_AT = (48.3, 37.8)
KAGGLE_EYE_DISTANCE = 36.3


def load_kaggle_style(csv_path: str | Path, images_dir: str | Path, use_cache: bool = True,
                      seed: int = 0) -> KeypointDataset:
    """96 x 96 grey crops of the faces of a 68-point CSV framed as the Kaggle faces are (eyes
    placed and scaled as measured on the proxy, with the same spread drawn at random), labelled
    with Kaggle's 15 points taken from the 68 as the proxy's were (``KAGGLE15_FROM_68``). Errors
    are then in crop pixels, as Kaggle scores them."""
    from cnnvision.data.layouts import KAGGLE15, KAGGLE15_FROM_68
    csv_path, images_dir = Path(csv_path), Path(images_dir)
    if not csv_path.exists():
        raise InputError(f"{csv_path}: no such file")
    if not images_dir.is_dir():
        raise InputError(f"{images_dir}: no such image folder (give it with --images DIR)")
    key = cache.cache_key(csv_path, "kaggle-style", str(images_dir.resolve()), seed, KAGGLE_EYES_AT, KAGGLE_EYE_DISTANCE,
                          "labels as written")

    def crop_faces() -> dict:
        names, points = parse_points_csv(csv_path)
        # The Kaggle stand-in (kaggle-fkd/proxy_training.csv.gz) was made from the 68 points as
        # the files write them, counting from 1; so are these crops' labels, to agree with it.
        # (On its held-out people keypoints15 places its points 1.21 crop px left of their labels,
        # the same sideways offset a mirror-trained net cannot learn; the real Kaggle files'
        # convention cannot be measured without their pixels.)
        points = points + POINTS_ORIGIN
        rng = np.random.default_rng(seed)
        fifteen = np.stack([points[:, list(i)].mean(1) if isinstance(i, tuple) else points[:, i]
                            for i in KAGGLE15_FROM_68], 1)  # (N, 15, 2)
        crops, crop_points = [], []
        for name, pts in zip(names, fifteen):
            eyes = (pts[0] + pts[1]) / 2
            distance = max(float(np.linalg.norm(pts[0] - pts[1])), 1.0)
            scale = distance / (KAGGLE_EYE_DISTANCE * rng.uniform(0.9, 1.1))  # source px per crop px
            at = np.array(KAGGLE_EYES_AT) + rng.normal(0, 2.0, 2)
            x0, y0 = eyes + 0.5 - (at + 0.5) * scale  # so that eyes land at ``at`` (pixel centres)
            box = (float(x0), float(y0), float(x0 + 96 * scale), float(y0 + 96 * scale))
            crops.append(imgs.crop_square(imgs.open_image(images_dir / name, 1), box, 96)[None])
            crop_points.append(imgs.to_crop(pts, box, 96))
        return {"images": np.stack(crops), "points": np.stack(crop_points).astype(np.float32),
                "names": np.asarray(names)}
    arrays = cache.cached(key, crop_faces, use_cache)
    names = [str(s) for s in arrays["names"]]
    return KeypointDataset(torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["points"]), KAGGLE15,
                           identities=identities_from_names(names)[0], names=names)
