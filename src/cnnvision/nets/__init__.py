"""Nets: a model plus its task's loss and metrics. ``build_net`` makes one from a stored config."""
from dataclasses import asdict, fields

from cnnvision.nets.keypoints import KeypointNet, KeypointNetConfig  # noqa: F401

KEYPOINT_ARCHS = ("basic_cnn", "kpnet")


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
