"""The face pipeline's detector on group photos of people it never saw: 640x480 pictures of
clutter with held-out people side by side (a grid of frames cropped around each face, every face
of a picture the same size, 16 to 320 px across, none covering another), searched at several
pyramid settings. Prints, per setting, the share of faces found (IoU >= 0.5) by face size, the
other boxes per picture (pictures without faces included) and the detector's pictures per second.

    python benchmarks/pipeline_photos.py [--count 200] [--steps 2,3] [--threshold 0.9]
"""
import argparse
import time

import numpy as np
import torch
from PIL import Image

from cnnvision import images as imgs
from cnnvision.apps.faces import FacePipeline
from cnnvision.boxes import box_iou
from cnnvision.data.scenes import clutter
from compare_dlib import DATA, held_out_rows

BUCKETS = (16, 24, 32, 48, 96, 192, 321)  # face sizes (longer side of the box), pixels
WIDTH, HEIGHT = 640, 480


def group_photos(count: int, seed: int = 1, val_fraction: float = 0.15):
    """``count`` pictures (PIL) and their true boxes ((K, 4) tensors); one in eight has no face."""
    names, points = held_out_rows(DATA / "training_frames_keypoints.csv", val_fraction)
    rng = np.random.default_rng(seed)
    pictures, truths = [], []
    for k in range(count):
        canvas = clutter(rng, WIDTH).crop((0, 0, WIDTH, HEIGHT))
        face = float(np.exp(rng.uniform(np.log(16), np.log(320))))  # the face box's longer side
        cell = int(face * 1.6)  # the frame's crop around each face: the face and some of its frame
        boxes = []
        if k % 8:
            columns, rows = max(1, WIDTH // cell), max(1, HEIGHT // cell)
            slots = rng.permutation(columns * rows)[:rng.integers(1, 6)]
            for slot in slots:
                i = int(rng.integers(len(names)))
                pts = points[i]
                square = imgs.square_box(*pts.min(0), *pts.max(0), margin=0.3)
                scale = cell / (square[2] - square[0])
                crop = imgs.crop_square(imgs.open_image(DATA / "training" / names[i], 3), square, cell)
                x, y = (slot % columns) * cell, (slot // columns) * cell
                canvas.paste(Image.fromarray(crop), (x, y))
                tight = np.concatenate([pts.min(0), pts.max(0)]) - np.tile(square[:2], 2)
                boxes.append(tight * scale + [x, y, x, y])
        pictures.append(canvas)
        truths.append(torch.tensor(np.array(boxes), dtype=torch.float32).reshape(-1, 4))
    return pictures, truths


def score(pipeline: FacePipeline, pictures: list, truths: list) -> dict:
    start = time.perf_counter()
    detections = pipeline.detect(pictures)
    seconds = time.perf_counter() - start
    sizes, hits, others = [], [], 0
    for (boxes, _), truth in zip(detections, truths):
        iou = box_iou(boxes, truth) if len(boxes) and len(truth) else torch.zeros(len(boxes), len(truth))
        hits += (iou >= 0.5).any(0).tolist() if len(boxes) else [False] * len(truth)
        sizes += (truth[:, 2:] - truth[:, :2]).max(1).values.tolist()
        others += int((iou < 0.5).all(1).sum()) if len(truth) else len(boxes)
    sizes, hits = np.array(sizes), np.array(hits)
    by_size = {f"{lo}-{hi - 1}px": round(float(hits[(sizes >= lo) & (sizes < hi)].mean()), 4)
               for lo, hi in zip(BUCKETS, BUCKETS[1:]) if ((sizes >= lo) & (sizes < hi)).any()}
    return {"faces": len(hits), "found": round(float(hits.mean()), 4),
            "found_32px_up": round(float(hits[sizes >= 32].mean()), 4),
            "by_size": by_size, "other_boxes_per_picture": round(others / len(pictures), 3),
            "pictures_per_sec": round(len(pictures) / seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--steps", default="2,3", help="pyramid steps to compare")
    ap.add_argument("--min-side", type=int, default=96)
    ap.add_argument("--threshold", type=float)
    ap.add_argument("--min-face", type=float, help="as predict --min-face")
    a = ap.parse_args()
    pictures, truths = group_photos(a.count)
    for step in [float(s) for s in a.steps.split(",")]:
        pipeline = FacePipeline.pretrained(threshold=a.threshold, level_step=step, min_side=a.min_side,
                                           min_face=a.min_face, runtime="torch")  # the float nets
        pipeline.detect(pictures[:4])  # warm-up
        print(f"level step {step:g}, min side {a.min_side}, min face {a.min_face}:", score(pipeline, pictures, truths))


if __name__ == "__main__":
    main()
