"""Runs inside dlib's own environment (see ../shared/peers/dlib_landmarks.py for its set-up):
dlib's HOG detector upsampled once, then its 68-point shape predictor on every face found, for
each photo named in a JSON list. Prints one JSON object: per photo the boxes and points, and
the seconds each photo took (detection and landmarks together).

    /tmp/dlib-peer/bin/python benchmarks/dlib_photos.py PHOTOS.json [--model FILE]

PHOTOS.json: a list of image paths. Called by compare_dlib_photos.py, which scores the output.
"""
import argparse
import json
import time

import dlib
import numpy as np
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("photos")
    ap.add_argument("--model", default="/usr/share/dlib/shape_predictor_68_face_landmarks.dat")
    a = ap.parse_args()
    detector, predictor = dlib.get_frontal_face_detector(), dlib.shape_predictor(a.model)
    with open(a.photos) as f:
        paths = json.load(f)
    out = []
    for path in paths:
        img = np.asarray(Image.open(path).convert("RGB"))
        start = time.perf_counter()
        rects = detector(img, 1)
        faces = [{"box": [r.left(), r.top(), r.right(), r.bottom()],
                  "keypoints": [[p.x, p.y] for p in predictor(img, r).parts()]} for r in rects]
        out.append({"photo": path, "seconds": time.perf_counter() - start, "faces": faces})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
