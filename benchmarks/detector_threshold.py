"""The face pipeline's detections at several score thresholds, on held-out pictures:

- the held-out people's TV frames: the share of faces found (IoU >= 0.5 with the true box) and
  the other boxes per frame;
- the web-faces validation photos (every visible face labelled): recall at IoU 0.5, false boxes
  per photo, and boxes on face-free squares of the same photos.

    python benchmarks/detector_threshold.py [--detector CKPT] [--thresholds 0.5,0.7,0.8,0.9]
"""
import argparse
from pathlib import Path

import numpy as np
import torch

from cnnvision import checkpoint
from cnnvision import images as imgs
from cnnvision.apps.faces import DETECTOR, LANDMARKS, FacePipeline, detector_box_of, face_free_crops
from cnnvision.boxes import box_iou
from cnnvision.data.photos import group_by_photo, read_web_faces, split_photos
from compare_dlib import DATA, held_out_rows

WEB = DATA.parent / "web-faces"


def scored(pipeline, photo, truth):
    """Scores of the detections and, for each, its best IoU with a true box."""
    (boxes, scores), = pipeline.detect([photo])
    if not len(boxes):
        return np.zeros(0), np.zeros(0)
    return scores.numpy(), (box_iou(boxes, truth).max(1).values.numpy() if len(truth) else np.zeros(len(boxes)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detector", help="a detector checkpoint (default: the shipped face-detector)")
    ap.add_argument("--thresholds", default="0.5,0.6,0.7,0.8,0.85,0.9,0.95")
    a = ap.parse_args()
    detector = checkpoint.load_net(a.detector, None if a.detector else DETECTOR)
    pipeline = FacePipeline(detector, checkpoint.load_net(pretrained=LANDMARKS), threshold=0.05)
    thresholds = [float(t) for t in a.thresholds.split(",")]

    names, points = held_out_rows(DATA / "training_frames_keypoints.csv", 0.15)
    frames = []
    for name, pts in zip(names, points):
        truth = torch.from_numpy(detector_box_of(detector, pts[None])).float().reshape(-1, 4)
        frames.append((scored(pipeline, imgs.open_image(Path(DATA / "training" / name), 3), truth), truth))

    web_names, boxes, _ = read_web_faces(WEB / "faces.csv")
    photos, per_photo = group_by_photo(web_names, boxes)
    _, val = split_photos(photos, 0.15)
    opened = [imgs.open_image(WEB / "images" / photos[i], 3) for i in val]
    truths = [torch.from_numpy(per_photo[i]).float() for i in val]
    web = []
    for photo, truth in zip(opened, truths):
        (boxes_found, scores), = pipeline.detect([photo])
        web.append((boxes_found, scores, truth))
    crops = face_free_crops(opened, [per_photo[i] for i in val], 200)
    crop_scores = [pipeline.detect([c])[0][1].numpy() for c in crops]

    print(f"{len(frames)} held-out frames; {len(opened)} web photos with {sum(len(t) for t in truths)} faces; "
          f"{len(crops)} face-free squares")
    for t in thresholds:
        found = np.mean([((s >= t) & (i >= 0.5)).any() for (s, i), _ in frames])
        others = np.mean([((s >= t) & (i < 0.5)).sum() for (s, i), _ in frames])
        hit = false = 0
        for boxes_found, scores, truth in web:
            keep = boxes_found[scores >= t]
            if len(keep) and len(truth):
                overlap = box_iou(truth, keep)
                hit += int((overlap.max(1).values >= 0.5).sum())
                false += int((overlap.max(0).values < 0.5).sum())
            else:
                false += len(keep)
        on_crops = np.mean([(s >= t).sum() for s in crop_scores])
        print(f"threshold {t:.2f}: frames found {found:.4f}, other boxes a frame {others:.3f}; web recall50 "
              f"{hit / sum(len(x) for x in truths):.4f}, false a photo {false / len(web):.3f}; "
              f"boxes a face-free square {on_crops:.3f}")


if __name__ == "__main__":
    main()
