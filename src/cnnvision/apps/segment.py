"""Face-part segmentation: train, evaluate and predict, composing the same Dataset, Net and Solver
as the keypoint and digit apps.

The labels are drawn from the 68-point files (data/parts.py), so any 68-point CSV and its image
folder is segmentation data; training holds out people, as the keypoint app does.
"""
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnnvision import images as imgs
from cnnvision.data.augment import AugmentConfig, make_augment
from cnnvision.data.dataset import hold_out_people, split_record, split_summary
from cnnvision.data.parts import CLASSES, SegmentationDataset, load_parts
from cnnvision.errors import InputError
from cnnvision.runs import RunFolder, resumed
from cnnvision.files import free_name, save_image
from cnnvision.nets.segment import SegmenterConfig, SegmenterNet, overlay
from cnnvision.solver import evaluate, predict, report_best, solver_config, train_in_folder

NO_DATA = ("segmentation needs --data: a 68-point CSV (file name, then x0,y0..x67,y67) and --images, "
           "its image folder; the part masks are drawn from the points")


@dataclass
class SegmenterTraining:
    """What a segmentation run is trained from: built by keyword, stored in its checkpoints and
    config.json, rebuilt from them on ``--resume``."""
    data: str | None = None          # a 68-point CSV (the part masks are drawn from its points)
    images: str | None = None        # its image folder
    net: str = "segnet"
    val_fraction: float = 0.15       # held out by person
    image_size: int = 96
    channels: int = 1
    width: int = 16
    use_cache: bool = True
    augment: bool | dict = True      # False, True (the default warps and jitter) or AugmentConfig fields
    class_weights: tuple = ()        # cross-entropy weight per class (default: unweighted)
    loss: str = "ce"                 # ce | ce_dice | ce_lovasz
    depth: int = 3                   # halvings in the encoder
    aux_points: float = 0.0          # weight of the auxiliary 68-point loss, 0 = off
    solver: dict = field(default_factory=dict)


def train(training: SegmenterTraining, out: str | Path = "runs/segnet", resume: bool = False) -> dict:
    """Train a segmenter on a 68-point file's faces, evaluate its best checkpoint on the held-out
    people, and draw them. Returns the final metrics."""
    out = Path(out)
    with RunFolder.claim(out, resume):  # refuses others' files and a second run; unlocked at the end
        t = resumed(training, out, "segmentation") if resume else training
        data, images, image_size, depth, aux_points = t.data, t.images, t.image_size, t.depth, t.aux_points
        class_weights = t.class_weights
        if data is None:
            raise InputError(NO_DATA)
        if not 1 <= depth <= 5:
            raise InputError(f"--depth {depth}: the segmenter's encoder takes 1 to 5 halvings")
        if image_size % 2 ** depth:
            raise InputError(f"--image-size {image_size}: a segmenter of depth {depth} needs a multiple of {2 ** depth}")
        if aux_points < 0:
            raise InputError(f"--aux-points {aux_points}: a loss weight cannot be negative")
        if class_weights and len(class_weights) != len(CLASSES):
            raise InputError(f"--class-weights: {len(class_weights)} values for the {len(CLASSES)} classes")
        dataset = load_parts(data, images, image_size, t.channels, t.use_cache)
        train_set, val_set = hold_out_people(dataset, t.val_fraction, data)
        aug = make_augment(t.augment, AugmentConfig())
        train_set.augment = aug
        train_set.with_points = aux_points > 0
        net_cfg = SegmenterConfig(arch=t.net, in_channels=dataset.channels, image_size=dataset.size,
                                  num_classes=dataset.num_classes, width=t.width, class_weights=tuple(class_weights),
                                  loss=t.loss, depth=depth, aux_points=aux_points)
        cfg = solver_config(t.solver)
        torch.manual_seed(cfg.seed)
        model = SegmenterNet(net_cfg)
        t = replace(t, data=str(data), images=str(images) if images else None, class_weights=tuple(class_weights),
                    solver=asdict(cfg), augment=asdict(aug) if aug else None)
        run_config = {"command": "train", "task": "segmentation", **asdict(t), "net": asdict(net_cfg),
                      **split_record(train_set, val_set)}
        if not train_in_folder(model, train_set, val_set, cfg, out, run_config, resume,
                               split_summary(train_set, val_set)):
            return {}
        best, metrics = report_best(out, val_set, cfg, cfg.eval_flip)
        sample = val_set.subset(torch.arange(min(16, len(val_set))))
        picture = best.picture(sample, predict(best, sample, flip=cfg.eval_flip, precision=cfg.precision))
        save_image(Image.fromarray(picture), out / "predictions.png")
        print(f"true (left) and predicted (right) parts of held-out faces: {out / 'predictions.png'}")
        return metrics


def evaluate_file(net, data: str, images: str | None = None, split: str = "all", val_fraction: float = 0.15) -> dict:
    """miou, per-class iou and count of a segmenter on a 68-point file. ``split="val"`` keeps only
    the people ``train`` holds out of the same file with the same ``val_fraction``."""
    cfg = net.cfg
    dataset = load_parts(data, images, cfg.image_size, cfg.in_channels)
    if split != "all":
        train_set, val_set = hold_out_people(dataset, val_fraction, data)
        dataset = val_set if split == "val" else train_set
    return evaluate(net, dataset)


def predict_images(net, paths: list[str], out_dir: str | Path | None = None, batch_size: int = 64,
                   overwrite: bool = False) -> dict:
    """Face parts of whole images (each taken as one face): per-class shares of the image's pixels,
    and, with ``out_dir``, an overlay PNG and the class mask PNG (pixel value = class) of each
    (numbered names beside existing files, unless ``overwrite``)."""
    cfg = net.cfg
    crops, opened = [], []
    for path in paths:
        im = imgs.open_image(path, cfg.in_channels)
        crop = imgs.crop_square(im, imgs.square_box(0, 0, im.width, im.height), cfg.image_size)
        crops.append(crop[None] if cfg.in_channels == 1 else crop.transpose(2, 0, 1))
        opened.append(im)
    images = torch.from_numpy(np.stack(crops))  # (N, C, S, S)
    faces = SegmentationDataset(images, torch.zeros(len(crops), cfg.image_size, cfg.image_size, dtype=torch.uint8))
    probs = predict(net, faces, batch_size)      # (N, classes, S, S)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    results, used = {}, set()
    for path, im, p in zip(paths, opened, probs):
        mask = to_image(p, im.width, im.height)  # (H, W) classes in the image's own pixels
        counts = np.bincount(mask.flatten(), minlength=cfg.num_classes) / mask.size
        results[str(path)] = {"shares": {name: round(float(c), 4) for name, c in zip(CLASSES, counts)}}
        if out_dir is not None:
            name = free_name(out_dir, Path(path).stem + "_parts", (".png", "_mask.png"), used, overwrite)
            source = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)  # (3, H, W)
            save_image(Image.fromarray(overlay(source, torch.from_numpy(mask)).numpy()), Path(out_dir) / f"{name}.png")
            save_image(Image.fromarray(mask), Path(out_dir) / f"{name}_mask.png")
            results[str(path)]["mask"] = str(Path(out_dir) / f"{name}_mask.png")
    return results


def to_image(probs: torch.Tensor, width: int, height: int) -> np.ndarray:
    """(classes, S, S) probabilities of the square crop around a whole image -> (height, width)
    uint8 classes of that image: the probabilities are resized bilinearly, then the argmax taken."""
    side = max(width, height)
    square = torch.nn.functional.interpolate(probs[None], size=(side, side), mode="bilinear", align_corners=False)[0]
    x0, y0 = (side - width) // 2, (side - height) // 2  # square_box centres the image in the square
    return square[:, y0:y0 + height, x0:x0 + width].argmax(0).to(torch.uint8).numpy()
