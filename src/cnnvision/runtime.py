"""Inference runtimes for the face pipeline: torch itself, or the exported ONNX graphs run by
onnxruntime (the ``onnx`` extra), which on some CPUs runs the same nets faster.

``OnnxNet`` exports a net's inference graph (``export.export_onnx``) once per process into a
temporary folder and runs it with onnxruntime's CPU provider on torch's thread count; its
``predict`` matches the torch net's: the same outputs within float rounding (tested).
``onnx-int8`` runs the shipped models' int8 graphs instead (``quantize.py``; made by
benchmarks/quantize_shipped.py and installed beside the checkpoints as ``NAME.int8.onnx``).
"""
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cnnvision.errors import InputError

RUNTIMES = ("torch", "onnx", "onnx-int8", "torch-int8")


def resolve_runtime(runtime: str, device: torch.device, *nets) -> str:
    """``auto`` as the runtime it stands for: on the CPU, ``torch-int8`` where every net has
    int8 weights (the shipped face models) and torch has the int8 engine they were made for,
    else ``torch``; on a GPU, ``torch``. Other runtimes pass through.

    Measured at stop 27 (README, Speed): the int8 pipeline ran faster than torch's float one
    on an AVX-512 CPU with BF16 (against bf16) and limited to AVX2 (against fp32). It found the
    same web-faces validation faces but one, with faces-300w NME within 0.1%."""
    if runtime != "auto":
        return runtime
    from cnnvision import quantize
    if (device.type == "cpu" and quantize.has_int8_engine()
            and all(getattr(net, "int8_trunk", None) is not None for net in nets)):
        return "torch-int8"
    return "torch"


class OnnxNet:
    """A net's ``predict`` through onnxruntime. The detector's graph takes sides that are
    multiples of 32, so inputs are padded to them and the output cropped back, as the torch
    net does inside."""

    def __init__(self, net, graph: str | Path | None = None):
        """``graph``: an ONNX file of this net to run (its int8 graph); default: export it now."""
        try:
            import onnxruntime as ort
        except ImportError:
            raise InputError('--runtime onnx needs the onnx extra: pip install "cnnvision[onnx]"') from None
        from cnnvision.export import export_onnx
        self.net, self.task, self.cfg = net, net.task, net.cfg
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        with tempfile.TemporaryDirectory(prefix="cnnvision-onnx-") as folder:  # the session keeps the graph in memory
            path = graph or export_onnx(net, Path(folder) / f"{net.task}.onnx")
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def eval(self) -> "OnnxNet":  # the Solver's evaluate calls it; an ONNX graph is always in eval mode
        return self

    def metrics(self, predictions, data) -> dict:
        return self.net.metrics(predictions, data)

    def _outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x.float().contiguous()
        return [torch.from_numpy(o) for o in self.session.run(None, {"images": np.ascontiguousarray(x.numpy())})]

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        return self._outputs(x)[0]

    @property
    def has_spread(self) -> bool:
        return len(self.session.get_outputs()) > 1

    def predict_spread(self, x: torch.Tensor, flip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.has_spread:
            raise ValueError("this graph has no spread output: export it again with this version")
        if not flip:
            points, spread = self._outputs(x)
            return points, spread
        points, spread = self._outputs(torch.cat([x, x.flip(-1)]))
        points, mirrored = points.chunk(2)
        return self.net.average_mirrored(points, mirrored), spread.view(2, -1).mean(0)

    def predict(self, x: torch.Tensor, flip: bool = False) -> torch.Tensor:
        if self.task == "detection":
            H, W = x.shape[-2:]
            if H % 32 or W % 32:
                x = F.pad(x, (0, -W % 32, 0, -H % 32))
            return self._run(x)[..., : -(-H // 8), : -(-W // 8)]
        if self.task == "keypoints" and flip:
            points, mirrored = self._run(torch.cat([x, x.flip(-1)])).chunk(2)
            return self.net.average_mirrored(points, mirrored)
        return self._run(x)


def for_runtime(net, runtime: str):
    """``net`` itself (torch), an OnnxNet with the same ``predict`` and ``cfg``: of its float
    graph (onnx) or of its int8 graph (onnx-int8; ``load_net`` finds a shipped model's), or a copy
    of the net whose convolutions run in int8 in torch (torch-int8; quantize.with_int8_trunk)."""
    if runtime not in RUNTIMES:
        raise InputError(f"--runtime {runtime}: use one of {', '.join(RUNTIMES)}")
    if runtime in ("torch-int8", "onnx-int8"):
        kind, attribute = ("int8 weights", "int8_trunk") if runtime == "torch-int8" else ("int8 graphs", "int8_graph")
        stored = getattr(net, attribute, None)  # set by load_net for the shipped models that have one
        if stored is None:
            raise InputError(f"--runtime {runtime}: {kind} ship for the shipped models only "
                             f"(--pretrained: face-detector, landmarks68); this {net.task} model has none")
        if runtime == "onnx-int8":
            return OnnxNet(net, stored)
        from cnnvision.quantize import with_int8_trunk
        return with_int8_trunk(net, stored)
    return net if runtime == "torch" else OnnxNet(net)
