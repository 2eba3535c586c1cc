"""Reading user images of any format, size and mode, and cropping square face boxes."""
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnvision.errors import InputError


# The most pixels an image may have before it is decoded: a 6,000 x 6,000 photo (36 M) is read, a
# 12,500 x 12,500 PNG (156 M pixels, 470 MB as RGB) is refused before it fills the memory.
# ``--max-pixels`` (or set_max_pixels) raises it.
MAX_PIXELS = 40_000_000


def set_max_pixels(limit: int) -> None:
    global MAX_PIXELS
    if limit < 1:
        raise InputError(f"--max-pixels {limit}: must be a positive number of pixels")
    MAX_PIXELS = limit
    Image.MAX_IMAGE_PIXELS = max(limit, Image.MAX_IMAGE_PIXELS or 0)


def open_image(path: str | Path, channels: int = 3) -> Image.Image:
    """Decode an image, honour its EXIF orientation, and convert to grey (1) or RGB (3).

    Transparent pixels are composited on white, so an RGBA logo does not turn black.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected an image")
    return open_pil(decode(path, str(path), MAX_PIXELS, " (raise it with --max-pixels)"), channels)


def decode(source, label: str, max_pixels: int, hint: str = "") -> Image.Image:
    """Decode a file or file-like ``source`` into memory, upright by its EXIF orientation. An
    image of more than ``max_pixels`` is refused from its header, before it is decoded; anything
    that is not a readable image raises InputError naming ``label``."""
    try:
        with Image.open(source) as im:
            if im.width * im.height > max_pixels:
                raise InputError(f"{label}: {im.width}x{im.height} is {im.width * im.height:,} pixels, over the limit "
                                 f"of {max_pixels:,}{hint}")
            im = ImageOps.exif_transpose(im)
            im.load()
    except Image.DecompressionBombError:
        raise InputError(f"{label}: image too large to decode safely (over {Image.MAX_IMAGE_PIXELS * 2:,} pixels)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{label}: cannot decode image ({e.__class__.__name__})") from None
    return im


def open_pil(im: Image.Image, channels: int = 3) -> Image.Image:
    """Any PIL image as grey (1) or RGB (3); transparent pixels composited on white, 16-bit
    images scaled to their range."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        im = Image.new("RGB", rgba.size, (255, 255, 255))
        im.paste(rgba, mask=rgba.getchannel("A"))
    if im.mode == "I;16" or im.mode == "I":
        arr = np.asarray(im, dtype=np.float64)
        im = Image.fromarray((arr / max(arr.max(), 1) * 255).astype(np.uint8))
    return im.convert("L" if channels == 1 else "RGB")


def square_box(x0: float, y0: float, x1: float, y1: float, margin: float = 0.0) -> tuple[float, float, float, float]:
    """The square around a box's centre whose side is the box's longer side times (1 + 2 margin)."""
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = max(x1 - x0, y1 - y0) * (0.5 + margin)
    return cx - half, cy - half, cx + half, cy + half


def crop_square(im: Image.Image, box, size: int, angle: float = 0.0) -> np.ndarray:
    """The box's content resampled to size x size (zeros outside the image): (size, size[, 3]) uint8.
    With ``angle`` (radians), the square is turned that much about its centre first: the crop's
    x axis runs along that direction of the image (a tilted face comes out upright)."""
    x0, y0, x1, y1 = box
    scale = (x1 - x0) / size

    def sampled(side: int) -> Image.Image:  # affine map from output pixel to input pixel
        step = (x1 - x0) / side
        if not angle:
            data = (step, 0, x0, 0, step, y0)
        else:
            cos, sin = math.cos(angle) * step, math.sin(angle) * step
            cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, side / 2
            data = (cos, -sin, cx - (cos - sin) * half, sin, cos, cy - (sin + cos) * half)
        return im.transform((side, side), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR)
    if scale > 2:  # heavy downscale: average first to avoid aliasing
        return np.asarray(sampled(size * 2).resize((size, size), Image.Resampling.BOX))
    return np.asarray(sampled(size))


# Points use pixel-centre coordinates (pixel i's centre is at i), as the Kaggle and 68-point
# files do, while a box spans continuous coordinates; hence the half-pixel terms.
def to_crop(points, box, size: int):
    """Source-image points (..., K, 2) -> points in the size x size crop of box (x0, y0, x1, y1)."""
    x0, y0, x1, _ = box
    scale = (x1 - x0) / size
    origin = np.array([x0, y0], dtype=np.float32) if not hasattr(points, "new_tensor") else points.new_tensor([x0, y0])
    return (points + 0.5 - origin) / scale - 0.5


def from_crop(points, box, size: int, angle: float = 0.0):
    """Inverse of ``to_crop``; with ``angle``, of a crop that ``crop_square`` turned by it."""
    x0, y0, x1, y1 = box
    scale = (x1 - x0) / size
    if angle:
        cos, sin = math.cos(angle), math.sin(angle)
        u, v = (points[..., 0] + 0.5 - size / 2) * scale, (points[..., 1] + 0.5 - size / 2) * scale
        return np.stack([(x0 + x1) / 2 + cos * u - sin * v, (y0 + y1) / 2 + sin * u + cos * v], -1) - 0.5
    origin = np.array([x0, y0], dtype=np.float32) if not hasattr(points, "new_tensor") else points.new_tensor([x0, y0])
    return (points + 0.5) * scale + origin - 0.5


def from_crop_batch(points: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """``from_crop`` for many faces at once: (N, K, 2) crop points and (N, 4) square boxes."""
    scale = (boxes[:, 2] - boxes[:, 0]) / size
    return (points + 0.5) * scale[:, None, None] + boxes[:, None, :2] - 0.5
