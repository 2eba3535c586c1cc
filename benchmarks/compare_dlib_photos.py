"""cnnvision's photo pipeline beside dlib (HOG detector upsampled once + the 68-point shape
predictor, ../shared/peers) on the same held-out photos, in one run:

- faces-300w validation photos (split by photo, as ``train`` and ``evaluate --split val`` make
  it): share of labelled faces found, NME through each one's own boxes, NME with the box from
  the true points (dlib's through the peer script), photos/sec;
- web-faces validation photos (every visible face labelled): faces found, false boxes per
  photo, photos/sec.

A face counts as found by a box meeting its true box at IoU >= 0.3 (the peer's rule; dlib's
square boxes are smaller than a person's face box, so it is measured against the points'
extent, ours against the face box); ours is also given at IoU 0.5. Photos are timed one at a
time, detection and landmarks together, on the machine's threads (dlib uses one).

    python benchmarks/compare_dlib_photos.py [--dlib-python /tmp/dlib-peer/bin/python] [--json FILE]
        [--landmarks CKPT] [--detector CKPT]
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cnnvision import checkpoint
from cnnvision import images as imgs
from cnnvision.apps.faces import DETECTOR, LANDMARKS, FacePipeline
from cnnvision.boxes import box_iou
from cnnvision.data import load_keypoints
from cnnvision.data.dataset import hold_out_people, identities_from_names, split_by_identity
from cnnvision.data.faces68 import parse_points_csv
from cnnvision.data.photos import group_by_photo, read_web_faces, split_photos
from cnnvision.nets.keypoints import nme_summary, per_face_nme
from cnnvision.solver import evaluate
from compare_dlib import add_runtime_option, peer_on_rows

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def held_out_300w(csv_path: Path, val_fraction: float):
    names, points = parse_points_csv(csv_path)
    _, val = split_by_identity(identities_from_names(names)[0], len(names), val_fraction)
    return [names[i] for i in val.tolist()], points[val.numpy()]


def faces_by_photo(names: list[str]) -> tuple[list[str], list[list[int]]]:
    """The photos (first-seen order) and, for each, the rows of its labelled faces."""
    photos, _ = group_by_photo(names, np.zeros((len(names), 4)))
    return photos, [[i for i, n in enumerate(names) if n == p] for p in photos]


def extent(points: np.ndarray) -> np.ndarray:
    """(..., K, 2) points -> (..., 4) their extent, the box dlib's detector is matched against."""
    return np.concatenate([points.min(-2), points.max(-2)], -1)


def run_ours(pipeline: FacePipeline, paths: list[Path]):
    """Per photo: boxes (K, 4), points (K, 68, 2) and seconds."""
    out = []
    for path in paths:
        photo = imgs.open_image(path, 3)
        start = time.perf_counter()
        faces = pipeline(photo)
        seconds = time.perf_counter() - start
        out.append((np.array([f.box for f in faces], np.float32).reshape(-1, 4),
                    np.array([f.keypoints for f in faces], np.float32).reshape(-1, 68, 2), seconds))
    return out


def run_dlib(python: str, paths: list[Path]):
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "photos.json"
        listing.write_text(json.dumps([str(p) for p in paths]))
        done = subprocess.run([python, str(ROOT / "benchmarks" / "dlib_photos.py"), str(listing)],
                              capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"dlib failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return [(np.array([f["box"] for f in r["faces"]], np.float32).reshape(-1, 4),
             np.array([f["keypoints"] for f in r["faces"]], np.float32).reshape(-1, 68, 2), r["seconds"])
            for r in json.loads(done.stdout)]


def match(found: np.ndarray, truth: np.ndarray, iou: float) -> tuple[list[int], int]:
    """For each true box the index of the best detection at or above ``iou`` (-1: missed), and
    the number of detections that match no true box."""
    if len(found) == 0:
        return [-1] * len(truth), 0
    if len(truth) == 0:
        return [], len(found)
    overlap = box_iou(torch.from_numpy(truth), torch.from_numpy(found))
    best = [int(o.argmax()) if o.max() >= iou else -1 for o in overlap]
    false = int((overlap.max(0).values < iou).sum())
    return best, false


def landmark_figures(results, photos, rows, points, truth_box, iou):
    errors, found = [], 0
    for (boxes, pts, _), idx in zip(results, rows):
        best, _ = match(boxes, truth_box(points[idx]).reshape(-1, 4).astype(np.float32), iou)
        for row, j in zip(idx, best):
            if j >= 0:
                found += 1
                errors.append(per_face_nme(torch.from_numpy(pts[j][None]), torch.from_numpy(points[row][None])))
    figures = nme_summary(torch.cat(errors) if errors else torch.zeros(0))
    return {"found": round(found / len(points), 4), **{f"{k}_own_box": round(v, 4) for k, v in figures.items()}}


def detection_figures(results, truths, iou):
    hits = false = 0
    for (boxes, _, _), truth in zip(results, truths):
        best, extra = match(boxes, truth, iou)
        hits += sum(j >= 0 for j in best)
        false += extra
    return {"found": round(hits / sum(len(t) for t in truths), 4), "false_per_photo": round(false / len(truths), 3)}


def speed(results) -> float:
    return round(len(results) / sum(r[2] for r in results), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--landmarks", help="a landmark checkpoint (default: the shipped landmarks68)")
    ap.add_argument("--detector", help="a detector checkpoint (default: the shipped face-detector)")
    ap.add_argument("--dlib-python", default="/tmp/dlib-peer/bin/python")
    ap.add_argument("--json", help="write the results here")
    add_runtime_option(ap)
    a = ap.parse_args()
    data = Path(a.data)
    detector = checkpoint.load_net(a.detector, None if a.detector else DETECTOR)
    landmarks = checkpoint.load_net(a.landmarks, None if a.landmarks else LANDMARKS)
    pipeline = FacePipeline(detector, landmarks, runtime=a.runtime)
    result = {"runtime": pipeline.runtime}

    names, points = held_out_300w(data / "faces-300w" / "training_keypoints.csv", a.val_fraction)
    photos, rows = faces_by_photo(names)
    paths = [data / "faces-300w" / "images" / p for p in photos]
    ours, theirs = run_ours(pipeline, paths), run_dlib(a.dlib_python, paths)
    ours_box = pipeline.box_of  # the box the pipeline reports for a face with these points
    peer = peer_on_rows(a.dlib_python, names, points, data / "faces-300w" / "images")  # dlib, true-point box
    faces = load_keypoints(data / "faces-300w" / "training_keypoints.csv", data / "faces-300w" / "images",
                           landmarks.cfg.image_size, landmarks.cfg.in_channels)
    true_box = evaluate(landmarks, hold_out_people(faces, a.val_fraction, "faces-300w")[1])
    result["faces-300w"] = {
        "photos": len(photos), "faces": len(names),
        "cnnvision": {**landmark_figures(ours, photos, rows, points, ours_box, 0.3),
                      "found_iou50": landmark_figures(ours, photos, rows, points, ours_box, 0.5)["found"],
                      "nme_true_box": round(true_box["nme"], 4), "photos_per_sec": speed(ours)},
        "dlib": {**landmark_figures(theirs, photos, rows, points, extent, 0.3),  # dlib's box: the extent
                 "nme_true_box": json.loads(peer.stdout.strip().splitlines()[-1])["nme_tight_box"]
                 if peer.returncode == 0 else None, "photos_per_sec": speed(theirs)},
    }

    names, boxes, _ = read_web_faces(data / "web-faces" / "faces.csv")
    photos, per_photo = group_by_photo(names, boxes)
    _, val = split_photos(photos, a.val_fraction)
    paths = [data / "web-faces" / "images" / photos[i] for i in val]
    truths = [per_photo[i].astype(np.float32) for i in val]
    ours, theirs = run_ours(pipeline, paths), run_dlib(a.dlib_python, paths)
    result["web-faces"] = {
        "photos": len(paths), "faces": int(sum(len(t) for t in truths)),
        "cnnvision": {**detection_figures(ours, truths, 0.3),
                      "found_iou50": detection_figures(ours, truths, 0.5)["found"],
                      "false_per_photo_iou50": detection_figures(ours, truths, 0.5)["false_per_photo"],
                      "photos_per_sec": speed(ours)},
        "dlib": {**detection_figures(theirs, truths, 0.3), "photos_per_sec": speed(theirs)},
    }
    result["threads"] = torch.get_num_threads()
    print(json.dumps(result, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
