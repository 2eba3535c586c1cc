"""Where the 68-point labels count pixels from (``data.faces68.POINTS_ORIGIN``), measured two ways
on held-out faces:

- a landmark net trained with mirrored faces cannot learn a sideways offset between labels and
  faces (each mirror image shows it the other way), so its mean sideways error, in source pixels,
  is that offset (beyond the origin already subtracted); up and down it learns any offset;
- dlib's shape predictor, trained on the 300-W photos and reporting 0-based pixels, is scored
  against the faces-300w labels read from several origins.

    python benchmarks/label_origin.py [--landmarks CKPT] [--origins 0,0.5,1,1.5,2]
        [--dlib-python /tmp/dlib-peer/bin/python]
"""
import argparse

import torch

from cnnvision import checkpoint
from cnnvision.data import load_keypoints
from cnnvision.data.dataset import hold_out_people
from cnnvision.data.faces68 import POINTS_ORIGIN
from cnnvision.solver import predict
from compare_dlib_photos import DATA, extent, faces_by_photo, held_out_300w, landmark_figures, run_dlib

SOURCES = {"faces-300w": ("faces-300w/training_keypoints.csv", "faces-300w/images"),
           "TV frames": ("youtube-faces-68/training_frames_keypoints.csv", "youtube-faces-68/training")}


def sideways_offsets(net) -> None:
    cfg = net.cfg
    for name, (csv, folder) in SOURCES.items():
        csv = str(DATA / csv)
        faces = load_keypoints(csv, str(DATA / folder), cfg.image_size, cfg.in_channels, False, margin=cfg.margin,
                               val_fraction=0.15)
        _, val = hold_out_people(faces, 0.15, csv)
        found = predict(net, val, 128, torch.device("cpu"), "auto", True, True).float()
        per_face = torch.nanmean(found - val.points, 1)  # (N, 2) crop pixels
        source_px = per_face * ((val.boxes[:, 2] - val.boxes[:, 0]) / cfg.image_size)[:, None]
        print(f"{name}: {len(val)} held-out faces; the net's mean error, in source pixels, sideways "
              f"{float(source_px[:, 0].mean()):+.2f}, up and down {float(source_px[:, 1].mean()):+.2f}")


def dlib_by_origin(python: str, origins: list[float]) -> None:
    names, points = held_out_300w(DATA / "faces-300w" / "training_keypoints.csv", 0.15)
    photos, rows = faces_by_photo(names)
    results = run_dlib(python, [DATA / "faces-300w" / "images" / p for p in photos])
    written = points + POINTS_ORIGIN  # the labels as the file writes them
    print("dlib on the faces-300w validation photos (its own boxes, matched at IoU 0.3 as "
          "compare_dlib_photos.py matches them):")
    for origin in origins:
        figures = landmark_figures(results, photos, rows, written - origin, extent, 0.3)
        print(f"  labels read from {origin:g}: NME {100 * figures['nme_own_box']:.2f}% "
              f"({figures['found']:.3f} of the faces found)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--landmarks", help="a 68-point checkpoint (default: the shipped landmarks68)")
    ap.add_argument("--origins", default="0,0.5,1,1.5,2")
    ap.add_argument("--dlib-python", default="/tmp/dlib-peer/bin/python")
    a = ap.parse_args()
    net = checkpoint.load_net(a.landmarks, None if a.landmarks else "landmarks68")
    print(f"labels read from {POINTS_ORIGIN:g} (POINTS_ORIGIN)")
    sideways_offsets(net)
    dlib_by_origin(a.dlib_python, [float(o) for o in a.origins.split(",")])


if __name__ == "__main__":
    main()
