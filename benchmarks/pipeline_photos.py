"""The face pipeline's detector on larger pictures of people it never saw: scenes of 640x640 with
0-3 held-out faces each (14 to 448 px across, pasted with soft edges onto clutter, as
``data/scenes.py`` draws them), searched at several pyramid settings. Prints, per setting, the
share of faces found (IoU >= 0.5) by face size, the other boxes per picture and the detector's
pictures per second.

    python benchmarks/pipeline_photos.py [--count 200] [--steps 2,3] [--threshold 0.9]
"""
import argparse
import time

import numpy as np
import torch

from cnnvision.apps.faces import FacePipeline
from cnnvision.boxes import box_iou
from cnnvision.data.dataset import identity_from_name, split_by_identity
from cnnvision.data.faces68 import parse_points_csv
from cnnvision.data.scenes import scenes
from compare_dlib import DATA

BUCKETS = (14, 24, 48, 96, 192, 449)  # face sizes (longer side of the box), pixels


def held_out_people(val_fraction: float = 0.15) -> set[str]:
    names, _ = parse_points_csv(DATA / "training_frames_keypoints.csv")
    people = [identity_from_name(n) for n in names]
    _, val = split_by_identity(people, len(names), val_fraction)
    return {people[i] for i in val.tolist()}


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
    return {"faces": len(hits), "found": round(float(hits.mean()), 4), "found_24px_up": round(float(hits[sizes >= 24].mean()), 4),
            "by_size": by_size, "other_boxes_per_picture": round(others / len(pictures), 3),
            "pictures_per_sec": round(len(pictures) / seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--steps", default="2,3", help="pyramid steps to compare")
    ap.add_argument("--min-side", type=int, default=96)
    ap.add_argument("--threshold", type=float)
    a = ap.parse_args()
    data = scenes(DATA / "training_frames_keypoints.csv", DATA / "training", a.count, size=640,
                  people=held_out_people(), seed=1)
    from PIL import Image
    pictures = [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in data.images]
    for step in [float(s) for s in a.steps.split(",")]:
        pipeline = FacePipeline.pretrained(threshold=a.threshold, level_step=step, min_side=a.min_side)
        pipeline.detect(pictures[:4])  # warm-up
        print(f"level step {step:g}, min side {a.min_side}:", score(pipeline, pictures, data.boxes))


if __name__ == "__main__":
    main()
