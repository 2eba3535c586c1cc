"""The shipped detector's and landmark net's int8 forms, calibrated on training photos, measured on
validation photos against their float graphs, written beside the checkpoints: onnxruntime graphs
(``--runtime onnx-int8``) as ``NAME.int8.onnx`` and torch trunks (``--runtime torch-int8``) as
``NAME.int8.pt``.

Calibration: 256 landmark crops of faces-300w's training photos (the split ``train`` makes), and
320x320 of the first pyramid level of 48 web-faces training photos. Measured: landmarks68's ``nme`` on
faces-300w validation (true-point box) and the detector's ``ap50``/``recall50``/
``false_per_photo`` on web-faces validation, each in float (onnx), int8 in onnxruntime
(onnx-int8) and int8 in torch (torch-int8); the relative changes are against the float graph.

    python benchmarks/quantize_shipped.py [--data ../shared/data] [--forms onnx,torch] [--json FILE]
"""
import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cnnvision import checkpoint
from cnnvision.apps.faces import FacePipeline, _nchw, evaluate_detector_on_photos
from cnnvision.apps.keypoints import evaluate_file
from cnnvision.data import load_sources
from cnnvision.data.dataset import hold_out_people
from cnnvision.data.photos import group_by_photo, read_web_faces, split_photos
from cnnvision.images import open_image
from cnnvision.quantize import quantize, quantize_trunk


SIDE = 320  # the detector's calibration pictures: the top-left 320x320 of each photo's first level


def landmark_batches(net, data: Path) -> list[torch.Tensor]:
    csv_path = str(data / "faces-300w" / "training_keypoints.csv")
    faces = load_sources([csv_path], [str(data / "faces-300w" / "images")], net.cfg.image_size, 1, False, True, 0,
                         None)
    train_set, _ = hold_out_people(faces, 0.15, [csv_path])
    pick = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(0))[:256]
    x, _ = train_set.batch(pick)
    return list(x.split(32))


def detector_batches(detector, landmarks, data: Path) -> list[torch.Tensor]:
    names, boxes, _ = read_web_faces(data / "web-faces" / "faces.csv")
    photos, _ = group_by_photo(names, boxes)
    train_idx, _ = split_photos(photos, 0.15)
    pipeline = FacePipeline(detector, landmarks, runtime="torch")  # for its pyramid levels only
    batches = []
    for i in random.Random(0).sample(list(train_idx), 48):
        im = open_image(data / "web-faces" / "images" / photos[i], 3)
        scale = pipeline.levels(*im.size)[0]
        im = im.resize((max(32, round(im.width * scale)), max(32, round(im.height * scale))))
        x = _nchw([np.asarray(im)])[..., :SIDE, :SIDE]  # one size for all: the calibrator stacks them
        batches.append(F.pad(x, (0, SIDE - x.shape[-1], 0, SIDE - x.shape[-2])))
    return batches


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--forms", default="onnx,torch",
                    help="which int8 forms to make and measure: onnx (NAME.int8.onnx), torch (NAME.int8.pt)")
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args()
    forms = {"onnx": (quantize, "int8.onnx", "onnx-int8"), "torch": (quantize_trunk, "int8.pt", "torch-int8")}
    chosen = [forms[f] for f in a.forms.split(",")]
    data = Path(a.data)
    torch.set_num_threads(1)
    detector, landmarks = (checkpoint.load_net(pretrained=n) for n in ("face-detector", "landmarks68"))
    for name, net, batches in (("landmarks68", landmarks, landmark_batches(landmarks, data)),
                               ("face-detector", detector, detector_batches(detector, landmarks, data))):
        for write, suffix, _ in chosen:
            path = write(net, batches, checkpoint.pretrained_path(name).with_name(f"{name}.{suffix}"))
            print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", flush=True)
    result = {}
    int8_runtimes = [runtime for _, _, runtime in chosen]
    for runtime in ["onnx", *int8_runtimes]:
        lm, det = (checkpoint.load_net(pretrained=n) for n in ("landmarks68", "face-detector"))
        faces = evaluate_file(lm, str(data / "faces-300w" / "training_keypoints.csv"),
                              str(data / "faces-300w" / "images"), split="val", detector=det, runtime=runtime)
        boxes = evaluate_detector_on_photos(det, data / "web-faces" / "faces.csv", data / "web-faces" / "images",
                                            runtime=runtime)
        result[runtime] = {"nme": faces["nme"], "nme_detected": faces["nme_detected"], "detected": faces["detected"],
                           **{k: boxes[k] for k in ("ap50", "recall50", "false_per_photo", "false_per_facefree_crop")}}
        print(runtime, json.dumps(result[runtime]), flush=True)
    for runtime in int8_runtimes:
        result[f"relative_change {runtime}"] = {k: result[runtime][k] / result["onnx"][k] - 1 for k in result["onnx"]
                                                if result["onnx"][k]}
        print(runtime, "against float:", json.dumps(result[f"relative_change {runtime}"]))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
