"""cnnvision: learning-based computer vision with convolutional networks, on PyTorch.

The front door for Python::

    import cnnvision
    pipeline = cnnvision.FacePipeline.pretrained()       # face-detector + landmarks68
    for face in pipeline("photo.jpg"):                    # a path, a PIL image or a numpy array
        print(face.box, face.score, face.keypoints.shape)  # (68, 2), in the photo's pixels
    net = cnnvision.load_net(pretrained="keypoints15")    # any one model, or checkpoint="best.pt"

The names load on first use, so ``import cnnvision`` (and the command line's ``--help``) does not
wait for torch.
"""
__version__ = "0.1.0"
__all__ = ["Face", "FacePipeline", "load_net", "PRETRAINED", "InputError"]

_HOMES = {"Face": "cnnvision.apps.faces", "FacePipeline": "cnnvision.apps.faces",
          "load_net": "cnnvision.checkpoint", "PRETRAINED": "cnnvision.shipped", "InputError": "cnnvision.errors"}


def __getattr__(name: str):
    if name in _HOMES:
        import importlib
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'cnnvision' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
