"""68 landmarks of cnnvision beside dlib's (../shared/peers/dlib_landmarks.py) on the same faces:
the frames of the people that ``cnnvision train`` holds out of a 68-point CSV (by identity, as
``evaluate --split val`` picks them), so neither model was trained on those people.

    python benchmarks/compare_dlib.py [--dlib-python /tmp/dlib-peer/bin/python] [--json FILE]

Both are scored the way the peer scores dlib: NME (mean point error over the outer-eye-corner
distance) with the box of each one's own detector (the true box where it found no face at IoU
0.3), and with the tight box around the true points. The peer needs its own environment (see its
docstring); this script writes the held-out rows to a temporary CSV and runs the peer on it.
"""
import argparse
import csv
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
from cnnvision.apps.faces import FacePipeline
from cnnvision.boxes import box_iou
from cnnvision.data.dataset import identity_from_name, split_by_identity
from cnnvision.data.faces68 import parse_points_csv
from cnnvision.nets.keypoints import nme
from cnnvision.runtime import RUNTIMES

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "youtube-faces-68"
PEER = ROOT.parent / "shared" / "peers" / "dlib_landmarks.py"


def held_out_rows(csv_path: Path, val_fraction: float) -> tuple[list[str], np.ndarray]:
    names, points = parse_points_csv(csv_path)
    _, val = split_by_identity([identity_from_name(n) for n in names], len(names), val_fraction)
    return [names[i] for i in val.tolist()], points[val.numpy()]


def ours(pipeline: FacePipeline, images: Path, names: list[str], points: np.ndarray) -> dict:
    own, tight, hits, ms = [], [], [], []
    for name, true in zip(names, points):
        photo = imgs.open_image(images / name, 3)
        gbox = np.concatenate([true.min(0), true.max(0)]).tolist()
        start = time.perf_counter()
        (boxes, _), = pipeline.detect([photo])
        ms.append(1000 * (time.perf_counter() - start))
        best = None
        if len(boxes):
            iou = box_iou(boxes, torch.tensor([gbox]))[:, 0]
            if iou.max() >= 0.3:
                best = boxes[iou.argmax()].tolist()
        hits.append(best is not None)
        found, fitted = pipeline.landmarks_in([photo, photo], [0, 1], [best or gbox, gbox])
        t = torch.from_numpy(true)[None]
        own.append(nme(torch.from_numpy(found)[None], t))
        tight.append(nme(torch.from_numpy(fitted)[None], t))
    return {"faces": len(names), "detected": round(float(np.mean(hits)), 4),
            "nme_own_box": round(float(np.mean(own)), 4), "nme_tight_box": round(float(np.mean(tight)), 4),
            "detect_ms_median": round(float(np.median(ms)), 1)}


def peer_on_rows(python: str, names: list[str], points: np.ndarray, images) -> subprocess.CompletedProcess:
    """The dlib peer script on these faces, written to a temporary CSV in the 68-point layout."""
    with tempfile.TemporaryDirectory() as tmp:
        rows = Path(tmp) / "held_out.csv"
        with open(rows, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow([""] + [str(i) for i in range(136)])
            for name, p in zip(names, points):
                w.writerow([name] + [f"{v:g}" for v in p.flatten()])
        return subprocess.run([python, str(PEER), str(rows), str(images)], capture_output=True, text=True)


def add_runtime_option(ap: argparse.ArgumentParser) -> None:
    """``--runtime`` for the benchmarks that measure the pipeline's accuracy: the float nets by
    default, as their figures in the README were measured."""
    ap.add_argument("--runtime", default="torch", choices=[*RUNTIMES, "auto"],
                    help="how the nets run (default torch, the float nets; auto: what predict runs)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA / "training_frames_keypoints.csv"))
    ap.add_argument("--images", default=str(DATA / "training"))
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--landmarks", help="a landmark checkpoint (default: the shipped landmarks68)")
    ap.add_argument("--detector", help="a detector checkpoint (default: the shipped face-detector)")
    ap.add_argument("--dlib-python", default="/tmp/dlib-peer/bin/python")
    ap.add_argument("--json", help="write both results here")
    add_runtime_option(ap)
    a = ap.parse_args()
    names, points = held_out_rows(Path(a.data), a.val_fraction)
    pipeline = FacePipeline(checkpoint.load_net(a.detector, None if a.detector else "face-detector"),
                            checkpoint.load_net(a.landmarks, None if a.landmarks else "landmarks68"), runtime=a.runtime)
    result = {"cnnvision": ours(pipeline, Path(a.images), names, points),
              "people": len({identity_from_name(n) for n in names})}
    done = peer_on_rows(a.dlib_python, names, points, a.images)
    if done.returncode:
        result["dlib"] = {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    else:
        result["dlib"] = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    if done.returncode:
        sys.exit(1)


if __name__ == "__main__":
    main()
