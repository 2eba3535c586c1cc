"""The Kaggle "Facial Keypoints Detection" CSV layout: 30 keypoint columns, then ``Image``,
9216 space-separated grey levels of a 96x96 face (training.csv); or ``ImageId,Image``
(test.csv). Plain or gzip.

Rows with missing keypoints are kept (NaN); the Net masks them out of the loss.
"""
import csv
import gzip
import io
import sys
from pathlib import Path

import numpy as np
import torch

from cnnvision.data import cache
from cnnvision.data.dataset import KeypointDataset
from cnnvision.data.layouts import KAGGLE15
from cnnvision.errors import InputError

SIDE = 96
PIXELS = SIDE * SIDE
KEYPOINT_COLUMNS = [f"{name}_{axis}" for name in KAGGLE15.names for axis in "xy"]


def open_text(path: Path):
    """Open a plain or gzip text file, turning the usual failures into one clear line."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a CSV file")
    with open(path, "rb") as f:
        head = f.read(2)
    raw = gzip.open(path, "rb") if head == b"\x1f\x8b" else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8", newline="")


MAX_ROW_BYTES = 4 << 20  # a Kaggle row is about 40 KB, a 68-point row 1 KB


def bounded_lines(f, path: Path):
    """The lines of a text file, refusing one longer than MAX_ROW_BYTES before it is read whole
    (a file without line breaks would otherwise fill the memory)."""
    number = 0
    while True:
        line = f.readline(MAX_ROW_BYTES + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_ROW_BYTES:
            raise InputError(f"{path}: row {number} is longer than {MAX_ROW_BYTES >> 20} MB; not a CSV of this kind")
        yield line


def read_rows(path: Path):
    """Yield (line number, row) after the header, which is returned first."""
    f = open_text(path)
    try:
        reader = csv.reader(bounded_lines(f, path))
        try:
            header = next(reader)
        except StopIteration:
            raise InputError(f"{path}: file is empty") from None
        yield 1, header
        for row in reader:
            yield reader.line_num, row
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text CSV file (binary or not UTF-8)") from None
    except (gzip.BadGzipFile, EOFError, OSError) as e:
        raise InputError(f"{path}: cannot read ({e})") from None
    except csv.Error as e:
        raise InputError(f"{path}: malformed CSV ({e})") from None
    finally:
        f.close()


def parse_pixels(text: str) -> np.ndarray:
    try:
        values = np.array(text.split(), dtype=np.int32)  # ValueError on non-numbers
    except OverflowError:
        raise ValueError("has pixel values outside 0-255") from None
    if values.size != PIXELS:
        raise ValueError(f"has {values.size} pixels, expected {PIXELS} (96x96)")
    if values.min() < 0 or values.max() > 255:
        raise ValueError("has pixel values outside 0-255")
    return values.astype(np.uint8).reshape(SIDE, SIDE)


def check_points(values: np.ndarray, side: float) -> None:
    """Refuse coordinates that are not numbers or lie outside the image by more than its size
    (a typo, a unit mix-up): they would poison the loss and every figure computed on them.
    Missing values (NaN) are allowed."""
    present = values[~np.isnan(values)]
    if np.isinf(present).any():
        raise ValueError("has an infinite keypoint value")
    if present.size and (present.min() < -side or present.max() > 2 * side):
        bad = present[(present < -side) | (present > 2 * side)][0]
        raise ValueError(f"keypoint value {bad:g} lies outside the image by more than its size")


def describe(error: ValueError) -> str:
    """numpy's and float()'s conversion messages, in a user's words."""
    text = str(error)
    if "could not convert" in text or "invalid literal" in text:
        return "non-numeric value " + text.rsplit(":", 1)[-1].strip()
    return text


def parse_csv(path: Path, skip_bad_rows: bool = False) -> dict[str, np.ndarray]:
    """Parse a training.csv- or test.csv-style file into arrays: images (N, 96, 96) uint8,
    points (N, 15, 2) float32 or empty, ids (N,) int64 (ImageId, else the row number), and the
    number of skipped rows."""
    rows = read_rows(path)
    _, header = next(rows)
    header = [h.strip() for h in header]
    if "Image" not in header:
        raise InputError(f"{path}: no 'Image' column (columns: {', '.join(header[:5])}...); "
                         "expected the Kaggle training.csv or test.csv layout")
    image_col = header.index("Image")
    has_points = any(c in header for c in KEYPOINT_COLUMNS)
    if has_points:
        missing = [c for c in KEYPOINT_COLUMNS if c not in header]
        if missing:
            raise InputError(f"{path}: missing keypoint columns {', '.join(missing[:4])}")
        point_cols = [header.index(c) for c in KEYPOINT_COLUMNS]
    id_col = header.index("ImageId") if "ImageId" in header else None
    images, points, ids, skipped = [], [], [], 0
    for line, row in rows:
        if not row:
            continue
        try:
            if len(row) != len(header):
                raise ValueError(f"has {len(row)} fields, expected {len(header)}")
            img = parse_pixels(row[image_col])
            if has_points:
                pts = np.array([float(row[c]) if row[c].strip() else np.nan for c in point_cols], np.float32)
                check_points(pts, SIDE)
            ident = int(row[id_col]) if id_col is not None else len(images) + 1
        except ValueError as e:
            if skip_bad_rows:
                skipped += 1
                continue
            raise InputError(f"{path}: row {line}: {describe(e)}") from None
        images.append(img)
        ids.append(ident)
        if has_points:
            points.append(pts.reshape(15, 2))
    if not images:
        raise InputError(f"{path}: no usable rows" + (f" ({skipped} bad rows skipped)" if skipped else ""))
    return {
        "images": np.stack(images),
        "points": np.stack(points) if has_points else np.zeros((0, 15, 2), np.float32),
        "ids": np.asarray(ids, np.int64),
        "skipped": np.asarray(skipped),
    }


def load_arrays(path: str | Path, skip_bad_rows: bool = False, use_cache: bool = True) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    key = cache.cache_key(path, "kaggle", skip_bad_rows)
    arrays = cache.cached(key, lambda: parse_csv(path, skip_bad_rows), use_cache)
    if int(arrays["skipped"]):
        print(f"{path}: skipped {int(arrays['skipped'])} malformed rows (--skip-bad-rows)", file=sys.stderr)
    return arrays


def read_identities(path: Path, n: int) -> list[str]:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    names = path.read_text().split("\n")
    names = [s.strip() for s in names if s.strip()]
    if len(names) != n:
        raise InputError(f"{path}: has {len(names)} names, but the data has {n} rows")
    return names


def load_kaggle(path: str | Path, identities: str | Path | None = None, skip_bad_rows: bool = False,
                use_cache: bool = True) -> KeypointDataset:
    """A Kaggle training CSV as a 96x96 grey KeypointDataset.

    ``identities`` is a file with one person's name per row; by default
    ``<stem>_identities.txt`` beside the CSV is used if present.
    """
    path = Path(path)
    arrays = load_arrays(path, skip_bad_rows, use_cache)
    n = len(arrays["images"])
    if len(arrays["points"]) != n:
        raise InputError(f"{path}: has no keypoint columns (a test file?); training and evaluation need labels")
    if identities is None:
        stem = path.name.split(".")[0]
        guess = path.with_name(f"{stem}_identities.txt")
        identities = guess if guess.exists() else None
    people = read_identities(Path(identities), n) if identities else None
    images = torch.from_numpy(arrays["images"])[:, None]  # (N, 1, 96, 96)
    return KeypointDataset(images, torch.from_numpy(arrays["points"]), KAGGLE15, identities=people)


def write_kaggle_csv(data: KeypointDataset, path: str | Path, test: bool = False) -> None:
    """Write 96x96 grey faces in the Kaggle layout: training.csv (keypoints, then Image) or,
    with ``test``, test.csv (ImageId, Image). Missing points become empty fields."""
    if data.size != SIDE or data.channels != 1:
        raise ValueError("the Kaggle layout holds 96x96 grey faces")
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ImageId", "Image"] if test else KEYPOINT_COLUMNS + ["Image"])
        for i in range(len(data)):
            pixels = " ".join(map(str, data.images[i, 0].flatten().tolist()))
            if test:
                w.writerow([i + 1, pixels])
            else:
                coords = ["" if np.isnan(v) else f"{v:.4f}" for v in data.points[i].flatten().tolist()]
                w.writerow(coords + [pixels])
