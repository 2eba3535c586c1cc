"""int8 post-training quantization of a net's inference graph, for onnxruntime.

The net is exported to ONNX (``export.export_onnx``), its convolutions' weights quantized per
output channel and their activations per tensor, with ranges calibrated on real inputs (the
99.999th percentile of each activation over the calibration batches). The first convolution and
the output head stay in float: quantizing the landmark net's heatmap head raised its NME on
faces-300w validation from 4.57% to 7.08% (the soft-argmax reads small differences between
logits that 8 bits flatten); kept in float, the int8 graph scored 4.57% too, at 1.8x the
fp32 graph's speed on an AVX-512 VNNI CPU (benchmarks/quantize_shipped.py measures both).

The same nets also run int8 in torch itself (``--runtime torch-int8``): each net's ``trunk``
(its convolutions, nets/detect.py and nets/keypoints.py) traced by torch.fx and quantized after
training with the same float islands, on oneDNN's int8 kernels. oneDNN has int8 convolutions for
plain AVX2 (no VNNI needed), where onnxruntime's cannot be tested here, and it obeys
``ONEDNN_MAX_CPU_ISA``, so their AVX2 speed is measured on this machine too. The calibrated
graphs ship as ``NAME.int8.pt`` (their state; the graph is traced again from the float net).
"""
import contextlib
import copy
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from cnnvision.errors import InputError
from cnnvision.layers import MaxPool2x2
from cnnvision.nets import build_net, net_spec


def quantize(net, calibration: list[torch.Tensor], path: str | Path) -> Path:
    """Write ``net``'s int8 graph to ``path``, calibrated on the float batches ``calibration``
    (each (B, C, H, W) in [0, 1], as ``predict`` takes them)."""
    try:
        import onnx
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise InputError('int8 quantization needs the onnx extra: pip install "cnnvision[onnx]"') from None
    from cnnvision.export import export_onnx
    from cnnvision.files import atomic_path

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.left = iter(calibration)

        def get_next(self):
            x = next(self.left, None)
            return None if x is None else {"images": x.float().contiguous().numpy()}

    with tempfile.TemporaryDirectory(prefix="cnnvision-int8-") as folder:
        fp32, ready = Path(folder) / "fp32.onnx", Path(folder) / "ready.onnx"
        export_onnx(net, fp32)
        quant_pre_process(str(fp32), str(ready), skip_symbolic_shape=True)  # the detector takes any size
        graph = onnx.load(str(ready)).graph
        kept = float_nodes(graph)
        with atomic_path(Path(path)) as tmp:
            quantize_static(str(ready), str(tmp), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.Percentile, nodes_to_exclude=kept)
    return Path(path)


def float_nodes(graph) -> list[str]:
    """The nodes left in float: the first convolution, and the last one with all after it."""
    nodes = list(graph.node)
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    if not convs:
        return []
    return [nodes[convs[0]].name] + [n.name for n in nodes[convs[-1]:]]


# --- int8 in torch (--runtime torch-int8) --------------------------------------------------------

ENGINE = "onednn"  # torch's quantized engine: oneDNN's int8 kernels, which have an AVX2 path
INT8_FORMAT = "cnnvision-int8"


class _Trunk(nn.Module):
    """A net's ``trunk`` method as a module's forward, which torch.fx traces."""

    def __init__(self, owner: nn.Module):
        super().__init__()
        self.owner = owner

    def forward(self, x):
        return self.owner.trunk(x)


def _owner(net) -> nn.Module:
    owner = getattr(net, "model", net)  # a KeypointNet keeps its architecture in ``model``
    if not hasattr(owner, "trunk"):
        raise InputError(f"int8 in torch: a {net.task} net of this kind has no trunk to quantize "
                         "(the detector and the heatmap landmark nets have)")
    return owner


def has_int8_engine() -> bool:
    """Whether this torch build has the int8 engine the trunks are made for (x86 builds do)."""
    return ENGINE in torch.backends.quantized.supported_engines


def _engine() -> None:
    """Selects oneDNN as torch's quantized engine, for this process: the int8 layers pack their
    weights for it and run on it."""
    if not has_int8_engine():
        raise InputError(f"--runtime torch-int8: this torch has no {ENGINE} int8 engine; use --runtime torch")
    torch.backends.quantized.engine = ENGINE


def _prepared(net, example: torch.Tensor):
    """The trunk of an eval copy of ``net`` with observers on every quantized activation. Its
    2x2 max-pools become the library's (the same numbers; MaxPool2x2 branches on the input's
    shape, which tracing cannot follow). The first convolution and the output head stay in
    float, as in the onnxruntime graphs: the head reads small differences between logits. The
    first layer's inputs are whole pixels, up to 255: on a CPU without VNNI (plain AVX2) oneDNN
    sums two products of them with 8-bit weights in 16 bits, which saturate, and the detector's
    scores moved by up to 0.8 with its first layer in int8 (stop 28). With 7-bit weights it
    did not saturate, but the pipeline ran no faster (21.0 against 20.9 photos/sec on AVX2); the
    landmark net's first layer in int8 bought 5% (23.9 against 22.7) for 2.6 times the points'
    difference from float (0.15 against 0.06 px). Transposed convolutions are int8 per tensor
    (per channel has none) where they upsample by 2, as the landmark net's do; the detector's,
    by 4, stays in float: oneDNN ran it in int8 through a slow generic kernel, 10 s a photo."""
    from torch.ao.quantization import QConfig, default_weight_observer, get_default_qconfig, get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx
    _engine()
    trunk = _Trunk(copy.deepcopy(_owner(net)).eval())
    for module in list(trunk.modules()):
        for name, child in module.named_children():
            if isinstance(child, MaxPool2x2):
                setattr(module, name, nn.MaxPool2d(2, 2, ceil_mode=child.ceil_mode))
    per_tensor = QConfig(activation=get_default_qconfig(ENGINE).activation, weight=default_weight_observer)
    mapping = get_default_qconfig_mapping(ENGINE).set_object_type(nn.ConvTranspose2d, per_tensor)
    convs = [name for name, m in trunk.named_modules() if isinstance(m, nn.Conv2d)]
    slow = [name for name, m in trunk.named_modules() if isinstance(m, nn.ConvTranspose2d) and m.stride != (2, 2)]
    for name in (convs[0], convs[-1], *slow):
        mapping.set_module_name(name, None)
    # traced without the stack trace fx records for every node (a debugging aid): it costs 3 s of
    # imports and tracing at each start of the pipeline, against 0.5 s for the whole of this
    import torch.fx.config as fx_config
    recorded, fx_config.do_not_emit_stack_traces = fx_config.do_not_emit_stack_traces, True
    try:
        with _quiet():
            return prepare_fx(trunk, mapping, (example,))
    finally:
        fx_config.do_not_emit_stack_traces = recorded


@contextlib.contextmanager
def _quiet():
    """Silences torch's notices around its int8 API: torch 2.13 (which pyproject.toml pins) marks
    torch.ao's FX quantization and quantized tensors as deprecated in favour of torchao. They
    work, and with them the int8 trunks need no other package."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _example(net) -> torch.Tensor:
    side = 32 * -(-net.cfg.image_size // 32)  # a detector's graph takes sides of whole stride-32 cells
    return torch.zeros(1, net.cfg.in_channels, side, side)


def quantize_trunk(net, calibration: list[torch.Tensor], path: str | Path) -> Path:
    """Write the int8 trunk of ``net`` to ``path`` (``NAME.int8.pt``), calibrated on the float
    batches ``calibration`` (each (B, C, H, W) in [0, 1]; a detector's sides multiples of 32)."""
    from torch.ao.quantization.quantize_fx import convert_fx
    from cnnvision.files import atomic_path
    prepared = _prepared(net, calibration[0].float())
    with torch.no_grad():
        for x in calibration:
            prepared(x.float())
    with _quiet():
        graph = convert_fx(prepared)
    with atomic_path(Path(path)) as tmp:
        torch.save({"format": INT8_FORMAT, "engine": ENGINE, "net": net_spec(net), "state": graph.state_dict()}, tmp)
    return Path(path)


def with_int8_trunk(net, path: str | Path):
    """A copy of ``net`` whose trunk is the int8 graph stored at ``path``: its ``predict`` (and
    ``predict_spread``) then run in int8, all else as before (in fp32, under autocast too). The
    graph holds all the trunk's weights, its float layers' too: it is traced from a new net of
    ``net``'s config, so ``net`` may be an inference copy with its batch norms folded away."""
    from torch.ao.quantization.quantize_fx import convert_fx
    path = Path(path)
    try:
        with _quiet():
            stored = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except Exception as e:
        raise InputError(f"{path}: not an int8 graph ({e.__class__.__name__})") from None
    if not isinstance(stored, dict) or stored.get("format") != INT8_FORMAT:
        raise InputError(f"{path}: not a cnnvision int8 graph")
    if stored.get("net") != net_spec(net):
        raise InputError(f"{path}: does not fit this {net.task} net (made for another config)")
    with _quiet():  # and the observers' notice that they never ran: the ranges come from the file
        graph = convert_fx(_prepared(build_net(net.task, asdict(net.cfg)), _example(net)))
    try:
        graph.load_state_dict(stored["state"])
    except (RuntimeError, KeyError) as e:
        raise InputError(f"{path}: does not fit this {net.task} net ({str(e).splitlines()[0]})") from None
    out = copy.deepcopy(net).eval()
    # an instance attribute comes before the class's method: every method that calls
    # ``self.trunk`` now runs the graph (set past nn.Module, which would register it as a layer)
    _owner(out).__dict__["trunk"] = _Int8(graph)
    return out


class _Int8(nn.Module):
    """An int8 trunk, which takes and gives float32 whatever autocast is on around it (its
    float islands are fp32 layers)."""

    def __init__(self, graph: nn.Module):
        super().__init__()
        self.graph = graph.to(memory_format=torch.channels_last)

    def forward(self, x):
        with torch.autocast(x.device.type, enabled=False):
            return self.graph(x.float())
