"""ONNX export of a Net's inference path, with a dynamic batch dimension.

The exported graph takes float images in [0, 1], (batch, C, S, S), and returns what
``net.predict(x, flip=False)`` returns: for keypoint nets the points in crop pixels
(batch, K, 2), for classifiers the class probabilities, for segmenters the per-pixel class
probabilities (batch, classes, H, W), and for the detector its output grid (batch, 5, H/8, W/8):
objectness probability and corner offsets, which ``boxes.decode`` turns into boxes. Heatmap
keypoint nets (``kpheat``, ``hourglass``) have a second output, ``spread`` (batch,): how spread
out their heatmaps are (``nets.keypoints.soft_argmax``). These two
fully convolutional graphs take any height and width that are multiples of 2**depth for a
segmenter (16 for ``face-parts``) or of 32 for the detector.
"""
import warnings
from pathlib import Path

import torch
from torch import nn

from cnnvision.errors import InputError
from cnnvision.files import atomic_path, sweep_temporaries


class Inference(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        if getattr(self.net, "has_spread", False):  # heatmap keypoint nets: the points and their spread
            return self.net.predict_spread(x)
        return self.net.predict(x, flip=False)


def export_onnx(net, path: str | Path, opset: int = 18) -> Path:
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise InputError(f"{path.parent}: no such folder")
    try:
        import onnx  # noqa: F401  (the exporter needs it; it is an optional extra)
    except ImportError:
        raise InputError('export needs the onnx extra: pip install "cnnvision[onnx]"') from None
    cfg = net.cfg
    example = torch.rand(2, cfg.in_channels, cfg.image_size, cfg.image_size)
    modes = {m: m.training for m in net.modules()}  # put back afterwards: a net being trained stays so
    module = Inference(net).eval()
    axes = {"images": {0: "batch"}, "output": {0: "batch"}}
    if net.task in ("segmentation", "detection"):
        axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output": {0: "batch", 2: "height", 3: "width"}}
    outputs = ["output"]
    if getattr(net, "has_spread", False):
        axes["spread"], outputs = {0: "batch"}, ["output", "spread"]
    sweep_temporaries(path.parent)  # what an export killed before left
    try:
        with atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), str(tmp), input_names=["images"], output_names=outputs,
                              dynamic_axes=axes, opset_version=opset,
                              dynamo=False)
    finally:
        for m, training in modes.items():
            m.training = training
    return path
