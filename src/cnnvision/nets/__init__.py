"""Nets: a model plus its task's loss and metrics. ``build_net`` makes one from a stored config.

``Net`` below is the whole contract the Solver, the checkpoints and the command line rely on: a
new task is a module here with a config dataclass and a class that satisfies it, one branch in
``build_net``, and an app in ``cnnvision.apps`` that reads its data.
"""
from dataclasses import asdict, fields
from typing import Any, Protocol

import torch

from cnnvision.nets.keypoints import KeypointNet, KeypointNetConfig  # noqa: F401


class Net(Protocol):
    """What every task's net provides (it is also an ``nn.Module``)."""
    task: str                          # "keypoints", "classification", "segmentation", "detection"
    cfg: Any                           # a dataclass: everything needed to rebuild the net, stored in checkpoints

    @property
    def primary_metric(self) -> tuple[str, str]:
        """(metric name, "min" or "max"): what picks the best checkpoint."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs for a float batch (B, C, H, W) in [0, 1]: what ``loss`` takes."""

    def loss(self, out: torch.Tensor, target) -> torch.Tensor:
        """A scalar, from ``__call__``'s outputs and the dataset's targets."""

    def predict(self, x: torch.Tensor, flip: bool = True) -> torch.Tensor:
        """What users get (points in crop pixels, probabilities, detection maps)."""

    def metrics(self, predictions: torch.Tensor, data) -> dict[str, float]:
        """Figures of a whole dataset's ``predict`` outputs against its labels."""


def _config(cls, values: dict):
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in known})


def build_net(task: str, config: dict):
    """Rebuild a Net from ``net_spec``'s output, as checkpoints store it."""
    if task == "keypoints":
        return KeypointNet(_config(KeypointNetConfig, config))
    elif task == "classification":
        from cnnvision.nets.classify import ClassifierNet, ClassifierConfig
        return ClassifierNet(_config(ClassifierConfig, config))
    elif task == "segmentation":
        from cnnvision.nets.segment import SegmenterConfig, SegmenterNet
        return SegmenterNet(_config(SegmenterConfig, config))
    elif task == "detection":
        from cnnvision.nets.detect import DetectorConfig, DetectorNet
        return DetectorNet(_config(DetectorConfig, config))
    else:
        raise ValueError(f"unknown task {task!r}")


def net_spec(net) -> dict:
    """The plain-typed description a checkpoint stores to rebuild ``net``."""
    return {"task": net.task, "config": asdict(net.cfg)}
