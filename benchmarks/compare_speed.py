"""Photos per second, in one run, on the same 640x480 photos of one face each: cnnvision's photo
pipeline (detection + 68 points) in each runtime and precision, beside MediaPipe's full-range
face detector (detection only) and dlib (HOG upsampled once + the 68-point shape predictor),
each peer in its own virtual environment (../shared/peers). The tools take turns, round by
round; each figure is the median of the rounds; ratios are ours over the peer's.

A CPU without BF16 or AVX-512 is emulated on one that has them by running our pipeline with
``ONEDNN_MAX_CPU_ISA=AVX2`` and ``ATEN_CPU_CAPABILITY=avx2`` (oneDNN and torch then use AVX2 code
only) at fp32: the path most users' CPUs take. onnxruntime picks its int8 kernels from the CPU
itself (no setting limits it to AVX2), so its int8 figure is this CPU's (VNNI where it has it);
torch's int8 (``--runtime torch-int8``) runs on oneDNN, which the same setting limits to its AVX2
int8 kernels (ONEDNN_VERBOSE=1 names them: jit_uni_int8:avx2).

    python benchmarks/compare_speed.py [--rounds 3] [--photos DIR] [--json FILE]
        [--dlib-python /tmp/dlib-peer/bin/python] [--mediapipe-python /tmp/mp-peer/bin/python]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from cnnvision.apps.faces import resize_to
from compare_dlib_photos import run_dlib
from cnnvision.data.photos import group_by_photo, read_web_faces, split_photos

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "web-faces"
PEERS = ROOT.parent / "shared" / "peers"
AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def one_face_photos(folder: Path, count: int = 32) -> list[Path]:
    """Held-out web-faces photos with exactly one face, fitted to 640x480, saved as JPEG."""
    from PIL import Image
    names, boxes, _ = read_web_faces(DATA / "faces.csv")
    photos, per_photo = group_by_photo(names, boxes)
    _, val = split_photos(photos, 0.15)
    chosen = [photos[i] for i in val if len(per_photo[i]) == 1][:count]
    paths = []
    for name in chosen:
        path = folder / name
        resize_to(Image.open(DATA / "images" / name).convert("RGB"), 640, 480).save(path, quality=92)
        paths.append(path)
    return paths


def ours(paths: list[Path], runtime: str, precision: str, env: dict) -> dict:
    done = subprocess.run([sys.executable, "-m", "cnnvision", "benchmark", "--pipeline", "--images", *map(str, paths),
                           "--runtime", runtime, "--precision", precision],
                          capture_output=True, text=True, env={**os.environ, **env})
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1]}
    return json.loads(done.stdout)


def mediapipe(python: str, paths: list[Path]) -> dict:
    done = subprocess.run([python, str(PEERS / "mediapipe_faces.py"), *map(str, paths), "--mode", "full", "--rounds", "3"],
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {"error": done.stderr[-300:]}


def dlib(python: str, paths: list[Path]) -> dict:
    rows = run_dlib(python, paths)
    return {"photos_per_sec": round(len(rows) / sum(r[2] for r in rows), 2), "faces": sum(len(r[0]) for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dlib-python", default="/tmp/dlib-peer/bin/python")
    ap.add_argument("--mediapipe-python", default="/tmp/mp-peer/bin/python")
    ap.add_argument("--json")
    a = ap.parse_args()
    setups = {"cnnvision torch auto": ("torch", "auto", {}), "cnnvision onnx fp32": ("onnx", "fp32", {}),
              "cnnvision torch fp32, AVX2 only": ("torch", "fp32", AVX2),
              "cnnvision onnx fp32, AVX2 only": ("onnx", "fp32", AVX2),
              "cnnvision onnx int8": ("onnx-int8", "fp32", {}),
              "cnnvision onnx int8, torch part AVX2 only": ("onnx-int8", "fp32", AVX2),
              "cnnvision torch int8": ("torch-int8", "fp32", {}),
              "cnnvision torch int8, AVX2 only": ("torch-int8", "fp32", AVX2)}
    rates: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = one_face_photos(Path(tmp))
        for _ in range(a.rounds):
            for name, (runtime, precision, env) in setups.items():
                r = ours(paths, runtime, precision, env)
                rates.setdefault(name, []).append(r.get("photos_per_sec", float("nan")))
                rates.setdefault(name + " (faces found)", []).append(r.get("faces_found", float("nan")))
            r = mediapipe(a.mediapipe_python, paths)
            rates.setdefault("mediapipe full-range (detection only)", []).append(r.get("photos_per_sec", float("nan")))
            r = dlib(a.dlib_python, paths)
            rates.setdefault("dlib HOG x1 + shape predictor", []).append(r.get("photos_per_sec", float("nan")))
    medians = {k: float(np.median(v)) for k, v in rates.items() if "faces found" not in k}
    result = {"photos": len(paths), "size": [640, 480], "rounds": a.rounds, "photos_per_sec": medians,
              "faces_found": {k.replace(" (faces found)", ""): v[0] for k, v in rates.items() if "faces found" in k},
              "ratios": {f"{ours_name} / {peer}": round(medians[ours_name] / medians[peer], 2)
                         for ours_name in medians if ours_name.startswith("cnnvision")
                         for peer in medians if not peer.startswith("cnnvision") and medians[peer] > 0}}
    print(json.dumps(result, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
