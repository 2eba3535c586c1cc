"""The embedded default data: procedurally drawn faces with known keypoints.

Each face starts from the mean Kaggle face (15 points in a 96x96 frame), gets its own shape
(eye spacing, brow height, nose length, mouth width and opening), a random similarity transform,
and is drawn with PIL: head, eyes with pupils, brows, nose, lips, on a noisy background. No data
files are needed, so the demo, the tests and ``cnnvision train`` without ``--data`` run anywhere.
"""
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from cnnvision.data.dataset import KeypointDataset
from cnnvision.data.layouts import KAGGLE15

# Mean positions of the Kaggle training faces' 15 points (x, y), in KAGGLE15 order.
MEAN_FACE = np.array([
    [66.4, 37.7], [30.3, 37.9], [59.2, 37.9], [73.1, 37.6], [36.7, 38.0], [22.4, 38.0],
    [56.1, 29.3], [79.5, 29.9], [39.3, 29.6], [15.9, 30.4], [48.4, 62.7],
    [63.3, 75.9], [32.9, 76.2], [48.0, 72.9], [48.6, 79.0],
], dtype=np.float32)


def _face_points(rng: np.random.Generator, size: int) -> np.ndarray:
    p = MEAN_FACE.copy() - 48
    p[[0, 2, 3, 6, 7, 11], 0] += rng.normal(0, 1.5)          # eye spacing (subject's left side)
    p[[1, 4, 5, 8, 9, 12], 0] -= rng.normal(0, 1.5)
    p[6:10, 1] += rng.normal(0, 1.5)                          # brow height
    p[10, 1] += rng.normal(0, 2)                              # nose length
    p[[11, 12], 0] *= rng.uniform(0.85, 1.15)                 # mouth width
    opening = rng.uniform(0, 5)
    p[13, 1] -= opening / 2
    p[14, 1] += opening / 2
    p += rng.normal(0, 0.6, p.shape)
    angle = np.deg2rad(rng.normal(0, 10))
    scale = rng.uniform(0.8, 1.1) * size / 96
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * scale
    shift = rng.uniform(-0.06, 0.06, 2) * size + size / 2
    return (p @ rot.T + shift).astype(np.float32)


def draw_face(p: np.ndarray, size: int, rng: np.random.Generator, noise: np.random.Generator) -> Image.Image:
    """An RGB picture of a face whose 15 keypoints are p (15, 2)."""
    ss = 2  # draw large, then downsample, for smooth edges
    q = (p + 0.5) * ss  # pixel centres -> continuous coordinates
    im = Image.new("RGB", (size * ss, size * ss), tuple(int(v) for v in rng.uniform(30, 220, 3)))
    d = ImageDraw.Draw(im)
    skin = tuple(int(v) for v in rng.uniform([90, 60, 40], [250, 210, 190]))
    dark = tuple(int(v * 0.35) for v in skin)
    eyes_mid = (q[0] + q[1]) / 2
    mouth_mid = (q[11] + q[12]) / 2
    centre = (eyes_mid * 0.55 + mouth_mid * 0.45)
    half_w = np.linalg.norm(q[3] - q[5]) * rng.uniform(0.62, 0.75)
    half_h = np.linalg.norm(mouth_mid - eyes_mid) * rng.uniform(1.35, 1.6)
    d.ellipse([centre[0] - half_w, centre[1] - half_h, centre[0] + half_w, centre[1] + half_h], fill=skin)
    white = (235, 235, 235)
    for c, inner, outer in ((q[0], q[2], q[3]), (q[1], q[4], q[5])):
        ew = abs(outer[0] - inner[0]) / 2
        eh = ew * rng.uniform(0.35, 0.55)
        mid = (inner + outer) / 2
        d.ellipse([mid[0] - ew, mid[1] - eh, mid[0] + ew, mid[1] + eh], fill=white)
        r = eh * 0.9
        d.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=(40, 30, 20))
    for a, b in ((q[6], q[7]), (q[8], q[9])):
        d.line([tuple(a), tuple(b)], fill=dark, width=int(3 * ss))
    bridge = (q[2] + q[4]) / 2
    nostril = np.linalg.norm(q[3] - q[5]) * 0.12
    d.polygon([tuple(bridge), (q[10][0] - nostril, q[10][1]), (q[10][0] + nostril, q[10][1])],
              outline=dark, width=ss)
    lip = tuple(int(v) for v in rng.uniform([120, 30, 40], [200, 90, 100]))
    d.polygon([tuple(q[11]), tuple(q[13]), tuple(q[12]), tuple(q[14])], fill=lip)
    d.line([tuple(q[11]), tuple(q[12])], fill=dark, width=ss)
    im = im.filter(ImageFilter.BoxBlur(1)).resize((size, size), Image.Resampling.BOX)
    noisy = np.asarray(im, dtype=np.float32) + noise.normal(0, 8, (size, size, 1))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def synthetic_faces(n: int = 2400, size: int = 96, channels: int = 1, seed: int = 0,
                    people: int = 200) -> KeypointDataset:
    """``n`` synthetic faces; faces share a drawing seed by 'person' so identity splits mean
    something (a person keeps their face shape and colours)."""
    points, images, ids = [], [], []
    for i in range(n):
        person = i % people
        frame = np.random.default_rng([seed, person, i])
        p = _face_points(frame, size)
        im = draw_face(p, size, np.random.default_rng([seed, person]), frame)  # a person keeps their colours
        arr = np.asarray(im.convert("L"))[None] if channels == 1 else np.asarray(im).transpose(2, 0, 1)
        points.append(p)
        images.append(arr)
        ids.append(f"person{person:04d}")
    return KeypointDataset(torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(points)),
                           KAGGLE15, identities=ids, names=[f"synthetic_{i:05d}" for i in range(n)])
