"""Digit classification on MNIST: train, evaluate and predict, composing the same Dataset, Net and
Solver as the keypoint app.

Training holds out the last twelfth of the training files (MNIST's last 5,000 digits) to pick
the best checkpoint; the official test files are only read by ``evaluate_file``.
"""
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from cnnvision import checkpoint
from cnnvision import images as imgs
from cnnvision.data.augment import make_augment
from cnnvision.data.mnist import ClassificationDataset, digit_augment, load_mnist
from cnnvision.errors import InputError
from cnnvision.files import save_image, write_json
from cnnvision.runs import RunFolder, resumed
from cnnvision.nets.classify import ClassifierConfig, ClassifierNet
from cnnvision.solver import evaluate, predict, solver_config, train_in_folder

NO_DATA = ("classification needs --data: a folder with the MNIST idx files (train-images-idx3-ubyte, "
           "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each optionally .gz)")


@dataclass
class ClassifierTraining:
    """What a classifier run is trained from: built by keyword, stored in its checkpoints and
    config.json, rebuilt from them on ``--resume``."""
    data: str | None = None         # a folder of MNIST idx files
    net: str = "lenet5"             # softmax | mlp | lenet5
    augment: bool | dict = True     # False, True (digit_augment) or AugmentConfig fields to change
    solver: dict = field(default_factory=dict)


def train(training: ClassifierTraining, out: str | Path = "runs/lenet5-mnist", resume: bool = False) -> dict:
    """Train a classifier on an MNIST folder's training files and report its best checkpoint on
    the held-out digits. Returns the final metrics."""
    out = Path(out)
    with RunFolder.claim(out, resume):  # refuses others' files and a second run; unlocked at the end
        t = resumed(training, out, "classification") if resume else training
        data, net = t.data, t.net
        if data is None:
            raise InputError(NO_DATA)
        digits = load_mnist(data, "train")
        n = len(digits)
        held_out = n // 12
        if held_out < 1:
            raise InputError(f"{data}: too few training digits ({n}) to hold out a validation set")
        train_set, val_set = digits.subset(torch.arange(n - held_out)), digits.subset(torch.arange(n - held_out, n))
        aug = make_augment(t.augment, digit_augment())
        train_set.augment = aug
        net_cfg = ClassifierConfig(arch=net, in_channels=digits.channels, image_size=digits.size,
                                   num_classes=digits.num_classes)
        cfg = solver_config(t.solver)
        torch.manual_seed(cfg.seed)
        model = ClassifierNet(net_cfg)
        t = replace(t, data=str(data), solver=asdict(cfg), augment=asdict(aug) if aug else None)
        run_config = {
            "command": "train", "task": "classification", **asdict(t), "net": asdict(net_cfg),
            "train_count": len(train_set), "val_count": len(val_set), "val": f"the last {held_out} training digits",
        }
        summary = (f"{len(train_set)} training and {len(val_set)} validation digits "
                   f"(the last {held_out} of the training files)")
        if not train_in_folder(model, train_set, val_set, cfg, out, run_config, resume, summary):
            return {}
        best = checkpoint.load_net(out / "best.pt")
        probs = predict(best, val_set, precision=cfg.precision)
        metrics = best.metrics(probs, val_set)
        wrong = torch.nonzero(probs.argmax(1) != val_set.labels).flatten()[:64]
        if len(wrong):
            save_image(Image.fromarray(best.picture(val_set.subset(wrong), probs[wrong])), out / "mistakes.png")
        save_image(confusion_image(metrics["confusion"]), out / "confusion.png")
        write_json(out / "metrics.json", metrics)
        print(f"best checkpoint {out / 'best.pt'}: accuracy {metrics['accuracy']:.4f} on {metrics['count']} "
              f"held-out digits; confusion matrix {out / 'confusion.png'}")
        return metrics


def evaluate_file(net, data: str) -> dict:
    """accuracy, count and confusion of a classifier on an MNIST folder's test files."""
    digits = load_mnist(data, "test")
    check_input(net, digits, data)
    return evaluate(net, digits)


def check_input(net, digits: ClassificationDataset, data) -> None:
    cfg = net.cfg
    if (digits.channels, digits.size) != (cfg.in_channels, cfg.image_size):
        raise InputError(f"{data}: images are {digits.channels}x{digits.size}x{digits.size}, the model takes "
                         f"{cfg.in_channels}x{cfg.image_size}x{cfg.image_size}")
    if digits.num_classes != cfg.num_classes:
        raise InputError(f"{data}: has {digits.num_classes} classes, the model predicts {cfg.num_classes}")


def confusion_image(confusion: list[list[int]], cell: int = 34) -> Image.Image:
    """The confusion matrix as a picture: true classes down, predicted classes across, each
    cell's count written on it and shaded by its share of the true class."""
    m = np.asarray(confusion, dtype=np.int64)
    k = len(m)
    share = m / np.maximum(m.sum(1, keepdims=True), 1)
    margin = cell + 14
    im = Image.new("RGB", (margin + k * cell + 4, margin + k * cell + 4), "white")
    d = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=cell // 3)
    d.text((margin + k * cell / 2, 2), "predicted", fill="black", font=font, anchor="mt")
    d.text((2, margin + k * cell / 2), "true", fill="black", font=font, anchor="lm")
    for i in range(k):
        d.text((margin + (i + 0.5) * cell, margin - 4), str(i), fill="black", font=font, anchor="mb")
        d.text((margin - 6, margin + (i + 0.5) * cell), str(i), fill="black", font=font, anchor="rm")
        for j in range(k):
            # the square root lifts the few errors off white; the diagonal is blue, errors red
            level = float(np.sqrt(share[i, j]))
            tint = (40, 90, 200) if i == j else (210, 40, 40)
            colour = tuple(round(255 - level * (255 - c)) for c in tint)
            box = [margin + j * cell, margin + i * cell, margin + (j + 1) * cell, margin + (i + 1) * cell]
            d.rectangle(box, fill=colour, outline=(200, 200, 200))
            if m[i, j]:
                d.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), str(m[i, j]), font=font, anchor="mm",
                       fill="white" if level > 0.6 else "black")
    return im


def mnist_like(im: Image.Image, size: int = 28, digit: int = 20) -> np.ndarray:
    """A photo or drawing of one digit, prepared as MNIST's were: light digit on a dark
    background, the digit's box scaled so its longer side is ``digit`` pixels (20 of 28), pasted
    with its centre of mass at the centre. (size, size) uint8."""
    a = np.asarray(im.convert("L"), dtype=np.float32)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    background = float(np.median(border))
    if background > 127:  # dark ink on light paper
        a, background = 255 - a, 255 - background
    a = np.clip(a - background, 0, None)
    canvas = Image.new("L", (size, size))
    if a.max() <= 0:
        return np.asarray(canvas)  # blank: nothing to centre
    a *= 255 / a.max()
    ys, xs = np.nonzero(a > 64)  # the box of the ink, not of faint noise
    crop = a[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = crop.shape
    scale = digit / max(h, w)
    small = Image.fromarray(crop.astype(np.uint8)).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                          Image.Resampling.LANCZOS)
    s = np.asarray(small, dtype=np.float32)
    s *= 255 / max(s.max(), 1)  # thin strokes fade when shrunk; MNIST's ink is saturated
    rows, cols = np.indices(s.shape)
    cy, cx = (rows * s).sum() / s.sum(), (cols * s).sum() / s.sum()
    # MNIST's centres of mass sit at pixel (14, 14) of 28
    canvas.paste(Image.fromarray(s.astype(np.uint8)), (round(size / 2 - cx), round(size / 2 - cy)))
    return np.asarray(canvas)


def predict_images(net, paths: list[str], batch_size: int = 256) -> dict:
    """The class and its probability for images of one digit each, of any size and mode."""
    cfg = net.cfg
    digits = np.stack([mnist_like(imgs.open_image(p, 1), cfg.image_size) for p in paths])  # (N, S, S)
    images = torch.from_numpy(digits)[:, None].repeat(1, cfg.in_channels, 1, 1)           # (N, C, S, S)
    probs = predict(net, ClassificationDataset(images, torch.zeros(len(paths), dtype=torch.long),
                                               cfg.num_classes), batch_size)
    results = {}
    for path, p in zip(paths, probs):
        results[str(path)] = {"class": int(p.argmax()), "probability": round(float(p.max()), 4),
                              "probabilities": [round(float(v), 4) for v in p]}
    return results
