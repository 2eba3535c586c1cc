"""The face pipeline's detections on the held-out people's frames at several score thresholds:
the share of faces found (IoU >= 0.5 with the true points' box) and the other boxes per frame.

    python benchmarks/detector_threshold.py
"""
from pathlib import Path

import numpy as np
import torch

from cnnvision import images as imgs
from cnnvision.apps.faces import FacePipeline
from cnnvision.boxes import box_iou
from compare_dlib import DATA, held_out_rows


def main() -> None:
    names, points = held_out_rows(DATA / "training_frames_keypoints.csv", 0.15)
    pipeline = FacePipeline.pretrained(threshold=0.5)
    found = []
    for name, pts in zip(names, points):
        (boxes, scores), = pipeline.detect([imgs.open_image(Path(DATA / "training" / name), 3)])
        truth = torch.tensor(np.concatenate([pts.min(0), pts.max(0)])[None], dtype=torch.float32)
        found.append((scores.numpy(), box_iou(boxes, truth)[:, 0].numpy() if len(boxes) else np.zeros(0)))
    for t in (0.5, 0.7, 0.8, 0.9, 0.95):
        recall = np.mean([((s >= t) & (i >= 0.5)).any() for s, i in found])
        others = np.mean([((s >= t) & (i < 0.5)).sum() for s, i in found])
        print(f"threshold {t:.2f}: faces found {recall:.4f}, other boxes a frame {others:.3f}")


if __name__ == "__main__":
    main()
