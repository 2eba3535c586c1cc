"""Checkpoints: plain-typed dicts written atomically, read back with clear errors.

A checkpoint holds the Net's spec (task and config), so evaluate, predict and export need only
the file; training checkpoints add the optimizer, scheduler, step and RNG state to resume.
"""
from importlib import resources
from pathlib import Path

import torch

from cnnvision.errors import InputError
from cnnvision.files import atomic_open
from cnnvision.nets import build_net
from cnnvision.runs import signals_deferred
from cnnvision.shipped import PRETRAINED

FORMAT = "cnnvision-checkpoint"


def save(path: str | Path, state: dict) -> None:
    """Write atomically: a run killed at any moment leaves the last good checkpoint intact; a
    Ctrl-C or SIGTERM during the write takes effect once the file is in place."""
    with signals_deferred(), atomic_open(path, "wb") as f:
        torch.save({"format": FORMAT, **state}, f)


def load(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a file that is not a checkpoint
        raise InputError(f"{path}: not a cnnvision checkpoint ({e.__class__.__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "net" not in state or "model" not in state:
        raise InputError(f"{path}: not a cnnvision checkpoint (a torch file without cnnvision's fields)")
    return state


def run_config(path: str | Path, task: str) -> dict:
    """The training settings stored in a run's ``last.pt``, for ``--resume``; a checkpoint of
    another task, or one without them (weights only), is refused in one line."""
    state = load(path)
    stored = state["net"].get("task") if isinstance(state["net"], dict) else None
    if stored != task:
        raise InputError(f"{path}: is a {stored} run, not a {task} one; resume it with --task {stored}")
    if not isinstance(state.get("config"), dict) or "solver" not in state["config"]:
        raise InputError(f"{path}: holds no training settings to resume from (weights only?)")
    return state["config"]


def pretrained_path(name: str) -> Path:
    if name not in PRETRAINED:
        raise InputError(f"unknown pretrained model {name!r}; available: {', '.join(PRETRAINED)}")
    path = Path(str(resources.files("cnnvision") / "pretrained" / f"{name}.pt"))
    if not path.exists():
        raise InputError(f"pretrained model {name!r} is not installed ({path} missing)")
    return path


def load_net(checkpoint: str | Path | None = None, pretrained: str | None = None):
    """A Net in eval mode from a checkpoint file or a shipped model's name."""
    path = pretrained_path(pretrained) if pretrained else Path(checkpoint)
    state = load(path)
    try:
        net = build_net(state["net"]["task"], state["net"]["config"])
        net.load_state_dict(state["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise InputError(f"{path}: checkpoint does not match its net ({str(e).splitlines()[0]})") from None
    # a shipped model's int8 forms: its onnxruntime graph (--runtime onnx-int8) and its torch trunk (torch-int8)
    for attribute, suffix in (("int8_graph", "int8.onnx"), ("int8_trunk", "int8.pt")):
        int8 = path.with_name(f"{pretrained}.{suffix}") if pretrained else None
        setattr(net, attribute, int8 if int8 is not None and int8.exists() else None)
    return net.eval()


def init_from(net, path: str | Path) -> int:
    """Start ``net`` from another checkpoint's weights (fine-tuning, or a larger crop from a
    smaller one): every tensor whose name and shape match is copied; returns how many. A
    checkpoint of another task, or one that shares nothing, is refused."""
    state = load(path)
    if state["net"].get("task") != net.task:
        raise InputError(f"{path}: is a {state['net'].get('task')} checkpoint; --init needs a {net.task} one")
    own = net.state_dict()
    matched = {k: v for k, v in state["model"].items() if k in own and own[k].shape == v.shape}
    if not any(k.endswith("weight") for k in matched):
        raise InputError(f"{path}: shares no weights with this net (another architecture or width)")
    net.load_state_dict(matched, strict=False)
    return len(matched)
