"""Drawing predictions: points and boxes over images, and grids of faces for TensorBoard."""
import numpy as np
import torch
from PIL import Image, ImageDraw

GREEN, RED, YELLOW = (40, 220, 60), (240, 40, 40), (255, 210, 0)


def draw_points(im: Image.Image, points, color=RED, radius: float | None = None) -> Image.Image:
    """Dots at pixel-centre coordinates (K, 2); NaN points are skipped. An RGB image is drawn on in
    place; any other mode is converted to a new RGB image first. Returns the image drawn on."""
    if im.mode != "RGB":
        im = im.convert("RGB")
    d = ImageDraw.Draw(im)
    r = radius or max(1.0, min(im.size) / 80)
    for x, y in np.asarray(points, dtype=np.float64):
        if np.isfinite(x) and np.isfinite(y):
            cx, cy = x + 0.5, y + 0.5
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    return im


def draw_box(im: Image.Image, box, color=YELLOW, label: str | None = None) -> Image.Image:
    d = ImageDraw.Draw(im)
    width = max(1, round(min(im.size) / 250))
    d.rectangle([float(v) for v in box], outline=color, width=width)
    if label:
        d.text((float(box[0]) + 2, float(box[1]) + 2), label, fill=color)
    return im


def face_grid(images: torch.Tensor, pred: torch.Tensor, true: torch.Tensor | None = None,
              columns: int = 8, zoom: int = 2) -> np.ndarray:
    """uint8 (N, C, S, S) faces with predicted (red) and true (green) points: (H, W, 3) uint8."""
    tiles = []
    for i in range(images.shape[0]):
        arr = images[i].permute(1, 2, 0).numpy()
        im = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).convert("RGB")
        im = im.resize((im.width * zoom, im.height * zoom), Image.Resampling.BILINEAR)
        if true is not None:
            im = draw_points(im, (true[i].numpy() + 0.5) * zoom - 0.5, GREEN)
        im = draw_points(im, (pred[i].numpy() + 0.5) * zoom - 0.5, RED)
        tiles.append(np.asarray(im))
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[r:r + columns], 1) for r in range(0, len(tiles), columns)]
    return np.concatenate(rows, 0)
