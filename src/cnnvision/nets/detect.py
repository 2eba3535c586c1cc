"""One-stage face detection in a fully convolutional net, the tutorial's way: every cell of the
stride-8 output predicts objectness and the offsets of its face's top-left and bottom-right
corners (d = 5).

The backbone goes down to stride 32 for context (a face may be 10x a cell) and a bilinear
deconvolution brings that back to stride 8, added to the stride-8 features. The loss is the
tutorial's L2 on the corner offsets of the cells that hold a face, plus binary cross-entropy on
objectness; ``objectness_loss="l2"`` is the tutorial's L2 there too, kept for comparison.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnvision.boxes import average_precision, decode, encode, nms
from cnnvision.layers import Residual, conv_relu, deconv, pool


@dataclass
class DetectorConfig:
    arch: str = "fcn_detector"  # the only one so far
    in_channels: int = 3        # 1 grey, 3 RGB
    image_size: int = 160       # training scenes' side; any size works at inference
    width: int = 16             # channels of the first stage
    depth: int = 1              # 1: one conv at stride 8 and one at stride 32; each more adds a
                                # residual block at both (zero-initialised: --init keeps its function)
    strided: int = 0            # the first this many (0-2) stages convolve at stride 2 instead of
                                # pooling after: the same weights, a third less time at 640x480
    stride: int = 8             # output cell size in pixels
    scale: float = 32.0         # corner offsets are predicted in units of this many pixels
    threshold: float = 0.5      # objectness to report a face
    nms_iou: float = 0.4        # overlap above which the weaker of two detections goes
    objectness_loss: str = "bce"  # bce | l2 (the tutorial's: squared error of the objectness probability)
    box_style: str = "points"   # points: the extent of the 68 points (the first detector); face: the
                                # drawn boxes beside face_box of the 68-point sources (stops 18-24;
                                # face_box is a larger box, data/photos.py); drawn: one convention, the
                                # drawn box, for every source (68-point faces by drawn_box_of_extent)


class DetectorNet(nn.Module):
    task = "detection"
    primary_metric = ("ap50", "max")

    def __init__(self, cfg: DetectorConfig):
        super().__init__()
        if cfg.arch != "fcn_detector" or cfg.stride != 8:
            raise ValueError(f"unknown detector {cfg.arch!r} with stride {cfg.stride} (use fcn_detector, 8)")
        if cfg.box_style not in ("points", "face", "drawn"):
            raise ValueError(f"unknown box style {cfg.box_style!r} (use points, face or drawn)")
        if not 1 <= cfg.depth <= 4:
            raise ValueError(f"detector depth {cfg.depth}: use 1 to 4")
        if cfg.strided not in (0, 1, 2):
            raise ValueError(f"detector strided {cfg.strided}: use 0, 1 or 2")
        if cfg.objectness_loss not in ("bce", "l2"):
            raise ValueError(f"unknown objectness loss {cfg.objectness_loss!r} (use bce or l2)")
        self.cfg = cfg
        w = cfg.width
        # (B, C, H, W) -> (B, 4w, H/8, W/8). A strided stage computes every second output of its
        # convolution where the plain one computes all and keeps the largest of each 2x2: its
        # weights are the same, so --init from a plain detector starts near that detector, and the
        # full-size first stages, which cost most, shrink fourfold. (An identity holds the pool's
        # place, so that the layers keep their names and either kind's weights load into the other.)
        stages = []
        for k, (cin, cout) in enumerate(((cfg.in_channels, w), (w, 2 * w), (2 * w, 4 * w))):
            if k < cfg.strided:
                stages += [conv_relu(cin, cout, 3, stride=2, padding=1, batch_norm=True), nn.Identity()]
            else:
                stages += [conv_relu(cin, cout, 3, batch_norm=True), pool(2)]
        self.down8 = nn.Sequential(*stages, conv_relu(4 * w, 4 * w, 3, batch_norm=True))
        self.down32 = nn.Sequential(  # -> (B, 8w, H/32, W/32)
            pool(2), conv_relu(4 * w, 8 * w, 3, batch_norm=True),
            pool(2), conv_relu(8 * w, 8 * w, 3, batch_norm=True),
        )
        # deeper detectors: more context at stride 8 and 32 for little time (the full-size first
        # stages cost most); empty for depth 1, so the first detectors' weights load as they were
        self.more8 = nn.Sequential(*[Residual(4 * w) for _ in range(cfg.depth - 1)])
        self.more32 = nn.Sequential(*[Residual(8 * w) for _ in range(cfg.depth - 1)])
        self.lateral = nn.Conv2d(8 * w, 4 * w, 1)
        self.up = deconv(4 * w, 4 * w, 4, bilinear=True)
        self.head = nn.Sequential(conv_relu(4 * w, 4 * w, 3, batch_norm=True), nn.Conv2d(4 * w, 5, 1))
        nn.init.constant_(self.head[-1].bias[:1], -4.0)  # faces are rare: start near "no face"

    def forward(self, x):
        H, W = x.shape[-2:]
        ragged = H % 32 or W % 32
        if ragged:  # pad to whole stride-32 cells; outputs past the image are dropped below
            x = F.pad(x, (0, -W % 32, 0, -H % 32))
        out = self.trunk(x).float()                          # (B, 5, H/8, W/8)
        return out[..., : -(-H // 8), : -(-W // 8)] if ragged else out

    def trunk(self, x):
        """The convolutions alone, on sides that are multiples of 32: (B, 5, H/8, W/8) logits and
        offsets. Free of Python branches, so that the int8 runtime (quantize.py) can trace it."""
        c8 = self.more8(self.down8(x))                       # (B, 4w, H/8, W/8)
        y = c8 + self.up(self.lateral(self.more32(self.down32(c8))))
        return self.head(y)

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        known = target[:, 0] >= 0  # -1 marks cells to ignore (faces nobody labelled)
        labels = target[:, 0].clamp(min=0)
        if self.cfg.objectness_loss == "bce":
            per_cell = F.binary_cross_entropy_with_logits(out[:, 0], labels, reduction="none")
        else:
            per_cell = (out[:, 0].sigmoid() - labels) ** 2
        objectness = (per_cell * known).sum() / known.sum().clamp(min=1)
        face = target[:, :1].clamp(min=0)  # (B, 1, h, w)
        offsets = ((out[:, 1:] - target[:, 1:]) ** 2 * face).sum() / face.sum().clamp(min=1)
        return objectness + offsets

    def predict(self, x: torch.Tensor, flip: bool = False) -> torch.Tensor:
        """(B, 5, h, w): objectness probability and corner offsets. ``flip`` is ignored."""
        out = self(x)
        return torch.cat([out[:, :1].sigmoid(), out[:, 1:]], 1)

    def boxes(self, out: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One picture's ``predict`` output (5, h, w): its boxes (K, 4) in input pixels and scores
        (K,) down to ``threshold``, best first, after NMS."""
        boxes, scores = decode(out, self.cfg.stride, self.cfg.scale, threshold)
        keep = nms(boxes, scores, self.cfg.nms_iou)
        return boxes[keep], scores[keep]

    def detect(self, out: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image, boxes (K, 4) in input pixels and scores (K,) at the configured threshold."""
        return [self.boxes(o, self.cfg.threshold) for o in out]

    def encode(self, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return encode(boxes, -(-height // 8), -(-width // 8), self.cfg.stride, self.cfg.scale)

    def metrics(self, out: torch.Tensor, data) -> dict:
        """AP and recall at IoU 0.5 over a DetectionDataset, with every cell's score (no threshold)
        entering the precision-recall curve."""
        cfg = self.cfg
        detections = [self.boxes(o, 0.05) for o in out]
        result = average_precision(detections, data.boxes)
        above = [(b[s > cfg.threshold], s[s > cfg.threshold]) for b, s in detections]
        result["recall50"] = average_precision(above, data.boxes)["recall50"]
        return {**result, "count": len(data)}
