"""int8 in torch (``--runtime torch-int8``): a net's trunk quantized after training, stored, loaded
back into a copy of the net, and close to the float net's outputs."""
import numpy as np
import pytest
import torch

from cnnvision.errors import InputError
from cnnvision.nets import KeypointNet, KeypointNetConfig
from cnnvision.nets.detect import DetectorConfig, DetectorNet
from cnnvision.quantize import ENGINE, has_int8_engine, quantize_trunk, with_int8_trunk

pytestmark = pytest.mark.skipif(not has_int8_engine(),
                                reason=f"this torch has no {ENGINE} int8 engine")


def trained_like(net):
    """A fresh net with batch-norm statistics of its own inputs, as a trained one has (fresh ones
    are all 0 and 1, which leaves the activations' ranges far from what calibration sees)."""
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(4, net.cfg.in_channels, 64, 64))
    return net.eval()


def is_int8(net) -> bool:
    trunk = getattr(net, "model", net).__dict__.get("trunk")
    return trunk is not None and any(p.is_quantized for p in trunk.state_dict().values() if torch.is_tensor(p))


def test_detector_trunk_in_int8_stays_near_the_float_net(tmp_path):
    torch.manual_seed(0)
    net = trained_like(DetectorNet(DetectorConfig(width=8, depth=2, strided=1)))
    calibration = [torch.rand(2, 3, 64, 96) for _ in range(4)]
    path = quantize_trunk(net, calibration, tmp_path / "det.int8.pt")
    int8 = with_int8_trunk(net, path)
    assert is_int8(int8) and not is_int8(net)  # a copy: the float net is left as it was
    x = torch.rand(1, 3, 70, 100)  # ragged sides: padded to whole stride-32 cells and cropped back
    with torch.inference_mode():
        want, got = net.predict(x), int8.predict(x)
        again = with_int8_trunk(net, path).predict(x)
    assert got.shape == want.shape == (1, 5, 9, 13)
    assert torch.equal(got, again)  # the stored graph loads to the same numbers
    assert not torch.equal(got, want)  # it is int8, not the float net under another name
    scale = want.abs().max().item()
    assert (got - want).abs().max().item() < 0.1 * scale
    assert (got - want).abs().mean().item() < 0.02 * scale


def test_heatmap_landmarks_in_int8_keep_their_points_and_spread(tmp_path):
    torch.manual_seed(0)
    net = trained_like(KeypointNet(KeypointNetConfig(arch="hourglass", image_size=64, width=8)))
    path = quantize_trunk(net, [torch.rand(8, 1, 64, 64) for _ in range(4)], tmp_path / "lm.int8.pt")
    int8 = with_int8_trunk(net, path)
    x = torch.rand(3, 1, 64, 64)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):  # it runs fp32 inside autocast too
        got, got_spread = int8.predict_spread(x)
    with torch.inference_mode():
        want, want_spread = net.predict_spread(x)
    assert got.dtype == torch.float32 and got.shape == want.shape == (3, 15, 2)
    assert (got - want).abs().mean().item() < 0.5  # crop pixels of 64
    np.testing.assert_allclose(got_spread.numpy(), want_spread.numpy(), rtol=0.02)


def test_int8_files_that_do_not_fit_are_refused_in_one_line(tmp_path):
    torch.manual_seed(0)
    detector = trained_like(DetectorNet(DetectorConfig(width=8)))
    landmarks = KeypointNet(KeypointNetConfig(arch="hourglass", image_size=64, width=8)).eval()
    stored = quantize_trunk(detector, [torch.rand(1, 3, 64, 64)], tmp_path / "det.int8.pt")
    text = tmp_path / "notes.int8.pt"
    text.write_text("not a torch file")
    other = tmp_path / "other.int8.pt"
    torch.save({"format": "something else"}, other)
    for path, says in ((tmp_path / "missing.int8.pt", "no such file"), (text, "not an int8 graph"),
                       (other, "not a cnnvision int8 graph")):
        with pytest.raises(InputError, match=f"{path.name}: {says}"):
            with_int8_trunk(detector, path)
    with pytest.raises(InputError, match="det.int8.pt: does not fit this keypoints net"):
        with_int8_trunk(landmarks, stored)
    with pytest.raises(InputError, match="has no trunk to quantize"):
        quantize_trunk(KeypointNet(KeypointNetConfig(arch="kpnet", image_size=32)).eval(), [torch.rand(1, 1, 32, 32)],
                       tmp_path / "kp.int8.pt")
    assert not (tmp_path / "kp.int8.pt").exists()


def test_torch_int8_needs_a_shipped_model():
    from cnnvision import checkpoint
    from cnnvision.runtime import for_runtime
    with pytest.raises(InputError, match="int8 weights ship for the shipped models only"):
        for_runtime(checkpoint.load_net(pretrained="keypoints15"), "torch-int8")


def test_auto_runtime_is_int8_on_a_cpu_for_the_shipped_face_models_only():
    from cnnvision import checkpoint
    from cnnvision.apps.faces import FacePipeline
    from cnnvision.runtime import resolve_runtime
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    detector, landmarks = (checkpoint.load_net(pretrained=n) for n in ("face-detector", "landmarks68"))
    own = KeypointNet(KeypointNetConfig(arch="hourglass", layout="ibug68", image_size=64, width=8)).eval()
    assert resolve_runtime("auto", cpu, detector, landmarks) == "torch-int8"
    assert resolve_runtime("auto", gpu, detector, landmarks) == "torch"
    assert resolve_runtime("auto", cpu, detector, own) == "torch"  # a net of one's own has no int8 weights
    assert resolve_runtime("onnx", cpu, detector, own) == "onnx"
    pipeline = FacePipeline(detector, landmarks)
    assert pipeline.runtime == "torch-int8" and pipeline.precision == "fp32" and is_int8(pipeline.detector)
    assert is_int8(pipeline.landmarks) and not is_int8(detector)
    assert FacePipeline(detector, own).runtime == "torch"


def test_auto_runtime_falls_back_to_float_where_torch_lacks_the_int8_engine(monkeypatch):
    from cnnvision import checkpoint
    from cnnvision.runtime import resolve_runtime
    nets = [checkpoint.load_net(pretrained=n) for n in ("face-detector", "landmarks68")]
    from cnnvision import quantize
    monkeypatch.setattr(quantize, "has_int8_engine", lambda: False)  # as on a build without oneDNN's
    assert resolve_runtime("auto", torch.device("cpu"), *nets) == "torch"
    with pytest.raises(InputError, match="no onednn int8 engine; use --runtime torch"):
        with_int8_trunk(nets[0], nets[0].int8_trunk)
