"""Semantic segmentation: a fully convolutional encoder-decoder that labels every pixel, and
the Net that gives it a cross-entropy loss and intersection-over-union metrics.

The encoder halves the resolution three times (stride 8); the decoder doubles it back with
transposed convolutions that start as bilinear upsampling (the FCN paper's initialisation), and
joins each step with the encoder's features of the same resolution (U-Net's skips), so the class
map comes out at the input's full resolution.
"""
import math
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnvision.data.augment import pixels_to_unit
from cnnvision.layers import conv_relu, deconv, pool
from cnnvision.nets.keypoints import cell_centres, soft_argmax

# One colour per class for overlays: background (unused), skin, eyes, nose, mouth.
PALETTE = torch.tensor([(0, 0, 0), (255, 190, 120), (40, 120, 255), (60, 220, 80), (240, 40, 60)], dtype=torch.uint8)


class Up(nn.Module):
    """Double the resolution and join the skip: 1x1 conv to the skip's width, a bilinear-initialised
    deconvolution, then a 3x3 conv over both."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.reduce = conv_relu(cin, cout, 1, batch_norm=True)
        self.up = deconv(cout, cout, 2, bilinear=True)
        self.fuse = conv_relu(2 * cout, cout, 3, batch_norm=True)

    def forward(self, x, skip):
        x = self.up(self.reduce(x))                # (B, cout, 2h, 2w)
        return self.fuse(torch.cat([x, skip], 1))  # (B, cout, 2h, 2w)


class SegNet(nn.Module):
    """Encoder stages of width w, 2w, 4w, 8w, 8w, ... at strides 1, 2, 4, ..., 2**depth (two 3x3
    conv + batch norm + ReLU each; the width stops doubling at 8w to keep the file small),
    ``depth`` Up steps back to stride 1, and a 1x1 conv to the class logits. A deeper encoder
    sees more of the face at once (the jaw line of a blurred frame).

    Any input whose sides are multiples of 2**depth gives logits of the same size.
    """

    def __init__(self, in_channels: int, classes: int, width: int = 16, depth: int = 3, points: int = 0):
        super().__init__()
        widths = [width * 2 ** min(i, 3) for i in range(depth + 1)]

        def stage(cin, cout):
            return nn.Sequential(conv_relu(cin, cout, 3, batch_norm=True), conv_relu(cout, cout, 3, batch_norm=True))

        self.down = nn.ModuleList(stage(cin, cout) for cin, cout in zip([in_channels, *widths], widths))
        self.pool = pool(2)
        self.up = nn.ModuleList(Up(cin, cout) for cin, cout in zip(widths[:0:-1], widths[-2::-1]))
        self.classify = nn.Conv2d(width, classes, 1)
        # Optional training aid: one heatmap per landmark from the same full-resolution features,
        # read out by soft-argmax, so the features learn where the outlines' corners are.
        self.heatmaps = nn.Conv2d(width, points, 1) if points else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        if self.heatmaps is not None:
            nn.init.normal_(self.heatmaps.weight, std=1e-3)

    def forward(self, x, with_points: bool = False):
        skips = []
        for i, stage in enumerate(self.down):
            x = stage(self.pool(x) if i else x)  # (B, widths[i], S / 2**i, S / 2**i)
            skips.append(x)
        for up, skip in zip(self.up, reversed(skips[:-1])):
            x = up(x, skip)                      # twice the resolution, the skip's channels
        logits = self.classify(x)                # (B, classes, S, S)
        if not with_points:
            return logits
        grid = cell_centres(x.shape[-1]).to(x.device)  # square inputs: the same centres across and down
        return logits, soft_argmax(self.heatmaps(x), grid).view(len(x), -1, 2)  # points (B, K, 2) in [-1, 1]

    def _load_from_state_dict(self, state, prefix, *args):
        # Checkpoints from before the depth was a setting name the stages enc1..enc4, up3..up1.
        for key in [k for k in state if re.match(re.escape(prefix) + r"(enc|up)\d\.", k)]:
            kind, n, rest = re.match(r"(enc|up)(\d)\.(.*)", key[len(prefix):]).groups()
            new = f"down.{int(n) - 1}" if kind == "enc" else f"up.{len(self.up) - int(n)}"
            state[f"{prefix}{new}.{rest}"] = state.pop(key)
        super()._load_from_state_dict(state, prefix, *args)


@dataclass
class SegmenterConfig:
    arch: str = "segnet"            # segnet (the only one so far)
    in_channels: int = 1            # 1 grey, 3 RGB
    image_size: int = 96            # side of the square training crops (any multiple of 2**depth works at inference)
    num_classes: int = 5            # background, skin, eyes, nose, mouth
    width: int = 16                 # channels of the first encoder stage
    depth: int = 3                  # halvings in the encoder: stride 2**depth at the bottom
    class_weights: tuple[float, ...] = ()  # cross-entropy weight per class, () = unweighted
    loss: str = "ce"                # ce (cross-entropy) | ce_dice (plus soft Dice) | ce_lovasz (plus Lovasz-softmax)
    aux_points: float = 0.0         # weight of an extra L1 loss on 68 landmarks from heatmaps (training only), 0 = off
    margin: float = 0.15            # crops: extra around the points' extent, a fraction of its side

    def __post_init__(self):
        self.class_weights = tuple(self.class_weights)  # a list when read back from JSON


class SegmenterNet(nn.Module):
    """A segmenter with its loss (per-pixel cross-entropy) and metrics (IoU per class over the
    whole dataset, their mean over the foreground classes, and the count of images)."""

    task = "segmentation"
    primary_metric = ("miou", "max")

    def __init__(self, cfg: SegmenterConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.arch == "segnet":
            self.model = SegNet(cfg.in_channels, cfg.num_classes, cfg.width, cfg.depth, 68 if cfg.aux_points else 0)
        else:
            raise ValueError(f"unknown segmentation net {cfg.arch!r} (use segnet)")
        if cfg.loss not in LOSSES:
            raise ValueError(f"unknown segmentation loss {cfg.loss!r} (use {', '.join(LOSSES)})")
        if cfg.class_weights and len(cfg.class_weights) != cfg.num_classes:
            raise ValueError(f"class_weights has {len(cfg.class_weights)} values for {cfg.num_classes} classes")

    def forward(self, x):
        """(B, classes, S, S) logits; while training with ``aux_points``, also the landmarks."""
        return self.model(x, with_points=self.training and self.cfg.aux_points > 0)

    def loss(self, out, target) -> torch.Tensor:
        """``target``: masks (B, S, S), or (masks, points (B, 68, 2) in pixels) for ``aux_points``."""
        masks, points = target if isinstance(target, (tuple, list)) else (target, None)
        aux = 0.0
        if isinstance(out, tuple):
            out, predicted = out
            if points is None:
                raise ValueError("aux_points needs the training points: the dataset has none")
            side = out.shape[-1]
            aux = self.cfg.aux_points * (predicted.float() - pixels_to_unit(points, side)).abs().mean()
        return self.mask_loss(out, masks) + aux

    def mask_loss(self, out: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        weight = out.new_tensor(self.cfg.class_weights, dtype=torch.float32) if self.cfg.class_weights else None
        ce = F.cross_entropy(out.float(), masks, weight=weight)
        if self.cfg.loss == "ce":
            return ce
        extra = soft_dice_loss if self.cfg.loss == "ce_dice" else lovasz_softmax_loss
        return ce + extra(out.float().softmax(1), masks)

    def predict(self, x: torch.Tensor, flip: bool = True) -> torch.Tensor:
        """Per-pixel class probabilities (B, classes, S, S); with ``flip`` the mirrored image is
        predicted too, mirrored back and averaged (no class swap: both eyes are one class)."""
        probs = self(x).float().softmax(1)
        if flip:
            probs = (probs + self(x.flip(-1)).float().softmax(1).flip(-1)) / 2
        return probs

    def picture(self, data, probs: torch.Tensor) -> np.ndarray:
        """Each face twice, tinted with its true parts (left) and the predicted ones (right), four
        pairs a row: (H, W, 3) uint8."""
        tiles = []
        for image, mask, p in zip(data.images, data.masks, probs):
            tiles.append(torch.cat([overlay(image, mask), overlay(image, p.argmax(0))], 1))  # (S, 2S, 3)
        columns = 4
        while len(tiles) % columns:
            tiles.append(torch.zeros_like(tiles[0]))
        rows = [torch.cat(tiles[r:r + columns], 1) for r in range(0, len(tiles), columns)]
        return torch.cat(rows, 0).numpy()

    def metrics(self, probs: torch.Tensor, data) -> dict:
        """IoU of each class over all pixels of a SegmentationDataset, and ``miou``, their mean over
        classes 1 and up (the background's IoU is high whatever the net does)."""
        return iou_metrics(probs.argmax(1), data.masks.long(), self.cfg.num_classes)


def lovasz_softmax_loss(probs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The Lovasz-softmax loss (Berman et al., 2018) over the batch's pixels, averaged over the
    foreground classes present: a convex surrogate of 1 - IoU, so it optimises the metric itself.

    For each class the pixels' errors |truth - p| are sorted, largest first; the loss is their dot
    product with the steps of 1 - IoU as the pixels are added in that order (the Lovasz extension
    of the Jaccard loss), so it is exact for hard 0/1 predictions.
    """
    classes = probs.shape[1]
    probs = probs.permute(0, 2, 3, 1).reshape(-1, classes)  # (pixels, classes)
    masks = masks.reshape(-1)
    losses = []
    for c in range(1, classes):
        truth = (masks == c).to(probs.dtype)
        if not truth.any():
            continue
        errors, order = (truth - probs[:, c]).abs().sort(descending=True)
        truth = truth[order]
        total = truth.sum()
        inter = total - truth.cumsum(0)       # truth pixels not yet taken
        union = total + (1 - truth).cumsum(0)  # truth pixels plus the wrong ones taken so far
        jaccard = 1 - inter / union            # 1 - IoU after taking the first k pixels
        steps = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
        losses.append(errors @ steps)
    return torch.stack(losses).mean() if losses else probs.sum() * 0


def soft_dice_loss(probs: torch.Tensor, masks: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - the soft Dice overlap of each foreground class over the batch, averaged over classes:
    it weighs a small part (an eye) as much as a large one, as mean IoU does."""
    onehot = F.one_hot(masks, probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)  # (B, classes, H, W)
    inter = (probs * onehot).sum((0, 2, 3))[1:]
    total = (probs + onehot).sum((0, 2, 3))[1:]
    return 1 - ((2 * inter + eps) / (total + eps)).mean()


LOSSES = ("ce", "ce_dice", "ce_lovasz")


def iou_metrics(pred: torch.Tensor, true: torch.Tensor, classes: int) -> dict:
    """pred and true (N, H, W) class indices -> {"miou", "iou" (per class), "count"}. A class absent
    from both has IoU None and is left out of the mean."""
    confusion = torch.bincount((true * classes + pred).flatten(), minlength=classes * classes).view(classes, classes)
    inter = confusion.diag().double()
    union = confusion.sum(0).double() + confusion.sum(1).double() - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.tensor(float("nan"), dtype=torch.float64))
    return {"miou": float(iou[1:].nanmean()), "iou": [None if math.isnan(v) else round(v, 4) for v in iou.tolist()],
            "count": len(true)}


def overlay(image: torch.Tensor, mask: torch.Tensor, alpha: float = 0.45) -> torch.Tensor:
    """uint8 (C, H, W) image and (H, W) classes -> (H, W, 3) uint8, the parts tinted by PALETTE."""
    rgb = image.expand(3, -1, -1) if image.shape[0] == 1 else image
    rgb = rgb.permute(1, 2, 0).float()                      # (H, W, 3)
    tint = PALETTE[mask.long()].float()                     # (H, W, 3)
    part = (mask > 0)[..., None]
    return torch.where(part, (1 - alpha) * rgb + alpha * tint, rgb).round().to(torch.uint8)
