"""Batched augmentation on uint8 image tensors, with keypoints kept on the pixels.

One random similarity transform per image (rotation, scale, shift, optional mirror) is applied
to the whole batch by a single ``grid_sample``; the same matrices move the points, and a mirror
also swaps left/right points. Brightness and contrast are per-image affine maps of intensity.
"""
import math
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F

from cnnvision.errors import InputError


@dataclass
class AugmentConfig:
    flip: bool = True          # mirror half the images (swapping left/right points)
    rotate: float = 12.0       # max rotation, degrees
    scale: float = 0.08        # max relative zoom in or out
    shift: float = 0.06        # max translation, fraction of the image side
    brightness: float = 0.15   # max added intensity (images in [0, 1])
    contrast: float = 0.25     # max relative contrast change
    occlude: float = 0.0       # share of images given a random grey or noise patch (a hand, a cup, hair)
    blur: float = 0.0          # share of images blurred (out of focus, motion, a small face enlarged)
    noise: float = 0.0         # max standard deviation of added pixel noise (sensor noise, JPEG)


AUGMENT_FIELDS = [f.name for f in fields(AugmentConfig)]
# What --augment accepts for each field: a test of the number and how to say it; the rest take any number >= 0.
AUGMENT_RANGES = {
    "flip": (lambda v: v in (0, 1), "0 or 1"),
    "rotate": (lambda v: 0 <= v <= 180, "from 0 to 180"),
    "scale": (lambda v: 0 <= v < 1, "from 0 to below 1"),  # 1 or more can zero the warp's matrix
    "occlude": (lambda v: 0 <= v <= 1, "a share from 0 to 1"),
    "blur": (lambda v: 0 <= v <= 1, "a share from 0 to 1"),
}
NON_NEGATIVE = (lambda v: 0 <= v < math.inf, "a number >= 0")


def make_augment(augment: bool | dict, default: AugmentConfig) -> AugmentConfig | None:
    """A run's augmentation: ``False`` none, ``True`` the task's ``default``, and a dict that default
    with the named fields changed (as ``parse_augment`` gives them, or a stored run's config)."""
    if augment is False:
        return None
    return replace(default, **augment) if isinstance(augment, dict) else default


def parse_augment(spec: str) -> dict:
    """``--augment``'s "rotate=6,shift=0.03,flip=0" -> {"rotate": 6.0, "shift": 0.03, "flip": False};
    an unknown name or a value out of its range raises InputError."""
    changes = {}
    for item in spec.split(","):
        name, _, value = (part.strip() for part in item.partition("="))
        if name not in AUGMENT_FIELDS:
            raise InputError(f"--augment {spec}: '{name}' is not one of {', '.join(AUGMENT_FIELDS)} (NAME=VALUE,...)")
        try:
            number = float(value)
        except ValueError:
            number = math.nan  # fails every range below
        fits, allowed = AUGMENT_RANGES.get(name, NON_NEGATIVE)
        if not fits(number):
            raise InputError(f"--augment {spec}: {name} must be {allowed}, not '{value}'")
        changes[name] = bool(number) if name == "flip" else number
    return changes


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 in [0, 1]."""
    return images.float().div_(255)


def pixels_to_unit(points: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel coordinates (pixel centres at integers) -> grid_sample's [-1, 1] (align_corners=False)."""
    return (2 * points + 1) / size - 1


def unit_to_pixels(points: torch.Tensor, size: int) -> torch.Tensor:
    return ((points + 1) * size - 1) / 2


def random_transforms(batch: int, cfg: AugmentConfig, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image forward maps in unit coordinates, out = A @ p + t: A (B, 2, 2), t (B, 2), and
    a bool mirror mask (B,)."""
    def uniform(lo, hi):
        return torch.rand(batch, generator=generator) * (hi - lo) + lo

    angle = uniform(-cfg.rotate, cfg.rotate) * math.pi / 180
    scale = uniform(1 - cfg.scale, 1 + cfg.scale)
    shift = torch.stack([uniform(-cfg.shift, cfg.shift), uniform(-cfg.shift, cfg.shift)], 1) * 2  # unit = 2 per side
    mirror = torch.rand(batch, generator=generator) < 0.5 if cfg.flip else torch.zeros(batch, dtype=torch.bool)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    A = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (B, 2, 2)
    A[:, :, 0] *= torch.where(mirror, -1.0, 1.0)[:, None]  # mirror x before rotating
    return A, shift, mirror


def sampling_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.affine_grid(theta, ..., align_corners=False)`` by broadcasting, (B, H, W, 2): the
    same numbers about four times faster on CPU, which matters once per training batch."""
    xs = (torch.arange(width, dtype=theta.dtype) * 2 + 1) / width - 1    # pixel centres, unit coords
    ys = (torch.arange(height, dtype=theta.dtype) * 2 + 1) / height - 1
    row = theta[:, :, None, None, :]  # (B, 2, 1, 1, 3)
    grid = row[..., 0] * xs[None, None, None, :] + row[..., 1] * ys[None, None, :, None] + row[..., 2]
    return grid.permute(0, 2, 3, 1)  # (B, 2, H, W) -> (B, H, W, 2)


def warp(images: torch.Tensor, points: torch.Tensor | None, A: torch.Tensor, t: torch.Tensor,
         mirror: torch.Tensor, flip_perm: list[int] | None,
         mode: str = "bilinear") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply out = A @ p + t to float images (B, C, H, W) and pixel points (B, K, 2).

    ``mode="nearest"`` resamples without blending, for maps of class indices."""
    B, C, H, W = images.shape
    if H != W:
        raise ValueError("augmentation expects square images")
    Ainv = torch.linalg.inv(A)
    theta = torch.cat([Ainv, -(Ainv @ t[:, :, None])], 2)  # (B, 2, 3): output grid -> input grid
    grid = sampling_grid(theta, H, W)
    images = F.grid_sample(images, grid, mode=mode, padding_mode="border", align_corners=False)
    if points is not None:
        unit = pixels_to_unit(points, H)                            # (B, K, 2)
        unit = unit @ A.transpose(1, 2) + t[:, None, :]
        points = unit_to_pixels(unit, H)
        if flip_perm is not None and mirror.any():
            perm = torch.tensor(flip_perm)
            points = torch.where(mirror[:, None, None], points[:, perm], points)
    return images, points


def jitter_intensity(images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None) -> torch.Tensor:
    B = images.shape[0]
    gain = 1 + (torch.rand(B, 1, 1, 1, generator=generator) * 2 - 1) * cfg.contrast
    bias = (torch.rand(B, 1, 1, 1, generator=generator) * 2 - 1) * cfg.brightness
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return ((images - mean) * gain + mean + bias).clamp_(0, 1)


def jitter_colour(images: torch.Tensor, generator: torch.Generator | None, gain: float = 0.1,
                  grey: float = 0.15) -> torch.Tensor:
    """Colour pictures (B, 3, H, W) in [0, 1]: each channel scaled by its own factor within
    1 +- ``gain`` (white balance), and a share ``grey`` of the pictures turned grey (kept as
    three equal channels), so a net trained on colour also sees black-and-white photos."""
    B = images.shape[0]
    gains = 1 + (torch.rand(B, 3, 1, 1, generator=generator) * 2 - 1) * gain
    images = (images * gains).clamp_(0, 1)
    to_grey = (torch.rand(B, generator=generator) < grey)[:, None, None, None]
    luma = (images * images.new_tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1, keepdim=True)
    return torch.where(to_grey, luma.expand_as(images), images)


def degrade(images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None) -> torch.Tensor:
    """Photo troubles on float images (B, C, S, S) in [0, 1]: a share ``blur`` of them blurred
    (a 3x3 or 5x5 box, the cheap stand-in for focus and motion), a share ``occlude`` given one
    rectangle of flat grey or noise covering 5-30% of the side squared, and noise of a random
    strength up to ``noise``. Points are unchanged: an occluded point is still where it is."""
    B, C, H, W = images.shape
    if cfg.blur > 0:
        chosen = torch.rand(B, generator=generator) < cfg.blur
        if chosen.any():
            k = 3 if torch.rand(1, generator=generator).item() < 0.6 else 5
            blurred = F.avg_pool2d(F.pad(images, (k // 2,) * 4, mode="replicate"), k, stride=1)
            images = torch.where(chosen[:, None, None, None], blurred, images)
    if cfg.occlude > 0:
        chosen = (torch.rand(B, generator=generator) < cfg.occlude).tolist()
        sides = (torch.rand(B, 2, generator=generator) * 0.45 + 0.15) * torch.tensor([W, H])
        corners = torch.rand(B, 2, generator=generator) * (torch.tensor([W, H]) - sides)
        fills = torch.rand(B, generator=generator)
        for b in range(B):
            if not chosen[b]:
                continue
            (x0, y0), (w, h) = corners[b].long().tolist(), sides[b].long().tolist()
            patch = images[b, :, y0:y0 + h, x0:x0 + w]
            if fills[b] < 0.5:
                patch.fill_(float(fills[b]) * 2)
            else:
                patch.copy_(torch.rand(patch.shape, generator=generator))
    if cfg.noise > 0:
        sigma = torch.rand(B, 1, 1, 1, generator=generator) * cfg.noise
        images = (images + torch.randn(images.shape, generator=generator) * sigma).clamp_(0, 1)
    return images


def augment(images: torch.Tensor, points: torch.Tensor | None, cfg: AugmentConfig,
            flip_perm: list[int] | None, generator: torch.Generator | None = None):
    """uint8 (B, C, S, S) and pixel points (B, K, 2) -> augmented float images in [0, 1] and points.

    Missing points (NaN) stay NaN.
    """
    x = to_float(images)
    A, t, mirror = random_transforms(x.shape[0], cfg, generator)
    x, points = warp(x, points, A, t, mirror, flip_perm)
    x = jitter_intensity(x, cfg, generator)
    if cfg.occlude or cfg.blur or cfg.noise:
        x = degrade(x, cfg, generator)
    return x, points
