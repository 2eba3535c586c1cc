"""How far apart two labellings of the same face are, and so how high face-part IoU can go.

639 frame names appear in both the training and the test CSV of youtube-faces-68. The two images
of a name are the same video frame, or one a moment apart, cut out at another offset, and each
has its own 68 points. This script:

1. registers the two images by phase correlation (the image alone, no points) and ranks the
   pairs by how alike they are after that shift;
2. maps the test frame's points onto the training frame's by the similarity transform that fits
   them best (taking out the cut-out offset and any head motion), and measures the mean IoU of
   the two part masks drawn in the 96 px crop, as ``evaluate`` draws them;
3. takes the points' scatter on the most alike pairs as the labels' own noise (each labelling
   carries half of the squared difference) and draws the held-out people's masks again with
   that noise added: the IoU of those against the noise-free masks is what a net that found
   every outline exactly would score against such labels;
4. scores the shipped ``face-parts`` net on the same training frames of the held-out people,
   against each labelling, beside the two labellings' agreement on those frames: how far the
   net is from a second labeller on faces it never saw.

    python benchmarks/parts_label_noise.py
"""
import csv

import numpy as np
import torch
from PIL import Image

from cnnvision import checkpoint
from cnnvision.data.faces68 import face_box
from cnnvision.data.parts import CLASSES, load_parts, rasterise
from cnnvision.images import to_crop
from cnnvision.nets.segment import iou_metrics
from cnnvision.solver import predict
from compare_dlib import DATA, held_out_rows

SIZE = 96
REGIONS = {"jaw": range(0, 17), "brows": range(17, 27), "nose": range(27, 36), "eyes": range(36, 48),
           "mouth": range(48, 68)}


def read_points(path) -> dict:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    return {row[0]: np.array(row[1:], np.float64).reshape(68, 2) for row in rows}


def register(a: np.ndarray, b: np.ndarray) -> tuple[int, int, float]:
    """The shift (dx, dy) with b[y + dy, x + dx] ~ a[y, x] by phase correlation, and the mean
    absolute difference of the overlap after it, in units of a's standard deviation."""
    cross = np.fft.fft2(b) * np.conj(np.fft.fft2(a))
    peak = np.fft.ifft2(cross / (np.abs(cross) + 1e-9)).real
    dy, dx = np.unravel_index(peak.argmax(), peak.shape)
    dy, dx = (dy + a.shape[0] // 2) % a.shape[0] - a.shape[0] // 2, (dx + a.shape[1] // 2) % a.shape[1] - a.shape[1] // 2
    h, w = a.shape
    ya, yb, xa, xb = max(0, -dy), min(h, h - dy), max(0, -dx), min(w, w - dx)
    A, B = a[ya:yb, xa:xb], b[ya + dy:yb + dy, xa + dx:xb + dx]
    return int(dx), int(dy), float(np.abs((A - A.mean()) - (B - B.mean())).mean() / (A.std() + 1e-9))


def similarity_onto(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """src (K, 2) moved by the rotation, scale and shift that bring it closest to dst."""
    zs, zd = (src - src.mean(0)) @ [1, 1j], (dst - dst.mean(0)) @ [1, 1j]
    moved = zs * (np.conj(zs) @ zd) / (np.conj(zs) @ zs)
    return np.stack([moved.real, moved.imag], 1) + dst.mean(0)


def mean_iou(pairs) -> tuple[float, list[float]]:
    """Mean IoU over classes 1 and up, and each class's, of the masks drawn from pairs of points."""
    return masks_iou(zip(*((rasterise(a, SIZE), rasterise(b, SIZE)) for a, b in pairs)))


def masks_iou(masks) -> tuple[float, list[float]]:
    """Mean IoU over classes 1 and up, and each class's, of (true masks, other masks)."""
    first, second = masks
    metrics = iou_metrics(torch.from_numpy(np.stack(second)).long(), torch.from_numpy(np.stack(first)).long(),
                          len(CLASSES))
    return metrics["miou"], metrics["iou"][1:]


def shipped_net_beside_labellers(pairs, held_out_names: set) -> None:
    """The shipped face-parts net on the training frames of held-out people that have a second
    labelling, scored against each, beside the two labellings' own agreement."""
    net = checkpoint.load_net(None, "face-parts")
    faces = load_parts(DATA / "training_frames_keypoints.csv", DATA / "training", net.cfg.image_size,
                       net.cfg.in_channels)
    index = {name: i for i, name in enumerate(faces.names)}
    held = [p for p in pairs if p[1] in held_out_names and p[1] in index]
    predicted = predict(net, faces.subset([index[p[1]] for p in held])).argmax(1).to(torch.uint8).numpy()
    print("held-out people's frames labelled twice, most alike first | pairs | second labelling vs first | "
          "face-parts vs first | face-parts vs second")
    for share in (0.25, 0.5, 1.0):
        n = max(10, round(len(held) * share))
        first = [rasterise(m, SIZE) for _, _, m, _ in held[:n]]
        second = [rasterise(t, SIZE) for *_, t in held[:n]]
        cells = [masks_iou((first, second)), masks_iou((first, predicted[:n])), masks_iou((second, predicted[:n]))]
        print(f"{share:>10.0%} | {n:5d} | " + " | ".join(f"{m:.3f} ({' '.join(f'{v:.3f}' for v in iou)})"
                                                        for m, iou in cells))


def main():
    train, test = read_points(DATA / "training_frames_keypoints.csv"), read_points(DATA / "test_frames_keypoints.csv")
    pairs = []
    for name in sorted(set(train) & set(test)):
        a = np.asarray(Image.open(DATA / "training" / name).convert("L"), np.float64)
        b = np.asarray(Image.open(DATA / "test" / name).convert("L"), np.float64)
        if a.shape != b.shape:
            continue
        *_, difference = register(a, b)
        box = face_box(train[name].astype(np.float32))
        mine = to_crop(train[name], box, SIZE)
        theirs = similarity_onto(to_crop(test[name], box, SIZE), mine)
        pairs.append((difference, name, mine, theirs))
    pairs.sort(key=lambda p: p[0])
    print(f"{len(pairs)} frames labelled twice; classes {', '.join(CLASSES[1:])}")
    print("most alike | pairs | two labellings' mean IoU (per class) | scatter of the points, crop px rms")
    for share in (0.1, 0.25, 0.5, 1.0):
        part = pairs[:max(10, round(len(pairs) * share))]
        miou, iou = mean_iou((m, t) for *_, m, t in part)
        scatter = np.array([t - m for *_, m, t in part])
        spread = " ".join(f"{k} {scatter[:, list(r)].std():.2f}" for k, r in REGIONS.items())
        print(f"{share:>10.0%} | {len(part):5d} | {miou:.3f} ({' '.join(f'{v:.3f}' for v in iou)}) | {spread}")

    alike = np.array([t - m for *_, m, t in pairs[:round(len(pairs) * 0.1)]])
    sigma = np.zeros((68, 1))
    for r in REGIONS.values():
        sigma[list(r)] = alike[:, list(r)].std() / np.sqrt(2)  # each labelling's share of the scatter
    held_out_names, held_out = held_out_rows(DATA / "training_frames_keypoints.csv", 0.15)
    rng = np.random.default_rng(0)
    clean = [to_crop(p, face_box(p.astype(np.float32)), SIZE) for p in held_out]
    exact, iou = mean_iou((p, p + rng.normal(size=p.shape) * sigma) for p in clean)
    twice, iou2 = mean_iou((p + rng.normal(size=p.shape) * sigma, p + rng.normal(size=p.shape) * sigma)
                           for p in clean)
    print(f"label noise from the most alike 10%: {' '.join(f'{k} {sigma[r[0], 0]:.2f}' for k, r in REGIONS.items())}"
          " crop px per coordinate")
    print(f"held-out people ({len(clean)} faces), that noise added: a net exact to the outlines would score "
          f"{exact:.3f} ({' '.join(f'{v:.3f}' for v in iou)}); two noisy labellings agree at {twice:.3f}")
    shipped_net_beside_labellers(pairs, set(held_out_names))


if __name__ == "__main__":
    main()
