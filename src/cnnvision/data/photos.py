"""Detection pictures cut from real photos of any size, and the face-box conventions.

Two layouts of labelled photos:

- **web-faces** (``image,box_x0,box_y0,box_x1,box_y1,x0,y0,...,x20,y20``): a row per face, with
  a box and 21 AFLW points; every face that is not labelled is blacked out, so everything else
  in a photo is background.
- **68-point photos** (faces-300w, the youtube-faces-68 CSV layout): a row per labelled face; not
  every face in a photo is labelled, so regions where a detector finds an unlabelled face are
  kept out of the background loss (``ignore`` boxes).

A *face box* is what a person draws around a face, as the web-faces boxes are: a square whose top
lies about a tenth of its side above the brows and whose bottom lies 0.3 of it below the mouth
corners (medians over the 1,593 web-faces faces). ``drawn_box`` finds it from a face's eye
corners, nose tip and mouth corners (fitted on the web-faces training faces; the photo pipeline
reports it). The detectors shipped at stops 18-24 were trained, for the photos labelled with 68
points, on ``face_box``: the square 1.226 times the longer side of the points' extent, centred
0.102 of that side below the extent's centre. That rule was fitted on the web-faces boxes with a
wrong reading of their 21 points (the data README's order, which the file does not follow), and
it is a larger box than the drawn one: around the points the shipped landmark net places on
web-faces faces it meets the drawn boxes at IoU 0.60 on average, the extent's own square at 0.77,
``drawn_box`` at 0.90.
Detectors of box style ``drawn`` (stop 25 on) are trained on the drawn box for every source,
``drawn_box_of_extent`` for the faces known by their points.
"""
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnnvision import images as imgs
from cnnvision.boxes import box_iou
from cnnvision.data.kaggle import read_rows
from cnnvision.errors import InputError

FACE_SIDE = 1.226   # face box side / longer side of the 68 points' extent
FACE_DROP = 0.102   # face box centre below the extent's centre, in extent sides
WEB_COLUMNS = 5 + 42
# Two rows of one photo whose boxes meet at this IoU or more are one face labelled twice: the
# web-faces CSV has three such pairs (IoU 0.993-1.0; 000323 and 003229 among the training photos,
# 003200 among the validation ones), and no two of its other faces meet at more than IoU 0.21.
SAME_FACE_IOU = 0.9


def square_around_extent(points: np.ndarray, scale: float, drop: float) -> np.ndarray:
    """(..., K, 2) points (or (..., 2, 2) corners of their extent) -> (..., 4) the square ``scale``
    times the longer side of their extent, centred ``drop`` of that side below the extent's centre
    (negative: above). ``face_box`` and ``drawn_box_of_extent`` are two such rules."""
    lo, hi = points.min(-2), points.max(-2)
    side = (hi - lo).max(-1)
    cx, cy = (lo[..., 0] + hi[..., 0]) / 2, (lo[..., 1] + hi[..., 1]) / 2 + drop * side
    half = scale * side / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], -1)


def extent_in_square(boxes, scale: float, drop: float):
    """Inverse of ``square_around_extent``: boxes (..., 4) (numpy or torch) -> the squares around
    the extents they stand for."""
    side = (boxes[..., 2] - boxes[..., 0]) / scale
    cx = (boxes[..., 0] + boxes[..., 2]) / 2
    cy = (boxes[..., 1] + boxes[..., 3]) / 2 - drop * side
    stack = torch.stack if isinstance(boxes, torch.Tensor) else np.stack
    return stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], -1)


def face_box(points: np.ndarray) -> np.ndarray:
    """(..., 68, 2) points (or (..., 2, 2) corners of their extent) -> (..., 4) face boxes."""
    return square_around_extent(points, FACE_SIDE, FACE_DROP)


# The box a person draws around a face, from five of its 68 points, so that the photo pipeline can
# report a face's box from its landmarks. Fitted (least squares) on the 1,378 faces of the
# web-faces training photos, whose drawn boxes and true eye corners, nose tip and mouth corners
# are labelled: the centre lies DRAWN_DOWN of the way from the middle of the four eye corners to
# the middle of the mouth corners, moved by DRAWN_NOSE times the nose tip's offset from halfway
# between them (the face turns towards where the nose points); the side is DRAWN_EYES_MOUTH
# eyes-to-mouth distances plus DRAWN_OUTER_EYES outer-eye-corner distances (one grows as the head
# nods, the other as it turns). On the 215 faces of the validation photos it meets the drawn box
# at IoU 0.908 on average (0.815 for the worst 5%); ``face_box`` of the same faces' points, which
# needs the jaw, is another convention (the extent's square enlarged 1.226 times).
DRAWN_DOWN, DRAWN_NOSE = 0.543, 0.285
DRAWN_EYES_MOUTH, DRAWN_OUTER_EYES = 1.577, 0.425


def drawn_box(points: np.ndarray) -> np.ndarray:
    """(..., 68, 2) points (iBUG order) -> (..., 4) the square a person would draw around that face."""
    eyes = points[..., [36, 39, 42, 45], :].mean(-2)
    mouth = points[..., [48, 54], :].mean(-2)
    centre = eyes + DRAWN_DOWN * (mouth - eyes) + DRAWN_NOSE * (points[..., 30, :] - (eyes + mouth) / 2)
    side = (DRAWN_EYES_MOUTH * np.linalg.norm(mouth - eyes, axis=-1)
            + DRAWN_OUTER_EYES * np.linalg.norm(points[..., 45, :] - points[..., 36, :], axis=-1))
    return np.concatenate([centre - side[..., None] / 2, centre + side[..., None] / 2], -1)


# The square around a face's 68-point extent that its drawn box stands for: the box's side is
# DRAWN_EXTENT_SIDE of the extent's, its centre DRAWN_EXTENT_RISE of the extent's side above the
# extent's centre (medians over 1,355 faces of the web-faces training photos, with the points the
# shipped landmark net placed on them, stop 25).
DRAWN_EXTENT_SIDE, DRAWN_EXTENT_RISE = 0.975, 0.014


def drawn_extent(boxes: np.ndarray) -> np.ndarray:
    """Drawn face boxes (..., 4) -> the squares (..., 4) around the extent of their faces' 68
    points: the framing the landmark nets are trained on."""
    return extent_in_square(boxes, DRAWN_EXTENT_SIDE, -DRAWN_EXTENT_RISE)


def drawn_box_of_extent(points: np.ndarray) -> np.ndarray:
    """(..., 68, 2) points (or (..., 2, 2) corners of their extent) -> (..., 4) the drawn box
    their extent stands for, by the inverse of ``drawn_extent``: the label of a face known by its
    points (or only by their extent, as the drawn scenes know it) in the drawn convention."""
    return square_around_extent(points, DRAWN_EXTENT_SIDE, -DRAWN_EXTENT_RISE)


def label_box(points: np.ndarray, style: str) -> np.ndarray:
    """A face's box in a detector's ``box_style`` from its (..., 68, 2) points or their (..., 2, 2)
    extent: ``face`` (``face_box``, the shipped detectors'), ``drawn`` (``drawn_box_of_extent``) or
    ``points`` (the extent itself, the first detector's)."""
    if style == "face":
        return face_box(points)
    if style == "drawn":
        return drawn_box_of_extent(points)
    return np.concatenate([points.min(-2), points.max(-2)], -1)


def framing_of(boxes: np.ndarray, style: str) -> np.ndarray:
    """A detector's boxes (..., 4) in its ``box_style`` -> the squares around the extent of the
    faces' points (the framing the landmark nets are trained on); ``points`` boxes are extents."""
    if style == "face":
        return extent_of(boxes)
    if style == "drawn":
        return drawn_extent(boxes)
    return boxes


def extent_of(boxes):
    """Inverse of ``face_box`` for the square extent: face boxes (..., 4) -> the square around
    the points' extent they stand for (the framing the landmark nets were trained on)."""
    return extent_in_square(boxes, FACE_SIDE, FACE_DROP)


def is_web_faces(header: list[str]) -> bool:
    return len(header) == WEB_COLUMNS and header[0].strip() == "image" and header[1].strip() == "box_x0"


def read_web_faces(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names, boxes (N, 4) and 21 points (N, 21, 2) of a web-faces CSV, a row per face. A row
    whose box meets an earlier box of the same photo at ``SAME_FACE_IOU`` or more labels that face
    a second time and is left out: a detector draws one box on a face, which cannot match both."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    rows = read_rows(path)
    _, header = next(rows)
    if not is_web_faces(header):
        raise InputError(f"{path}: not the web-faces layout (image,box_x0,box_y0,box_x1,box_y1, then 21 points)")
    names, values = [], []
    seen: dict[str, list[torch.Tensor]] = {}  # each photo's boxes so far
    for line, row in rows:
        if not row:
            continue
        if len(row) != WEB_COLUMNS:
            raise InputError(f"{path}: row {line}: has {len(row)} fields, expected {WEB_COLUMNS}")
        try:
            v = np.array(row[1:], dtype=np.float32)
        except ValueError:
            raise InputError(f"{path}: row {line}: non-numeric value") from None
        if not np.isfinite(v).all() or np.abs(v).max() > 1e6:
            raise InputError(f"{path}: row {line}: missing or impossible coordinate")
        if v[2] <= v[0] or v[3] <= v[1]:
            raise InputError(f"{path}: row {line}: empty box {v[:4].tolist()}")
        earlier = seen.setdefault(row[0], [])
        box = torch.from_numpy(v[None, :4])
        if earlier and box_iou(box, torch.cat(earlier)).max() >= SAME_FACE_IOU:
            continue
        earlier.append(box)
        names.append(row[0])
        values.append(v)
    if not names:
        raise InputError(f"{path}: no rows")
    values = np.stack(values)
    return names, values[:, :4], values[:, 4:].reshape(-1, 21, 2)


def group_by_photo(names: list[str], boxes: np.ndarray) -> tuple[list[str], list[np.ndarray]]:
    """Photos in first-seen order and the (K, 4) boxes of each."""
    order: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        order.setdefault(n, []).append(i)
    return list(order), [boxes[idx].reshape(-1, 4) for idx in order.values()]


def split_photos(photos: list[str], val_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Training and validation photo indices, by a fixed-seed shuffle of the photos."""
    perm = torch.randperm(len(photos), generator=torch.Generator().manual_seed(seed)).tolist()
    cut = int(round(len(photos) * val_fraction))
    if cut < 1 or cut >= len(photos):
        raise InputError(f"too few photos ({len(photos)}) to hold out a validation set")
    return sorted(perm[cut:]), sorted(perm[:cut])


def split_at_edge(boxes: np.ndarray, crop: tuple, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes in crop pixels, split into those mostly inside the crop (kept, clipped) and those cut
    by its edge (to be ignored: neither face nor background)."""
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32)
    x0, y0, x1, _ = crop
    s = size / (x1 - x0)
    b = (boxes - np.array([x0, y0, x0, y0])) * s
    clipped = b.clip(0, size)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    kept_area = (clipped[:, 2] - clipped[:, 0]).clip(0) * (clipped[:, 3] - clipped[:, 1]).clip(0)
    keep = kept_area > 0.6 * area
    cut = (kept_area > 0) & ~keep
    return clipped[keep].astype(np.float32), clipped[cut].astype(np.float32)


def photo_crops(photos: list[Image.Image], boxes: list[np.ndarray], ignore: list[np.ndarray], count: int,
                size: int = 160, channels: int = 3, seed: int = 0, empty: float = 0.2,
                smallest: float = 12.0, largest: float = 0.8, hard: list[np.ndarray] | None = None,
                hard_share: float = 0.0, enlarge_most: float | None = None):
    """``count`` square pictures (size x size) cut from photos, with their face boxes and ignore
    boxes in picture pixels. Most are centred loosely on a labelled face drawn at a random size
    from ``smallest`` px to ``largest`` of the side (log-uniform), holding its neighbours too; a
    share ``empty`` are random squares of random size anywhere (mostly no face: the negatives
    of walls, crowds' clothes, animals and hands that photos hold); and a share ``hard_share``
    are framed the same way around ``hard`` boxes (per photo): places a detector took for a
    face where there is none (hands, toys, badges), the negatives most worth learning from.
    With ``enlarge_most``, a face is drawn at most that many times its size in the photo (at that
    size where even ``smallest`` would enlarge it more): a small face is then seen as the photo
    holds it, sharp or blurred, and never as a blurred blob many times its size."""
    rng = np.random.default_rng(seed)
    with_faces = [i for i, b in enumerate(boxes) if len(b)]
    with_hard = [i for i, b in enumerate(hard or []) if len(b)]
    pictures, found, ignored = [], [], []
    mode = "L" if channels == 1 else "RGB"

    def around(b: np.ndarray, face: float) -> tuple[float, float, float]:
        """A square holding box ``b``, placed at random, in which a face ``face`` px wide is drawn
        at a random size: its corner and side."""
        most = size * largest if enlarge_most is None else min(size * largest, face * enlarge_most)
        target = float(np.exp(rng.uniform(np.log(min(smallest, most)), np.log(most))))
        side = face * size / target
        x0 = rng.uniform(b[2] - side, b[0]) if side > b[2] - b[0] else b[0]
        y0 = rng.uniform(b[3] - side, b[1]) if side > b[3] - b[1] else b[1]  # a box taller than wide
        return x0, y0, side

    for _ in range(count):
        draw = rng.random()
        if with_hard and draw < hard_share:
            i = with_hard[int(rng.integers(len(with_hard)))]
            b = hard[i][int(rng.integers(len(hard[i])))]
            x0, y0, side = around(b, max(b[2] - b[0], 4.0))
        elif draw < hard_share + empty or not with_faces:
            i = int(rng.integers(len(photos)))
            w, h = photos[i].size
            side = float(np.exp(rng.uniform(np.log(min(w, h) * 0.15), np.log(max(w, h)))))
            x0, y0 = rng.uniform(-0.1 * side, max(w - 0.9 * side, 1)), rng.uniform(-0.1 * side, max(h - 0.9 * side, 1))
        else:
            i = with_faces[int(rng.integers(len(with_faces)))]
            b = boxes[i][int(rng.integers(len(boxes[i])))]
            x0, y0, side = around(b, b[2] - b[0])
        crop = (x0, y0, x0 + side, y0 + side)
        pictures.append(imgs.crop_square(photos[i].convert(mode), crop, size))
        kept, cut = split_at_edge(boxes[i], crop, size)
        extra = split_at_edge(ignore[i], crop, size) if len(ignore[i]) else (np.zeros((0, 4)), np.zeros((0, 4)))
        found.append(torch.from_numpy(kept))
        ignored.append(torch.from_numpy(np.concatenate([cut, *extra]).astype(np.float32).reshape(-1, 4)))
    images = np.stack(pictures)
    images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(images)), found, ignored


def letterbox(photo: Image.Image, boxes: np.ndarray, size: int, channels: int = 3):
    """A photo scaled to fit size x size (padded with zeros), and its boxes in that picture."""
    side = max(photo.size)
    picture = imgs.crop_square(photo.convert("L" if channels == 1 else "RGB"), (0.0, 0.0, side, side), size)
    return picture, (boxes * size / side).astype(np.float32)
