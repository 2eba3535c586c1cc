"""Face detection: train the one-stage FCN detector on synthetic scenes and real crops made from
the 68-point frames, and measure AP and recall at IoU 0.5 on frames of people it never saw."""
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from cnnvision import checkpoint
from cnnvision import images as imgs
from cnnvision.apps.keypoints import solver_config
from cnnvision.data.augment import AugmentConfig, make_augment
from cnnvision.data.dataset import hold_out_people, identity_from_name, split_by_identity
from cnnvision.data.faces68 import parse_points_csv
from cnnvision.data.scenes import concat, frame_crops, frames, scenes
from cnnvision.errors import InputError
from cnnvision.nets.detect import DetectorConfig, DetectorNet
from cnnvision.solver import evaluate, train_in_folder


def train(data: str, images: str, out: str | Path, resume: bool = False, scene_count: int = 3000,
          image_size: int = 160, val_fraction: float = 0.15, width: int = 16, objectness_loss: str = "bce",
          augment: bool | dict = True, **solver) -> dict:
    """Train on scenes of the training people; validate on the held-out people's frames.
    ``augment``: False, True (the default warps and jitter) or a dict of AugmentConfig fields to change."""
    out = Path(out)
    if resume:
        stored = checkpoint.load(out / "last.pt")["config"]
        epochs = solver.get("epochs")
        data, images, scene_count = stored["data"], stored["images"], stored["scene_count"]
        image_size, val_fraction, width = stored["image_size"], stored["val_fraction"], stored["net"]["width"]
        objectness_loss = stored["net"].get("objectness_loss", "bce")
        augment = stored.get("augment", True) or False  # runs from before --augment kept no record
        solver = {**stored["solver"], **({"epochs": epochs} if epochs else {})}
    elif (out / "last.pt").exists():
        raise InputError(f"{out}: already holds a run (last.pt); use --resume to continue it or another --out")
    if data is None or images is None:
        raise InputError("detection needs --data (a 68-point CSV) and --images (its frames)")
    names, _ = parse_points_csv(Path(data))
    people = [identity_from_name(n) for n in names]
    train_idx, val_idx = split_by_identity(people, len(people), val_fraction)
    train_people = {people[i] for i in train_idx.tolist()}
    net_cfg = DetectorConfig(image_size=image_size, width=width, objectness_loss=objectness_loss)
    # a third synthetic scenes (many faces, small faces, no faces); two thirds real frames, cropped around
    # their face, some as grids of 2x2 or 3x3 such crops, and some tiles close-ups inside a face (no face)
    real = scene_count * 2 // 3
    train_set = concat([scenes(data, images, scene_count - real, image_size, net_cfg.in_channels, train_people),
                        frame_crops(data, images, real, image_size, net_cfg.in_channels, train_people,
                                    inside=0.1, tiles=(1, 1, 2, 3))])
    train_set.augment = make_augment(augment, AugmentConfig())
    val_set = frames(data, images, image_size, net_cfg.in_channels).subset(val_idx)
    cfg = solver_config(solver)
    torch.manual_seed(cfg.seed)
    model = DetectorNet(net_cfg)
    run_config = {"command": "train", "task": "detection", "data": str(data), "images": str(images),
                  "scene_count": scene_count, "image_size": image_size, "val_fraction": val_fraction,
                  "augment": asdict(train_set.augment) if train_set.augment else None,
                  "net": asdict(net_cfg), "solver": asdict(cfg), "train_count": len(train_set),
                  "val_count": len(val_set), "val_people": len({people[i] for i in val_idx.tolist()})}
    summary = (f"{len(train_set)} training pictures of {len(train_people)} people; {len(val_set)} validation "
               f"frames of {run_config['val_people']} held-out people")
    if not train_in_folder(model, train_set, val_set, cfg, out, run_config, resume, summary):
        return {}
    metrics = evaluate(checkpoint.load_net(out / "best.pt"), val_set, flip=False)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"best checkpoint {out / 'best.pt'}: " + json.dumps(metrics))
    return metrics


def evaluate_file(net, data: str, images: str | None, split: str = "all", val_fraction: float = 0.15) -> dict:
    """ap50, recall50 and count of a detector on a 68-point layout's frames (letterboxed to the
    net's training size); ``split="val"`` keeps the people ``train`` held out."""
    if images is None:
        raise InputError("detection evaluation needs --images, the folder of the frames")
    found = frames(data, images, net.cfg.image_size, net.cfg.in_channels)
    if split != "all":
        train_set, val_set = hold_out_people(found, val_fraction, data)
        found = val_set if split == "val" else train_set
    return evaluate(net, found, flip=False)


def predict_images(net, paths: list[str]) -> dict:
    """Face boxes and scores for whole images of any size, in their pixels."""
    results = {}
    net.eval()
    for path in paths:
        im = imgs.open_image(path, net.cfg.in_channels)
        x = torch.from_numpy(np.asarray(im).copy())
        x = (x[None] if x.ndim == 2 else x.permute(2, 0, 1))[None].float() / 255  # (1, C, H, W)
        with torch.inference_mode():
            (boxes, scores), = net.detect(net.predict(x))
        results[str(path)] = [{"box": [round(float(v), 1) for v in b], "score": round(float(s), 4)}
                              for b, s in zip(boxes, scores)]
    return results
