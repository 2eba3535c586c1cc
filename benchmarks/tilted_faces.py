"""Landmarks through the photo pipeline on tilted faces: the faces-300w validation photos turned
by +-ANGLE degrees (alternately), their 68 points turned with them, then ``evaluate``'s
``nme_detected`` and ``detected`` (the share of faces found at IoU 0.5), for the pipeline as
shipped, or with another ``--refine-tilt`` (degrees; -1: none, the tilt sends no face to the
second pass).

    python benchmarks/tilted_faces.py [--angle 30] [--detector CKPT] [--threshold T] [--refine-tilt DEG]
"""
import argparse
import json
import math
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from cnnvision import checkpoint
from cnnvision import images as imgs
from cnnvision.apps.faces import DETECTOR, LANDMARKS, FacePipeline, evaluate_landmarks_on_photos
from cnnvision.data import load_keypoints
from cnnvision.data.dataset import hold_out_people
from compare_dlib import add_runtime_option

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces-300w"


def turned(photo: Image.Image, points: np.ndarray, degrees: float) -> tuple[Image.Image, np.ndarray]:
    """The photo turned counter-clockwise by ``degrees`` (grown to hold all of it) and its points
    (pixel-centre coordinates, (..., 2)) moved with it."""
    out = photo.rotate(degrees, resample=Image.Resampling.BILINEAR, expand=True)
    a = math.radians(degrees)
    c = np.array([photo.width / 2, photo.height / 2])
    C = np.array([out.width / 2, out.height / 2])
    p = points + 0.5 - c
    x = math.cos(a) * p[..., 0] + math.sin(a) * p[..., 1]
    y = -math.sin(a) * p[..., 0] + math.cos(a) * p[..., 1]
    return out, np.stack([x, y], -1) + C - 0.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--angle", type=float, default=30.0)
    ap.add_argument("--detector", help="a detector checkpoint (default: the shipped face-detector)")
    ap.add_argument("--refine-tilt", type=float, help="degrees (default: the pipeline's); -1: none")
    ap.add_argument("--threshold", type=float, help="lowest detector score kept (default: the pipeline's)")
    add_runtime_option(ap)
    a = ap.parse_args()
    net = checkpoint.load_net(pretrained=LANDMARKS)
    csv = DATA / "training_keypoints.csv"
    data = load_keypoints(csv, DATA / "images", net.cfg.image_size, net.cfg.in_channels, False, margin=net.cfg.margin)
    _, val = hold_out_people(data, 0.15, csv)
    points = imgs.from_crop_batch(val.points.numpy(), val.boxes.numpy(), net.cfg.image_size)
    detector = checkpoint.load_net(a.detector, None if a.detector else DETECTOR)
    rows: dict[str, list[int]] = {}
    for i, name in enumerate(val.names):
        rows.setdefault(name, []).append(i)
    moved = points.copy()
    with tempfile.TemporaryDirectory(prefix="cnnvision-tilted-") as folder:
        for k, (name, idx) in enumerate(rows.items()):
            angle = a.angle if k % 2 == 0 else -a.angle
            photo, moved[idx] = turned(imgs.open_image(DATA / "images" / name, 3), points[idx], angle)
            (Path(folder) / name).parent.mkdir(parents=True, exist_ok=True)
            photo.save(Path(folder) / name)
        options = {"threshold": a.threshold, "runtime": a.runtime}
        if a.refine_tilt is not None:
            options["refine_tilt"] = math.inf if a.refine_tilt < 0 else math.radians(a.refine_tilt)
        found = evaluate_landmarks_on_photos(FacePipeline(detector, net, **options), folder, val.names, moved)
    result = {"angle": a.angle, "faces": len(val.names), "refine_tilt": a.refine_tilt, "threshold": a.threshold,
              **{k: round(found[k], 5) for k in ("detected", "nme_detected", "detected_failure10")}}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
